"""Segmentation metrics: overlap, surface distance, semantic, video (DAVIS), speed, summaries.

Every metric's reference implementation, the test that shows the agreement, and its
empty-mask convention are written down in ``docs/metrics.md``. Defaults follow the
protocols papers report: NSD is the Decathlon / DeepMind surface Dice (area-weighted
surface elements; ``surface="voxels"`` for MONAI's edge voxels), J/F/J&F use DAVIS's
``seg2bmap`` boundaries (``boundary="inner"`` for the morphological rule), HD95 is
MONAI's. Dice, IoU and J are 1 when prediction and target are both empty and 0 when one
is (MONAI ``ignore_empty=False``, DAVIS); NSD and HD95 are ``nan`` where undefined;
:func:`summarize` counts undefined values instead of averaging them.

Modules, one concern each:
    overlap     Dice and IoU, batched torch (training loop) and per case (evaluation)
    surface     NSD (Decathlon surface Dice) and HD95 in mm, via MONAI
    case        all volume metrics of one case in one row
    semantic    confusion matrix, mIoU, pixel / mean pixel / global accuracy
    video       DAVIS region similarity J, contour accuracy F, J&F
    throughput  frames per second
    aggregate   summarize(): mean, std, median, count, count_undefined
    registry    the reported metrics: direction, unit, headline, where each goes (no numpy)
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name -> the module that defines it, imported on first use: the table of metrics
#: (``adapt.metrics.registry``) loads without numpy, torch or MONAI.
_HOMES = {
    "summarize": "aggregate",
    "case_metrics": "case",
    "case_row": "case",
    "dice": "overlap",
    "dice_score": "overlap",
    "iou": "overlap",
    "iou_score": "overlap",
    "class_iou": "semantic",
    "class_overlaps": "semantic",
    "confusion_matrix": "semantic",
    "global_accuracy": "semantic",
    "mean_pixel_accuracy": "semantic",
    "miou": "semantic",
    "pixel_accuracy": "semantic",
    "hd95": "surface",
    "nsd": "surface",
    "surface_metrics": "surface",
    "FrameTimer": "throughput",
    "fps": "throughput",
    "BOUND_TH": "video",
    "VideoScores": "video",
    "boundary_map": "video",
    "boundary_pixels": "video",
    "boundary_precision_recall": "video",
    "contour_accuracy_f": "video",
    "j_and_f": "video",
    "region_similarity_j": "video",
}

__all__ = [
    "BOUND_TH",
    "FrameTimer",
    "VideoScores",
    "boundary_map",
    "boundary_pixels",
    "boundary_precision_recall",
    "case_metrics",
    "case_row",
    "class_iou",
    "class_overlaps",
    "confusion_matrix",
    "contour_accuracy_f",
    "dice",
    "dice_score",
    "fps",
    "global_accuracy",
    "hd95",
    "iou",
    "iou_score",
    "j_and_f",
    "mean_pixel_accuracy",
    "miou",
    "nsd",
    "pixel_accuracy",
    "region_similarity_j",
    "summarize",
    "surface_metrics",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"adapt.metrics.{_HOMES[name]}"), name)  # lazy: start-up
    raise AttributeError(f"module 'adapt.metrics' has no attribute {name!r}")
