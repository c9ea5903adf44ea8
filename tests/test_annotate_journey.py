"""The README's "Label less" loop, run as written on a user's PNG folder with unlabelled scans: ``data init`` keeps
them, the first try trains, ``calibrate`` writes the calibration, ``annotate`` pre-annotates and ranks, ``save``
turns the reviewed masks into labels (the page's loop, the README's step 3: ``tests/test_annotation_loop.py``), and
the retrain, warm-started from the first adapter (``init_adapter=``), sees the enlarged label set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import load_user_folders
from readme_commands import command
from test_journeys import KINDS, Journey, fill_in

folders = load_user_folders()


@pytest.mark.slow
def test_the_readme_label_less_loop_on_a_folder_with_unlabelled_scans(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path / "cache"))
    trip = Journey(KINDS["png"], tmp_path / "home", folders.write_ultrasound_folder(tmp_path / "my_data", unlabelled=2))
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
    (trip.home / "prompts.csv").write_text('case,prompt\nscan_08,"box 20,15,60,50"\nscan_09,"point 44,36"\n')
    printed = trip.readme("python -m adapt.annotate adapter=", "Label less", **places)
    assert "worklist: 2 case(s)" in printed
    rows = list(csv.DictReader((trip.home / "round1" / "worklist.csv").open()))
    assert sorted(r["case"] for r in rows) == ["scan_08", "scan_09"] and all(r["expected_dice"] for r in rows)
    assert sorted(p.name for p in (trip.home / "round1" / "pre").iterdir()) == ["scan_08.png", "scan_09.png"]
    assert not (trip.data / "masks" / "scan_08.png").exists()  # nothing became a label yet
    printed = trip.readme("python -m adapt.annotate save", "Label less", **places)
    assert "saved 2 label(s)" in printed and (trip.data / "masks" / "scan_09.png").is_file()
    assert command("python -m adapt.train", "Label less").text.startswith(
        command("python -m adapt.train", "Bring your own data", first_try).text + " init_adapter="
    )
    printed = trip.readme("python -m adapt.train", "Label less", **places)
    assert "unlabelled image(s) of the card skipped" not in printed  # every image has a label now
    [second] = set((trip.home / "outputs").glob("*/*")) - {run}
    started = json.loads((second / "metrics.json").read_text())["initialised_from"]["source"]
    assert Path(started) == (trip.home / places["outputs/busi/<run>"]).resolve()
