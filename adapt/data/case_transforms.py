"""The deterministic, cacheable part of preprocessing: file -> model-ready case.

One MONAI ``Compose`` per card, run once per case (then cached, see ``adapt.data.cache``):

* 3D: ``LoadCased`` (read, validate, keep the card's channels) -> ``Orientationd`` to RAS ->
  ``Spacingd`` to the card's ``spacing`` (optional; 2 values resample in-plane only and keep
  the spacing along ``slice_axis``) -> ``ScaleIntensityCardd``.
* 2D: ``LoadCased`` -> ``ScaleIntensityCardd``; pixels keep their native size.

Random steps (slice and prompt choice, augmentation on the plane's own grid) and the one
resize to the model's square input (``adapt.models.primitives.resize_image``, SAM2's) come
after, per sample. Nothing is resized here: a second resize before that one would make the
training input differ from what prediction and SAM2 itself feed the model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from monai.transforms import Compose, Orientationd, Spacingd

from adapt.data.cards import DataCard
from adapt.transforms.intensity import ScaleIntensityCardd
from adapt.data.load import LoadCased


def target_pixdim(spacing: Sequence[float | None] | None, slice_axis: int) -> tuple[float, float, float] | None:
    """A card's ``spacing`` as three values for ``Spacingd`` (-1 keeps an axis' own spacing).

    Two values resample in-plane only; ``null`` in a list of three keeps that axis.
    """
    if spacing is None:
        return None
    if len(spacing) == 3:
        return tuple(-1.0 if s is None else float(s) for s in spacing)  # type: ignore[return-value]
    in_plane = iter(-1.0 if s is None else float(s) for s in spacing)
    return tuple(-1.0 if axis == slice_axis else next(in_plane) for axis in range(3))  # type: ignore[return-value]


def grid_transforms(keys: Sequence[str], modes: Sequence[str], pixdim: Sequence[float] | None) -> list[Any]:
    """Volumes to the model's grid: reoriented to RAS, resampled to ``pixdim`` when given.

    Training (``case_transforms``) and inference (``adapt.inference.io.read_scan``) both call
    this, so a volume reaches the model on the same grid by either route.
    """
    steps: list[Any] = [Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if pixdim is not None:
        steps.append(
            Spacingd(keys=keys, pixdim=tuple(pixdim), mode=tuple(modes), dtype=tuple(np.float32 for _ in keys))
        )
    return steps


def case_transforms(card: DataCard) -> Compose:
    """The deterministic preprocessing of one case (see the module doc).

    Args:
        card: the data card.
    """
    steps: list[Any] = [LoadCased(card)]
    if card.dims == 3:
        steps += grid_transforms(
            ("image", "label"), ("bilinear", "nearest"), target_pixdim(card.spacing, card.slice_axis)
        )
    steps.append(ScaleIntensityCardd(card.intensity))
    return Compose(steps)
