"""The deterministic, cacheable part of preprocessing: file -> model-ready case.

One MONAI ``Compose`` per card, run once per case (then cached, see ``adapt.data.cache``):

* 3D: ``LoadCased`` (read, validate, keep the card's channels) -> ``Orientationd`` to RAS ->
  ``Spacingd`` to the card's ``spacing`` (optional; 2 values resample in-plane only and keep
  the spacing along ``slice_axis``) -> ``ScaleIntensityCardd``.
* 2D: ``LoadCased`` -> ``ScaleIntensityCardd`` -> ``ShrinkToFit`` (images larger than the
  model's input side are shrunk, aspect kept, so the cache stays small and augmentation
  cheap; smaller ones keep their pixels).

Random steps (slice and prompt choice, augmentation on the plane's own grid) and the final
stretch to the model's square input come after, per sample.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, MapTransform, Orientationd, Spacingd

from adapt.data.cards import DataCard
from adapt.transforms.intensity import ScaleIntensityCardd
from adapt.transforms.io import LoadCased


def resize_image(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``[C, H, W]`` pixels in [0, 1] to ``size`` (bilinear, antialiased when shrinking, pixel centres
    aligned); clamped, since the filter's rounding can step a hair past 1."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == size:
        return image.float()
    shrink = image.shape[-2] > size[0] or image.shape[-1] > size[1]
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return resized[0].clamp_(0.0, 1.0)


def resize_label(label: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``[..., H, W]`` integer labels to ``size`` by the nearest pixel centre (ids never blend).

    The source pixel of output pixel ``o`` is ``floor((o + 0.5) * in / out)``: PyTorch's
    ``nearest-exact``, which lines up with bilinear ``align_corners=False`` resizing of the
    image, done by indexing so labels keep their dtype and no float copy is made.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    height, width = label.shape[-2:]
    if (height, width) == size:
        return label
    rows = ((torch.arange(size[0]) + 0.5) * (height / size[0])).floor().long().clamp_(max=height - 1)
    cols = ((torch.arange(size[1]) + 0.5) * (width / size[1])).floor().long().clamp_(max=width - 1)
    return label[..., rows[:, None], cols[None, :]]


class ShrinkToFit(MapTransform):
    """2D ``image`` ``[C, H, W]`` and ``label`` ``[1, H, W]`` shrunk so the longer side is at most ``side``.

    The aspect ratio is kept; the per-sample stretch to ``side x side`` (what inference does
    with a plane of any shape) comes later, after augmentation.
    """

    def __init__(self, side: int) -> None:
        super().__init__(keys=("image", "label"))
        self.side = int(side)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        image = torch.as_tensor(np.asarray(item["image"]))
        height, width = image.shape[-2:]
        scale = self.side / max(height, width)
        if scale < 1:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            item["image"] = resize_image(image, size)
            item["label"] = resize_label(torch.as_tensor(np.asarray(item["label"])), size)
        return item


def target_pixdim(card: DataCard) -> tuple[float, float, float] | None:
    """The card's ``spacing`` as three values for ``Spacingd`` (-1 keeps an axis' own spacing)."""
    if card.spacing is None:
        return None
    if len(card.spacing) == 3:
        return tuple(float(s) for s in card.spacing)
    in_plane = iter(float(s) for s in card.spacing)
    return tuple(-1.0 if axis == card.slice_axis else next(in_plane) for axis in range(3))


def case_transforms(card: DataCard, image_size: int | None = None) -> Compose:
    """The deterministic preprocessing of one case (see the module doc).

    Args:
        card: the data card.
        image_size: model input side; 2D images larger than it are shrunk here (aspect kept).
    """
    steps: list[Any] = [LoadCased(card)]
    if card.dims == 3:
        steps.append(Orientationd(keys=("image", "label"), axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))))
        pixdim = target_pixdim(card)
        if pixdim is not None:
            steps.append(Spacingd(keys=("image", "label"), pixdim=pixdim, mode=("bilinear", "nearest"),
                                  dtype=(np.float32, np.float32)))
    steps.append(ScaleIntensityCardd(card.intensity))
    if card.dims == 2 and image_size:
        steps.append(ShrinkToFit(image_size))
    return Compose(steps)
