"""What a reader gives back: a file's pixels, channel first, and the geometry that places them.

Every format of ``adapt.data.formats`` reads a file into a ``Raster``: a channel-first array
(``[C, X, Y, Z]`` for volumes, ``[C, H, W]`` for images) and, for volumes, the voxel-to-RAS affine
in millimetres, plus the header its writer needs to put a mask into the same geometry. It lives
apart from the registry so that each format module can build one without importing the others;
``label_plane`` turns a label file's raster into label ids with the card's encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.encoding import LabelEncoding


@dataclass
class Raster:
    """Pixels of one file, channel first, and the geometry needed to place them.

    Attributes:
        array: ``[C, X, Y, Z]`` (volume) or ``[C, H, W]`` (image).
        affine: voxel index to RAS millimetres (volumes), ``None`` for images.
        path: the file or folder it came from (named in every error).
        header: what a writer needs to put a mask in the same geometry: the ``nibabel`` image
            (NIfTI), the position-sorted ``pydicom`` datasets (DICOM), the GeoTIFF
            georeferencing tags as tifffile ``extratags`` (TIFF), ``None`` otherwise.
        nodata: a (Geo)TIFF image's GDAL nodata value (read as an image only: a label's is ignored).
    """

    array: np.ndarray
    affine: np.ndarray | None
    path: Path
    header: Any = None
    nodata: float | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def valid(self) -> np.ndarray | None:
        """Pixels that hold data ``[H, W]`` (bool): not the nodata value in every band; ``None`` without a
        nodata value (every pixel holds data)."""
        if self.nodata is None:
            return None
        value, dtype = float(self.nodata), self.array.dtype
        if np.isnan(value):
            missing = np.isnan(self.array) if np.issubdtype(dtype, np.floating) else np.zeros(self.array.shape, bool)
        elif np.issubdtype(dtype, np.integer) and (
            value != int(value) or not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max
        ):
            missing = np.zeros(self.array.shape, bool)  # a value the pixels cannot hold: none is missing
        else:
            missing = self.array == value
        return ~np.all(missing, axis=0)

    def data_pixels(self) -> np.ndarray:
        """``array`` with nodata pixels set to 0 (a NaN nodata value is no fault: ``valid`` marks it)."""
        valid = self.valid()
        if valid is None or valid.all():
            return self.array
        return np.where(valid, self.array, 0).astype(self.array.dtype)


def label_plane(raster: Raster, encoding: LabelEncoding | float | None = None) -> np.ndarray:
    """The single-channel label ids of a label file (integers), decided for this file.

    Args:
        raster: the label file as read.
        encoding: how the dataset stores its labels (``LabelEncoding.of_card``: the card's
            ``mask_values`` and ``mask_threshold``), or a bare threshold for masks stored as lossy
            greyscale/RGB images (pixels at or above it become 1, others 0); ``None`` keeps the
            stored integer values.

    Raises:
        DataError: several different channels (a colour-coded label map) without a threshold, values
            the encoding does not know, non-finite or non-integer values.
    """
    if not isinstance(encoding, LabelEncoding):
        encoding = LabelEncoding(threshold=encoding)
    return encoding.decode(raster.array, raster.path)
