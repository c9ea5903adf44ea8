"""PNG, JPEG, BMP and GIF pictures, read with Pillow (a GIF's first frame); masks written as PNG.

A picture is rows x columns (no transpose ever), grey or RGB. Read as an image, palette, alpha,
CMYK and 1-bit files become RGB or grey; read as a label, a palette file keeps its indices (they
are the label ids). A mask is always a PNG: JPEG and BMP inputs get ``<name>.png``, because a lossy
mask would not hold label values exactly. The pixels are integers, so never NaN; JPEG's are
approximate (``lossy``: a binary JPEG mask is thresholded, not read as ids). Colour-coded label maps are
RGB PNGs (``colours``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.formats import Format
from adapt.data.geometry import Grid
from adapt.data.raster import Raster

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: PIL modes converted when a file is read as an image (palette indices only mean something in labels).
IMAGE_MODES = {"P": "RGB", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LA": "L", "1": "L"}


def read(path: Path, as_image: bool = False) -> Raster:
    """Pixels ``[C, H, W]`` (no geometry beyond the size)."""
    from PIL import Image

    with Image.open(path) as img:
        if as_image and img.mode in IMAGE_MODES:
            img = img.convert(IMAGE_MODES[img.mode])
        elif img.mode in ("RGBA", "LA", "CMYK", "YCbCr"):
            img = img.convert("RGB" if img.mode != "LA" else "L")
        array = np.asarray(img)  # a label's palette ('P') stays as its indices
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return Raster(np.ascontiguousarray(array), None, path)


def write(labels: np.ndarray, header: Any, path: Path) -> None:
    """A PNG of ``labels`` ``[H, W]`` (8 or 16 bit), or an RGB PNG of a colour mask ``[H, W, 3]``."""
    from PIL import Image

    Image.fromarray(labels).save(path)


def header_grid(path: Path) -> Grid | None:
    """The picture's size."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return Grid(path, (int(img.size[1]), int(img.size[0])))
    except Exception:  # a broken header: the full read names the problem
        return None


def header_channels(path: Path) -> int | None:
    """The channels the picture is read with as an image (its mode after ``IMAGE_MODES``), from the header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return Image.getmodebands(IMAGE_MODES.get(img.mode, img.mode))
    except Exception:  # a broken header: the full read names the problem
        return None


FORMAT = Format(
    "pillow",
    "PNG/JPEG/BMP/GIF",
    SUFFIXES,
    read,
    write=write,
    mask_suffixes=(".png",),
    header_grid=header_grid,
    header_channels=header_channels,
    label_maximum={".png": 65535, ".jpg": 255, ".jpeg": 255, ".bmp": 255, ".gif": 255},
    lossy=(".jpg", ".jpeg"),
    colours=True,
)
