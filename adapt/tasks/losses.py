"""Segmentation losses in SAM2's training recipe: Dice, BCE or focal, IoU regression, presence.

All functions work per object on logits ``[..., H, W]`` and return per-object losses
``[...]`` so a caller can pick the best of SAM2's multimask outputs before averaging,
as SAM and SAM2 train with ambiguous single-point prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adapt.errors import check_choice
from adapt.tasks import PIXEL_LOSSES


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice loss per object: ``1 - (2|p·t| + s) / (|p| + |t| + s)`` with ``p = sigmoid`` (over ``valid`` pixels)."""
    prob = logits.sigmoid()
    prob = (prob if valid is None else prob * valid).flatten(-2)
    target = target.flatten(-2)
    inter = (prob * target).sum(-1)
    return 1 - (2 * inter + smooth) / (prob.sum(-1) + target.sum(-1) + smooth)


def _pixel_mean(loss: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel losses ``[..., H, W]`` averaged per object, over the ``valid`` pixels only."""
    if valid is None:
        return loss.flatten(-2).mean(-1)
    valid = valid.expand_as(loss).to(loss.dtype)
    return (loss * valid).flatten(-2).sum(-1) / valid.flatten(-2).sum(-1).clamp(min=1)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy per object, averaged over (``valid``) pixels."""
    return _pixel_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), valid)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) per object, averaged over (``valid``) pixels."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return _pixel_mean(loss, valid)


def mask_iou(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of the thresholded prediction per object (no gradient); empty vs empty counts as 1."""
    with torch.no_grad():
        pred = logits > 0
        pred = (pred if valid is None else pred & valid).flatten(-2)
        target = target.flatten(-2) > 0.5
        inter = (pred & target).sum(-1).float()
        union = (pred | target).sum(-1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; ``pixel`` picks ``bce`` or ``focal`` for the pixel term."""

    dice: float = 1.0
    pixel_term: float = 1.0
    iou: float = 1.0
    pixel: str = "bce"

    def __post_init__(self) -> None:
        check_choice("loss.pixel", self.pixel, PIXEL_LOSSES)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    iou_pred: torch.Tensor | None,
    weights: LossWeights = LossWeights(),
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Total loss over objects, supervising the best of M candidate masks per object.

    Args:
        logits: ``[B, N, M, H, W]`` mask logits at the label's resolution (M = 1 or 3).
        target: ``[B, N, H, W]`` binary masks.
        iou_pred: ``[B, N, M]`` the decoder's IoU predictions, or ``None`` to skip that term.
        weights: loss weights.
        valid: ``[B, 1, H, W]`` pixels that hold data (``None``: all); the others (a GeoTIFF's nodata)
            take no part in any term.

    Returns:
        ``(loss, parts, best)``: the scalar loss, its mean terms for logging, and the index of
        the supervised mask per object ``[B, N]``.
    """
    target_m = target.unsqueeze(2).expand_as(logits)
    valid_m = None if valid is None else valid.unsqueeze(2)
    pixel_fn = focal_loss if weights.pixel == "focal" else bce_loss
    dice = dice_loss(logits, target_m, valid=valid_m)
    pixel = pixel_fn(logits, target_m, valid=valid_m)
    per_mask = weights.dice * dice + weights.pixel_term * pixel
    best = per_mask.argmin(dim=2)
    pick = lambda t: t.gather(2, best.unsqueeze(2)).squeeze(2)  # noqa: E731
    parts = {"dice": pick(dice).mean(), weights.pixel: pick(pixel).mean()}
    loss = pick(per_mask).mean()
    if iou_pred is not None and weights.iou > 0:
        # Every candidate's IoU prediction is trained, as in SAM2 (not only the best mask's).
        iou_mse = F.mse_loss(iou_pred.float(), mask_iou(logits, target_m, valid_m), reduction="mean")
        parts["iou"] = iou_mse
        loss = loss + weights.iou * iou_mse
    return loss, parts, best


def presence_loss(object_logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """BCE of SAM2's object-score logits against whether the object is in the frame."""
    return F.binary_cross_entropy_with_logits(object_logits, present.to(object_logits.dtype))
