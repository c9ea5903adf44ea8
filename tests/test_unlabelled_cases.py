"""Cards with unlabelled cases (``source.unlabelled: true``): ``data init`` keeps the images without a label
and says how many; training, evaluation and ``check`` list the labelled cases only and say what they skip."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import load_user_folders

from adapt.data.__main__ import main
from adapt.data.card_writer import init_card
from adapt.data.cards import load_card
from adapt.data.check import check_card, summary_rows
from adapt.data.sources import data_root, list_cases, partition_cases
from adapt.errors import DataError

folders = load_user_folders()

#: layout -> (writer, labelled, unlabelled, source kind of the card init writes)
LAYOUTS = {
    "ultrasound png": (folders.write_ultrasound_folder, 4, 2, "folder"),
    "msd nifti": (folders.write_msd_style_folder, 3, 2, "msd"),
    "geotiff": (folders.write_geotiff_folder, 3, 1, "folder"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_keeps_unlabelled_images_and_every_reader_skips_them(tmp_path, layout, capsys, caplog):
    writer, labelled, unlabelled, kind = LAYOUTS[layout]
    folder = writer(tmp_path / "data", num_cases=labelled, unlabelled=unlabelled)
    assert main(["init", str(folder), f"out={tmp_path / 'card.yaml'}"]) == 0
    assert f"kept {unlabelled} image(s) without a label as unlabelled cases" in capsys.readouterr().out
    card = load_card(tmp_path / "card.yaml")
    assert card.source["kind"] == kind and card.source["unlabelled"] is True
    root = data_root(card)
    with caplog.at_level(logging.WARNING):
        cases = list_cases(card, root, say="training")
    assert len(cases) == labelled and all(Path(c.label).exists() for c in cases)
    assert f"{unlabelled} unlabelled image(s) of the card skipped by training" in caplog.text
    kept, missing = partition_cases(card, root)
    assert kept == cases and len(missing) == unlabelled
    assert all(c.image.exists() and not c.label.exists() for c in missing)
    report = check_card(card)
    assert not report.errors, report.errors
    assert (
        "unlabelled images",
        f"{unlabelled} unlabelled image(s) of the card skipped by check (source.unlabelled: "
        "true; python -m adapt.annotate pre-annotates them)",
    ) in summary_rows(report)


def test_a_card_without_the_flag_keeps_a_missing_label_an_error_and_an_all_unlabelled_card_is_refused(tmp_path):
    folder = folders.write_ultrasound_folder(tmp_path / "data", num_cases=3)
    card_path, _, _ = init_card(folder, tmp_path / "card.yaml")
    card = load_card(card_path)
    assert "unlabelled" not in card.source
    (folder / "masks" / "scan_00.png").unlink()
    assert [p.what for p in check_card(card).errors] == ["unpaired image"]
    text = card_path.read_text().replace("source:\n", "source:\n  unlabelled: true\n")
    card_path.write_text(text)
    assert not check_card(load_card(card_path)).errors
    for mask in (folder / "masks").iterdir():
        mask.unlink()
    with pytest.raises(DataError, match="all 3 image.s. under .* are unlabelled"):
        list_cases(load_card(card_path), folder)
    assert len(partition_cases(load_card(card_path), folder)[1]) == 3


def test_check_names_no_unlabelled_image_beside_labels_an_unpaired_label(tmp_path):
    """ACDC keeps each patient's frames, their ``_gt`` labels and an unlabelled cine in one folder: the cine
    is a case to annotate, not a label file no image uses."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for patient in range(1, 5):
        folder = tmp_path / "data" / f"patient{patient:03d}"
        folder.mkdir(parents=True)
        for frame in (1, 12):
            mask = np.zeros((32, 32), np.uint8)
            mask[8 + patient : 20, 6 + frame % 5 : 22] = 1
            Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(
                folder / f"p{patient}_frame{frame:02d}.png"
            )
            Image.fromarray(mask).save(folder / f"p{patient}_frame{frame:02d}_gt.png")
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(folder / f"p{patient}_cine.png")
    card_path, layout, _ = init_card(tmp_path / "data", tmp_path / "card.yaml")
    assert len(layout.pairs) == 8 and sorted(p.name for p in layout.unlabelled) == [
        f"p{i}_cine.png" for i in range(1, 5)
    ]
    report = check_card(load_card(card_path))
    assert not [p for p in report.problems if p.what == "unpaired label"], report.problems
    assert len(report.unlabelled) == 4


def test_init_notes_unlabelled_volumes_of_another_channel_count(tmp_path, capsys):
    """A 4D cine beside 3D frames (ACDC) is kept as a case to annotate; ``init`` says an adapter of the card
    will refuse it, from its header alone."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    for case in range(1, 5):
        folder = tmp_path / "data" / f"patient{case}"
        folder.mkdir(parents=True)
        label = np.zeros((24, 24, 6), np.uint8)
        label[6 : 14 + case, 8:18, 1:5] = 1
        nib.save(nib.Nifti1Image(rng.normal(size=(24, 24, 6)).astype(np.float32), np.eye(4)), folder / "frame01.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "frame01_gt.nii.gz")
        nib.save(
            nib.Nifti1Image(rng.normal(size=(24, 24, 6, 5)).astype(np.float32), np.eye(4)), folder / "cine_4d.nii.gz"
        )
    assert main(["init", str(tmp_path / "data"), f"out={tmp_path / 'card.yaml'}"]) == 0
    out = capsys.readouterr().out
    assert "kept 4 image(s) without a label as unlabelled cases" in out
    assert "4 unlabelled image(s) store 5 channel(s) where the labelled cases have 1" in out
    assert "cine_4d.nii.gz" in out and "move them out of the folder" in out
    card = load_card(tmp_path / "card.yaml")  # same-named files in per-case folders: the paths name the cases
    labelled, unlabelled = partition_cases(card, data_root(card))
    assert sorted(c.id for c in labelled) == [f"patient{i}/frame01" for i in range(1, 5)]
    assert sorted(c.id for c in unlabelled) == [f"patient{i}/cine_4d" for i in range(1, 5)]
