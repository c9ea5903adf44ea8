"""All metrics of one case in one call, the row ``adapt.evaluate`` writes per case (the names are
``adapt.metrics.registry``'s: the volume family, the video family, the click curve's)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from adapt.metrics.overlap import ArrayLike, as_mask, case_overlap
from adapt.metrics.registry import CLICKED
from adapt.metrics.surface import Spacing, Surface, surface_metrics
from adapt.metrics.video import j_and_f


def case_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    spacing: Spacing = None,
    tolerance_mm: float | None = None,
    *,
    surface: Surface = "decathlon",
    overlap: Mapping[str, float | int] | None = None,
) -> dict[str, float]:
    """Dice, IoU, HD95 and (given a tolerance) NSD of one predicted mask against its ground truth.

    Args:
        pred: predicted mask, 2D or 3D; nonzero is foreground.
        gt: ground-truth mask of the same shape.
        spacing: voxel size in mm per axis; None measures distances in voxels.
        tolerance_mm: NSD tolerance; NSD is left out when None, since it has no neutral default.
        surface: NSD's surface definition: ``"decathlon"`` (DeepMind's area-weighted surface
            elements, the default) or ``"voxels"`` (MONAI's edge voxels); see :mod:`adapt.metrics.surface`.
        overlap: the case's Dice, IoU and voxel counts when they are already counted (``class_overlaps`` of
            its confusion matrix, the same values): not counted again.

    Returns:
        ``{"dice", "iou", "hd95"[, "nsd"], "gt_voxels", "pred_voxels"}``; the voxel counts make
        an undefined HD95 (an empty side) explainable in the case table.
    """
    pred_t, gt_t = as_mask(pred), as_mask(gt)
    overlap = case_overlap(pred_t, gt_t) if overlap is None else overlap
    return case_row(overlap, surface_metrics(pred_t, gt_t, spacing, tolerance_mm, surface=surface))


def case_row(overlap: Mapping[str, float | int], surfaces: Mapping[str, float]) -> dict[str, float]:
    """``case_metrics``' row of a case whose overlap (``case_overlap``, ``class_overlaps``) and surface metrics
    (``surface_metrics``) were measured apart: evaluation measures a class's surfaces as soon as the model
    is done with it, and counts the overlaps of every class at once."""
    return {
        "dice": overlap["dice"],
        "iou": overlap["iou"],
        **surfaces,
        "gt_voxels": overlap["gt_voxels"],
        "pred_voxels": overlap["pred_voxels"],
    }


def click_scores(pred: ArrayLike, gt: ArrayLike) -> dict[str, float]:
    """Dice and IoU of one case after a number of correction clicks (the click curve's metrics), from one
    counting pass (``case_overlap``: the same values as ``dice`` and ``iou``)."""
    return clicked(case_overlap(pred, gt))


def clicked(overlap: Mapping[str, float | int]) -> dict[str, float]:
    """The click curve's metrics (``registry.CLICKED``) of a counted case (``case_overlap``, ``class_overlaps``)."""
    return {name: overlap[name] for name in CLICKED}


def video_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """DAVIS J, F and J&F with the slices as frames, over the frames where either mask has the object.

    Frames empty on both sides would each score 1 and reward a short object in a long scan.
    """
    frames = np.flatnonzero((pred | truth).any(axis=(1, 2)))
    if not len(frames):
        return {"j": float("nan"), "f": float("nan"), "j_and_f": float("nan")}
    video = j_and_f(pred[frames], truth[frames])
    return {"j": float(video.j_mean), "f": float(video.f_mean), "j_and_f": float(video.j_and_f)}
