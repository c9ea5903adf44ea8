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

import numpy as np
import torch

from adapt.metrics.overlap import ArrayLike, as_tensor, check_same_shape, dice_from_counts, iou_from_counts, safe_divide


def confusion_matrix(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs over all pixels.

    Numpy arrays are counted in their own memory layout (a label map in a NIfTI file's Fortran
    order is not transposed) with pair codes of the fewest bytes the classes allow, over the pixels
    that are not background on both sides: on a CT volume ~20 ms, against ~0.2 s through int64 codes.

    Args:
        pred: predicted class indices, any shape (e.g. ``logits.argmax(1)``).
        target: true class indices, same shape.
        num_classes: C; labels must lie in ``[0, C)`` apart from ``ignore_index``.
        ignore_index: a target value (e.g. 255 for void) whose pixels are not counted.

    Returns:
        int64 tensor ``[C, C]`` (on ``pred``'s device for tensors); rows are ground truth, columns prediction.

    Raises:
        ValueError: shapes differ or a label lies outside ``[0, C)``.
    """
    if isinstance(pred, np.ndarray) and isinstance(target, np.ndarray):
        return _numpy_confusion(pred, target, num_classes, ignore_index)
    pred_t, target_t = as_tensor(pred), as_tensor(target)
    check_same_shape(pred_t, target_t)
    pred_t, target_t = pred_t.reshape(-1).long(), target_t.reshape(-1).long().to(pred_t.device)
    if ignore_index is not None:
        keep = target_t != ignore_index
        if not bool(keep.all()):  # no copy of every pixel when none is ignored (most volumes)
            pred_t, target_t = pred_t[keep], target_t[keep]
    _check_range(pred_t, target_t, num_classes, ignore_index)
    counts = torch.bincount(target_t * num_classes + pred_t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_range(pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None) -> None:
    """Every (kept) label in ``[0, C)``."""
    if not (pred.numel() if isinstance(pred, torch.Tensor) else pred.size):
        return
    low, high = min(int(t.min()) for t in (pred, target)), max(int(t.max()) for t in (pred, target))
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) (or equal ignore_index={ignore_index})")


def _numpy_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """``confusion_matrix`` of two numpy arrays, in their memory layout."""
    check_same_shape(pred, target)
    if ignore_index is not None:
        keep = target != ignore_index
        if not keep.all():
            pred, target = pred[keep], target[keep]
    _check_range(pred, target, num_classes, ignore_index)
    pairs = num_classes * num_classes  # the smallest code type that holds every pair: bytes to count
    code_type = next(t for t in (np.uint8, np.int16, np.int32, np.int64) if pairs - 1 <= np.iinfo(t).max)
    # in the inputs' layout; float inputs are truncated, as the tensor path's ``long()`` does
    code = target.astype(code_type, copy=False) * code_type(num_classes) + pred.astype(code_type, copy=False)
    flat = np.ravel(code, order="K")
    # Most pixels of a volume are background on both sides (code 0): counting only the others halves the
    # time, and the zeros are what is left.
    others = flat[flat != 0]
    counts = torch.bincount(torch.from_numpy(others), minlength=pairs)
    counts[0] = flat.size - others.size
    return counts.reshape(num_classes, num_classes)


def class_overlaps(confusion: torch.Tensor) -> list[dict[str, float | int]]:
    """Dice, IoU and both voxel counts of each class from a case's confusion matrix (row ``i``: the class
    of index ``i``), with ``case_overlap``'s formulas and empty conventions (1.0 when both sides are empty),
    so the values equal ``case_overlap(pred == i, target == i)``."""
    tp, predicted, truth = confusion.diagonal(), confusion.sum(0), confusion.sum(1)
    dice, iou = (
        dice_from_counts(tp, predicted, truth, 1.0, torch.float64),
        iou_from_counts(tp, predicted, truth, 1.0, torch.float64),
    )
    return [
        {"dice": float(d), "iou": float(j), "gt_voxels": int(t), "pred_voxels": int(p)}
        for d, j, t, p in zip(dice, iou, truth, predicted)
    ]


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
