"""Where one step of the annotation loop hands over to the next on a user's own folders: a DICOM series'
pre-annotation is written in its label's format (a NIfTI file on the series' grid), ``save`` refuses a mask in
another format than its label, a series rewritten in place counts as changed, the worklist names its files
absolutely (read from any folder), and a warm start on images of other channels is refused before the model
loads, naming both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import load_user_folders

from adapt.adapters.warm_start import InitAdapter, check_channels
from adapt.annotate.save import fingerprint, pre_name, save_labels
from adapt.annotate.scores import PlaneScore
from adapt.annotate.worklist import case_rows
from adapt.data.formats import read_raster
from adapt.errors import ConfigError, DataError
from adapt.inference.io import read_scan, write_mask

folders = load_user_folders()


@pytest.mark.parametrize(
    "image, label, kind, name",
    [
        ("dicom/patient_04", "segmentations/patient_04.nii.gz", "dicom", "patient_04.nii.gz"),  # the label's format
        ("dicom/patient_04", None, "dicom", "patient_04"),  # no label path: a series, as predict writes
        ("imagesTs/organ_004.nii.gz", "labelsTr/organ_004.nii.gz", "nifti", "organ_004.nii.gz"),
        ("imagesTs/liver_004_0000.nii.gz", "labelsTr/liver_004.nii.gz", "nifti", "liver_004_0000.nii.gz"),
        ("tiles/field_06.tif", "labels/field_06.tif", "tiff", "field_06.tif"),
        ("images/scan_08.jpg", "masks/scan_08.png", "pillow", "scan_08.png"),
    ],
)
def test_a_pre_annotation_is_named_in_its_labels_format(image, label, kind, name):
    assert pre_name(Path(image), None if label is None else Path(label), kind) == name


def test_a_dicom_series_mask_named_nifti_is_written_on_the_series_grid(tmp_path):
    root = folders.write_dicom_folder(tmp_path / "data", num_cases=1, shape=(20, 18, 6))
    series = root / "dicom" / "patient_00"
    scan = read_scan(series)
    mask = np.zeros(scan.shape, np.int64)
    mask[2, 5:9, 4:10] = 1
    written = write_mask(mask, scan, tmp_path / pre_name(series, root / "segmentations/x.nii.gz", scan.kind))
    assert written.name == "patient_00.nii.gz"
    image, raster = nib.load(written), read_raster(series)
    assert image.shape == raster.array.shape[1:] == (20, 18, 6)
    assert np.allclose(image.affine, raster.affine, atol=1e-5)
    assert (int(image.header["qform_code"]), int(image.header["sform_code"])) == (1, 1)
    assert image.get_data_dtype() == np.uint8 and int(np.asarray(image.dataobj).sum()) == 24
    # it reads back as the label the series' own segmentation has: the same grid the training reader checks
    assert np.allclose(nib.load(root / "segmentations" / "patient_00.nii.gz").affine, image.affine, atol=1e-5)
    assert (read_scan(written, label=True).pixels[:, 0] == mask).all()


def test_a_series_rewritten_in_place_changes_its_fingerprint(tmp_path):
    series = folders.write_dicom_folder(tmp_path / "data", num_cases=1, shape=(12, 10, 4)) / "dicom" / "patient_00"
    before = fingerprint(series)
    assert before[2] == 4 and before[0] == sum(f.stat().st_size for f in series.iterdir())
    first = sorted(series.iterdir())[0]
    stat = os.stat(series)
    first.write_bytes(first.read_bytes() + b"\0\0")  # a slice re-exported in place
    os.utime(series, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the folder's own time unchanged
    assert fingerprint(series) != before and fingerprint(series)[0] == before[0] + 2


def test_worklist_rows_name_image_and_pre_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plane = PlaneScore(plane=0, objects=1, iou=0.9, agreement=0.95)
    [row] = case_rows("a", "prompt", "data/a.png", "round1/pre/a.png", [plane], False, None, 0.85)
    assert (row.image, row.pre) == (str(tmp_path / "data/a.png"), str(tmp_path / "round1/pre/a.png"))


def test_save_refuses_a_mask_in_another_format_than_its_label(tmp_path):
    out = tmp_path / "round1"
    out.mkdir()
    image, pre = tmp_path / "patient_04", out / "pre" / "patient_04.png"
    image.mkdir()
    pre.parent.mkdir()
    pre.write_bytes(b"png")
    label = tmp_path / "segmentations" / "patient_04.nii.gz"
    (out / "worklist.csv").write_text(
        "rank,case,slice,source,iou,agreement,uncertainty,expected_dice,flag,image,pre\n"
        f"1,patient_04,,prompt,0.9,0.9,0.1,,accept,{image},{pre}\n"
    )
    record = {"card": "c.yaml", "root": None, "cases": {"patient_04": {"label": str(label)}}}
    record["cases"]["patient_04"]["fingerprint"] = fingerprint(image)
    (out / "annotate.json").write_text(json.dumps(record))
    with pytest.raises(DataError) as refused:
        save_labels(out / "worklist.csv", {"patient_04": pre})
    assert f"{pre}: the mask of case patient_04 is not in the format of its label {label}" in str(refused.value)
    assert "save it as *.nii.gz" in str(refused.value) and not label.parent.exists()


ONE_BAND = {"preprocessing": {"channels": 1}}
FOUR_BANDS = {"input_channels": {"count": 4, "source": [0, 1, 2, 3], "names": None}}


@pytest.mark.parametrize(
    "metadata, channels, refused",
    [
        (ONE_BAND, 1, None),
        (FOUR_BANDS, 4, None),
        (ONE_BAND, 4, "input: 1 channel(s) vs 4 channel(s) through a learned projection"),
        (FOUR_BANDS, 1, "input: 4 channel(s) through a learned projection vs 1 channel(s)"),
        (FOUR_BANDS, 3, "input: 4 channel(s) through a learned projection vs 3 channel(s)"),
    ],
)
def test_a_warm_start_on_images_of_other_channels_is_refused(tmp_path, metadata, channels, refused):
    init = InitAdapter("outputs/ct/run", tmp_path, metadata)
    if refused is None:
        check_channels(init, {"input_channels": "auto"}, channels)
        return
    with pytest.raises(ConfigError) as error:
        check_channels(init, {"input_channels": "auto"}, channels)
    assert str(error.value).startswith(f"init_adapter=outputs/ct/run does not fit this run ({refused}")
    assert "drop init_adapter=" in str(error.value)
