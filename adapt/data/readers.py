"""File readers: NIfTI, DICOM series, PNG/JPEG/BMP, TIFF and multi-band GeoTIFF.

Every reader returns a ``Raster``: a channel-first array (``[C, X, Y, Z]`` for volumes,
``[C, H, W]`` for images) and, for volumes, the voxel-to-RAS affine in millimetres. The
readers are ours rather than MONAI's ``LoadImage`` so that a user's broken file gives one
``DataError`` naming the file and the problem (missing, truncated, unreadable, too few
bands) instead of a stack trace from inside a third-party library.

Conventions:
    * volumes keep the file's voxel order; ``adapt.data.case_transforms`` reorients them to RAS;
    * DICOM positions (LPS) are converted to RAS, the convention of NIfTI and MONAI;
    * 2D images are rows x columns, so no transpose is ever needed for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.encoding import LabelEncoding, nonfinite_label  # noqa: F401 (nonfinite_label: re-exported)
from adapt.data.geometry import check_orthogonal
from adapt.errors import DataError

log = logging.getLogger(__name__)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
KIND_NAMES = {"nifti": "NIfTI", "dicom": "a DICOM series", "frames": "video frames", "pil": "PNG/JPEG/BMP",
              "tiff": "(Geo)TIFF"}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: GeoTIFF tags that carry the CRS and the pixel-to-map transform (GDAL nodata is not kept:
#: an image's nodata value would mark a mask's background as missing).
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)
#: GDAL's nodata tag: the pixel value (as text) that marks "no data" in every band.
GDAL_NODATA = 42113
#: PIL modes converted when a file is read as an image (palette indices only mean something in labels).
IMAGE_MODES = {"P": "RGB", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LA": "L", "1": "L"}


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
        elif np.issubdtype(dtype, np.integer) and (value != int(value) or not
                                                    np.iinfo(dtype).min <= value <= np.iinfo(dtype).max):
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


def file_kind(path: Path) -> str:
    """``nifti``, ``dicom`` (a folder of slices), ``frames`` (a folder of PNG/JPEG video frames),
    ``pil`` or ``tiff``, from the name."""
    name = path.name.lower()
    if path.is_dir():
        return "frames" if frame_files(path) else "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(".dcm"):
        raise DataError(f"{path}: a single DICOM file; give the folder that holds the whole series")
    raise DataError(f"{path}: unsupported file type; use NIfTI (.nii/.nii.gz), a DICOM series folder, "
                    f"PNG/JPEG/BMP, or (Geo)TIFF")


def read_raster(path: str | Path, as_image: bool = False) -> Raster:
    """Read any supported file into a channel-first ``Raster``.

    Args:
        path: a file, or the folder of a DICOM series.
        as_image: pixels to look at rather than label ids: palette, alpha, CMYK and 1-bit
            PNG/JPEG/BMP files become RGB or grey (a label file keeps its palette indices).

    Raises:
        DataError: the file is missing, of an unsupported type, truncated or unreadable, or a
            volume's affine is sheared (``adapt.data.geometry.check_orthogonal``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    kind = file_kind(path)
    try:
        if kind == "pil":
            raster = _read_pil(path, as_image)
        elif kind == "frames":
            raster = _read_frames(path, as_image)
        elif kind == "tiff":
            raster = _read_tiff(path, as_image)
        else:
            raster = {"nifti": _read_nifti, "dicom": _read_dicom}[kind](path)
    except DataError:
        raise
    except Exception as err:  # every library raises its own types for truncated or foreign files
        raise DataError(f"{path}: unreadable as {KIND_NAMES[kind]} ({type(err).__name__}: {err}); "
                        f"re-export or re-download the file") from None
    check_orthogonal(raster.affine, path)
    if raster.array.size == 0:  # a header that declares an axis of length 0: no pixel to slice or scale
        raise DataError(f"{path}: an empty axis (shape {tuple(raster.array.shape[1:])}, {raster.array.shape[0]} "
                        f"channel(s)): the file holds no pixels; every axis needs at least one: re-export the file")
    return raster


def can_hold_nonfinite(path: str | Path) -> bool:
    """Whether the pixels of ``path`` may hold NaN or infinities, from its header alone: only
    floating-point storage can (NIfTI, TIFF; nibabel drops a non-finite NIfTI scaling), or a
    DICOM series whose rescale slope or intercept is not finite (its pixels are integers).
    PNG/JPEG/BMP and video frames never can. An unreadable header answers ``True``, so the full read reports it.
    """
    path = Path(path)
    try:
        kind = file_kind(path)
        if kind in ("pil", "frames"):
            return False
        if kind == "nifti":
            import nibabel as nib

            return bool(np.issubdtype(nib.load(path).get_data_dtype(), np.floating))
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return bool(np.issubdtype(tif.series[0].dtype, np.floating))
        import pydicom

        for file in (f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")):
            ds = pydicom.dcmread(file, force=True, stop_before_pixels=True)
            scaling = (float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0)))
            if not np.isfinite(scaling).all():
                return True
        return False
    except Exception:  # a broken header: the full read names the problem
        return True


def frame_files(folder: Path) -> list[Path]:
    """The PNG/JPEG/BMP frames of a video folder, in name order (``00000.jpg``, ``00001.jpg``, ...)."""
    return sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(PIL_SUFFIXES))


def _read_frames(path: Path, as_image: bool) -> Raster:
    """A folder of video frames as a volume ``[C, X, Y, T]``: frame ``t`` is slice ``t`` along axis 2.

    Each frame's rows and columns become ``Y`` and ``X`` (as a single-slice volume stores them),
    so slicing along axis 2 gives back the frames exactly; the affine is the identity (pixel
    units, one frame per unit of time), which orientation to RAS leaves unchanged.
    """
    frames = [_read_pil(f, as_image).array for f in frame_files(path)]
    if len({f.shape for f in frames}) > 1:
        raise DataError(f"{path}: frames of different sizes or channels {sorted({f.shape for f in frames})}; "
                        "every frame of a sequence must have the same size")
    volume = np.stack([np.swapaxes(f, 1, 2) for f in frames], axis=-1)
    return Raster(np.ascontiguousarray(volume), np.eye(4), path)


def _read_nifti(path: Path) -> Raster:
    import nibabel as nib

    image = nib.load(path)
    if 0 in image.shape:  # from the header: nibabel's data of a zero-length axis loses its shape
        raise DataError(f"{path}: an empty axis (shape {tuple(image.shape)}): the file holds no pixels; "
                        "every axis needs at least one: re-export the file")
    data = np.asanyarray(image.dataobj)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)  # (X, Y, Z, C): MSD stores modalities last
    elif data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, T=1, C): a vector image with one time point
        log.warning("%s: a 5D NIfTI %s with a time axis of 1; the time axis is dropped", path, data.shape)
        data = np.moveaxis(data[:, :, :, 0], -1, 0)
    elif data.ndim == 5:
        raise DataError(f"{path}: a 5D NIfTI {data.shape} with {data.shape[3]} time points; store one time point "
                        "per file (e.g. nibabel: image.slicer[:, :, :, t]) as a 3D volume or 4D channels (X, Y, Z, C)")
    else:
        raise DataError(f"{path}: a {data.ndim}D NIfTI; expected a 3D volume or 4D channels (X, Y, Z, C)")
    return Raster(np.ascontiguousarray(data), np.asarray(image.affine, dtype=np.float64), path, image)


def _read_pil(path: Path, as_image: bool) -> Raster:
    from PIL import Image

    with Image.open(path) as img:
        if as_image and img.mode in IMAGE_MODES:
            img = img.convert(IMAGE_MODES[img.mode])
        elif img.mode in ("RGBA", "LA", "CMYK", "YCbCr"):
            img = img.convert("RGB" if img.mode != "LA" else "L")
        array = np.asarray(img)  # a label's palette ('P') stays as its indices
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return Raster(np.ascontiguousarray(array), None, path)


def _read_tiff(path: Path, as_image: bool = False) -> Raster:
    """TIFF and GeoTIFF: ``(H, W)``, ``(bands, H, W)`` or interleaved ``(H, W, bands)``; an image keeps
    its GDAL nodata value (``Raster.nodata``)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        tags = [(t.code, t.dtype, t.count, t.value, True) for t in tif.pages[0].tags.values() if t.code in GEO_TAGS]
        nodata = tif.pages[0].tags.get(GDAL_NODATA)
    nodata = _nodata_value(path, nodata.value) if nodata is not None and as_image else None
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and axes[-1] in "SC":
        array = np.moveaxis(array, -1, 0)
    elif array.ndim != 3:
        raise DataError(f"{path}: expected one 2D raster with bands, got axes {axes} and shape {array.shape}")
    return Raster(np.ascontiguousarray(array), None, path, tags, nodata)


def _nodata_value(path: Path, text: Any) -> float:
    """GDAL_NODATA's text (``"-9999"``, ``"nan"``, ``"0"``) as a number."""
    try:
        return float(str(text).strip().strip("\x00"))
    except ValueError:
        raise DataError(f"{path}: its GDAL_NODATA tag {text!r} is not a number; fix the tag (gdal_edit.py -a_nodata "
                        "<value>) or remove it (gdal_edit.py -unsetnodata)") from None


def _read_dicom(path: Path) -> Raster:
    """A folder holding one DICOM series, sorted along the slice normal, in HU (rescaled)."""
    import pydicom

    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
    slices = [ds for ds in (pydicom.dcmread(f, force=True) for f in files) if "PixelData" in ds]
    if not slices:
        raise DataError(f"{path}: no DICOM file with pixel data in this folder")
    if len({ds.get("SeriesInstanceUID") for ds in slices}) > 1:
        raise DataError(f"{path}: holds more than one DICOM series; put each series in its own folder")
    for ds in slices:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds:
                raise DataError(f"{path}: slice {Path(ds.filename).name} has no {keyword}; "
                                f"the series cannot be placed in space")
    slices.sort(key=_slice_position)
    _check_slice_steps(path, slices)
    planes = [ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1))
              + float(ds.get("RescaleIntercept", 0)) for ds in slices]
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
            problem = (f"{round(gap / step) - 1} slice(s) missing {where}: a gap of {gap:.2f} mm where the series "
                       f"steps {step:.2f} mm")
        else:
            problem = f"uneven slice distance {where}: {gap:.2f} mm where the series steps {step:.2f} mm"
        raise DataError(f"{path}: {problem}; restore the missing or extra files (or re-export the whole series), "
                        "or convert it to NIfTI with a tool that resamples uneven series (e.g. dcm2niix)")


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
