"""Surface metrics in millimetres: normalised surface Dice (NSD) and HD95, via MONAI.

MONAI computes both from the masks' edge voxels (the mask minus its erosion by a
cross-shaped element) with exact Euclidean distances scaled by the voxel spacing, so an
anisotropic CT (e.g. 0.7 x 0.7 x 5 mm) is measured in mm, not in voxels.

Empty conventions (MONAI's; undefined is ``nan``, never a made-up distance):

=====================  ========  ========
case                   NSD       HD95
=====================  ========  ========
both empty             nan       nan
exactly one empty      0.0       nan
=====================  ========  ========

HD95 has no finite value when one side has no surface, and any fixed penalty (the image
diagonal, 373 mm, ...) would depend on the dataset; :func:`adapt.metrics.summarize`
therefore reports how many cases were undefined instead of averaging them away. Dice and
NSD already score an empty prediction of a present structure as 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from monai.metrics.utils import get_edge_surface_distance

from adapt.metrics.overlap import ArrayLike, as_mask, check_same_shape

Spacing = float | Sequence[float] | None


def _pair(pred: ArrayLike, gt: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Both masks as ``[1, 1, *spatial]`` float tensors, MONAI's one-hot batch layout."""
    pred_t, gt_t = as_mask(pred), as_mask(gt)
    check_same_shape(pred_t, gt_t)
    if pred_t.ndim not in (2, 3):
        raise ValueError(f"surface metrics need a 2D image or a 3D volume, got {pred_t.ndim} dimensions")
    return pred_t[None, None].float(), gt_t[None, None].float()


def _spacing(spacing: Spacing, ndim: int) -> list[float] | None:
    """A per-axis spacing list (MONAI wants one number per spatial axis), or None for voxels."""
    if spacing is None:
        return None
    values = [float(spacing)] * ndim if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    if len(values) != ndim or any(s <= 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive numbers (one per axis, in mm), got {spacing}")
    return values


def _monai(metric: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> float:
    """Call a MONAI metric on one case, without its internal deprecation notice.

    MONAI 1.5-1.6 passes its own deprecated ``always_return_as_numpy`` argument
    internally and warns about it on every call; the notice is not about our usage.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        return float(metric(*args, **kwargs)[0, 0])


def nsd(pred: ArrayLike, gt: ArrayLike, spacing: Spacing = None, *, tolerance_mm: float) -> float:
    """Normalised surface Dice: the fraction of both surfaces within ``tolerance_mm`` of the other.

    Args:
        pred: predicted mask, 2D or 3D; nonzero is foreground.
        gt: ground-truth mask of the same shape.
        spacing: voxel size in mm per axis, in array axis order (a number for isotropic);
            None measures in voxels.
        tolerance_mm: the accepted boundary deviation, in the units of ``spacing``.

    Returns:
        NSD in [0, 1]; 0.0 when exactly one mask is empty, ``nan`` when both are.
    """
    pred_t, gt_t = _pair(pred, gt)
    has_pred, has_gt = bool(pred_t.any()), bool(gt_t.any())
    if not (has_pred or has_gt):
        return float("nan")
    if has_pred != has_gt:
        return 0.0
    return _monai(compute_surface_dice, pred_t, gt_t, [float(tolerance_mm)], include_background=True,
                  spacing=_spacing(spacing, pred_t.ndim - 2))


def hd95(pred: ArrayLike, gt: ArrayLike, spacing: Spacing = None) -> float:
    """95th-percentile symmetric Hausdorff distance, in the units of ``spacing``.

    MONAI's definition: the larger of the two directed 95th percentiles (pred surface to
    gt surface, and back), linear interpolation between surface-distance samples.

    Args:
        pred: predicted mask, 2D or 3D; nonzero is foreground.
        gt: ground-truth mask of the same shape.
        spacing: voxel size in mm per axis (a number for isotropic); None measures in voxels.

    Returns:
        HD95 >= 0, or ``nan`` when either mask is empty (see the module docstring).
    """
    pred_t, gt_t = _pair(pred, gt)
    if not (pred_t.any() and gt_t.any()):
        return float("nan")
    return _monai(compute_hausdorff_distance, pred_t, gt_t, include_background=True, percentile=95,
                  spacing=_spacing(spacing, pred_t.ndim - 2))


def surface_metrics(pred: ArrayLike, gt: ArrayLike, spacing: Spacing = None,
                    tolerance_mm: float | None = None) -> dict[str, float]:
    """HD95 and (given a tolerance) NSD from one surface-distance computation.

    The edge extraction and distance transforms are the expensive part of both metrics;
    evaluating a volume computes them once here instead of once per metric. Values and
    empty conventions equal :func:`hd95` and :func:`nsd` (MONAI's definitions).

    Returns:
        ``{"hd95"[, "nsd"]}``.
    """
    pred_t, gt_t = _pair(pred, gt)
    has_pred, has_gt = bool(pred_t.any()), bool(gt_t.any())
    out = {"hd95": float("nan")}
    if tolerance_mm is not None:
        out["nsd"] = float("nan") if not (has_pred or has_gt) else 0.0
    if not (has_pred and has_gt):
        return out
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        _, distances, _ = get_edge_surface_distance(pred_t[0, 0], gt_t[0, 0], distance_metric="euclidean",
                                                    spacing=_spacing(spacing, pred_t.ndim - 2), symmetric=True)
    to_gt, to_pred = (d.float() for d in distances)
    out["hd95"] = float(torch.max(torch.quantile(to_gt, 0.95), torch.quantile(to_pred, 0.95)))
    if tolerance_mm is not None:
        correct = (to_gt <= tolerance_mm).sum() + (to_pred <= tolerance_mm).sum()
        out["nsd"] = float(correct / (len(to_gt) + len(to_pred)))
    return out
