import numpy as np

from adapt.transforms.clicks import correction_click, largest_error_region
from adapt.transforms.prompts import prompt_rng


def test_positive_click_at_the_centre_of_the_largest_miss():
    target = np.zeros((40, 40), bool)
    target[5:15, 5:15] = True  # 100 px, predicted
    target[20:35, 20:29] = True  # 15 x 9 px, missed -> the largest error
    pred = np.zeros_like(target)
    pred[5:15, 5:15] = True
    pred[0:3, 30:33] = True  # a 9 px false positive
    (x, y), label = correction_click(pred, target, prompt_rng(0))
    assert label == 1
    assert 20 <= y < 35 and 20 <= x < 29 and target[int(y), int(x)] and not pred[int(y), int(x)]
    # the centre of a 15 x 9 block: column 24, rows 24..30 are the most central (distance 5)
    assert x == 24 and 24 <= y <= 30


def test_negative_click_when_the_largest_error_is_a_false_positive():
    target = np.zeros((30, 30), bool)
    target[10:20, 10:20] = True
    pred = target.copy()
    pred[0:8, 0:30] = True  # 240 px spill above the object
    (x, y), label = correction_click(pred, target, prompt_rng(1))
    assert label == 0 and pred[int(y), int(x)] and not target[int(y), int(x)]


def test_perfect_prediction_needs_no_click_and_seed_is_reproducible():
    target = np.zeros((10, 10), bool)
    target[2:6, 2:6] = True
    assert correction_click(target, target, prompt_rng(0)) is None
    assert largest_error_region(target, target)[1] == -1
    pred = np.zeros_like(target)
    clicks = {tuple(correction_click(pred, target, prompt_rng(s))[0]) for s in range(20)}
    again = {tuple(correction_click(pred, target, prompt_rng(s))[0]) for s in range(20)}
    assert clicks == again
    # a 4x4 square has four equally central pixels: seeds spread over them
    assert clicks <= {(3.0, 3.0), (3.0, 4.0), (4.0, 3.0), (4.0, 4.0)} and len(clicks) > 1
