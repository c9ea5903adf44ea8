"""The README's "Label less" loop, run as written on a user's folder with unlabelled images (``LOOPS``: ultrasound
PNGs, an MSD-style NIfTI task, a hospital's DICOM export whose labels are NIfTI files): ``data init`` keeps
them, the first try trains, ``calibrate`` writes the calibration, ``annotate`` pre-annotates and ranks, ``save``
turns the reviewed masks into labels (the page's loop, the README's step 3: ``tests/test_annotation_loop.py``), and
the retrain, warm-started from the first adapter (``init_adapter=``), sees the enlarged label set."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import load_user_folders
from readme_commands import command
from test_journeys import KINDS, Journey, assert_same_grid, fill_in

folders = load_user_folders()


@dataclass(frozen=True)
class Loop:
    """A kind of folder walked through the loop: its writer, the two unlabelled cases and their prompts, where
    their pre-annotations and saved labels go (``{}``: the case), and the image file (``{}``) of a case."""

    write: Callable[..., Path]
    cases: tuple[str, str]
    prompts: tuple[str, str]
    pre: str
    label: str
    image: str


LOOPS = {
    "png": Loop(
        folders.write_ultrasound_folder,
        ("scan_08", "scan_09"),
        ("box 20,15,60,50", "point 44,36"),
        "{}.png",
        "masks/{}.png",
        "images/{}.png",
    ),
    "msd": Loop(
        folders.write_msd_style_folder,
        ("organ_004", "organ_005"),
        ("box 12,10,32,30 slice=5", "point 22,20 slice=5"),
        "{}.nii.gz",
        "labelsTr/{}.nii.gz",
        "imagesTs/{}.nii.gz",
    ),
    "dicom": Loop(  # a series' label is a NIfTI file: its pre-annotation is one too
        folders.write_dicom_folder,
        ("patient_04", "patient_05"),
        ("box 14,12,34,30 slice=6", "point 24,22 slice=6"),
        "{}.nii.gz",
        "segmentations/{}.nii.gz",
        "dicom/{}",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_the_readme_label_less_loop_on_a_folder_with_unlabelled_scans(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path / "cache"))
    loop = LOOPS[kind]
    trip = Journey(KINDS[kind], tmp_path / "home", loop.write(tmp_path / "my_data", unlabelled=2))
    trip.home.mkdir()
    assert (
        command("python -m adapt.data init", "Label less").text
        == command("python -m adapt.data init", "Bring your own data").text
    )
    printed = trip.readme("python -m adapt.data init", "Label less")
    assert "kept 2 image(s) without a label as unlabelled cases" in printed
    fill_in(trip.home / "busi.yaml", "Doe J. My scans (2026).")
    first_try = ("busi.yaml", "model=tiny")
    trip.readme("python -m adapt.train", "Bring your own data", containing=first_try)
    [run] = (trip.home / "outputs").glob("*/*")
    places = {"outputs/busi/<run>": str(run.relative_to(trip.home)), "cases=accepted": "cases=all"}
    printed = trip.readme("python -m adapt.annotate calibrate", "Label less", **places)
    assert "expected calibration error" in printed and (run / "adapter" / "calibration.json").is_file()
    first, second = loop.cases
    (trip.home / "prompts.csv").write_text(f'case,prompt\n{first},"{loop.prompts[0]}"\n{second},"{loop.prompts[1]}"\n')
    printed = trip.readme("python -m adapt.annotate adapter=", "Label less", **places)
    assert "worklist: 2 case(s)" in printed
    rows = [r for r in csv.DictReader((trip.home / "round1" / "worklist.csv").open()) if r["slice"] == ""]
    assert sorted(r["case"] for r in rows) == [first, second] and all(r["expected_dice"] for r in rows)
    pre = trip.home / "round1" / "pre"
    assert sorted(p.name for p in pre.iterdir()) == [loop.pre.format(first), loop.pre.format(second)]
    assert {r["pre"] for r in rows} == {str(pre / loop.pre.format(c)) for c in loop.cases}  # any folder reads them
    assert not (trip.data / loop.label.format(first)).exists()  # nothing became a label yet
    printed = trip.readme("python -m adapt.annotate save", "Label less", **places)
    assert "saved 2 label(s)" in printed
    for case in loop.cases:
        label = trip.data / loop.label.format(case)
        assert label.is_file()
        if trip.kind.dims == 3:  # on the image's own grid, as the segmentation tool's labels are
            assert_same_grid(label, trip.data / loop.image.format(case))
    assert "no problem found" in trip.readme("python -m adapt.data check", "Bring your own data", subprocess_run=True)
    assert command("python -m adapt.train", "Label less").text.startswith(
        command("python -m adapt.train", "Bring your own data", first_try).text + " init_adapter="
    )
    printed = trip.readme("python -m adapt.train", "Label less", **places)
    assert "unlabelled image(s) of the card skipped" not in printed  # every image has a label now
    [second] = set((trip.home / "outputs").glob("*/*")) - {run}
    started = json.loads((second / "metrics.json").read_text())["initialised_from"]["source"]
    assert Path(started) == (trip.home / places["outputs/busi/<run>"]).resolve()
