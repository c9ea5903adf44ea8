"""DICOM series: a folder of slices, read in HU and placed in RAS; masks written as a derived series.

A series is a folder (one file per slice, ``.dcm`` or suffix-less with the ``DICM`` marker);
``is_series`` is the project's one test for it. Slices are sorted along the slice normal and
refused when the series is uneven (a missing, duplicate or moved slice would stretch the volume
silently); positions are LPS in DICOM and converted to RAS, the convention of NIfTI and MONAI.
A mask is a series beside it: the input's headers with the mask as pixels, no rescaling or window.
Pixels are integers: only a non-finite rescale slope or intercept can make them NaN.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.formats import Format
from adapt.data.geometry import Grid
from adapt.data.raster import Raster
from adapt.errors import DataError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Slice files looked at to recognise a series (the first ones by name).
PROBED_FILES = 8
SUFFIXES = (".dcm",)


def slice_files(folder: Path) -> list[Path]:
    """The files of a series folder, by name (hidden files left out)."""
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def is_series(folder: Path) -> bool:
    """A folder whose files (at least one of the first few by name) are DICOM: a ``.dcm`` suffix or the
    ``DICM`` marker at byte 128."""
    if not folder.is_dir():
        return False
    for f in slice_files(folder)[:PROBED_FILES]:
        if f.name.lower().endswith(SUFFIXES):
            return True
        with open(f, "rb") as fh:
            if fh.read(132)[128:] == b"DICM":
                return True
    return False


def series(path: Path, datasets: list[Any]) -> list[Any]:
    """The slices of a series folder's datasets, as ``read`` takes them: those with pixel data, of one
    series, placed in space, sorted along the slice normal, evenly spaced.

    Raises:
        DataError: no slice, several series, a slice that cannot be placed, uneven slices (names the file).
    """
    slices = [ds for ds in datasets if "PixelData" in ds]
    if not slices:
        raise DataError(f"{path}: no DICOM file with pixel data in this folder")
    if len({ds.get("SeriesInstanceUID") for ds in slices}) > 1:
        raise DataError(f"{path}: holds more than one DICOM series; put each series in its own folder")
    for ds in slices:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds:
                raise DataError(
                    f"{path}: slice {Path(ds.filename).name} has no {keyword}; the series cannot be placed in space"
                )
    slices.sort(key=_slice_position)
    _check_slice_steps(path, slices)
    return slices


def read(path: Path, as_image: bool = False) -> Raster:
    """A folder holding one DICOM series, sorted along the slice normal, in HU (rescaled); ``header`` is the
    position-sorted datasets (the writer's templates)."""
    import pydicom

    slices = series(path, [pydicom.dcmread(f, force=True) for f in slice_files(path)])
    planes = [
        ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        for ds in slices
    ]
    if len({p.shape for p in planes}) > 1:
        raise DataError(f"{path}: slices of different sizes {sorted({p.shape for p in planes})}")
    volume = np.stack([p.T for p in planes], axis=-1)[None]  # voxel (i, j, k) = (column, row, slice)
    return Raster(np.ascontiguousarray(volume), dicom_affine(slices), path, slices)


def _check_slice_steps(path: Path, slices: list[Any]) -> None:
    """Refuse a series whose slices are not evenly spaced along the normal.

    The affine steps from the first slice to the last in equal parts, so a missing file, a
    duplicate or a change of slice distance would silently stretch the volume (and its label
    from the full series would no longer fit). Steps may differ by 1 % (or 0.01 mm).
    """
    if len(slices) < 3:
        return
    positions = np.array([_slice_position(ds) for ds in slices])
    steps = np.diff(positions)
    step = float(np.median(steps))
    tolerance = max(0.01, 0.01 * abs(step))
    for k, gap in enumerate(steps):
        if abs(gap - step) <= tolerance:
            continue
        first, second = Path(slices[k].filename).name, Path(slices[k + 1].filename).name
        where = f"between {first} (at {positions[k]:.2f} mm) and {second} (at {positions[k + 1]:.2f} mm)"
        if gap <= tolerance:
            problem = f"two slices at the same position {where}: a duplicate file or two series in one folder"
        elif abs(gap / step - round(gap / step)) * step <= tolerance:
            problem = (
                f"{round(gap / step) - 1} slice(s) missing {where}: a gap of {gap:.2f} mm where the series "
                f"steps {step:.2f} mm"
            )
        else:
            problem = f"uneven slice distance {where}: {gap:.2f} mm where the series steps {step:.2f} mm"
        raise DataError(
            f"{path}: {problem}; restore the missing or extra files (or re-export the whole series), "
            "or convert it to NIfTI with a tool that resamples uneven series (e.g. dcm2niix)"
        )


def _slice_position(ds: Any) -> float:
    """Position along the slice normal: ``ImagePositionPatient . (row x column direction)``."""
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    return float(np.dot(np.cross(row, col), np.array(ds.ImagePositionPatient, float)))


def dicom_affine(datasets: list[Any]) -> np.ndarray:
    """Voxel ``(column, row, slice)`` -> RAS mm of a position-sorted series (DICOM itself is LPS).

    x runs along a row (column spacing, ``PixelSpacing[1]``), y down a column (row spacing,
    ``PixelSpacing[0]``), z from the first slice's position to the last's.
    """
    first = datasets[0]
    row, col = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.array(first.ImagePositionPatient, float)
    if len(datasets) > 1:
        step = (np.array(datasets[-1].ImagePositionPatient, float) - origin) / (len(datasets) - 1)
    else:
        step = np.cross(row, col) * float(first.get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = row * col_spacing, col * row_spacing, step, origin
    return LPS_TO_RAS @ affine


#: The slice files of a mask series this writer names (``mask_0000.dcm``, ...).
MASK_SLICE = re.compile(r"mask_\d{4,}\.dcm")


def write(labels: np.ndarray, slices: list[Any], path: Path) -> None:
    """A derived series in the folder ``path``: every slice's headers (geometry, patient, study) with the
    mask ``[X, Y, Z]`` as pixels, a new series UID and number. It replaces a mask series written there
    before as a whole: the slices of a longer one would stay beside it, and the folder hold two series."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.mkdir(parents=True, exist_ok=True)
    names = [f"mask_{k:04d}.dcm" for k in range(len(slices))]
    for stale in set(p.name for p in path.iterdir() if MASK_SLICE.fullmatch(p.name)) - set(names):
        (path / stale).unlink()
    series_uid = generate_uid()
    for k, source in enumerate(slices):
        plane = np.ascontiguousarray(labels[:, :, k].T)
        ds = copy.deepcopy(source)
        for keyword in (
            "WindowCenter",
            "WindowWidth",
            "RescaleSlope",
            "RescaleIntercept",
            "RescaleType",
            "VOILUTSequence",
            "ModalityLUTSequence",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        bits = 8 if plane.dtype == np.uint8 else 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = plane.tobytes()
        ds.ImageType = ["DERIVED", "SECONDARY", "MASK"]
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.SeriesDescription = "sam2-adapt mask"
        ds.SeriesNumber = int(source.get("SeriesNumber", 0) or 0) + 1000
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path / names[k], enforce_file_format=True)


def header_series(path: Path) -> list[Any] | None:
    """The slices ``read`` would take, from their headers alone (pixel data deferred: not read), or
    ``None`` where ``read`` would refuse the folder or its slices differ in size or are not one grey
    channel (the full read names the problem).

    A folder's headers are parsed once for each state of its files (names, sizes, times): the early
    start's label pass asks a case's channels and then its grid, ``evaluate``'s checks its grid twice,
    and each parse reads every slice file.
    """
    try:
        state = tuple((f.name, stat.st_size, stat.st_mtime_ns) for f in slice_files(path) for stat in [f.stat()])
    except OSError:
        return None
    slices = _parsed_series(path, state)
    return None if slices is None else list(slices)


@functools.lru_cache(maxsize=16)
def _parsed_series(path: Path, state: tuple) -> tuple[Any, ...] | None:
    """``header_series`` of ``path`` in the file ``state`` (the cache key)."""
    import pydicom

    try:
        slices = series(path, [pydicom.dcmread(path / name, force=True, defer_size="1 KB") for name, *_ in state])
        sizes = {(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))) for ds in slices}
    except Exception:
        return None
    return tuple(slices) if len(sizes) == 1 and next(iter(sizes))[2] == 1 else None


def series_name(path: Path) -> str:
    """A folder name for the series in ``path``: its SeriesInstanceUID (digits and dots), the one name no
    other series shares -- slice files uploaded without their folder (a browser sends files) have no other
    name, and a mask named after it never replaces another series' mask. ``path``'s own name where the
    headers give none (the full read names the problem)."""
    slices = header_series(path)
    uid = str(slices[0].get("SeriesInstanceUID") or "") if slices else ""
    return uid if re.fullmatch(r"\d[\d.]*", uid) else path.name


def header_grid(path: Path) -> Grid | None:
    """The grid ``read`` gives, ``(columns, rows, slices)`` and ``dicom_affine``, from the slices' headers:
    a DICOM case can then be listed from its label before its pixels are read (the early start)."""
    slices = header_series(path)
    if slices is None:
        return None
    return Grid(path, (int(slices[0].Columns), int(slices[0].Rows), len(slices)), dicom_affine(slices))


def header_channels(path: Path) -> int | None:
    """One channel for a series ``read`` takes (grey slices), from the headers; ``None`` otherwise."""
    return None if header_series(path) is None else 1


def spacing(slices: list[Any]) -> tuple[tuple[float, ...] | None, str]:
    """Voxel size (mm) along the stored axes, from the series' affine."""
    return tuple(float(v) for v in np.linalg.norm(dicom_affine(slices)[:3, :3], axis=0)), "mm"


def can_hold_nonfinite(path: Path) -> bool:
    """A slice whose rescale slope or intercept is not finite (its pixels are integers)."""
    import pydicom

    try:
        for file in slice_files(path):
            ds = pydicom.dcmread(file, force=True, stop_before_pixels=True)
            scaling = (float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0)))
            if not np.isfinite(scaling).all():
                return True
        return False
    except Exception:  # a broken header: the full read names the problem
        return True


def learn(raster: Raster) -> dict[str, Any]:
    """The series' ``Modality`` (``CT``, ``MR``, ...), a hint for the card's modality."""
    value = raster.header[0].get("Modality") if raster.header else None
    return {"modality": str(value) if value else None}


FORMAT = Format(
    "dicom",
    "a DICOM series",
    SUFFIXES,
    read,
    folder=True,
    holds=is_series,
    volume=True,
    write=write,
    spacing=spacing,
    can_hold_nonfinite=can_hold_nonfinite,
    header_grid=header_grid,
    header_channels=header_channels,
    learn=learn,
)
