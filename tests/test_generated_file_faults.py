"""Generated file faults: every format the readers accept, written small and then broken.

``WRITERS`` has a row for every file suffix of ``adapt.data.formats`` (NIfTI, PNG/JPEG/BMP, TIFF and
GeoTIFF) and for DICOM series; ``test_every_readable_format_has_a_writer`` fails for a format added
without one, so a new format is faulted by these tests the day it is read. Each generated file is
truncated at a drawn offset, has bytes flipped in its header or its data, holds NaN/Inf, is stored in
another dtype, has an extra axis (a time axis of 1 and of 3) or a zero-length axis. It goes through
predict's reader (``check_inputs_finite``, ``read_scan``, ``finite_stack``, ``to_unit``), training's
indexing (``build_datamodule`` on a folder card) and ``python -m adapt.data check``: a refusal is one
``DataError`` naming the file (exit status 2); a file that reads must give finite model input in
[0, 1] of the written size. A traceback fails the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import load_user_folders
from fault_gen import fault_settings, run_entry
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from adapt.cli import user_errors
from adapt.data.formats import FORMATS
from adapt.data.synthetic import geotiff_tags

SHAPE = (20, 16, 6)  # x, y, slices


def _nifti(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 3.0, 1.0])), path)


def _pil(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _tiff(path: Path, array: np.ndarray, geo: bool = False) -> None:
    import tifffile

    tifffile.imwrite(
        path, array, photometric="minisblack", extratags=geotiff_tags((500000.0, 4000000.0), 0.5, 32633) if geo else ()
    )


def _dicom(path: Path, array: np.ndarray) -> None:
    load_user_folders().write_dicom_series(path, array.astype(np.uint16), spacing=(1.0, 1.0, 3.0))


#: suffix -> (writer, dimensions of its array, dtypes it stores); "/dicom" is a series folder.
WRITERS: dict[str, tuple[Callable[[Path, np.ndarray], None], int, tuple[str, ...]]] = {
    ".nii": (_nifti, 3, ("int16", "uint8", "float32", "float64", "int32")),
    ".nii.gz": (_nifti, 3, ("int16", "uint8", "float32", "float64", "int32")),
    ".png": (_pil, 2, ("uint8", "uint16")),
    ".jpg": (_pil, 2, ("uint8",)),
    ".jpeg": (_pil, 2, ("uint8",)),
    ".bmp": (_pil, 2, ("uint8",)),
    ".gif": (_pil, 2, ("uint8",)),
    ".tif": (lambda p, a: _tiff(p, a, geo=True), 2, ("uint8", "uint16", "int16", "float32", "float64")),
    ".tiff": (_tiff, 2, ("uint8", "uint16", "float32")),
    "/dicom": (_dicom, 3, ("uint16",)),
}
FLOATS = {".nii", ".nii.gz", ".tif", ".tiff"}


def test_every_readable_format_has_a_writer():
    files = {s for f in FORMATS.values() if not f.folder for s in f.suffixes}
    assert files | {"/dicom"} == set(WRITERS)


def image(dims: int, dtype: str, seed: int = 0) -> np.ndarray:
    """A small image with one bright square, in ``dtype``'s range."""
    rng = np.random.default_rng(seed)
    shape = SHAPE if dims == 3 else SHAPE[:2][::-1]
    array = rng.uniform(10, 60, shape)
    array[4:12, 4:10] += 120
    return array.astype(dtype)


def write(folder: Path, suffix: str, array: np.ndarray, name: str = "scan") -> Path:
    path = folder / (name if suffix == "/dicom" else f"{name}{suffix}")
    WRITERS[suffix][0](path, array)
    return path


def file_of(path: Path) -> Path:
    """The file to break: the file itself, or the middle slice of a DICOM series."""
    return sorted(path.iterdir())[len(list(path.iterdir())) // 2] if path.is_dir() else path


# --------------------------------------------------------------------------- the entry points


def predict_read(path: Path) -> np.ndarray:
    """``path`` as ``adapt.predict`` reads an input: the NaN check before the model, the reader, the
    non-finite policy, the intensity scaling."""
    from adapt.data.headers import check_inputs_finite
    from adapt.guards import finite_stack
    from adapt.inference.io import read_scan, to_unit

    check_inputs_finite([path], {})
    scan = read_scan(path)
    scan.pixels = finite_stack(scan.pixels, path, {})
    return to_unit(scan, {})


def refused_or_read(path: Path, named: Path) -> np.ndarray | None:
    """The model input of ``path``, or ``None`` when it is refused with one message naming ``named``."""
    result: list[np.ndarray] = []
    code, message = run_entry(lambda: _under_user_errors(lambda: result.append(predict_read(path))))
    if code == 2:
        assert str(named) in message and "Traceback" not in message, message[-2000:]
        return None
    assert code == 0, message[-2000:]
    pixels = result[0]
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1, (pixels.min(), pixels.max())
    return pixels


def _under_user_errors(action: Callable[[], None]) -> None:
    with user_errors():
        action()


# --------------------------------------------------------------------------- byte faults


SUFFIXES = sorted(WRITERS)


@pytest.mark.parametrize("suffix", SUFFIXES)
@given(data=st.data())
@fault_settings(6)
def test_a_broken_file_is_refused_by_name_or_read_whole(suffix, data, tmp_path_factory):
    """Truncated at a drawn offset, or bytes flipped in the header or the data."""
    folder = tmp_path_factory.mktemp("bytes")
    writer, dims, dtypes = WRITERS[suffix]
    path = write(folder, suffix, image(dims, data.draw(st.sampled_from(dtypes), label="dtype")))
    target = file_of(path)
    raw = bytearray(target.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip header", "flip data"]), label="how")
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        header = min(len(raw) // 2, 352 if ".nii" in suffix else 132 if suffix == "/dicom" else 64)
        low, high = (0, header) if how == "flip header" else (header, len(raw))
        for offset in data.draw(st.lists(st.integers(low, high - 1), min_size=1, max_size=8), label="offsets"):
            raw[offset] ^= data.draw(st.integers(1, 255), label="mask")
    target.write_bytes(bytes(raw))
    refused_or_read(path, target if suffix != "/dicom" else path)


# --------------------------------------------------------------------------- content faults


@pytest.mark.parametrize("suffix", sorted(FLOATS))
@given(value=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.tuples(st.integers(0, 15), st.integers(0, 15)))
@fault_settings(3)
def test_nan_or_inf_in_a_float_file_is_refused_by_name(suffix, value, where, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nan")
    writer, dims, _ = WRITERS[suffix]
    array = image(dims, "float32")
    array[where] = value
    path = write(folder, suffix, array)
    code, message = run_entry(lambda: _under_user_errors(lambda: predict_read(path)))
    assert code == 2 and str(path) in message and "NaN or infinite" in message, message[-2000:]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_dtype_a_format_stores_reads_to_the_same_model_input_size(suffix, tmp_path):
    writer, dims, dtypes = WRITERS[suffix]
    shapes = set()
    for dtype in dtypes:
        pixels = refused_or_read(write(tmp_path, suffix, image(dims, dtype), name=f"scan_{dtype}"), tmp_path)
        assert pixels is not None, dtype
        shapes.add(pixels.shape)
    assert len(shapes) == 1, shapes


AXES = [  # (suffix, array shape, read: the model-input shape [Z, C, H, W] or None when refused)
    (".nii.gz", (*SHAPE, 1), (SHAPE[2], 1, SHAPE[1], SHAPE[0])),  # a time axis of 1: one channel
    (".nii.gz", (*SHAPE, 1, 3), (SHAPE[2], 3, SHAPE[1], SHAPE[0])),  # 5D (X, Y, Z, T=1, C=3): time dropped
    (".nii.gz", (*SHAPE, 3, 1), None),  # 5D with 3 time points: refused
    (".nii.gz", (SHAPE[0], 0, SHAPE[2]), None),  # a zero-length axis
    (".nii", (SHAPE[0], SHAPE[1], 0), None),
    (".tif", (1, 3, 16, 20), None),  # time and bands
    (".tif", (0, 20), None),
]


@pytest.mark.parametrize("suffix, shape, read", AXES, ids=[f"{s}{shape}" for s, shape, _ in AXES])
def test_an_extra_or_empty_axis_is_refused_by_name_or_read_as_documented(suffix, shape, read, tmp_path):
    path = tmp_path / f"scan{suffix}"
    array = np.full(shape, 50, np.uint8 if suffix == ".png" else np.int16)
    try:
        WRITERS[suffix][0](path, array)
    except Exception:  # the library cannot write it: nothing to read
        pytest.skip(f"{suffix} cannot store shape {shape}")
    pixels = refused_or_read(path, path)
    assert (pixels is None) == (read is None) and (read is None or pixels.shape == read), (
        shape,
        None if pixels is None else pixels.shape,
    )


# --------------------------------------------------------------------------- training's indexing and data check


def folder_dataset(root: Path, suffix: str, images: list[np.ndarray], masks: list[np.ndarray]) -> Path:
    """A folder card over ``images/case_i<suffix>`` and ``masks/case_i<suffix>``."""
    for i, (im, mask) in enumerate(zip(images, masks)):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        write(root / "images", suffix, im, f"case_{i}")
        write(root / "masks", suffix, mask, f"case_{i}")
    dims = 3 if suffix.startswith(".nii") else 2
    card = {
        "name": "gen_files",
        "title": "generated",
        "modality": "CT" if dims == 3 else "RGB",
        "dims": dims,
        "license": "CC0-1.0",
        "citation": "generated",
        "labels": {"background": 0, "object": 1},
        "targets": ["object"],
        "split": {"val": 0.34, "seed": 0},
        "source": {"kind": "folder", "root": ".", "images": f"images/*{suffix}", "labels": f"masks/{{stem}}{suffix}"},
    }
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


def index(card: Path, cache: Path):
    from adapt.data.datamodule import build_datamodule

    return build_datamodule(
        {"card": str(card), "cache": "memory", "cache_dir": str(cache), "augment": False}, image_size=64, seed=0
    )


def mask_of(dims: int, value: int = 1) -> np.ndarray:
    """The label of ``image(dims, ...)``'s square, stored as ``value``."""
    mask = np.zeros(SHAPE if dims == 3 else SHAPE[:2][::-1], np.uint8)
    mask[4:12, 4:10] = value
    return mask


MIXED = [  # (what, suffix, images, masks, the file the refusal must name, or None when handled)
    (
        "grey and RGB cases",
        ".png",
        [image(2, "uint8"), np.stack([image(2, "uint8", 1)] * 3, -1), image(2, "uint8", 2)],
        None,
        "case_1.png",
    ),
    ("0/1 and 0/255 masks", ".png", [image(2, "uint8", i) for i in range(3)], [1, 255, 1], "case_1.png"),
    (
        "a volume with a time axis of 3 among 3D ones",
        ".nii.gz",
        [image(3, "int16"), np.stack([image(3, "int16", 1)] * 3, -1), image(3, "int16", 2)],
        None,
        "case_1.nii.gz",
    ),
]


@pytest.mark.parametrize("what, suffix, images, masks, named", MIXED, ids=[r[0] for r in MIXED])
def test_cases_that_differ_are_found_when_indexed_naming_the_file(what, suffix, images, masks, named, tmp_path):
    masks = [mask_of(3 if suffix.startswith(".nii") else 2, v) for v in masks or [1] * len(images)]
    card = folder_dataset(tmp_path / "data", suffix, images, masks)
    code, message = run_entry(lambda: _under_user_errors(lambda: index(card, tmp_path / "cache")))
    assert code == 2 and named in message and "Traceback" not in message, message[-2000:]


@pytest.mark.parametrize("suffix", [".nii.gz", ".png", ".tif"])
@given(keep=st.floats(0.05, 0.9), data=st.data())
@fault_settings(2)
def test_a_truncated_case_is_named_by_indexing_and_by_data_check(suffix, keep, data, tmp_path_factory):
    from adapt.data.__main__ import main

    root = tmp_path_factory.mktemp("index")
    dims = 3 if suffix.startswith(".nii") else 2
    images = [image(dims, "uint8", i) for i in range(3)]
    card = folder_dataset(root / "data", suffix, images, [mask_of(dims)] * 3)
    broken = root / "data" / data.draw(st.sampled_from(["images", "masks"]), label="which") / f"case_1{suffix}"
    raw = broken.read_bytes()
    broken.write_bytes(raw[: int(len(raw) * keep)])
    code, message = run_entry(lambda: _under_user_errors(lambda: index(card, root / "cache")))
    assert code == 2 and str(broken) in message and "Traceback" not in message, message[-2000:]
    code, message = run_entry(lambda: main(["check", f"card={card}", f"out={root / 'check.png'}"]))
    assert code == 1 and "case_1" in message and "Traceback" not in message, message[-3000:]
    shutil.rmtree(root)
