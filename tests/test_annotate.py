"""``python -m adapt.annotate``: pre-annotations of a card's unlabelled cases (2D PNG, 3D NIfTI, GeoTIFF) in the
input's format, geometry and label encoding, never in the label folder; a ranked worklist with flags; exports that
decode to the same labels; the refusals; ``calibrate`` on a trained run, and the flag and hub push that use it."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import compose_cfg, load_user_folders
from omegaconf import OmegaConf

from adapt.annotate import CALIBRATION_FILE, exports
from adapt.annotate.command import calibrate, run
from adapt.conf import CONFIG_DIR
from adapt.data.card_writer import init_card
from adapt.data.formats import read_raster
from adapt.errors import ConfigError
from tiny_adapters import make_semantic_adapter

folders = load_user_folders()


def annotate_cfg(*overrides: str):
    """``configs/annotate.yaml`` with command-line style overrides."""
    return OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "annotate.yaml"), OmegaConf.from_dotlist(list(overrides)))


def user_card(folder: Path, card: Path) -> Path:
    """``data init``'s card with license and citation filled in, as a user does before training."""
    init_card(folder, card)
    card.write_text(
        card.read_text()
        .replace(
            "'TODO: the dataset''s licence as published (an SPDX id such as CC-BY-4.0, or its own terms)'", "CC0-1.0"
        )
        .replace("'TODO: what users of this dataset must cite (paper or dataset reference)'", "test data")
    )
    return card


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def partial_label(truth: Path, out: Path, keep: int = 2) -> Path:
    """The hidden label with only ``keep`` central slices labelled: a partly labelled volume."""
    image = nib.load(truth)
    data = np.asarray(image.dataobj).copy()
    middle = data.shape[2] // 2
    data[:, :, : middle - keep // 2] = 0
    data[:, :, middle - keep // 2 + keep :] = 0
    nib.save(nib.Nifti1Image(data, image.affine), out)
    return out


#: layout -> (writer, label folder, prompts CSV lines); the images are written with 3 labelled + 2 unlabelled cases.
LAYOUTS = {
    "png": (folders.write_ultrasound_folder, "masks", ["scan_03,box 20,15,60,50", "scan_04.png,point 40,30"]),
    "nifti": (
        folders.write_msd_style_folder,
        "labelsTr",
        ["organ_003,box 12,10,32,30 slice=5", "organ_004,from_mask=partial.nii.gz"],
    ),
    "geotiff": (folders.write_geotiff_folder, "labels", ["field_03,box 10,10,40,40", "field_04,box 5,20,30,50"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_shot_annotation_writes_pre_annotations_worklist_and_exports(tmp_path, layout):
    writer, labels, lines = LAYOUTS[layout]
    folder = writer(tmp_path / "data", num_cases=3, unlabelled=2)
    card = user_card(folder, tmp_path / "card.yaml")
    if layout == "nifti":
        partial_label(folders.truth_folder(folder) / "organ_004.nii.gz", tmp_path / "partial.nii.gz")
    (tmp_path / "prompts.csv").write_text(
        "case,prompt\n" + "\n".join(f'{c},"{p}"' for c, p in (line.split(",", 1) for line in lines)) + "\n"
    )
    before = snapshot(folder / labels)
    result = run(
        annotate_cfg(
            "adapter=none",
            "model=tiny",
            f"data.card={card}",
            f"prompts={tmp_path / 'prompts.csv'}",
            f"out={tmp_path / 'out'}",
            "device=cpu",
        )
    )
    assert snapshot(folder / labels) == before  # nothing written into the label folder
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.parent.name in ("images", "imagesTs", "tiles"))
    unlabelled = images[-2:] if layout != "nifti" else images
    assert sorted(p.name for p in result.pre) == sorted(p.name for p in unlabelled)
    for pre, image in zip(sorted(result.pre), sorted(unlabelled)):
        stored, source = read_raster(pre), read_raster(image)
        assert stored.array.shape[1:] == source.array.shape[1:]
        if layout == "png":
            assert set(np.unique(stored.array)) <= {0, 255}  # the card's 0/255 encoding
        if layout == "nifti":
            assert np.allclose(stored.affine, source.affine)
        if layout == "geotiff":
            assert stored.header == source.header  # CRS and transform tags copied
    cases = [r for r in result.rows if r.slice == ""]
    assert [r.rank for r in cases] == [1, 2] and cases[0].uncertainty >= cases[1].uncertainty
    assert {r.source for r in cases} == ({"prompt", "propagation"} if layout == "nifti" else {"prompt"})
    assert all(r.flag in ("accept", "review") and r.expected_dice == "" for r in result.rows)
    written = (tmp_path / "out" / "worklist.csv").read_text().splitlines()
    assert written[0].startswith("rank,case,slice,source,iou,agreement,uncertainty,expected_dice,flag")
    assert len(written) == len(result.rows) + 1
    if layout == "nifti":
        assert any(r.slice != "" for r in result.rows)  # slices of the volumes ranked too
    check_exports(tmp_path / "out", layout, result.pre)


def check_exports(out: Path, layout: str, pre: list[Path]) -> None:
    """Each export decodes to the label ids of its pre-annotation."""
    for path in pre:
        stem = path.name.split(".")[0]
        stored = read_raster(path).array[0]
        ids = (stored > 0).astype(np.int64) if layout == "png" else stored.astype(np.int64)  # 0/255 -> ids
        nifti = exports.read_nifti(out / "exports" / "nifti" / f"{stem}.nii.gz")
        assert np.array_equal(nifti, ids), stem
        if layout == "png":
            assert np.array_equal(
                exports.read_coco(json.loads((out / "exports" / "coco.json").read_text()))[path.name], ids
            )
        if layout == "geotiff":
            document = json.loads((out / "exports" / "geojson" / f"{stem}.geojson").read_text())
            assert document["crs"]["properties"]["name"] == f"urn:ogc:def:crs:EPSG::{folders.TILE_EPSG}"
            assert np.array_equal(exports.read_geojson(document, path), ids)


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("annotate")
    folder = folders.write_ultrasound_folder(base / "data", num_cases=10, unlabelled=2)  # 2 validation cases
    return folder, user_card(folder, base / "card.yaml")


def refusals(folder: Path, card: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    labelled_only = card.with_name("labelled.yaml")  # beside the card: its source.root is relative
    labelled_only.write_text(card.read_text().replace("  unlabelled: true\n", ""))
    (tmp / "bad.csv").write_text('case,prompt\nscan_99,"box 1,1,5,5"\n')
    (tmp / "taken").mkdir(exist_ok=True)
    (tmp / "taken" / "worklist.csv").write_text("rank\n")
    common = ["adapter=none", "model=tiny"]
    return {
        "no unlabelled case": (
            [*common, f"data.card={labelled_only}", f"out={tmp / 'o1'}"],
            "holds no unlabelled case",
        ),
        "out in the label folder": (
            [*common, f"data.card={card}", f"out={folder / 'masks' / 'pre'}"],
            "is inside the label folder",
        ),
        "unknown case in prompts": (
            [*common, f"data.card={card}", f"prompts={tmp / 'bad.csv'}", f"out={tmp / 'o2'}"],
            "line 2: case 'scan_99' is not an unlabelled case",
        ),
        "no prompt, not semantic": (
            [*common, f"data.card={card}", f"out={tmp / 'o3'}"],
            "no prompt for the unlabelled",
        ),
        "earlier out": ([*common, f"data.card={card}", f"out={tmp / 'taken'}"], "already holds"),
        "zero-shot without a card": ([*common, f"out={tmp / 'o4'}"], "needs data.card="),
    }


@pytest.mark.parametrize(
    "fault",
    [
        "no unlabelled case",
        "out in the label folder",
        "unknown case in prompts",
        "no prompt, not semantic",
        "earlier out",
        "zero-shot without a card",
    ],
)
def test_bad_input_is_refused_before_a_model_loads(png_folder, tmp_path, fault, forbid_model):
    folder, card = png_folder
    overrides, message = refusals(folder, card, tmp_path)[fault]
    with pytest.raises(ConfigError, match=message):
        run(annotate_cfg(*overrides))
    assert not (folder / "masks" / "pre").exists()


def test_the_command_line_answers_a_bad_key_at_the_door_with_status_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "adapt.annotate", "calibrate", "adapter=x", "accept_dice=2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and "accept_dice" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_calibrate_on_a_trained_run_then_annotate_flags_with_it_and_push_carries_it(png_folder, tmp_path):
    from adapt.hub.share import stage
    from adapt.train import train

    folder, card = png_folder
    train(
        compose_cfg(
            tmp_path / "run",
            f"data.card={card}",
            "model=tiny",
            "trainer.max_steps=2",
            "data.batch_size=2",
            "optim.warmup_steps=1",
            "validate_before=false",
            "data.val_max_slices_per_case=2",
        )
    )
    adapter = next((tmp_path / "run").rglob("adapter_config.json")).parent
    content = calibrate(annotate_cfg("action=calibrate", f"adapter={adapter}", "device=cpu"))
    assert (adapter / CALIBRATION_FILE).is_file() and content["masks"] >= 1 and content["split"] == "val"
    assert 0 <= content["ece_calibrated"] <= 1 and 0 <= content["ece_raw"] <= 1
    assert json.loads((adapter / CALIBRATION_FILE).read_text())["calibration"]["x"]
    written = (adapter / CALIBRATION_FILE).read_bytes()
    one = card.with_name("one_val.yaml")  # beside the card: its source.root is relative
    one.write_text(re.sub(r"(?m)^split: .*$", "split: {val: [scan_00], seed: 0}", card.read_text()))
    with pytest.raises(ConfigError, match=r"holds 1 labelled object\(s\) in 1 case\(s\); .* \(split=train\)"):
        calibrate(annotate_cfg("action=calibrate", f"adapter={adapter}", f"data.card={one}", "device=cpu"))
    assert (adapter / CALIBRATION_FILE).read_bytes() == written  # the earlier calibration is kept
    (tmp_path / "prompts.csv").write_text('case,prompt\nscan_10,"box 20,15,60,50"\nscan_11,"box 10,10,50,40"\n')
    result = run(
        annotate_cfg(
            f"adapter={adapter}", f"prompts={tmp_path / 'prompts.csv'}", f"out={tmp_path / 'out'}", "device=cpu"
        )
    )
    assert all(isinstance(r.expected_dice, float) for r in result.rows)  # the flag comes from the calibration
    staged = stage(adapter, "user/annotated", tmp_path / "staged")
    assert (staged / CALIBRATION_FILE).read_bytes() == (adapter / CALIBRATION_FILE).read_bytes()


@pytest.mark.slow
def test_save_copies_reviewed_pre_annotations_into_the_label_folder_and_never_over_a_label(tmp_path):
    from adapt.annotate.save import save
    from adapt.data.cards import load_card
    from adapt.data.sources import data_root, partition_cases

    folder = folders.write_ultrasound_folder(tmp_path / "data", num_cases=3, unlabelled=3)
    card = user_card(folder, tmp_path / "card.yaml")
    (tmp_path / "prompts.csv").write_text(
        "case,prompt\n" + "".join(f'scan_0{i},"box 20,15,60,50"\n' for i in (3, 4, 5))
    )
    run(
        annotate_cfg(
            "adapter=none",
            "model=tiny",
            f"data.card={card}",
            f"prompts={tmp_path / 'prompts.csv'}",
            f"out={tmp_path / 'out'}",
            "device=cpu",
        )
    )
    worklist = tmp_path / "out" / "worklist.csv"
    accepted = [r["case"] for r in csv.DictReader(worklist.open()) if r["slice"] == "" and r["flag"] == "accept"]
    assert accepted == []  # zero-shot tiny SAM2 has random weights: no mask reaches accept_dice
    with pytest.raises(ConfigError, match=r"cases=accepted: none of the 3 case\(s\) of .* is flagged accept"):
        save(worklist, "accepted")  # saving nothing says so, and how to choose the cases
    for path in (folder / "masks").glob("scan_0[345].png"):
        path.unlink()  # start again from three unlabelled cases
    (folder / "masks" / "scan_05.png").write_bytes(b"a label saved by hand")
    with pytest.raises(Exception, match="scan_05.png: case scan_05 has a label already"):
        save(worklist, "all")
    assert not (folder / "masks" / "scan_03.png").exists()  # nothing saved when one case is refused
    (folder / "masks" / "scan_05.png").unlink()
    written = save(worklist, "scan_03,scan_04")
    assert sorted(p.name for p in written) == ["scan_03.png", "scan_04.png"]  # in worklist order
    for label in written:
        assert label.read_bytes() == (tmp_path / "out" / "pre" / label.name).read_bytes()
    labelled, unlabelled = partition_cases(load_card(card), data_root(load_card(card)))
    assert len(labelled) == 5 and [c.id for c in unlabelled] == ["scan_05"]
    with pytest.raises(Exception, match="scan_04.png: case scan_04 has a label already"):
        save(worklist, "scan_04")
    image = folder / "images" / "scan_05.png"
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(Exception, match="the worklist no longer matches the data: the image of case scan_05"):
        save(worklist, "scan_05")
    with pytest.raises(ConfigError, match=r"cases=scan_99: \['scan_99'\] are not in"):
        save(worklist, "scan_99")


@pytest.mark.slow
def test_a_semantic_adapter_prompts_itself_with_prompt_auto(tmp_path, monkeypatch):
    """No prompts file: each unlabelled volume is prompted from the semantic head's components (``auto``)."""
    import torch

    from adapt.inference import runner as inference

    folder = folders.write_msd_style_folder(tmp_path / "data", num_cases=2, unlabelled=1)
    card = user_card(folder, tmp_path / "card.yaml")
    adapter = make_semantic_adapter(
        tmp_path / "semantic",
        ["label_1"],
        {"background": 0, "label_1": 1},
        {"window": [-100, 240], "slice_axis": 2},
    )

    def left_half(model, embeddings):  # the coarse class map: class 1 on the left half of every plane
        logits = torch.zeros(len(embeddings[0]), 2, 32, 32)
        logits[:, 1, :, :16] = 5.0
        return logits

    monkeypatch.setattr(inference, "class_logits", left_half)
    result = run(annotate_cfg(f"adapter={adapter}", f"data.card={card}", f"out={tmp_path / 'out'}", "device=cpu"))
    [pre] = result.pre
    assert pre.name == "organ_002.nii.gz" and np.allclose(
        nib.load(pre).affine, nib.load(folder / "imagesTs" / pre.name).affine
    )
    assert {r.source for r in result.rows} == {"auto"}
