"""How much a person should look at a pre-annotation: two uncertainty measures per mask and plane.

For every object on every plane of a pre-annotation (each label value's mask), the box around it
prompts the model again:

* **IoU head** (``iou``): SAM2's own prediction of the mask's IoU, for the tight box;
* **jitter agreement** (``agreement``): the mean Dice between that mask and the masks of
  ``JITTERS`` boxes whose sides are moved outwards by up to ``JITTER`` of the box's size (the
  training jitter of ``adapt.transforms.prompts.box_from_mask``). A model that knows the object
  returns the same mask for a slightly looser box; one that does not returns something else.

``uncertainty = 1 - (iou + agreement) / 2`` per object; a plane takes its objects' mean, a case its
most uncertain plane (one bad slice is worth a person's look). Planes without a mask are not
scored; a case whose pre-annotation is empty everywhere gets uncertainty 1 (``adapt.annotate.worklist``).

The planes are decoded through the runner's own methods (``Predictor.embed``, ``model_prompts``,
``masks``), the tight box and its jittered copies in one batch per plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adapt.inference.runner import Predictor
from adapt.transforms.prompts import box_from_mask, prompt_rng

JITTER = 0.1
JITTERS = 4


@dataclass
class PlaneScore:
    """One plane's scores (means over its objects)."""

    plane: int
    objects: int
    iou: float
    agreement: float

    @property
    def uncertainty(self) -> float:
        return 1.0 - (self.iou + self.agreement) / 2.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@torch.inference_mode()
def box_masks(predictor: Predictor, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[B, H, W]`` and predicted IoUs ``[B]`` of box prompts ``[B, 4]`` on one plane ``[C, H, W]``."""
    _, height, width = image.shape
    prompts = predictor.model_prompts(height, width, boxes)
    embeddings = [e.expand(len(boxes), *e.shape[1:]) for e in predictor.embed(image[None])]
    prediction = predictor.decode(embeddings, prompts)  # boxes: one candidate each
    iou = prediction.iou.reshape(len(boxes), -1).max(dim=1).values.clamp(0, 1).float().cpu().numpy()
    return Predictor.masks(prediction, height, width).cpu().numpy(), iou


def object_scores(
    predictor: Predictor,
    image: np.ndarray,
    mask: np.ndarray,
    seed: int = 0,
    jitter: float = JITTER,
    jitters: int = JITTERS,
) -> tuple[float, float]:
    """``(iou, agreement)`` of one object's mask ``[H, W]`` on its plane ``image`` ``[C, H, W]``."""
    rng = prompt_rng(seed)
    boxes = np.stack([box_from_mask(mask)] + [box_from_mask(mask, jitter, rng) for _ in range(jitters)])
    masks, iou = box_masks(predictor, image, boxes)
    return float(iou[0]), float(np.mean([dice(masks[0], other) for other in masks[1:]]))


def plane_scores(predictor: Predictor, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[PlaneScore]:
    """Scores of every plane of ``labels`` ``[Z, H, W]`` (label ids) that holds a mask."""
    out = []
    for z in np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1)):
        values = [v for v in np.unique(labels[z]) if v != 0]
        found = [object_scores(predictor, images[z], labels[z] == v, seed=seed + int(z)) for v in values]
        out.append(
            PlaneScore(int(z), len(found), float(np.mean([f[0] for f in found])), float(np.mean([f[1] for f in found])))
        )
    return out
