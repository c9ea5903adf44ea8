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
"""

from __future__ import annotations

from adapt.metrics.aggregate import summarize
from adapt.metrics.case import case_metrics
from adapt.metrics.overlap import dice, dice_score, iou, iou_score
from adapt.metrics.semantic import (
    class_iou,
    confusion_matrix,
    global_accuracy,
    mean_pixel_accuracy,
    miou,
    pixel_accuracy,
)
from adapt.metrics.surface import hd95, nsd, surface_metrics
from adapt.metrics.throughput import FrameTimer, fps
from adapt.metrics.video import (
    BOUND_TH,
    VideoScores,
    boundary_map,
    boundary_pixels,
    boundary_precision_recall,
    contour_accuracy_f,
    j_and_f,
    region_similarity_j,
)

__all__ = [
    "BOUND_TH",
    "FrameTimer",
    "VideoScores",
    "boundary_map",
    "boundary_pixels",
    "boundary_precision_recall",
    "case_metrics",
    "class_iou",
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
