"""Every shipped card: valid, documented, and trainable on fake data in its own layout;
end-to-end training through `python -m adapt.train` on a 2D PNG and a 3D NIfTI card."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_fake_data

from adapt.data.cards import INTENSITY_KEYS, SOURCE_KEYS, DataCard, load_card, shipped_cards
from adapt.data.datamodule import build_datamodule

generate = load_fake_data()

REQUIRED = {
    "msd_liver",
    "msd_spleen",
    "msd_hippocampus",
    "msd_prostate",
    "kvasir_seg",
    "isic2018",
    "loveda",
    "btcv",
    "ct_phantom",
    "mr_phantom",
    "aerial_phantom",
}


def test_the_required_cards_ship_and_each_has_a_fake_data_writer():
    assert REQUIRED <= set(shipped_cards())
    assert set(shipped_cards()) <= set(generate.WRITERS)


def test_readme_documents_every_field_and_card():
    readme = Path("data_cards/README.md").read_text()
    keys = {f.name for f in dataclasses.fields(DataCard)} - {"path"}
    keys |= set().union(*SOURCE_KEYS.values()) | INTENSITY_KEYS
    missing = sorted(k for k in keys if f"`{k}`" not in readme)
    assert not missing, f"data_cards/README.md does not document {missing}"
    assert not [s for s in shipped_cards() if f"`{s}`" not in readme]


@pytest.mark.parametrize("stem", sorted(REQUIRED))
def test_card_trains_on_fake_data_in_its_layout(stem, tmp_path):
    card = load_card(stem)
    assert card.license and card.citation and card.labels and card.targets
    root = generate.write_dataset(stem, tmp_path / stem)
    dm = build_datamodule({"card": stem, "root": str(root), "batch_size": 2, "cache": "memory"}, 32, seed=0)
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # as the model receives it
    assert batch["image"].shape[1] in (1, 3) and batch["image"].shape[2:] == (32, 32)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1 and batch["image"].std() > 0
    assert batch["label"].shape == (2, 1, 32, 32) and batch["label"].sum() > 0
    assert set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    assert set(batch["meta"]["target"]) <= set(card.targets)
    assert len(dm.val_set) > 0 and dm.num_bad_cases == 0
    assert dm.preprocessing["channels"] == batch["image"].shape[1]


def test_btcv_fake_data_has_every_organ_in_objects_all(tmp_path):
    root = generate.write_dataset("btcv", tmp_path / "btcv")
    dm = build_datamodule({"card": "btcv", "root": str(root), "objects": "all", "cache": "memory"}, 32, seed=0)
    label = torch.stack([dm.train_set[i]["label"] for i in range(len(dm.train_set))])
    assert label.shape[1] == 13 and bool((label.sum((0, 2, 3)) > 0).all())


def run_train(tmp_path, card, root, *overrides):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    args = [
        "model=tiny",
        "model.image_size=64",
        f"data.card={card}",
        f"data.root={root}",
        "trainer.max_steps=2",
        "data.batch_size=2",
        "data.val_batch_size=2",
        "data.val_max_slices_per_case=1",
        "optim.warmup_steps=1",
        "validate_before=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    return subprocess.run(
        [sys.executable, "-m", "adapt.train", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def copy_card(tmp_path, stem):
    path = tmp_path / f"{stem}_copy.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(open(f"data_cards/{stem}.yaml"))))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["loveda", "msd_spleen"])  # 2D PNG tiles, 3D NIfTI volumes
def test_cli_trains_on_a_card_given_by_path(stem, tmp_path):
    root = generate.write_dataset(stem, tmp_path / "data")
    result = run_train(tmp_path, copy_card(tmp_path, stem), root)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    data = metrics["data"]
    assert metrics["steps"] == 2 and data["card"] == stem and data["bad_cases"] == 0
    assert data["train_cases_setting"] == "all" and data["train_cases"] == len(data["train_case_ids"]) > 0
    assert "val/dice" in metrics["after"]
    saved = json.loads((tmp_path / "run" / "adapter" / "sam2_adapt.json").read_text())
    expected_channels = 3 if stem == "loveda" else 1
    assert (
        saved["preprocessing"]["channels"] == expected_channels
        and saved["preprocessing"]["dims"] == load_card(stem).dims
    )


@pytest.mark.parametrize(
    "mask_values, message",
    [
        ("255", r"mask_values must be a mapping"),
        ({}, r"mask_values must map label names to the value stored"),
        ({"tumour": 255}, r"mask_values names 'tumour', which is not in labels \['background', 'lesion'\]"),
        ({"lesion": 256}, r"mask_values.lesion=256 is out of range for .jpg label files \(0..255\)"),
        ({"lesion": -1}, r"mask_values.lesion=-1 is out of range"),
        ({"lesion": "white"}, r"mask_values.lesion: 'white' is not a colour; write colours as \"#rrggbb\""),
        ({"lesion": 2.5}, r"mask_values.lesion must be an integer, a colour \"#rrggbb\" or a list of either"),
        ({"lesion": []}, r"mask_values.lesion must be an integer, a colour \"#rrggbb\" or a list of either"),
        ({"lesion": 0}, r"mask_values.lesion=0 is also the stored value of 'background'"),
        ({"background": 0, "lesion": [255, 0]}, r"mask_values.lesion=0 is also the stored value of 'background'"),
    ],
)
def test_a_malformed_mask_values_names_the_card_file_and_the_entry(tmp_path, mask_values, message):
    card = yaml.safe_load(open("data_cards/kvasir_seg.yaml"))
    card["labels"] = {"background": 0, "lesion": 1}
    card["targets"] = ["lesion"]
    card["source"]["labels"] = "Kvasir-SEG/masks/{stem}.jpg"  # JPEG label files: 8-bit values
    card["mask_values"] = mask_values
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    from adapt.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as err:
        load_card(path)
    assert f"data card {path}" in str(err.value)


def test_mask_values_range_follows_the_label_files_and_may_list_several_values(tmp_path):
    card = yaml.safe_load(open("data_cards/isic2018.yaml"))  # PNG label files: 16-bit values fit
    card["mask_values"] = {"lesion": [65535, 1]}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    assert load_card(path).mask_values == {"lesion": [65535, 1]}
