"""Exports for annotation tools round-trip (COCO RLE, GeoJSON in the tile's CRS, NIfTI label maps), and the
isotonic calibration fits, measures and is written as a file of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adapt.annotate import CALIBRATION_FILE, calibration, exports
from adapt.data import synthetic
from adapt.errors import ConfigError


def test_coco_rle_matches_a_hand_computed_encoding_and_round_trips():
    labels = np.zeros((3, 4), np.uint8)
    labels[0:2, 1] = 1  # column 1, rows 0-1
    labels[2, 3] = 2  # one pixel of label 2
    document = exports.coco_document([("a.png", labels)], {"background": 0, "organ": 1, "lesion": 2})
    # column-major runs of label 1: 3 zeros (column 0), 2 ones, then 7 zeros -> "32" "7" in COCO's compressed counts
    from pycocotools import mask as rle

    assert (
        rle.decode({"size": [3, 4], "counts": document["annotations"][0]["segmentation"]["counts"].encode()}).sum() == 2
    )
    uncompressed = rle.frPyObjects({"size": [3, 4], "counts": [3, 2, 7]}, 3, 4)
    assert document["annotations"][0]["segmentation"]["counts"] == uncompressed["counts"].decode()
    assert [a["bbox"] for a in document["annotations"]] == [[1.0, 0.0, 1.0, 2.0], [3.0, 2.0, 1.0, 1.0]]
    assert [c["name"] for c in document["categories"]] == ["organ", "lesion"]
    assert np.array_equal(exports.read_coco(json.loads(exports.dump(document)))["a.png"], labels)


def test_geojson_polygons_are_in_the_tiles_crs_and_rasterise_back(tmp_path):
    tile = tmp_path / "tile.tif"
    synthetic.write_geotiff(tile, np.zeros((2, 32, 32), np.uint16), (420000.0, 5300000.0), 0.5, 32632)
    labels = np.zeros((32, 32), np.int64)
    labels[4:12, 5:20] = 1
    labels[6:8, 8:10] = 0  # a hole
    labels[20:30, 22:25] = 1
    document = json.loads(exports.dump(exports.geojson_document(labels, tile, {"background": 0, "building": 1})))
    assert document["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32632"
    assert {f["properties"]["label"] for f in document["features"]} == {"building"}
    xs = [x for f in document["features"] for ring in f["geometry"]["coordinates"] for x, _ in ring]
    assert 420000.0 <= min(xs) and max(xs) <= 420016.0  # map units of the tile, not pixels
    assert np.array_equal(exports.read_geojson(document, tile), labels)


@pytest.mark.parametrize("shape", [(6, 5, 4), (7, 9)])
def test_nifti_label_maps_round_trip(tmp_path, shape):
    labels = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8)
    affine = np.diag([0.8, 0.8, 2.5, 1.0]) if len(shape) == 3 else None
    path = exports.write_nifti(labels, affine, tmp_path / "x.nii.gz")
    assert np.array_equal(exports.read_nifti(path), labels)


def test_isotonic_fit_is_monotone_cross_fitted_and_written_atomically(tmp_path):
    rng = np.random.default_rng(0)
    predicted = rng.uniform(0.5, 1.0, 200)
    measured = np.clip(predicted**3 + rng.normal(0, 0.03, 200), 0, 1)  # an optimistic IoU head
    fitted = calibration.fit(predicted, measured)
    assert np.all(np.diff(fitted.y) >= 0) and np.all(np.diff(fitted.x) > 0)
    result = calibration.report(predicted, measured, threshold=0.6)
    assert result["ece_calibrated"] < result["ece_raw"] / 3  # the raw head is off by ~0.15
    assert result["accept_precision"] > result["accept_precision_raw"]
    # the PAV fit of a hand case: (1, 0.5) violates the order of (0, 0.9) -> both pooled to 0.7
    assert calibration.fit([0.0, 1.0, 2.0], [0.9, 0.5, 1.0]).y == pytest.approx([0.7, 1.0])
    assert calibration.expected_calibration_error(np.array([0.05, 0.95]), np.array([0.05, 0.55])) == pytest.approx(0.2)
    path = calibration.write(tmp_path, result)
    assert path.name == CALIBRATION_FILE and [p.name for p in tmp_path.iterdir()] == [CALIBRATION_FILE]
    assert calibration.read(tmp_path)(0.75) == pytest.approx(fitted(0.75))
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a calibration written by"):
        calibration.read(tmp_path)
    with pytest.raises(ConfigError, match="at least two masks"):
        calibration.fit([0.5], [0.5])


#: (iou, agreement, calibration, expected flag, expected Dice)
FLAGS = [
    (0.95, 0.92, None, "accept", ""),
    (0.95, 0.5, None, "review", ""),
    (0.5, 0.99, None, "review", ""),
    (0.95, 0.1, calibration.Calibration([0.5, 1.0], [0.5, 0.95]), "accept", 0.905),
    (0.9, 1.0, calibration.Calibration([0.5, 1.0], [0.2, 0.4]), "review", 0.36),
]


@pytest.mark.parametrize(("iou", "agreement", "fitted", "verdict", "expected"), FLAGS)
def test_the_flag_uses_the_calibration_when_there_is_one(iou, agreement, fitted, verdict, expected):
    from adapt.annotate.worklist import flag

    assert flag(iou, agreement, fitted, 0.9) == (verdict, pytest.approx(expected) if expected != "" else "")


def test_the_worklist_ranks_cases_by_their_worst_slice_and_lists_slices_worst_first(tmp_path):
    from adapt.annotate import worklist
    from adapt.annotate.scores import PlaneScore

    volume = worklist.case_rows(
        "v",
        "propagation",
        tmp_path / "v.nii.gz",
        tmp_path / "pre" / "v.nii.gz",
        [PlaneScore(3, 1, 0.95, 0.95), PlaneScore(4, 1, 0.6, 0.7)],
        True,
        None,
        0.9,
    )
    image = worklist.case_rows(
        "a", "prompt", tmp_path / "a.png", tmp_path / "pre" / "a.png", [PlaneScore(0, 1, 0.8, 0.9)], False, None, 0.9
    )
    empty = worklist.case_rows("e", "auto", tmp_path / "e.png", tmp_path / "pre" / "e.png", [], False, None, 0.9)
    rows = worklist.rank([image, volume, empty])
    assert [(r.rank, r.case, r.slice, r.flag) for r in rows] == [
        (1, "e", "", "review"),
        (2, "v", "", "review"),
        (2, "v", 4, "review"),
        (2, "v", 3, "accept"),
        (3, "a", "", "review"),
    ]
    assert [r.uncertainty for r in rows] == [1.0, 0.35, 0.35, 0.05, 0.15]
    written = worklist.read(worklist.write(rows, tmp_path))
    assert [r["case"] for r in written] == ["e", "v", "v", "v", "a"] and written[2]["slice"] == "4"
