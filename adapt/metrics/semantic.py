"""Semantic-segmentation metrics on label maps with C classes, from a confusion matrix.

Remote-sensing and multi-organ benchmarks report scores accumulated over the whole
dataset (not averaged per image), so everything here is a function of a confusion
matrix that the caller sums over batches: ``cm += confusion_matrix(pred, target, C)``.

Naming, since papers disagree: *global accuracy* is correct pixels / all pixels
(what many papers call "pixel accuracy" or "OA"); :func:`pixel_accuracy` is per class,
the recall of each class, and :func:`mean_pixel_accuracy` is its mean ("mAcc").

Empty classes: a class absent from both ground truth and prediction has IoU ``nan``
and is left out of :func:`miou` (as in MMSegmentation's ``nanmean``); a class absent
from the ground truth has per-class accuracy ``nan`` and is left out of the mean. Only a
matrix with no counted pixel at all makes the means ``nan``.
"""

from __future__ import annotations

import torch

from adapt.metrics.overlap import ArrayLike, as_tensor, check_same_shape, safe_divide


def confusion_matrix(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs over all pixels.

    Args:
        pred: predicted class indices, any shape (e.g. ``logits.argmax(1)``).
        target: true class indices, same shape.
        num_classes: C; labels must lie in ``[0, C)`` apart from ``ignore_index``.
        ignore_index: a target value (e.g. 255 for void) whose pixels are not counted.

    Returns:
        int64 tensor ``[C, C]`` on ``pred``'s device; rows are ground truth, columns prediction.

    Raises:
        ValueError: shapes differ or a label lies outside ``[0, C)``.
    """
    pred_t, target_t = as_tensor(pred), as_tensor(target)
    check_same_shape(pred_t, target_t)
    pred_t, target_t = pred_t.reshape(-1).long(), target_t.reshape(-1).long().to(pred_t.device)
    if ignore_index is not None:
        keep = target_t != ignore_index
        if not bool(keep.all()):  # no copy of every pixel when none is ignored (most volumes)
            pred_t, target_t = pred_t[keep], target_t[keep]
    low = min(int(t.min()) for t in (pred_t, target_t)) if pred_t.numel() else 0
    high = max(int(t.max()) for t in (pred_t, target_t)) if pred_t.numel() else 0
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) (or equal ignore_index={ignore_index})")
    counts = torch.bincount(target_t * num_classes + pred_t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in float64, ``nan`` where ``den == 0``: undefined, not zero."""
    return safe_divide(num, den, float("nan"), torch.float64)


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``TP / (TP + FP + FN)``; ``nan`` for a class absent from both sides."""
    tp = confusion.diagonal()
    return _divide(tp, confusion.sum(0) + confusion.sum(1) - tp)


def miou(confusion: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present in ground truth or prediction (0-dim float64)."""
    return class_iou(confusion).nanmean()


def pixel_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class accuracy (recall) ``TP / (TP + FN)``; ``nan`` for a class absent from the ground truth."""
    return _divide(confusion.diagonal(), confusion.sum(1))


def mean_pixel_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`pixel_accuracy` over the classes present in the ground truth ("mAcc")."""
    return pixel_accuracy(confusion).nanmean()


def global_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Correct pixels / counted pixels ("overall accuracy"); ``nan`` if nothing was counted."""
    return _divide(confusion.diagonal().sum(), confusion.sum())
