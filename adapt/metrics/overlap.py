"""Overlap metrics: Dice and IoU (Jaccard), batched in torch and per case in numpy.

One formula serves both the training loop and the evaluation tables, so the Dice logged
during training is the Dice written to ``cases.csv``. The torch functions reduce only the
spatial dimensions and never move data to the CPU, so they cost no device sync per object.

Empty convention (MONAI ``ignore_empty=False`` and the DAVIS benchmark's J): when
prediction and target are both empty the score is ``empty`` (default 1.0, a correct "no
object" answer); when exactly one is empty it is 0.0. No smoothing term is added: an
``eps``/``smooth`` of 1 would score a missed one-pixel object 0.5 instead of 0.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(array: ArrayLike) -> torch.Tensor:
    """A tensor as is; a numpy array (or list) as a CPU tensor sharing its memory where it can: in its
    own layout (a volume in a NIfTI file's Fortran order is not copied), copied only where torch cannot
    take the strides (a flipped view), and then in the same order of axes in memory (a flipped view of a
    Fortran-order volume stays Fortran-ordered: the surface metrics walk it, and sum its elements, as the
    unflipped volume's)."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    return torch.from_numpy(array if min(array.strides, default=0) >= 0 else np.copy(array, order="K"))


def as_mask(array: ArrayLike) -> torch.Tensor:
    """A boolean tensor of a mask: nonzero is foreground (label maps saved as 0/255 included)."""
    tensor = as_tensor(array)
    return tensor if tensor.dtype == torch.bool else tensor != 0


def check_same_shape(pred: ArrayLike, target: ArrayLike) -> None:
    """Raise a ValueError naming both shapes: broadcasting would silently score the wrong pairs."""
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def _compute_dtype(pred: torch.Tensor) -> torch.dtype:
    """float32 for masks and half-precision inputs, the input's dtype for float32/float64."""
    return pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32


def _counts(pred: torch.Tensor, target: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, |pred| and |target| over the last ``dims`` dimensions.

    Boolean masks are counted exactly in int64; anything else is treated as soft
    (probabilities), so the same call gives a differentiable soft Dice.
    """
    check_same_shape(pred, target)
    if not 1 <= dims <= pred.ndim:
        raise ValueError(f"dims must be between 1 and pred.ndim={pred.ndim}, got {dims}")
    axes = tuple(range(-dims, 0))
    if pred.dtype == torch.bool and target.dtype == torch.bool:
        if pred.device.type == "cpu" and target.device.type == "cpu":  # numpy counts bits ~100x faster than
            # torch sums bools (int64 per voxel): ~7 ms against ~0.2 s on a CT volume, same integers
            a, b = pred.numpy(), target.numpy()
            where = tuple(range(a.ndim - dims, a.ndim)) if dims < a.ndim else None
            return tuple(torch.as_tensor(np.count_nonzero(x, axis=where)) for x in (a & b, a, b))  # type: ignore[return-value]
        return (pred & target).sum(axes), pred.sum(axes), target.sum(axes)
    dtype = _compute_dtype(pred)
    pred, target = pred.to(dtype), target.to(dtype)
    return (pred * target).sum(axes), pred.sum(axes), target.sum(axes)


def safe_divide(num: torch.Tensor, den: torch.Tensor, empty: float, dtype: torch.dtype) -> torch.Tensor:
    """``num / den``, and ``empty`` where ``den == 0``, without NaN even in gradients."""
    num, den = num.to(dtype), den.to(dtype)
    defined = den > 0
    return torch.where(defined, num / torch.where(defined, den, torch.ones_like(den)), torch.full_like(den, empty))


def dice_from_counts(
    inter: torch.Tensor, size_pred: torch.Tensor, size_target: torch.Tensor, empty: float, dtype: torch.dtype
) -> torch.Tensor:
    """Dice of counted masks (the one formula of every Dice here); ``empty`` where both are empty."""
    return safe_divide(2 * inter, size_pred + size_target, empty, dtype)


def iou_from_counts(
    inter: torch.Tensor, size_pred: torch.Tensor, size_target: torch.Tensor, empty: float, dtype: torch.dtype
) -> torch.Tensor:
    """IoU of counted masks (the one formula of every IoU here); ``empty`` where both are empty."""
    return safe_divide(inter, size_pred + size_target - inter, empty, dtype)


def dice_score(pred: torch.Tensor, target: torch.Tensor, dims: int = 2, empty: float = 1.0) -> torch.Tensor:
    """Dice ``2|P∩T| / (|P| + |T|)`` per object, batched.

    Args:
        pred: predicted masks ``[..., H, W]`` (or ``[..., D, H, W]`` with ``dims=3``);
            bool for hard masks (e.g. ``logits > 0``), float in [0, 1] for soft Dice.
        target: ground truth of the same shape.
        dims: how many trailing dimensions are spatial and reduced.
        empty: the score when both masks are empty (see module docstring).

    Returns:
        Tensor of shape ``pred.shape[:-dims]`` on ``pred``'s device, float32 (float64 for
        float64 input).
    """
    return dice_from_counts(*_counts(pred, target, dims), empty, _compute_dtype(pred))


def iou_score(pred: torch.Tensor, target: torch.Tensor, dims: int = 2, empty: float = 1.0) -> torch.Tensor:
    """IoU / Jaccard ``|P∩T| / |P∪T|`` per object, batched; arguments as :func:`dice_score`."""
    return iou_from_counts(*_counts(pred, target, dims), empty, _compute_dtype(pred))


def dice(pred: ArrayLike, gt: ArrayLike) -> float:
    """Dice of one whole case (2D image or 3D volume); nonzero voxels are foreground.

    Spacing does not enter: on a regular grid every voxel has the same volume, which
    cancels. Both empty gives 1.0, one empty 0.0, as :func:`dice_score`.
    """
    pred_t, gt_t = as_mask(pred), as_mask(gt)
    return float(dice_from_counts(*_counts(pred_t, gt_t, pred_t.ndim), 1.0, torch.float64))


def iou(pred: ArrayLike, gt: ArrayLike) -> float:
    """IoU of one whole case; conventions as :func:`dice`."""
    pred_t, gt_t = as_mask(pred), as_mask(gt)
    return float(iou_from_counts(*_counts(pred_t, gt_t, pred_t.ndim), 1.0, torch.float64))


def case_overlap(pred: ArrayLike, gt: ArrayLike) -> dict[str, float | int]:
    """Dice, IoU and both voxel counts of one case from one counting pass (a CT volume holds ~12 M
    voxels: counting it once instead of three times saves ~1 s per class); conventions as :func:`dice`."""
    pred_t, gt_t = as_mask(pred), as_mask(gt)
    counts = _counts(pred_t, gt_t, pred_t.ndim)
    return {
        "dice": float(dice_from_counts(*counts, 1.0, torch.float64)),
        "iou": float(iou_from_counts(*counts, 1.0, torch.float64)),
        "gt_voxels": int(counts[2]),
        "pred_voxels": int(counts[1]),
    }
