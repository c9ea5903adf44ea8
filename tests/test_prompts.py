import numpy as np
import pytest

from adapt.transforms.prompts import PromptSimulator, box_from_mask, prompt_rng, sample_points


def _blob(shape=(64, 80)):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[10:30, 20:50] = 1
    mask[30:40, 20:25] = 1  # an L shape: its box holds background too
    return mask


def test_tight_box_is_the_mask_extent():
    box = box_from_mask(_blob())
    np.testing.assert_array_equal(box, [20, 10, 49, 39])


@pytest.mark.parametrize("seed", range(20))
def test_jittered_box_contains_mask_and_stays_in_image(seed):
    mask = _blob()
    box = box_from_mask(mask, jitter=0.3, rng=prompt_rng(seed))
    assert box[0] <= 20 and box[1] <= 10 and box[2] >= 49 and box[3] >= 39
    assert box.min() >= 0 and box[2] <= 79 and box[3] <= 63
    # outward only, and by at most 30% of the side
    assert 20 - box[0] <= 0.3 * 30 + 1e-4 and box[2] - 49 <= 0.3 * 30 + 1e-4


def test_points_fall_inside_and_outside_as_labelled():
    mask = _blob()
    points, labels = sample_points(mask, num_positive=5, num_negative=4, rng=prompt_rng(3))
    assert points.shape == (9, 2) and labels.tolist() == [1] * 5 + [0] * 4
    for (x, y), label in zip(points.astype(int), labels):
        assert mask[y, x] == label


def test_same_seed_same_prompts_and_other_seed_differs():
    sim = PromptSimulator(kind="box+points", jitter=0.2, num_positive=2, num_negative=1, seed=7)
    a, b = sim(_blob(), key=(3, 1)), sim(_blob(), key=(3, 1))
    for k in ("boxes", "points", "point_labels"):
        np.testing.assert_array_equal(a[k], b[k])
    c = sim(_blob(), key=(4, 1))
    assert not np.array_equal(a["points"], c["points"])
    assert a["boxes"].shape == (1, 4) and a["points"].shape == (1, 3, 2)


def test_prompt_kinds_and_point_counts():
    assert PromptSimulator(kind="box").num_points == 0
    assert "points" not in PromptSimulator(kind="box")(_blob())
    single = PromptSimulator(kind="point")(_blob())
    assert "boxes" not in single and single["points"].shape == (1, 1, 2)
    assert single["point_labels"].tolist() == [[1]]
    with pytest.raises(ValueError, match="not one of"):
        PromptSimulator(kind="lasso")


def test_empty_mask_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="empty"):
        box_from_mask(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="empty"):
        sample_points(np.zeros((8, 8)))
