"""Readers and the load/validate step on real files of every format: DICOM series, NIfTI,
PNG/JPEG pairs and 4-band GeoTIFF; each bad input gives its own error naming the file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import load_fake_data, load_user_folders

from adapt.data.cards import load_card
from adapt.data.formats import can_hold_nonfinite, read_raster
from adapt.data.raster import label_plane
from adapt.data.sources import Case, list_cases
from adapt.data.synthetic import write_geotiff
from adapt.data.volumes import load_volume
from adapt.errors import ConfigError, DataError

generate = load_fake_data()
folders = load_user_folders()


def card_at(tmp_path, stem, **changes):
    """A copy of a shipped card with some fields changed (sections merged, None drops a key)."""
    card = yaml.safe_load(open(f"data_cards/{stem}.yaml"))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            merged = {**card[key], **value}
            card[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            card[key] = value
    path = tmp_path / f"{stem}_copy.yaml"
    path.write_text(yaml.safe_dump(card))
    return load_card(path)


@pytest.mark.parametrize("signed", [False, True], ids=["uint16", "int16 below zero"])
def test_dicom_series_geometry_and_hu(tmp_path, signed):
    rows, columns, slices = 10, 12, 5
    stored = np.arange(rows * columns * slices).reshape(rows, columns, slices) + (-300 if signed else 1000)
    folders.write_dicom_series(
        tmp_path / "series", stored, spacing=(0.7, 0.8, 2.0), origin=(-120, -100, 50), signed=signed
    )
    raster = read_raster(tmp_path / "series")
    # voxel (i, j, k) = (column, row, slice), values rescaled to HU (intercept -1024)
    assert raster.array.shape == (1, columns, rows, slices)
    r, c, k = 2, 3, 1
    assert raster.array[0, c, r, k] == float(stored[r, c, k]) - 1024
    # LPS position = origin + c * 0.8 (along the row, +x) + r * 0.7 (down the column, +y) + k * 2 (+z); RAS flips x, y
    lps = np.array([-120 + c * 0.8, -100 + r * 0.7, 50 + 2.0 * k])
    np.testing.assert_allclose(raster.affine @ [c, r, k, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)
    # slices were written in reverse order: sorted by position, k=0 is the lowest z
    assert raster.array[0, 0, 0, 0] == float(stored[0, 0, 0]) - 1024


def test_dicom_series_grid_from_the_slices_headers_is_the_full_reads(tmp_path, monkeypatch):
    """``header_grid`` of a series (slices written in reverse order, oblique spacing) equals the grid of the
    full read, from headers alone, each slice parsed once while the folder is unchanged; a series the full
    read refuses has no header grid (the read names it)."""
    import pydicom

    from adapt.data.formats import header_channels, header_grid
    from adapt.data.geometry import raster_grid

    stored = np.arange(10 * 12 * 5, dtype=np.uint16).reshape(10, 12, 5)
    series = folders.write_dicom_series(tmp_path / "series", stored, spacing=(0.7, 0.8, 2.0), origin=(-120, -100, 50))
    raster = read_raster(series)
    parsed = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: parsed.append(a[0]) or real(*a, **k))
    grid = header_grid(series)
    full = raster_grid(raster, raster.array.shape[1:])
    assert grid.shape == full.shape == (12, 10, 5)
    np.testing.assert_array_equal(grid.affine, full.affine)
    assert header_channels(series) == 1 and header_grid(series).shape == grid.shape
    assert len(parsed) == 5  # one parse of each slice for the three questions
    (series / "slice002.dcm").unlink()  # a missing slice: the full read refuses the series
    with pytest.raises(DataError, match="missing"):
        read_raster(series)
    assert header_grid(series) is None and header_channels(series) is None
    assert header_grid(tmp_path / "series" / "slice001.dcm") is None  # one file of a series is not a grid


def test_dicom_series_case_lands_in_ras(tmp_path):
    """A DICOM series with a NIfTI label on its grid: the labelled voxel keeps its world position."""
    stored = np.full((10, 12, 5), 1024 + 40, np.uint16)
    folders.write_dicom_series(tmp_path / "data" / "images" / "p1", stored, spacing=(0.7, 0.8, 2.0))
    affine = read_raster(tmp_path / "data" / "images" / "p1").affine
    label = np.zeros((12, 10, 5), np.uint8)
    label[3, 2, 1] = 1
    (tmp_path / "data" / "labels").mkdir()
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "data" / "labels" / "p1.nii.gz")
    card = card_at(
        tmp_path,
        "msd_spleen",
        source={
            "kind": "folder",
            "images": "images/*",
            "labels": "labels/{name}.nii.gz",
            "url": None,
            "md5": None,
            "task": None,
        },
    )
    (case,) = list_cases(card, tmp_path / "data")
    volume = load_volume(card, case)
    ((i, j, k),) = np.argwhere(volume.label == 1)
    np.testing.assert_allclose(volume.affine @ [i, j, k, 1], affine @ [3, 2, 1, 1], atol=1e-6)
    assert np.allclose(np.diag(volume.affine)[:3], [0.8, 0.7, 2.0])  # RAS: positive steps
    np.testing.assert_allclose(volume.image, 0.5)  # 40 HU in the -160..240 window


def test_geotiff_band_selection_and_per_band_stretch(tmp_path):
    bands = np.stack([np.full((8, 10), v, np.uint16) for v in (100, 200, 300, 400)])
    bands[:, 0, :] = 0  # a dark row in every band: percentiles see two values
    write_geotiff(tmp_path / "tile.tif", bands, origin=(500000.0, 5200000.0))
    raster = read_raster(tmp_path / "tile.tif")
    assert raster.array.shape == (4, 8, 10) and raster.affine is None
    np.testing.assert_array_equal(raster.array, bands)
    write_geotiff(tmp_path / "label.tif", (bands[0] > 0).astype(np.uint8), origin=(500000.0, 5200000.0))
    case = Case("tile", tmp_path / "tile.tif", tmp_path / "label.tif", group="tile")
    window = card_at(
        tmp_path, "aerial_phantom", intensity={"channels": [3, 0, 1], "window": [0, 400], "percentiles": None}
    )
    image = load_volume(window, case).image
    assert image.shape == (3, 8, 10)  # native pixels: the one resize to the model side comes per sample
    # NIR (400), R (100), G (200) in that order, on the fixed window
    np.testing.assert_allclose(image[:, 5, 5], [1.0, 0.25, 0.5], atol=1e-6)
    stretch = card_at(tmp_path, "aerial_phantom", intensity={"channels": [2], "percentiles": [0, 100]})
    image = load_volume(stretch, case).image
    assert image.shape == (1, 8, 10) and image.max() == 1.0 and image.min() == 0.0


def test_too_few_bands_names_the_file_and_the_bands(tmp_path):
    write_geotiff(tmp_path / "rgb.tif", np.ones((3, 8, 8), np.uint16), origin=(0.0, 0.0))
    write_geotiff(tmp_path / "label.tif", np.ones((8, 8), np.uint8), origin=(0.0, 0.0))
    card = card_at(tmp_path, "aerial_phantom")  # asks for band 3 (NIR)
    with pytest.raises(DataError, match=r"rgb.tif: has 3 bands, the data card asks for bands \[3, 0, 1\]"):
        load_volume(card, Case("rgb", tmp_path / "rgb.tif", tmp_path / "label.tif", group="rgb"))


def test_png_and_jpeg_pairs_keep_pixels_and_masks_aligned(tmp_path):
    generate.write_dataset("kvasir_seg", tmp_path / "kvasir")
    card = load_card("kvasir_seg")
    case = list_cases(card, tmp_path / "kvasir")[0]
    image, mask = generate.photo_pair(0)
    volume = load_volume(card, case)  # native size: 48 x 56
    assert volume.image.shape == (3, *image.shape[:2]) and volume.image.dtype == np.float32
    assert set(np.unique(volume.label)) == {0, 1}
    # the object is bright red (220 / 255 = 0.86) inside the mask, dark (90 / 255) outside
    red = volume.image[0]
    assert red[volume.label == 1].mean() > 0.8 and red[volume.label == 0].mean() < 0.4
    assert (volume.label == mask).mean() > 0.99  # JPEG mask thresholded back to the drawn ellipse


def test_a_grayscale_png_pair_reaches_torch_as_writable_arrays(tmp_path, monkeypatch):
    """A decoded PNG (``np.asarray`` of a PIL image) is read-only; torch warns once per process when handed
    one (shared memory it may not write), so every array the loader gives ``torch.from_numpy`` is writable,
    and the pixels and ids are the files'."""
    from PIL import Image

    from adapt.data import load
    from adapt.data.card_writer import init_card

    folder = folders.write_ultrasound_folder(tmp_path / "scans", num_cases=2)
    card = load_card(init_card(folder, tmp_path / "scans.yaml")[0])
    handed = []
    from_numpy = torch.from_numpy
    monkeypatch.setattr(
        load.torch, "from_numpy", lambda array: handed.append(array.flags.writeable) or from_numpy(array)
    )
    case = list_cases(card, folder)[0]
    item = load.LoadCased(card)({"image": case.image, "label": case.label})
    assert handed and all(handed), handed
    pixels, ids = np.asarray(Image.open(case.image)), np.asarray(Image.open(case.label))
    assert item["image"].shape[-2:] == pixels.shape[:2]
    assert set(np.unique(item["label"].numpy())) == {0, 1} and (item["label"][0].numpy() == (ids > 0)).all()


def test_colour_label_without_threshold_is_refused(tmp_path):
    from PIL import Image

    Image.fromarray(
        np.dstack([np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), np.zeros((4, 4), np.uint8)])
    ).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png: label image has 3 different channels"):
        label_plane(read_raster(tmp_path / "rgb.png"))


@pytest.mark.parametrize("problem", ["size", "ids", "stored", "truncated", "missing", "empty"])
def test_each_bad_2d_input_names_the_file(tmp_path, problem):
    from PIL import Image

    folder = tmp_path / "d"
    generate.write_dataset("isic2018", folder)
    card = load_card("isic2018")
    case = list_cases(card, folder)[0]
    if problem == "size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(case.label)
        expected = r"shapes differ\):\n  image .*\n  label .*shape \(10, 10\)"
    elif problem == "ids":
        card = card_at(tmp_path, "isic2018", source={"mask_threshold": None}, mask_values=None)  # 255 read as an id
        expected = r"label ids \[255\] are not in the data card's labels"
    elif problem == "stored":  # a value that mask_values does not list, and no threshold to fall back on
        card = card_at(tmp_path, "isic2018", source={"mask_threshold": None})
        Image.fromarray(np.where(np.asarray(Image.open(case.label)) > 0, 128, 0).astype(np.uint8)).save(case.label)
        expected = r"stores values \[128\] that data card .*isic2018_copy.yaml does not list"
    elif problem == "truncated":
        case.image.write_bytes(case.image.read_bytes()[:200])
        expected = r"unreadable as PNG/JPEG/BMP"
    elif problem == "missing":
        case.label.unlink()
        expected = "file not found"
    else:
        Image.fromarray(np.zeros((48, 56), np.uint8)).save(case.label)
        from adapt.data.cache import CaseStore
        from adapt.data.datamodule import index_cases

        with pytest.raises(DataError, match="none of the targets") as err:
            index_cases(CaseStore(card, [case], "memory"))
        assert str(case.label) in str(err.value)
        return
    with pytest.raises(DataError, match=expected) as err:
        load_volume(card, case)
    assert case.id in str(err.value)


@pytest.mark.parametrize(
    "intensity, message",
    [
        ({"channels": list(range(17))}, r"intensity.channels must list 1 to 16 source channel indices"),
        (
            {"channels": [0, 1], "channel_names": ["T2"]},
            r"channel_names must name each of intensity.channels once.*2 names",
        ),
        (
            {"channels": [0, 1], "channel_names": ["T2", "T2"]},
            r"channel_names must name each of intensity.channels once",
        ),
        (
            {"channels": None, "channel_names": ["T2"]},
            r"channel_names must name each of intensity.channels once.*0 names",
        ),
    ],
)
def test_card_channels_and_their_names_are_checked(tmp_path, intensity, message):
    with pytest.raises(ConfigError, match=message):
        card_at(tmp_path, "aerial_phantom", intensity=intensity)


def test_a_card_keeps_more_than_three_channels_with_their_names(tmp_path):
    card = card_at(
        tmp_path, "aerial_phantom", intensity={"channels": [0, 1, 2, 3], "channel_names": ["R", "G", "B", "NIR"]}
    )
    assert card.intensity["channels"] == [0, 1, 2, 3] and card.intensity["channel_names"] == ["R", "G", "B", "NIR"]


def test_palette_png_is_rgb_as_an_image_and_indices_as_a_label(tmp_path):
    from PIL import Image

    indices = np.array([[0, 1], [2, 1]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    image.save(tmp_path / "p.png")
    pixels = read_raster(tmp_path / "p.png", as_image=True).array
    assert (
        pixels.shape == (3, 2, 2)
        and pixels[:, 0, 1].tolist() == [255, 0, 0]
        and pixels[:, 1, 0].tolist() == [0, 0, 255]
    )
    np.testing.assert_array_equal(label_plane(read_raster(tmp_path / "p.png")), indices)


def _nifti(dtype):
    def write(path):
        path = path / "scan.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), dtype), np.eye(4)), path)
        return path

    return write


def _broken_nifti(path):
    path = path / "broken.nii.gz"
    path.write_bytes(b"not a nifti")
    return path


def _tiff(dtype):
    def write(path):
        path = path / "tile.tif"
        write_geotiff(path, np.zeros((3, 6, 7), dtype), origin=(500000.0, 4100000.0))
        return path

    return write


def _png(path):
    from PIL import Image

    path = path / "photo.png"
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(path)
    return path


def _dicom(slope):
    def write(path):
        return folders.write_dicom_series(path / "series", np.zeros((6, 7, 3), np.uint16), slope=slope)

    return write


NONFINITE_CAPABLE = [  # (what, writer, whether the pixels can hold NaN/Inf)
    ("int16 NIfTI", _nifti(np.int16), False),
    ("float32 NIfTI", _nifti(np.float32), True),
    ("float64 NIfTI", _nifti(np.float64), True),
    ("uint8 NIfTI", _nifti(np.uint8), False),
    ("unreadable NIfTI", _broken_nifti, True),  # the full read names the problem
    ("uint16 GeoTIFF", _tiff(np.uint16), False),
    ("float32 GeoTIFF", _tiff(np.float32), True),
    ("PNG", _png, False),
    ("DICOM series", _dicom(1.0), False),
    ("DICOM series with a NaN rescale slope", _dicom(float("nan")), True),
]


@pytest.mark.parametrize("what, write, expected", NONFINITE_CAPABLE, ids=[row[0] for row in NONFINITE_CAPABLE])
def test_can_hold_nonfinite_reads_the_header_only(tmp_path, what, write, expected):
    """``predict``/``evaluate`` read a file for a NaN check before the model loads only when it can hold one."""
    assert can_hold_nonfinite(write(tmp_path)) is expected


def _raster(values, channels: int = 1):
    from adapt.data.raster import Raster

    plane = np.array(values).reshape(1, 1, -1)
    return Raster(np.repeat(plane, channels, axis=0), None, "masks/m.png")


@pytest.mark.parametrize(
    "mask_values, threshold, stored, ids",
    [
        (None, None, [0, 1, 2], [0, 1, 2]),  # ids as they are
        (None, 128, [0, 127, 128, 255], [0, 0, 1, 1]),  # a bare threshold
        (None, 128, [0, 1, 1], [0, 1, 1]),  # ... but a 0/1 file is not thresholded empty
        ({"lesion": 255}, None, [0, 255, 0], [0, 1, 0]),  # 0/255 masks
        ({"lesion": [255, 1]}, None, [0, 1, 255], [0, 1, 1]),  # a mixed folder: both values read
        ({"background": 10, "lesion": 20}, None, [10, 20], [0, 1]),
        ({"lesion": 255}, 128, [0, 3, 250], [0, 0, 1]),  # JPEG noise: unknown values thresholded
        ({"lesion": 255}, 128, [0, 255], [0, 1]),  # exact files are mapped, not thresholded
    ],
)
def test_label_files_are_decoded_as_the_card_stores_them(mask_values, threshold, stored, ids):
    from adapt.data.encoding import LabelEncoding

    encoding = LabelEncoding(
        {"background": 0, "lesion": 1},
        {k: tuple(v) if isinstance(v, list) else (v,) for k, v in (mask_values or {}).items()},
        threshold,
    )
    decoded = label_plane(_raster(stored), encoding)
    np.testing.assert_array_equal(decoded.ravel(), ids)
    if mask_values:  # and written back: each id gets the label's first stored value
        first = {1: np.ravel([mask_values["lesion"]])[0], 0: mask_values.get("background", 0)}
        np.testing.assert_array_equal(encoding.encode(decoded).ravel(), [first[i] for i in ids])


def test_a_value_the_card_does_not_list_is_refused_with_the_file_named():
    from adapt.data.encoding import LabelEncoding

    encoding = LabelEncoding({"background": 0, "lesion": 1}, {"lesion": (255,)}, None, "data card c.yaml")
    with pytest.raises(DataError, match=r"masks/m.png: stores values \[128\] that data card c.yaml does not list"):
        label_plane(_raster([0, 128, 255]), encoding)


def _cases_on_disk(root, dims: int, odd: str | None):
    """Five image/label pairs (grey PNG or NIfTI volumes) under ``root`` and their card; case 1 made ``odd``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    suffix = ".png" if dims == 2 else ".nii.gz"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(5):
        shape = (24, 24) if dims == 2 else (16, 16, 4)
        image, mask = rng.integers(0, 200, shape).astype(np.uint8), np.zeros(shape, np.uint8)
        mask[4:12, 4:12] = 1
        if i == 1 and odd in ("rgb", "time3"):  # an RGB PNG; a NIfTI whose 4th axis of 3 reads as 3 channels
            image = np.stack([image] * 3, axis=-1)
        elif i == 1 and odd in ("time1_5d", "time3_5d"):  # (X, Y, Z, T, C)
            image = np.stack([image] * (1 if odd == "time1_5d" else 3), axis=-1)[..., None]
        elif i == 1 and odd == "empty":
            image, mask = image[:, :, :0], mask[:, :, :0]
        for sub, array in (("images", image), ("masks", mask)):
            path = root / sub / f"case{i}{suffix}"
            if dims == 2:
                Image.fromarray(array).save(path)
            else:
                nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    card = {
        "name": "odd",
        "title": "odd",
        "modality": "US" if dims == 2 else "CT",
        "dims": dims,
        "license": "CC0-1.0",
        "citation": "x",
        "labels": {"background": 0, "a": 1},
        "targets": ["a"],
        "source": {"kind": "folder", "root": str(root), "images": f"images/*{suffix}", "labels": "masks/{name}"},
        "intensity": {"window": [0, 255]},
        "split": {"val": 0.2, "seed": 0},
    }
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


@pytest.mark.parametrize(
    "dims, odd, message",
    [
        (2, "rgb", r"cases differ in image channels: 4 have 1 \(e.g. .*\), 1 do not: .*case1.png \(3\)"),
        (3, "time3", r"cases differ in image channels: 4 have 1 .*case1.nii.gz \(3\)"),
        (3, "time3_5d", r"case1.nii.gz: a 5D NIfTI \(16, 16, 4, 3, 1\) with 3 time points"),
        (3, "empty", r"case1.nii.gz: an empty axis \(shape \(16, 16, 0\)\): the file holds no pixels"),
        (3, "time1_5d", None),  # a time axis of 1 is dropped (with a warning): an ordinary case
    ],
)
def test_odd_channels_and_axes_are_named_when_cases_are_indexed(tmp_path, caplog, dims, odd, message):
    from adapt.data.datamodule import build_datamodule

    card = _cases_on_disk(tmp_path / "d", dims, odd)
    options = {"card": str(card), "batch_size": 5, "cache": "none", "val_max_slices_per_case": 1}
    if message is None:
        dm = build_datamodule(options, 32, seed=0)
        assert dm.num_bad_cases == 0 and "the time axis is dropped" in caplog.text
        return
    with pytest.raises(DataError, match=message):
        build_datamodule(options, 32, seed=0)
    dm = build_datamodule({**options, "skip_bad_cases": True}, 32, seed=0)  # left out, counted; batches collate
    assert dm.bad_cases == ["case1"]
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["image"].shape[1] == 1 and "case1" not in batch["meta"]["case"]


def test_a_change_of_mask_values_invalidates_the_preprocessed_cache(tmp_path):
    from adapt.data.cache import settings_key

    plain = card_at(tmp_path, "isic2018", mask_values=None)
    assert settings_key(card_at(tmp_path, "isic2018")) != settings_key(plain)


def _gz_with_members(path, raw: bytes, members: int) -> None:
    """``raw`` gzipped as ``members`` concatenated gzip members (what ``cat a.gz b.gz`` makes)."""
    import gzip

    cuts = np.linspace(0, len(raw), members + 1).astype(int)
    path.write_bytes(b"".join(gzip.compress(raw[a:b], compresslevel=1) for a, b in zip(cuts[:-1], cuts[1:])))


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "members"),
    [
        ("<i2", 1.0, 0.0, 1),  # a CT as most tools write it
        ("<i2", 0.5, -1024.0, 1),  # scaled: nibabel's float result
        (">i2", 1.0, 0.0, 1),  # big-endian storage
        ("<u2", 2.0, 10.0, 3),  # an MR's unsigned voxels, as three concatenated gzip members
        ("<f4", 1.0, 0.0, 2),
    ],
)
def test_a_gzipped_nifti_is_decompressed_here_into_nibabels_array(tmp_path, dtype, slope, inter, members):
    """The voxels of a ``.nii.gz`` decompressed into one buffer (``nifti.gunzip``) are nibabel's own array,
    scaling, byte order and concatenated gzip members included; a cut file names itself and the bytes it lacks,
    and damaged compressed voxels fail the gzip checksum (nibabel, reading no further than the voxels, returned
    them)."""
    rng = np.random.default_rng(0)
    volume = (rng.normal(100, 400, (21, 17, 5))).astype(dtype)
    image = nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.5, 1.0]))
    image.header.set_slope_inter(slope, inter)
    plain = tmp_path / "ct.nii"
    nib.save(image, plain)
    path = tmp_path / "ct.nii.gz"
    _gz_with_members(path, plain.read_bytes(), members)
    expected = np.asanyarray(nib.load(plain).dataobj)
    found = read_raster(path).array[0]
    assert found.dtype == expected.dtype and found.flags.f_contiguous
    np.testing.assert_array_equal(found, expected)

    cut = tmp_path / "cut.nii.gz"
    _gz_with_members(cut, plain.read_bytes()[: len(plain.read_bytes()) - 300], 1)
    with pytest.raises(
        DataError, match=r"cut\.nii\.gz: unreadable as NIfTI: the file ends after .* of the .* bytes of voxels"
    ):
        read_raster(cut)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(path.read_bytes()[:400] + bytes(200) + path.read_bytes()[600:])
    with pytest.raises(DataError, match=r"broken\.nii\.gz: unreadable as NIfTI: the compressed data is damaged"):
        read_raster(broken)
