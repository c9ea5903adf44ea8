"""The format registry, one row per format: a file written with known pixels and geometry is read back
with both; a mask written with the card's ``mask_values`` lands in the input's geometry and decodes to
the label ids; the non-finite check, the spacing and the kind detection answer as the format says.

Adding a format is one module in ``adapt/data/formats/`` and one row of ``ROWS`` here
(``docs/adding_a_format.md``): ``test_a_format_is_one_module_one_registry_row_and_one_test_row``
holds the three sets equal, and ``test_no_format_suffix_is_spelled_outside_the_registry`` keeps every
other module asking the registry instead of spelling a suffix.
"""

from __future__ import annotations

import ast
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
from conftest import load_user_folders
from PIL import Image

from adapt.data import formats
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import (
    FORMATS,
    can_hold_nonfinite,
    for_name,
    for_path,
    header_grid,
    mask_name,
    read_raster,
    strip_suffix,
    write_labels,
)
from adapt.data.geometry import Grid, geotiff_crs, raster_grid
from adapt.data.raster import label_plane
from adapt.data.synthetic import write_geotiff
from adapt.errors import DataError

folders = load_user_folders()
#: A 2D sample's (H, W) and a volume's stored (X, Y, Z).
PLANE, VOLUME = (6, 8), (8, 6, 4)
AFFINE = np.array([[0.0, -0.8, 0.0, 40.0], [0.7, 0.0, 0.0, -20.0], [0.0, 0.0, 2.5, 10.0], [0.0, 0.0, 0.0, 1.0]])
MASK_VALUES = LabelEncoding({"background": 0, "lesion": 1}, {"background": (0,), "lesion": (255,)})


def same_grid(a: Grid, b: Grid) -> bool:
    """Two grids of one shape whose affines (volumes) or CRS and transform (GeoTIFFs) agree."""
    affines = (a.affine is None and b.affine is None) or (
        a.affine is not None and b.affine is not None and np.allclose(a.affine, b.affine, atol=1e-5)
    )
    return tuple(a.shape) == tuple(b.shape) and affines and (a.crs, a.transform) == (b.crs, b.transform)


def pixels(shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """Distinct values in a pattern no transpose or flip leaves unchanged."""
    return (np.arange(int(np.prod(shape))) % 200 + 3).reshape(shape).astype(dtype)


def _nifti(path: Path, dtype: str = "int16", nan: bool = False) -> tuple[Path, np.ndarray]:
    data = pixels(VOLUME, dtype)
    if nan:
        data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, AFFINE), path / "case.nii.gz")
    return path / "case.nii.gz", data[None]


def _dicom(path: Path, dtype: str = "uint16", nan: bool = False) -> tuple[Path, np.ndarray]:
    stored = pixels((VOLUME[1], VOLUME[0], VOLUME[2]), "uint16")  # (rows, columns, slices)
    series = folders.write_dicom_series(
        path / "series", stored, spacing=(0.7, 0.8, 2.5), slope=float("nan") if nan else 1.0
    )
    return series, np.transpose(stored.astype(np.float32) - 1024, (1, 0, 2))[None]  # (column, row, slice), HU


def _pillow(path: Path, dtype: str = "uint8", nan: bool = False) -> tuple[Path, np.ndarray]:
    data = pixels(PLANE)
    Image.fromarray(data).save(path / "photo.png")
    return path / "photo.png", data[None]


def _frames(path: Path, dtype: str = "uint8", nan: bool = False) -> tuple[Path, np.ndarray]:
    (path / "video").mkdir()
    stack = [pixels(PLANE) + t for t in range(3)]
    for t, frame in enumerate(stack):
        Image.fromarray(frame).save(path / "video" / f"{t:05d}.png")
    return path / "video", np.stack([f.T for f in stack], axis=-1)[None]  # [C, X=W, Y=H, T]


def _tiff(path: Path, dtype: str = "uint16", nan: bool = False) -> tuple[Path, np.ndarray]:
    data = pixels((2, *PLANE), dtype)
    if nan:
        data[0, 0, 0] = np.nan
    write_geotiff(path / "tile.tif", data, (500000.0, 4000000.0), 0.5, 32633)
    return path / "tile.tif", data


@dataclass(frozen=True)
class Row:
    """One format's sample and what the registry must say about it.

    Attributes:
        name: the registry's name of the format.
        write: ``(folder, dtype, nan) -> (path, pixels as read [C, ...])``: a sample with known geometry.
        float_dtype: a stored type that can hold NaN (``None``: the format cannot).
        spacing: ``Format.spacing`` of the sample.
        mask: the mask's name for the sample (``None``: the format has no writer).
        header_grid: its headers tell the grid the full read gives (video frames: only the read tells).
    """

    name: str
    write: Callable[..., tuple[Path, np.ndarray]]
    float_dtype: str | None
    spacing: tuple[tuple[float, ...] | None, str]
    mask: str | None
    header_grid: bool = True


ROWS = [
    Row("nifti", _nifti, "float32", ((0.7, 0.8, 2.5), "mm"), "case.nii.gz"),
    Row("dicom", _dicom, "uint16", ((0.8, 0.7, 2.5), "mm"), "series"),
    Row("pillow", _pillow, None, (None, "px"), "photo.png"),
    Row("frames", _frames, None, (None, "px"), None, header_grid=False),
    Row("tiff", _tiff, "float32", ((0.5, 0.5), "m"), "tile.tif"),
]
IDS = [row.name for row in ROWS]


def test_a_format_is_one_module_one_registry_row_and_one_test_row():
    modules = {m.name for m in pkgutil.iter_modules(formats.__path__)}
    assert modules == set(FORMATS) == set(IDS)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_sample_reads_back_with_its_values_and_geometry(tmp_path, row):
    path, expected = row.write(tmp_path)
    raster = read_raster(path)
    np.testing.assert_array_equal(raster.array, expected)
    found = FORMATS[row.name]
    if row.name == "nifti":
        np.testing.assert_allclose(raster.affine, AFFINE)
    elif row.name == "dicom":  # voxel (column, row, slice): +x (L) along a row, +y (P) down a column; RAS flips both
        np.testing.assert_allclose(raster.affine[:3, :3], np.diag([-0.8, -0.7, 2.5]), atol=1e-6)
    elif row.name == "tiff":
        assert geotiff_crs(raster.header) == "EPSG:32633"
        assert raster_grid(raster).transform == (500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5)
    assert (raster.affine is not None) == found.volume
    grid = header_grid(path)  # from the headers alone (a DICOM series' slices'): the grid the full read gives
    assert same_grid(grid, raster_grid(raster)) if row.header_grid else grid is None


def test_a_dicom_mask_series_replaces_a_longer_one_written_to_its_folder_whole(tmp_path):
    """``predict overwrite=true`` into the mask folder of a longer series: the earlier series' extra slices
    go (the folder would hold two series), the new mask reads back, files the writer did not name stay."""
    out = tmp_path / "out" / mask_name("dicom", "series")
    for slices in (5, 3):
        series = folders.write_dicom_series(tmp_path / f"series{slices}", np.zeros((6, 7, slices), np.uint16))
        raster = read_raster(series, as_image=True)
        ids = (np.arange(6 * 7 * slices) % 3).reshape(raster.array.shape[1:]).astype(np.uint8)
        write_labels(ids, "dicom", raster.header, out)
        if slices == 5:
            (out / "notes.txt").write_text("the user's own file")
    assert sorted(p.name for p in out.iterdir()) == ["mask_0000.dcm", "mask_0001.dcm", "mask_0002.dcm", "notes.txt"]
    written = read_raster(out)
    np.testing.assert_array_equal(written.array[0], ids)
    assert same_grid(raster_grid(written), raster_grid(raster))


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_mask_is_written_in_the_inputs_format_geometry_and_mask_values(tmp_path, row):
    path, _ = row.write(tmp_path)
    raster = read_raster(path, as_image=True)
    ids = (np.arange(int(np.prod(raster.array.shape[1:]))) % 2).reshape(raster.array.shape[1:])
    stored = MASK_VALUES.encode(ids)
    out = tmp_path / "out" / (mask_name(row.name, path.name) if row.mask else "mask.png")
    if row.mask is None:
        with pytest.raises(DataError, match="masks are not written as"):
            write_labels(stored, row.name, raster.header, out)
        return
    assert out.name == row.mask
    write_labels(stored, row.name, raster.header, out)
    written = read_raster(out)
    assert for_path(out).name == row.name
    assert set(np.unique(written.array).tolist()) == {0, 255}
    np.testing.assert_array_equal(label_plane(written, MASK_VALUES), ids)
    assert same_grid(raster_grid(written), raster_grid(raster))


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_nonfinite_values_are_possible_only_where_the_header_says(tmp_path, row):
    path, _ = row.write(tmp_path)
    assert can_hold_nonfinite(path) is False
    if row.float_dtype is None:
        return
    (tmp_path / "nan").mkdir()
    path, _ = row.write(tmp_path / "nan", row.float_dtype, nan=True)
    assert can_hold_nonfinite(path) is True
    assert np.isnan(read_raster(path).array).any()


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_spacing_is_the_formats_own(tmp_path, row):
    path, _ = row.write(tmp_path)
    spacing, unit = FORMATS[row.name].spacing(read_raster(path).header)
    assert unit == row.spacing[1]
    assert spacing == row.spacing[0] or np.allclose(spacing, row.spacing[0])


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_kind_is_detected_from_the_path(tmp_path, row):
    path, _ = row.write(tmp_path)
    found = FORMATS[row.name]
    assert for_path(path).name == row.name
    for suffix in found.suffixes:
        assert strip_suffix(f"dir/Case_1{suffix.upper()}") == "dir/Case_1"
        assert (
            getattr(for_name(f"x{suffix}"), "name", None) == row.name
        ) != found.folder  # a folder's files are not it
    if found.write is None:
        with pytest.raises(DataError, match="unsupported input"):
            for_path(path, writable=True)


def test_a_single_slice_file_and_an_unknown_suffix_are_refused_with_the_fix(tmp_path):
    (tmp_path / "slice.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match="single file of a DICOM series; give the folder"):
        for_path(tmp_path / "slice.dcm")
    with pytest.raises(DataError, match=r"unsupported file type; use .*NIfTI \(\.nii/\.nii\.gz\)"):
        for_path(tmp_path / "notes.txt")


#: Modules outside the registry that may spell a suffix: the phantom generators write NIfTI and GeoTIFF
#: files by design (file names such as ``phantom_000.nii.gz``).
ALLOWED = {"adapt/data/synthetic.py"}


def test_no_format_suffix_is_spelled_outside_the_registry():
    suffixes = {s for f in FORMATS.values() for s in f.suffixes}
    root = Path(__file__).resolve().parents[1]
    spelled = []
    for path in sorted((root / "adapt").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("adapt/data/formats/") or rel in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in suffixes:
                spelled.append(f"{rel}:{node.lineno} {node.value!r}")
    assert spelled == [], "ask adapt.data.formats instead of spelling a suffix"


def test_the_registry_imports_no_file_library(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, adapt.data.formats; print(sorted(m for m in ('torch', 'monai', 'nibabel', 'pydicom', 'PIL', "
        "'tifffile') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip() == "[]"


def test_a_tiff_mask_keeps_plain_tiffs_plain(tmp_path):
    """A TIFF without georeferencing gets a mask without it (no tags invented)."""
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", pixels(PLANE))
    raster = read_raster(tmp_path / "plain.tif")
    out = write_labels(np.ones(PLANE, np.uint8), "tiff", raster.header, tmp_path / "mask.tif")
    assert raster.header == [] and read_raster(out).header == []


def test_inference_reads_a_palette_label_as_its_indices_as_training_does(tmp_path):
    """A VOC-style palette PNG stores label ids as palette indices: evaluation's reading (``read_scan``) keeps
    them as training's (``read_raster``) does, where reading it as an image made it RGB."""
    from PIL import Image

    from adapt.data.formats import read_raster
    from adapt.inference.io import read_scan

    ids = np.zeros((8, 10), np.uint8)
    ids[2:5, 3:7], ids[6:, :2] = 1, 2
    picture = Image.fromarray(ids, mode="P")
    picture.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    picture.save(tmp_path / "pal.png")
    scan = read_scan(tmp_path / "pal.png", label=True)
    assert scan.pixels.shape == (1, 1, 8, 10)
    np.testing.assert_array_equal(scan.pixels[0, 0], ids)
    np.testing.assert_array_equal(scan.pixels[0, 0], read_raster(tmp_path / "pal.png").array[0])
