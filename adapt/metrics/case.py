"""All volume metrics of one case in one call, the row ``adapt.evaluate`` writes per case."""

from __future__ import annotations

from adapt.metrics.overlap import ArrayLike, as_mask, case_overlap
from adapt.metrics.surface import Spacing, Surface, surface_metrics


def case_metrics(pred: ArrayLike, gt: ArrayLike, spacing: Spacing = None,
                 tolerance_mm: float | None = None, *, surface: Surface = "decathlon") -> dict[str, float]:
    """Dice, IoU, HD95 and (given a tolerance) NSD of one predicted mask against its ground truth.

    Args:
        pred: predicted mask, 2D or 3D; nonzero is foreground.
        gt: ground-truth mask of the same shape.
        spacing: voxel size in mm per axis; None measures distances in voxels.
        tolerance_mm: NSD tolerance; NSD is left out when None, since it has no neutral default.
        surface: NSD's surface definition: ``"decathlon"`` (DeepMind's area-weighted surface
            elements, the default) or ``"voxels"`` (MONAI's edge voxels); see :mod:`adapt.metrics.surface`.

    Returns:
        ``{"dice", "iou", "hd95"[, "nsd"], "gt_voxels", "pred_voxels"}``; the voxel counts make
        an undefined HD95 (an empty side) explainable in the case table.
    """
    pred_t, gt_t = as_mask(pred), as_mask(gt)
    overlap = case_overlap(pred_t, gt_t)
    row = {"dice": overlap["dice"], "iou": overlap["iou"],
           **surface_metrics(pred_t, gt_t, spacing, tolerance_mm, surface=surface)}
    row.update(gt_voxels=overlap["gt_voxels"], pred_voxels=overlap["pred_voxels"])
    return row
