"""``LoadCased``: read a case's image and label and check that they belong together.

This is the first MONAI dictionary transform of the preprocessing chain. It turns
``{"case", "image": path, "label": path}`` into channel-first tensors (MONAI ``MetaTensor``
with the voxel-to-RAS affine for volumes), keeping only the card's ``intensity.channels``,
and refuses, with the file named, every mismatch a later step would silently get wrong:
image and label on different grids (shape, affine, GeoTIFF CRS and transform: ``adapt.data.geometry``),
label ids the card does not list,
fewer channels or bands than the card selects, NaN or infinite pixels (unless the card's
``intensity.nonfinite`` says to replace them), an empty (zero-length) axis. A GeoTIFF's nodata
pixels (GDAL_NODATA) are marked: ``valid`` for the intensity step, ``NODATA_LABEL`` in the label map.

What one case cannot show is checked across cases as they are indexed (``odd_channels``): a
case whose image has another number of channels than the others (an RGB copy among grey
PNGs, a NIfTI whose 4th axis holds 3 time points) would otherwise reach the batch collation as
a tensor-size error; it is named with the files instead, before training starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from adapt.data.cards import DataCard
from adapt.data.encoding import LabelEncoding, present_ids
from adapt.data.geometry import check_same_grid, raster_grid
from adapt.data.formats import read_raster
from adapt.data.raster import Raster, label_plane
from adapt.errors import DataError
from adapt.guards import finite_pixels
from adapt.transforms.slices import NODATA_LABEL

log = logging.getLogger(__name__)


class LoadCased(MapTransform):
    """Read and validate one case.

    Args:
        card: the data card (dims, labels, channels, mask threshold).

    Output keys: ``image`` (``[C, X, Y, Z]`` or ``[C, H, W]``), ``label`` (``[1, ...]``
    integers), ``source_dtype`` (the image file's dtype name: 8-bit files scale by /255),
    and for volumes ``source_affine`` / ``source_shape`` (the stored grid, to map masks back).
    """

    def __init__(self, card: DataCard) -> None:
        super().__init__(keys=("image", "label"))
        self.card = card
        self.encoding = LabelEncoding.of_card(card)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        image = read_raster(item["image"], as_image=True)
        label = read_raster(item["label"])
        plane = label_plane(label, self.encoding)
        valid = image.valid()
        image_array = finite_pixels(
            self._channels(image, image.data_pixels()), image.path, self.card.intensity.get("nonfinite", "error")
        )
        if self.card.dims == 3:
            image_array, plane = self._check_volume(image, label, image_array, plane)
            affine = torch.as_tensor(image.affine, dtype=torch.float64)
            item["image"] = MetaTensor(torch.from_numpy(image_array), affine=affine)
            item["label"] = MetaTensor(torch.from_numpy(plane[None]), affine=affine.clone())
            item["source_affine"], item["source_shape"] = image.affine, tuple(plane.shape)
        else:
            image_array, plane = _as_image(image, image_array), _as_image(label, plane[None])[0]
            check_same_grid(raster_grid(image, image_array.shape[1:]), raster_grid(label, plane.shape))
            if valid is not None and not valid.all() and valid.shape == plane.shape:
                # No data here: kept out of the intensity statistics, the loss and the metrics.
                item["valid"] = valid
                plane = np.where(valid, plane.astype(np.int64, copy=False), NODATA_LABEL)  # uint8 ids cannot hold it
            # a decoded PNG (``np.asarray`` of a PIL image) is read-only, which torch warns about: copied then
            writable = lambda array: torch.from_numpy(np.require(array, requirements="W"))  # noqa: E731
            item["image"], item["label"] = writable(image_array), writable(plane[None])
        check_label_ids(plane, label.path, self.card)
        item["source_dtype"] = str(image.array.dtype)
        return item

    def _channels(self, image: Raster, pixels: np.ndarray) -> np.ndarray:
        wanted = chosen_channels(self.card, pixels.shape[0], image.path, volume=image.affine is not None)
        return pixels if wanted is None else pixels[wanted]

    def _check_volume(
        self, image: Raster, label: Raster, array: np.ndarray, plane: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if image.affine is None:
            raise DataError(
                f"{image.path}: a 2D image, but the data card {self.card.name!r} has dims: 3; "
                f"use NIfTI or DICOM volumes, or a 2D card"
            )
        if label.affine is None:
            raise DataError(f"{label.path}: a 2D image as the label of volume {image.path}; use a NIfTI label map")
        check_same_grid(raster_grid(image), raster_grid(label, plane.shape))
        return array, plane


def chosen_channels(card: DataCard, count: int, path: Path | str, volume: bool = True) -> list[int] | None:
    """The channels of an image of ``count`` channels that go in (the card's ``intensity.channels``;
    ``None``: all of them); also what the label-only pass of an early start (``adapt.data.label_index``)
    checks against a header.

    Raises:
        DataError: no channel choice for an image of neither 1 nor 3 channels, or a choice the file lacks.
    """
    wanted = card.intensity.get("channels")
    if wanted is None:
        if count not in (1, 3):
            raise DataError(
                f"{path}: {count} channels; choose which go in with intensity.channels "
                f"in the data card (e.g. [0], [2, 1, 0], or all {count} for a learned input projection)"
            )
        return None
    if max(wanted) >= count:
        noun = "channels" if volume else "bands"
        raise DataError(
            f"{path}: has {count} {noun}, the data card asks for {noun} {list(wanted)} "
            f"(intensity.channels, 0-based); fix the card or the file"
        )
    return list(wanted)


def check_label_ids(plane: np.ndarray, path: Path | str, card: DataCard) -> None:
    """Refuse label ids the card does not list (nodata aside).

    Raises:
        DataError: naming the file, the ids and the card's labels.
    """
    unknown = sorted(set(present_ids(plane).tolist()) - set(card.labels.values()) - {NODATA_LABEL})
    if unknown:
        raise DataError(
            f"{path}: label ids {unknown} are not in the data card's labels "
            f"{card.labels}; add them to the card or fix the label file"
        )


def _as_image(raster: Raster, array: np.ndarray) -> np.ndarray:
    """2D pixels ``[C, H, W]``; a single-slice volume (e.g. a 2D NIfTI) becomes rows x columns."""
    if raster.affine is None:
        return array
    if array.shape[-1] != 1:
        raise DataError(f"{raster.path}: a volume with {array.shape[-1]} slices, but the data card has dims: 2")
    return np.ascontiguousarray(np.swapaxes(array[..., 0], 1, 2))


def odd_channels(found: Mapping[str, tuple[Any, int]], skip_bad_cases: bool = False) -> set[str]:
    """The cases whose image has another channel count than most cases (``found``: case id ->
    ``(case, channels)`` as indexed, over every split).

    Returns:
        the ids of the odd cases, to be left out (only with ``skip_bad_cases``; they are warned about).

    Raises:
        DataError: naming the odd files, their channels and a file of the common count, with the fixes.
    """
    counts = Counter(channels for _, channels in found.values())
    if len(counts) <= 1:
        return set()
    common = counts.most_common(1)[0][0]
    odd = sorted(key for key, (_, channels) in found.items() if channels != common)
    example = next(case for case, channels in found.values() if channels == common)
    listed = ", ".join(f"{found[key][0].image} ({found[key][1]})" for key in odd[:5]) + (" ..." if len(odd) > 5 else "")
    message = (
        f"cases differ in image channels: {len(found) - len(odd)} have {common} (e.g. {example.image}), "
        f"{len(odd)} do not: {listed}. A batch needs one channel count: convert the odd files (an RGB copy "
        "among grey images saved as greyscale; a NIfTI's 4th axis is its channels or time points), or pick "
        "the same channels of every file with intensity.channels in the data card (e.g. [0])"
    )
    if not skip_bad_cases:
        raise DataError(message + ", or set data.skip_bad_cases=true to leave them out")
    log.warning("skipping %d case(s): %s", len(odd), message)
    return set(odd)
