"""What one case's files hold, read with the training readers: size, channels, spacing, labels, intensities.

``case_stats(image, label)`` is shared by ``python -m adapt.data init`` (which proposes a card
from the statistics of every case) and ``python -m adapt.data check`` (which tabulates and
plots them and lists what would stop or mislead training). Files are read by
``adapt.data.formats.read_raster`` exactly as ``LoadCased`` reads them; nothing is resampled; what a
format tells beyond pixels (DICOM's modality, a GeoTIFF's CRS and pixel size) is its ``Format.learn``.
Intensities are a seeded sample of pixels (all of them, and those inside labels, per channel),
enough for percentiles and histograms without holding a dataset in memory; a GeoTIFF's nodata
pixels are never sampled, so they stretch neither a proposed window nor a band's percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adapt.data.encoding import LabelEncoding
from adapt.data.formats import FORMATS, for_path, read_raster
from adapt.data.geometry import check_same_grid, raster_grid
from adapt.data.raster import Raster, label_plane
from adapt.errors import DataError
from adapt.data.cards import MODALITIES

SAMPLE = 20_000
#: DICOM Modality -> card modality.
DICOM_MODALITIES = {
    "CT": "CT",
    "MR": "MR",
    "PT": "PET",
    "US": "US",
    "CR": "XR",
    "DX": "XR",
    "XA": "XR",
    "MG": "XR",
    "ES": "endoscopy",
    "XC": "RGB",
}


@dataclass
class CaseStats:
    """One case as stored.

    Attributes:
        image, label: the files (a DICOM series or frame folder is its folder).
        kind: the image's format (a name of ``adapt.data.formats.FORMATS``).
        shape: spatial shape of the image (``X, Y, Z`` for volumes, ``H, W`` for images).
        label_shape: the label's.
        channels: image channels or bands; ``dtype`` its stored type.
        spacing: voxel size along the stored axes (mm; GeoTIFF: its pixel size) or ``None``.
        orientation: axis codes of a volume (``LPS``, ``RAS``, ...).
        slice_spacing_axis: the RAS axis of the largest voxel side (a volume's slice axis).
        volume: 3D data (more than one slice).
        label_counts: label value -> voxel count.
        sample, inside: intensity samples ``[C, n]`` of all pixels and of labelled ones.
        modality: DICOM ``Modality``; ``crs``: a GeoTIFF's ``EPSG:<code>``.
        affine_matches: image and label share one grid (volumes: affine; GeoTIFFs: CRS and transform);
            ``grid_problem`` says how they differ (``adapt.data.geometry.check_same_grid``).
        nonfinite: NaN or infinite pixels in the image.
        nodata, nodata_pixels: a GeoTIFF's GDAL nodata value and how many pixels hold it (left out of
            ``sample`` and ``inside``).
        error: why the case could not be read (the other fields are then empty).
    """

    image: Path
    label: Path
    kind: str = ""
    shape: tuple[int, ...] = ()
    label_shape: tuple[int, ...] = ()
    channels: int = 0
    dtype: str = ""
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    slice_spacing_axis: int | None = None
    volume: bool = False
    label_counts: dict[int, int] = field(default_factory=dict)
    sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    inside: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    modality: str | None = None
    crs: str | None = None
    affine_matches: bool = True
    grid_problem: str | None = None
    nonfinite: int = 0
    nodata: float | None = None
    nodata_pixels: int = 0
    error: str | None = None


def case_stats(
    image: Path, label: Path, encoding: LabelEncoding | float | None = None, seed: int = 0, sample: int = SAMPLE
) -> CaseStats:
    """Read one case and describe it; a file that cannot be read gives ``error`` instead of raising.

    ``encoding``: how the label files store their ids (``adapt.data.raster.label_plane``); the
    ``label_counts`` are of label ids.
    """
    stats = CaseStats(Path(image), Path(label))
    try:
        raster = read_raster(image, as_image=True)
        label_raster = read_raster(label)
        plane = label_plane(label_raster, encoding)
    except DataError as err:
        stats.error = str(err)
        return stats
    stats.kind = for_path(raster.path).name
    stats.channels, stats.dtype = int(raster.array.shape[0]), str(raster.array.dtype)
    stats.shape, stats.label_shape = _spatial(raster), _spatial(label_raster, plane)
    stats.volume = raster.affine is not None and stats.shape[-1] > 1
    if raster.affine is not None:
        stats.spacing, stats.orientation, stats.slice_spacing_axis = _geometry(raster.affine)
    if stats.shape == stats.label_shape:  # a size mismatch is its own finding
        try:
            check_same_grid(raster_grid(raster), raster_grid(label_raster, plane.shape))
        except DataError as err:
            stats.affine_matches, stats.grid_problem = False, str(err)
    values, counts = np.unique(plane, return_counts=True)
    stats.label_counts = {int(v): int(c) for v, c in zip(values, counts)}
    pixels = raster.array.reshape(raster.array.shape[0], -1)
    valid = raster.valid()
    if valid is not None:  # nodata: out of every intensity statistic (and so of init's window and bands)
        stats.nodata, stats.nodata_pixels = raster.nodata, int(valid.size - valid.sum())
        pixels = pixels[:, valid.reshape(-1)]
        if not pixels.shape[1]:
            stats.error = f"{image}: every pixel is nodata (GDAL_NODATA {raster.nodata:g}); the tile holds no image"
            return stats
    if np.issubdtype(pixels.dtype, np.floating):
        finite = np.isfinite(pixels)
        stats.nonfinite = int(finite.size - finite.sum())
        if stats.nonfinite:
            pixels = np.where(finite, pixels, np.nan)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(pixels.shape[1], size=min(sample, pixels.shape[1]), replace=False)
    stats.sample = pixels[:, np.sort(chosen)].astype(np.float32)
    if stats.shape == stats.label_shape:  # the label map is laid out as the image's pixels
        ids = plane.reshape(-1) if valid is None else plane.reshape(-1)[valid.reshape(-1)]
        labelled = np.flatnonzero(ids > 0)
        if len(labelled):
            picked = rng.choice(labelled, size=min(sample, len(labelled)), replace=False)
            stats.inside = pixels[:, np.sort(picked)].astype(np.float32)
    learned = FORMATS[stats.kind].learn(raster)
    stats.modality, stats.crs = learned.get("modality"), learned.get("crs")
    if stats.spacing is None:
        stats.spacing = learned.get("spacing")
    return stats


def _spatial(raster: Raster, plane: np.ndarray | None = None) -> tuple[int, ...]:
    return tuple(int(s) for s in (plane.shape if plane is not None else raster.array.shape[1:]))


def _geometry(affine: np.ndarray) -> tuple[tuple[float, ...], str, int]:
    """Voxel size along the stored axes, the axis codes, and the RAS axis of the largest voxel side."""
    from nibabel.orientations import aff2axcodes, io_orientation

    spacing = tuple(round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0))
    codes = "".join(aff2axcodes(affine))
    ras_axis = int(io_orientation(affine)[int(np.argmax(spacing)), 0])
    return spacing, codes, ras_axis


def guess_modality(stats: list[CaseStats], manifest_modality: str | None = None) -> tuple[str, str]:
    """A card modality and why: DICOM's Modality, dataset.json's, or the pixels (HU range -> CT)."""

    dicom = {s.modality for s in stats if s.modality}
    if dicom:
        value = sorted(dicom)[0]
        return DICOM_MODALITIES.get(value, "CT"), f"DICOM Modality {value}"
    if manifest_modality:
        text = manifest_modality.upper()
        if text in MODALITIES:
            return text, f"dataset.json modality {manifest_modality}"
        if any(w in text for w in ("MR", "T1", "T2", "FLAIR", "ADC", "DWI")):
            return "MR", f"dataset.json modality {manifest_modality}"
    readable = [s for s in stats if not s.error]
    channels = max((s.channels for s in readable), default=1)
    if any(s.crs for s in readable) or channels > 3:
        return "multispectral" if channels > 3 else "RGB", "GeoTIFF bands" if channels > 3 else "GeoTIFF"
    if readable and all(s.kind == "frames" for s in readable):
        return ("RGB" if channels == 3 else "US"), "video frames (a guess: endoscopy, US, ... are modalities too)"
    if any(s.volume for s in readable):
        low = min(float(s.sample.min()) for s in readable if s.sample.size)
        return ("CT", "values down to -1000 (HU)") if low <= -500 else ("MR", "a volume without HU values")
    return ("RGB" if channels == 3 else "US"), "2D images (a guess: endoscopy, dermoscopy, XR, ... are modalities too)"
