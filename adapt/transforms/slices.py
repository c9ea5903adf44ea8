"""From a preprocessed case to 2D samples: planes, per-target presence, per-object masks.

Planes of a RAS volume ``[C, X, Y, Z]`` taken along ``slice_axis`` are transposed so rows
run along the second in-plane axis (for axial slices: rows = y, columns = x), which is how
``adapt.inference.io`` lays out the planes it feeds the model. 2D cases are already planes.

Pixels without data (a GeoTIFF's nodata value) carry the label ``NODATA_LABEL`` in a label map
and ``NODATA_MASK`` in every object mask of a sample; they take no part in prompts, the loss or
the metrics (``mark_nodata``, ``split_nodata``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


#: The label id of pixels without data (not a class: no card may use it).
NODATA_LABEL = 65535
#: The value of those pixels in a sample's object masks (uint8 on the loader, float on the device).
NODATA_MASK = 255


def mark_nodata(masks: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``masks`` ``[N, H, W]`` with ``NODATA_MASK`` wherever ``label`` ``[H, W]`` is ``NODATA_LABEL`` (a copy
    only when there is such a pixel)."""
    nodata = label == NODATA_LABEL
    if not nodata.any():
        return masks
    masks = masks.clone() if isinstance(masks, torch.Tensor) else masks.copy()
    masks[:, nodata] = NODATA_MASK
    return masks


def split_nodata(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch's masks ``[B, N, H, W]`` as ``(masks with nodata as background, valid [B, 1, H, W])``;
    ``valid`` is ``None`` when every pixel holds data."""
    nodata = target[:, :1] == NODATA_MASK
    if not bool(nodata.any()):
        return target, None
    return target.masked_fill(nodata, 0), ~nodata


def in_plane_axes(slice_axis: int) -> tuple[int, int]:
    """The two spatial axes of a volume that lie in its slices."""
    return tuple(a for a in range(3) if a != slice_axis)  # type: ignore[return-value]


def plane_view(image: np.ndarray, label: np.ndarray, slice_axis: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``index`` of ``image`` ``[C, X, Y, Z]`` and ``label`` ``[X, Y, Z]`` as ``[C, H, W]`` and
    ``[H, W]`` views (no copy, the volume's dtypes)."""
    where = (slice(None),) * slice_axis + (index,)
    return np.swapaxes(image[(slice(None), *where)], 1, 2), label[where].T


def take_plane(image: np.ndarray, label: np.ndarray, slice_axis: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``index`` of ``image`` ``[C, X, Y, Z]`` and ``label`` ``[X, Y, Z]`` as ``[C, H, W]`` float32
    and ``[H, W]`` contiguous copies."""
    pixels, plane = plane_view(image, label, slice_axis, index)
    return np.ascontiguousarray(pixels, dtype=np.float32), np.ascontiguousarray(plane)


def target_counts(label: np.ndarray, ids: Sequence[int], slice_axis: int | None) -> np.ndarray:
    """Pixels of each target in each slice: ``[slices, targets]`` (a 2D label map is one slice).

    Args:
        label: ``[X, Y, Z]`` label volume or ``[H, W]`` label image.
        ids: label id of each target.
        slice_axis: axis of ``label`` along which slices are taken; ``None`` for 2D.
    """
    label = np.asarray(label)
    if slice_axis is None:
        return np.array([[int((label == i).sum()) for i in ids]], dtype=np.int64)
    axes = in_plane_axes(slice_axis)
    return np.stack([(label == i).sum(axis=axes) for i in ids], axis=1).astype(np.int64)


def object_masks(label: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Binary float masks ``[N, H, W]``, one per label id, from a label map ``[H, W]``."""
    return torch.stack([label == int(i) for i in ids]).float()


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
    device = label.device  # on a GPU too (device transforms): the same float32 arithmetic, the same pixels
    rows = ((torch.arange(size[0], device=device) + 0.5) * (height / size[0])).floor().long().clamp_(max=height - 1)
    cols = ((torch.arange(size[1], device=device) + 0.5) * (width / size[1])).floor().long().clamp_(max=width - 1)
    return label[..., rows[:, None], cols[None, :]]
