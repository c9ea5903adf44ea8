"""Iterative correction clicks, as SAM, SAM2, MedSAM2 and SAM-Med2D/3D train and evaluate.

After a prediction, the next click goes to the largest error region: a positive click in
the largest false-negative component, a negative click in the largest false-positive one.
Inside that region the click lands where the distance to the region's border is largest
(its "centre", the RITM/SAM protocol), with ties broken by a seeded draw, so a click is a
pure function of (prediction, ground truth, seed).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_error_region(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest connected error component and its click label.

    Args:
        pred: 2D predicted mask.
        target: 2D ground-truth mask.

    Returns:
        ``(region, label)``: a boolean mask of the component, ``1`` if it is a false negative
        (the click asks to add it), ``0`` if a false positive. An all-false region with label
        ``-1`` means the prediction is perfect.
    """
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    best, best_size, best_label = np.zeros_like(pred), 0, -1
    for error, label in ((target & ~pred, 1), (pred & ~target, 0)):
        components, count = ndimage.label(error)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        index = int(sizes.argmax())
        if sizes[index] > best_size:
            best, best_size, best_label = components == index + 1, int(sizes[index]), label
    return best, best_label


def correction_click(pred: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    """The next corrective click ``((x, y), label)``, or ``None`` when nothing is wrong.

    The click is at a point of maximal distance to the region's border; among equally
    central pixels one is drawn with ``rng``.
    """
    region, label = largest_error_region(pred, target)
    if label < 0:
        return None
    # Pad so that the image border counts as the region's border too.
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    candidates = np.argwhere(distance == distance.max())
    y, x = candidates[rng.integers(len(candidates))]
    return np.array([x, y], dtype=np.float32), label
