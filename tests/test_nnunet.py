"""nnU-Net v2 raw datasets: recognised by ``data init``, listed by the card (``source.kind: nnunet``), their
faults named by init, by listing and by ``data check`` (``dataset.json``, the field, the fix).

The datasets are written as nnU-Net users have them (``tests/data/user_folders.py``,
``write_nnunet_folder``): ``dataset.json`` with ``channel_names``, ``labels`` (name -> id),
``numTraining`` and ``file_ending``; ``imagesTr/{case}_0000{ending}``, ``labelsTr/{case}{ending}``,
``imagesTs/``. The journey runs the README's own command lines (``readme_commands``) on a 3D one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import load_user_folders
from PIL import Image

from adapt.data.__main__ import main
from adapt.data.cards import load_card
from adapt.data.inspect import find_layout
from adapt.data.sources import data_root, list_cases, partition_cases
from adapt.errors import DataError

folders = load_user_folders()


def nifti(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((6, 5, 3), value, np.uint8), np.diag([0.8, 0.8, 2.5, 1.0])), path)


def dataset_json(**fields) -> str:
    return json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, **fields})


NNUNET = dataset_json(numTraining=2, file_ending=".nii.gz")

#: (folder files, dataset.json or None, the layout's source kind, {image: label} paired, unlabelled images)
LAYOUT_ROWS = {
    "nnU-Net: the channel suffix removed, only the last": (
        ["imagesTr/case_0000_0000.nii.gz", "labelsTr/case_0000.nii.gz", "imagesTr/b_0000.nii.gz", "labelsTr/b.nii.gz"],
        NNUNET,
        "nnunet",
        {"imagesTr/b_0000.nii.gz": "labelsTr/b.nii.gz", "imagesTr/case_0000_0000.nii.gz": "labelsTr/case_0000.nii.gz"},
        [],
    ),
    "nnU-Net: imagesTs and an imagesTr image without its label kept unlabelled, an annotated test image paired": (
        [
            "imagesTr/a_0000.nii.gz",
            "labelsTr/a.nii.gz",
            "imagesTr/b_0000.nii.gz",
            "imagesTs/t_0000.nii.gz",
            "imagesTs/done_0000.nii.gz",
            "labelsTr/done.nii.gz",
        ],
        NNUNET,
        "nnunet",
        {"imagesTr/a_0000.nii.gz": "labelsTr/a.nii.gz", "imagesTs/done_0000.nii.gz": "labelsTr/done.nii.gz"},
        ["imagesTr/b_0000.nii.gz", "imagesTs/t_0000.nii.gz"],
    ),
    "no dataset.json: _0000 is part of the name": (
        [
            "imagesTr/scan_0000.nii.gz",
            "labelsTr/scan_0000.nii.gz",
            "imagesTr/scan_0001.nii.gz",
            "labelsTr/scan_0001.nii.gz",
        ],
        None,
        "folder",
        {
            "imagesTr/scan_0000.nii.gz": "labelsTr/scan_0000.nii.gz",
            "imagesTr/scan_0001.nii.gz": "labelsTr/scan_0001.nii.gz",
        },
        [],
    ),
    "an MSD training list wins over channel_names": (
        ["imagesTr/x_0000.nii.gz", "labelsTr/x_0000.nii.gz"],
        dataset_json(
            file_ending=".nii.gz",
            training=[{"image": "./imagesTr/x_0000.nii.gz", "label": "./labelsTr/x_0000.nii.gz"}],
        ),
        "msd",
        {"imagesTr/x_0000.nii.gz": "labelsTr/x_0000.nii.gz"},
        [],
    ),
}


@pytest.mark.parametrize("files, manifest, kind, paired, unlabelled", LAYOUT_ROWS.values(), ids=list(LAYOUT_ROWS))
def test_init_recognises_nnunet_and_the_card_lists_what_it_found(tmp_path, files, manifest, kind, paired, unlabelled):
    root = tmp_path / "Dataset001_X"
    for n, name in enumerate(files):
        nifti(root / name, value=n % 2)
    if manifest:
        (root / "dataset.json").write_text(manifest)
    layout = find_layout(root)
    relative = lambda paths: [p.relative_to(root).as_posix() for p in paths]  # noqa: E731
    assert layout.source["kind"] == kind
    assert dict(zip(relative(i for i, _ in layout.pairs), relative(lab for _, lab in layout.pairs))) == paired
    assert sorted(relative(layout.unlabelled)) == sorted(unlabelled)
    if kind != "nnunet":
        return
    card_path = tmp_path / "card.yaml"
    assert main(["init", str(root), f"out={card_path}"]) == 0
    labelled, rest = partition_cases(load_card(card_path), root)
    assert {c.id: (c.image.relative_to(root).as_posix(), c.label.relative_to(root).as_posix()) for c in labelled} == {
        Path(label).name.removesuffix(".nii.gz"): (image, label) for image, label in paired.items()
    }
    assert sorted(relative(c.image for c in rest)) == sorted(unlabelled)  # labels saved for them go to labelsTr/
    assert all(c.label.parent == root / "labelsTr" for c in rest)


def add_channel(root: Path) -> None:
    for image in (root / "imagesTr").glob("*_0000.png"):
        shutil.copy(image, image.with_name(image.name.replace("_0000", "_0001")))


def edit(root: Path, **fields) -> None:
    manifest = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**manifest, **fields}))


#: what is planted -> (the change to a clean 2D dataset, what the message must say)
FAULTS = {
    "channels in separate files": (
        lambda root: (add_channel(root), edit(root, channel_names={"0": "T2", "1": "ADC"})),
        [r"channel_names lists 2 channel\(s\)", "liver_000_0001.png", "not read by this project yet", "nibabel"],
    ),
    "a second channel file that channel_names does not name": (
        add_channel,
        [r"channel_names lists 1 channel\(s\)", "liver_000_0001.png", "np.stack"],
    ),
    "region-based labels": (
        lambda root: edit(root, labels={"background": 0, "lesion": 1, "whole": [1, 2]}),
        [r"labels.whole = \[1, 2\] is a region", "one integer id"],
    ),
    "a file_ending the readers do not take": (
        lambda root: edit(root, file_ending=".mha"),
        ["file_ending '.mha' is not a format this project reads", "set file_ending"],
    ),
    "an image without its channel suffix": (
        lambda root: (root / "imagesTr" / "liver_001_0000.png").rename(root / "imagesTr" / "liver_001.png"),
        ["imagesTr/liver_001.png lacks the channel suffix", "rename it liver_001_0000.png"],
    ),
    "no training image has its label": (
        lambda root: shutil.rmtree(root / "labelsTr"),
        ["imagesTr/liver_000_0000.png has no label labelsTr/liver_000.png", "source.unlabelled: true"],
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_named_by_init_listing_and_check(tmp_path, capsys, fault):
    root = folders.write_nnunet_folder(tmp_path / "Dataset002_Lesions", num_cases=3, shape=(24, 20), file_ending=".png")
    card = tmp_path / "card.yaml"
    assert main(["init", str(root), f"out={card}"]) == 0  # the clean dataset's card, then the fault
    plant, messages = FAULTS[fault]
    plant(root)
    capsys.readouterr()
    assert main(["init", str(root), f"out={tmp_path / 'again.yaml'}"]) == 2
    said = capsys.readouterr().err
    assert "Traceback" not in said and not (tmp_path / "again.yaml").exists()
    for text in [re.escape(str(root / "dataset.json")), *messages]:
        assert re.search(text, said), (text, said)
    with pytest.raises(DataError) as listed:
        list_cases(load_card(card), data_root(load_card(card)))
    assert all(re.search(text, str(listed.value)) for text in [re.escape(str(root / "dataset.json")), *messages])
    assert main(["check", f"card={card}", f"out={tmp_path / 'f.png'}"]) == 2
    assert re.search(messages[0], capsys.readouterr().err)


def test_rgb_pictures_named_by_three_channels_are_one_file_each(tmp_path):
    """nnU-Net's one exception: an RGB PNG ``{case}_0000.png`` with ``channel_names`` R, G, B."""
    root = tmp_path / "Dataset120_Roads"
    for i in range(3):
        rng = np.random.default_rng(i)
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(root / "imagesTr" / f"r{i}_0000.png")
        Image.fromarray((np.arange(20) % 5 == i).astype(np.uint8)[None].repeat(16, 0)).save(
            root / "labelsTr" / f"r{i}.png"
        )
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "R", "1": "G", "2": "B"},
                "labels": {"background": 0, "road": 1},
                "numTraining": 3,
                "file_ending": ".png",
            }
        )
    )
    assert main(["init", str(root), f"out={tmp_path / 'roads.yaml'}"]) == 0
    card = load_card(tmp_path / "roads.yaml")
    assert (card.modality, card.dims, card.labels, card.targets) == ("RGB", 2, {"background": 0, "road": 1}, ["road"])
    assert [c.id for c in list_cases(card, data_root(card))] == ["r0", "r1", "r2"]


def test_a_training_image_without_its_label_is_kept_by_init_and_refused_by_a_card_without_unlabelled(tmp_path, capsys):
    root = folders.write_nnunet_folder(tmp_path / "Dataset002_Lesions", num_cases=3, shape=(24, 20), file_ending=".png")
    card = tmp_path / "card.yaml"
    assert main(["init", str(root), f"out={card}"]) == 0
    assert "unlabelled" not in load_card(card).source
    (root / "labelsTr" / "liver_002.png").unlink()
    with pytest.raises(
        DataError, match=r"imagesTr/liver_002_0000.png has no label labelsTr/liver_002.png \(1 of the 3"
    ):
        list_cases(load_card(card), root)
    capsys.readouterr()
    assert main(["init", str(root), f"out={tmp_path / 'kept.yaml'}"]) == 0
    assert "labelsTr/liver_002.png) kept as cases to annotate" in capsys.readouterr().out
    kept = load_card(tmp_path / "kept.yaml")
    labelled, unlabelled = partition_cases(kept, root)
    assert [c.id for c in labelled] == ["liver_000", "liver_001"] and [c.id for c in unlabelled] == ["liver_002"]


def test_numtraining_that_disagrees_with_the_files_is_a_warning_naming_the_number_to_write(tmp_path, capsys, caplog):
    root = folders.write_nnunet_folder(
        tmp_path / "Dataset002_Lesions", num_cases=3, shape=(24, 20), file_ending=".png", num_training=5
    )
    assert main(["init", str(root), f"out={tmp_path / 'card.yaml'}"]) == 0
    note = f"{root / 'dataset.json'}: numTraining is 5 but imagesTr holds 3 case(s)"
    said = capsys.readouterr().out
    assert note in said and "verify_dataset_integrity refuses the mismatch: set numTraining to 3" in said
    card = load_card(tmp_path / "card.yaml")
    with caplog.at_level(logging.WARNING):
        assert len(list_cases(card, data_root(card))) == 3
    assert note in caplog.text


def test_init_names_label_ids_that_dataset_json_leaves_out(tmp_path, capsys):
    """dataset.json names liver (1) only, the files hold a tumour (2) too: the card keeps it as ``label_2``
    (a target), and init says which ids the manifest missed, on the console and in the card's comment."""
    root = folders.write_nnunet_folder(tmp_path / "Dataset003_Liver", num_cases=2, shape=(24, 20, 6))
    edit(root, labels={"background": 0, "liver": 1})
    card_path = tmp_path / "liver.yaml"
    assert main(["init", str(root), f"out={card_path}"]) == 0
    missing = f"label id(s) [2] are in the label files but not in {root / 'dataset.json'}'s labels"
    assert f"{missing}; the card calls them label_2: rename them" in capsys.readouterr().out
    assert missing in card_path.read_text()
    card = load_card(card_path)
    assert (card.labels, card.targets) == ({"background": 0, "liver": 1, "label_2": 2}, ["liver", "label_2"])
    edit(root, labels={"background": 0, "liver": 1, "tumor": 2})  # named: nothing to say
    assert main(["init", str(root), f"out={tmp_path / 'named.yaml'}"]) == 0
    assert "label id(s)" not in capsys.readouterr().out + (tmp_path / "named.yaml").read_text()


def test_a_2d_nnunet_dataset_goes_through_init_and_check(tmp_path, capsys):
    root = folders.write_nnunet_folder(tmp_path / "Dataset002_Lesions", num_cases=4, shape=(48, 56), file_ending=".png")
    card_path = tmp_path / "lesions.yaml"
    assert main(["init", str(root), f"out={card_path}"]) == 0
    card = load_card(card_path)
    assert (card.source["kind"], card.dims, card.labels, card.targets) == (
        "nnunet",
        2,
        {"background": 0, "lesion": 1},
        ["lesion"],
    )
    assert card.mask_values is None and card.intensity == {"window": [0, 255]}  # ids 0/1 stored as they are
    text = card_path.read_text()
    card_path.write_text(re.sub(r"(?m)^(license|citation): .*$", r"\1: CC0-1.0", text))
    capsys.readouterr()
    assert main(["check", f"card={card_path}", f"out={tmp_path / 'check.png'}"]) == 0
    out = capsys.readouterr().out
    assert "no problem found" in out and (tmp_path / "check.png").exists()
    assert re.search(r"label lesion = 1 \(target\)\s*│\s*[\d,]+ (pixels|voxels) in 4 of 4 cases", out), out


@pytest.mark.slow
def test_the_readme_journey_on_an_nnunet_dataset(tmp_path, monkeypatch):
    """A 3D nnU-Net v2 dataset as its users have it (6 CT-like cases on an oblique grid, liver and tumour, one
    imagesTs case): the README's ``data init`` and ``data check`` lines as subprocesses, then its first try (2
    steps here) and the quick start's evaluate line on the adapter alone."""
    from test_journeys import KINDS, Journey, Kind, fill_in

    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("SAM2_ADAPT_EVAL_DIRS", raising=False)
    volume = KINDS["msd"]
    kind = Kind(
        "nnunet",
        folders.write_nnunet_folder,
        "imagesTr/liver_000_0000.nii.gz",
        "liver_000_mask.nii.gz",
        volume.prompt,
        "labelsTr/liver_000.nii.gz",
        3,
        volume.usage,
    )
    trip = Journey(kind, tmp_path / "home", folders.write_nnunet_folder(tmp_path / "Dataset001_Liver", unlabelled=1))
    trip.home.mkdir()
    printed = trip.readme("python -m adapt.data init", "Bring your own data", subprocess_run=True)
    assert "nnU-Net v2 dataset (6 cases in imagesTr, 1 in imagesTs, file_ending .nii.gz)" in printed, printed
    card = load_card(trip.home / "busi.yaml")
    assert (card.source["kind"], card.modality, card.dims, card.targets) == ("nnunet", "CT", 3, ["liver", "tumor"])
    assert card.labels == {"background": 0, "liver": 1, "tumor": 2} and card.source["unlabelled"] is True
    fill_in(trip.home / "busi.yaml", "Doe J. et al. My liver scans. Journal of Tests 1 (2026).")
    printed = trip.readme("python -m adapt.data check", "Bring your own data", subprocess_run=True)
    assert "no problem found" in printed and "1 unlabelled image(s) of the card skipped by check" in printed
    trip.readme(
        "python -m adapt.train",
        "Bring your own data",
        containing=("busi.yaml", "model=tiny"),
        **{"trainer.max_steps=20": "trainer.max_steps=2 model.image_size=64"},
    )
    [run] = (trip.home / "outputs").glob("*/*")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and (metrics["data"]["train_cases"], metrics["data"]["val_cases"]) == (5, 1)
    assert "liver_006" not in metrics["data"]["train_case_ids"]  # the imagesTs case has no label
    trip.run = str(run.relative_to(trip.home))
    trip.readme("python -m adapt.evaluate", "Quick start (offline, minutes on a laptop CPU)")
    summary = json.loads((trip.home / "outputs" / "evaluate" / "demo" / "summary.json").read_text())
    assert summary["data_card"] == card.name and summary["cases"] >= 1
    assert set(summary["classes"]) == {"liver", "tumor"} and summary["overall"]["dice"]["mean"] is not None
