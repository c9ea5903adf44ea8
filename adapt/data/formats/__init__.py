"""File formats: one module per format, one registry that every reader, writer and check asks.

A format (NIfTI, a DICOM series, PNG/JPEG/BMP pictures, (Geo)TIFF, a folder of video frames) is
one module here that owns everything the project knows about it: the suffixes or the folder test
that recognise it, the reader (pixels and geometry: affine, CRS and transform, nodata), the
writer of a mask in the input's format and geometry, the voxel spacing and its unit, whether
its pixels can hold NaN or infinities (from the header alone), the grid its header describes,
and what ``python -m adapt.data init`` learns from it (DICOM's modality, a GeoTIFF's CRS and
pixel size). Each module ends in one ``FORMAT`` row; ``FORMATS`` collects them by itself, and
the kind names (``Format.name``, the module's name) are the one vocabulary of ``Scan.kind``,
``CaseStats.kind`` and ``data check``.

Before the registry, a format's knowledge was spread over eight modules with two vocabularies
and two DICOM detectors; adding one now means one module and one row of ``tests/test_formats.py``
(``docs/adding_a_format.md``; a new suffix also wants its broken-file writer in
``tests/test_generated_file_faults.py``). The registry imports no heavy library: the door
(``adapt.cli``) reads suffixes before torch loads, and each module imports its file library
(nibabel, pydicom, Pillow, tifffile) only when a file is read or written.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from adapt.data.encoding import INT32_MAX
from adapt.data.geometry import Grid, check_orthogonal
from adapt.data.raster import Raster
from adapt.errors import DataError


@dataclass(frozen=True)
class Format:
    """One file format: what recognises it and what reads, writes and describes its files.

    Attributes:
        name: the kind name (``nifti``, ``dicom``, ...), the project's one vocabulary for formats.
        title: the format in messages (``NIfTI``, ``a DICOM series``).
        suffixes: lower-case file suffixes; for a folder format, those of the files it holds.
        read: ``(path, as_image) -> Raster`` (errors of the file library are wrapped by ``read_raster``).
        folder: a folder is one item (a DICOM series, video frames), recognised by ``holds``.
        holds: folder formats: ``folder -> bool``, whether a folder is one item of this format.
        volume: its items are volumes (an affine in mm), not 2D images.
        write: ``(labels, header, path)``: a mask on the stored grid (``[X, Y, Z]`` volume, ``[H, W]``
            image) in the geometry of ``header`` (``Raster.header``); ``None``: masks are not written.
        mask_suffixes: the suffixes a written mask may have, the first the default (``()`` with a
            writer: the mask is a folder).
        spacing: ``header -> (spacing per stored axis or None, unit)``, in which distances are reported.
        can_hold_nonfinite: ``path -> bool`` from the header alone (``True`` for an unreadable header).
        header_grid: ``path -> Grid | None`` from the header alone (``None``: only a full read tells).
        header_channels: ``path -> int | None``: the image channels the file stores, from the header alone
            (``None``: only a full read tells; such cases are prepared before training starts).
        learn: ``raster -> {CaseStats field: value}``: what ``data init`` learns beyond pixels.
        label_maximum: the largest value a label file of each suffix stores (bounds ``mask_values``).
        lossy: suffixes whose pixels are approximate (a binary mask is thresholded, not read as ids).
        colours: its label files can store colours (RGB pictures: a card's ``mask_values`` may be
            ``#rrggbb``, and ``write`` takes ``[H, W, 3]`` uint8 masks).
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, bool], Raster]
    folder: bool = False
    holds: Callable[[Path], bool] | None = None
    volume: bool = False
    write: Callable[[np.ndarray, Any, Path], None] | None = None
    mask_suffixes: tuple[str, ...] = ()
    spacing: Callable[[Any], tuple[tuple[float, ...] | None, str]] = lambda header: (None, "px")
    can_hold_nonfinite: Callable[[Path], bool] = lambda path: False
    header_grid: Callable[[Path], Grid | None] = lambda path: None
    header_channels: Callable[[Path], int | None] = lambda path: None
    learn: Callable[[Raster], dict[str, Any]] = lambda raster: {}
    label_maximum: dict[str, int] = field(default_factory=dict)
    lossy: tuple[str, ...] = ()
    colours: bool = False

    def usage(self) -> str:
        """How a user supplies it: ``NIfTI (.nii/.nii.gz)``, ``a DICOM series (a folder of .dcm files)``."""
        shown = "/".join(self.suffixes)
        return f"{self.title} (a folder of {shown} files)" if self.folder else f"{self.title} ({shown})"


def _rows() -> dict[str, Format]:
    """The ``FORMAT`` row of every module of this package, by name, folder formats first (the order in
    which a path is recognised): a new module is a new format, with no list to extend."""
    rows = [importlib.import_module(f"{__name__}.{module.name}").FORMAT for module in pkgutil.iter_modules(__path__)]
    return {row.name: row for row in sorted(rows, key=lambda row: (not row.folder, row.name))}


#: Every format, folder formats first.
FORMATS: dict[str, Format] = _rows()


def _known_suffix(name: str) -> str:
    """The longest registered suffix ``name`` ends with (case-insensitive), ``""`` for none."""
    lower = name.lower()
    return max((s for f in FORMATS.values() for s in f.suffixes if lower.endswith(s)), key=len, default="")


def suffix(path: str | Path) -> str:
    """The format suffix of a path, the longest registered one it ends with (``.nii.gz`` counts as one),
    else its last suffix."""
    name = Path(path).name
    return _known_suffix(name) or Path(name.lower()).suffix


def strip_suffix(name: str) -> str:
    """``case_001.nii.gz`` -> ``case_001``; ``a/b.png`` -> ``a/b``: a name without its format suffix."""
    return name[: len(name) - len(_known_suffix(name))]


def for_name(name: str) -> Format | None:
    """The file format a file name has (by suffix), ``None`` for a folder format's member or another file."""
    found = suffix(name)
    return next((f for f in FORMATS.values() if not f.folder and found in f.suffixes), None)


def supported(writable: bool = False) -> str:
    """The formats in words, for messages (``writable``: only those a mask can be written in)."""
    return ", ".join(f.usage() for f in FORMATS.values() if f.write or not writable)


def for_path(path: str | Path, writable: bool = False) -> Format:
    """The format of a file or folder.

    A folder is the first folder format that ``holds`` it; a folder that none holds is read as a
    DICOM series (pydicom reads slices without the ``DICM`` marker too; the read names what is
    missing) unless ``writable`` asks for a format that predict reads and writes.

    Raises:
        DataError: a format the registry does not know (or cannot write), with the supported ones.
    """
    path = Path(path)
    if path.is_dir():
        found = next((f for f in FORMATS.values() if f.folder and f.holds(path)), None)  # type: ignore[misc]
        found = found or (None if writable else FORMATS["dicom"])
    else:
        found = for_name(path.name)
        member = next((f for f in FORMATS.values() if f.folder and suffix(path) in f.suffixes), None)
        if found is None and member is not None:
            raise DataError(f"{path}: a single file of {member.title}; give the folder that holds all of it")
    if found is None or (writable and found.write is None):
        raise DataError(f"{path}: unsupported {'input' if writable else 'file type'}; use {supported(writable)}")
    return found


def read_raster(path: str | Path, as_image: bool = False) -> Raster:
    """Read any supported file into a channel-first ``Raster``.

    Args:
        path: a file, or the folder of a DICOM series or of video frames.
        as_image: pixels to look at rather than label ids: palette, alpha, CMYK and 1-bit
            pictures become RGB or grey (a label file keeps its palette indices); a (Geo)TIFF keeps
            its nodata value.

    Raises:
        DataError: the file is missing, of an unsupported type, truncated or unreadable, or a
            volume's affine is sheared (``adapt.data.geometry.check_orthogonal``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    found = for_path(path)
    try:
        raster = found.read(path, as_image)
    except DataError:
        raise
    except Exception as err:  # every library raises its own types for truncated or foreign files
        raise DataError(
            f"{path}: unreadable as {found.title} ({type(err).__name__}: {err}); re-export or re-download the file"
        ) from None
    check_orthogonal(raster.affine, path)
    if raster.array.size == 0:  # a header that declares an axis of length 0: no pixel to slice or scale
        raise DataError(
            f"{path}: an empty axis (shape {tuple(raster.array.shape[1:])}, {raster.array.shape[0]} "
            f"channel(s)): the file holds no pixels; every axis needs at least one: re-export the file"
        )
    return raster


def can_hold_nonfinite(path: str | Path) -> bool:
    """Whether the pixels of ``path`` may hold NaN or infinities, from its header alone (each format
    says: floating-point storage, a DICOM series' non-finite rescaling); ``True`` for a path of no known
    format, so that the full read reports it."""
    try:
        return FORMATS[for_path(path).name].can_hold_nonfinite(Path(path))
    except DataError:
        return True


def _format_of(path: Path) -> Format | None:
    """The format of a file or folder (``for_path``), ``None`` for one of no known format."""
    try:
        return for_path(path)
    except DataError:
        return None


def header_grid(path: str | Path) -> Grid | None:
    """The grid a file's (or a DICOM series' slices') headers describe, no pixels read; ``None`` for a
    format whose headers do not say (video frames), a path of no known format or headers that cannot be
    read (the full read names the problem)."""
    found = _format_of(Path(path))
    return found.header_grid(Path(path)) if found else None


def header_channels(path: str | Path) -> int | None:
    """The channels an image stores, from its headers alone; ``None`` for a format whose headers do not say,
    a path of no known format, or headers that cannot be read."""
    found = _format_of(Path(path))
    return found.header_channels(Path(path)) if found else None


def mask_name(kind: str, name: str) -> str:
    """The file name of the mask of an input named ``name`` of format ``kind``: the format's default mask
    suffix where the input's suffix is not one of its mask suffixes (a JPEG's mask is a PNG)."""
    found = FORMATS[kind]
    if not found.mask_suffixes or suffix(name) in found.mask_suffixes:
        return name
    return name[: len(name) - len(suffix(name))] + found.mask_suffixes[0]


def mask_suffixes() -> tuple[str, ...]:
    """Every suffix a mask file may have (an output with one of them is a file, not a folder)."""
    return tuple(s for f in FORMATS.values() for s in f.mask_suffixes)


def write_labels(labels: np.ndarray, kind: str, header: Any, path: str | Path, colours: bool = False) -> Path:
    """Write integer label values on the stored grid (``[X, Y, Z]``, ``[H, W]``) as a ``kind`` file in the
    geometry ``header`` describes; stored as uint8 when every value fits, else uint16. ``colours``: ``labels``
    are an RGB mask ``[H, W, 3]`` (``LabelEncoding.encode`` of a colour card), stored as an RGB picture.

    Raises:
        DataError: ``path`` is not named as a mask of this format must be (``*.png`` for a JPEG's mask), a
            file where a folder must be written (a DICOM series' mask), or colours for a format without them.
    """
    found, path = FORMATS[kind], Path(path)
    if found.write is None:
        raise DataError(f"{path}: masks are not written as {found.title}")
    if colours:
        check_colours(kind, path)
    if found.mask_suffixes and suffix(path) not in found.mask_suffixes:
        raise DataError(
            f"{path}: masks of {found.title} inputs are written as {found.title} "
            f"({'/'.join(found.mask_suffixes)}); name the output *{found.mask_suffixes[0]}"
        )
    if not found.mask_suffixes and path.exists() and not path.is_dir():
        raise DataError(f"{path}: the mask of {found.title} is a folder; give a folder as output")
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if colours or labels.max(initial=0) <= 255 else np.uint16
    found.write(np.asarray(labels).astype(dtype), header, path)
    return path


def check_colours(kind: str, path: str | Path) -> None:
    """Refuse a colour mask (a card whose ``mask_values`` are colours) for a format that stores one value per
    pixel (``Format.colours``), naming the file and the ways on."""
    if not FORMATS[kind].colours:
        raise DataError(
            f"{path}: the card's mask_values are colours (#rrggbb), but {FORMATS[kind].title} masks store one "
            "value per pixel; predict on PNG or TIFF images, or pass mask_values=ids to write label ids"
        )


def stores_colours(name: str) -> bool:
    """Whether label files named ``name`` can store colours (``True`` for a name of no known format: the
    card does not say, so reading its files tells)."""
    found = for_name(name)
    return found is None or found.colours


def label_maximum(name: str) -> int:
    """The largest value a label file named ``name`` can store (``INT32_MAX`` when its format sets no bound)."""
    found = suffix(name)
    return next((f.label_maximum[found] for f in FORMATS.values() if found in f.label_maximum), INT32_MAX)


def is_lossy(name: str) -> bool:
    """Whether a file named ``name`` stores approximate pixels (JPEG)."""
    return suffix(name) in {s for f in FORMATS.values() for s in f.lossy}
