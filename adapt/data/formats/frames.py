"""Video frames: a folder of PNG/JPEG/BMP pictures, one per frame, read as a volume ``[C, X, Y, T]``.

Frame ``t`` is slice ``t`` along axis 2, so slicing along that axis gives the frames back exactly;
each frame's rows and columns become ``Y`` and ``X`` (as a single-slice volume stores them) and
the affine is the identity (pixel units, one frame per unit of time), which orientation to RAS
leaves unchanged. Frames are read as pictures (``adapt.data.formats.pillow``); masks of frames are
not written (predict takes files and DICOM series), and their pixels are never NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapt.data.formats import Format, pillow
from adapt.data.raster import Raster
from adapt.errors import DataError


def frame_files(folder: Path) -> list[Path]:
    """The pictures of a frame folder, in name order (``00000.jpg``, ``00001.jpg``, ...)."""
    return sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(pillow.SUFFIXES))


def holds(folder: Path) -> bool:
    """A folder holding at least one picture."""
    return bool(frame_files(folder))


def read(path: Path, as_image: bool = False) -> Raster:
    """The frames stacked along the last axis; every frame must have one size."""
    frames = [pillow.read(f, as_image).array for f in frame_files(path)]
    if len({f.shape for f in frames}) > 1:
        raise DataError(
            f"{path}: frames of different sizes or channels {sorted({f.shape for f in frames})}; "
            "every frame of a sequence must have the same size"
        )
    volume = np.stack([np.swapaxes(f, 1, 2) for f in frames], axis=-1)
    return Raster(np.ascontiguousarray(volume), np.eye(4), path)


FORMAT = Format("frames", "video frames", pillow.SUFFIXES, read, folder=True, holds=holds, volume=True)
