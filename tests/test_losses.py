import torch

from adapt.tasks.losses import (
    LossWeights,
    bce_loss,
    dice_loss,
    focal_loss,
    mask_iou,
    presence_loss,
    segmentation_loss,
)

BIG = 50.0  # logits this large are probability 1 or 0 to float precision


def test_dice_loss_hand_computed():
    # prediction covers 2 pixels, target 2 pixels, overlap 1 -> dice (2*1+1)/(2+2+1) = 3/5
    logits = torch.full((1, 2, 2), -BIG)
    logits[0, 0, :] = BIG
    target = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert torch.allclose(dice_loss(logits, target), torch.tensor([1 - 3 / 5]))


def test_bce_and_focal_on_half_probability():
    logits, target = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    assert torch.allclose(bce_loss(logits, target), torch.tensor([0.6931472]), atol=1e-6)
    # focal: alpha * (1 - 0.5)^2 * ln 2
    assert torch.allclose(focal_loss(logits, target), torch.tensor([0.25 * 0.25 * 0.6931472]), atol=1e-6)


def test_mask_iou_and_empty_convention():
    logits = torch.tensor([[[BIG, BIG], [-BIG, -BIG]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(mask_iou(logits, target), torch.tensor([0.5]))
    assert mask_iou(torch.full((1, 2, 2), -BIG), torch.zeros(1, 2, 2)).item() == 1.0


def test_best_of_three_is_supervised():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    logits = torch.full((1, 1, 3, 4, 4), -BIG)
    logits[0, 0, 1, :2, :] = BIG  # candidate 1 is perfect
    logits[0, 0, 2] = BIG  # candidate 2 is all foreground
    loss, parts, best = segmentation_loss(logits, target, None, LossWeights(iou=0))
    assert best.tolist() == [[1]]
    assert loss.item() < 1e-3 and set(parts) == {"dice", "bce"}


def test_iou_head_is_regressed_to_true_iou():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    logits = torch.full((1, 1, 1, 4, 4), -BIG)
    logits[..., :2, :2] = BIG  # IoU 4/8
    _, parts, _ = segmentation_loss(logits, target, torch.tensor([[[0.5]]]), LossWeights())
    assert parts["iou"].item() < 1e-12
    _, parts, _ = segmentation_loss(logits, target, torch.tensor([[[1.0]]]), LossWeights())
    assert torch.isclose(parts["iou"], torch.tensor(0.25))


def test_presence_loss():
    value = presence_loss(torch.tensor([0.0, 0.0]), torch.tensor([True, False]))
    assert torch.isclose(value, torch.tensor(0.6931472))
