"""A dataset too small for its split is refused before training; label-efficiency records count the
cases that trained the adapter, not those skipped as bad.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import compose_cfg, run_user_action

from adapt.data.synthetic import phantom_affine, write_msd_volumes

FAST = [
    "model=tiny",
    "model.image_size=64",
    "trainer.max_steps=1",
    "data.batch_size=1",
    "data.val_batch_size=1",
    "optim.warmup_steps=0",
    "validate_before=false",
    "data.cache=memory",
    "data.augment=false",
    "trainer.accelerator=cpu",
    "data.num_workers=0",
]


def dataset(root: Path, cases: int, missing_label: int | None = None, **split) -> Path:
    """``cases`` small volumes in the MSD layout (``missing_label``: that case's label file is gone) and a card."""
    volumes = []
    for i in range(cases):
        label = np.zeros((16, 16, 4), np.uint8)
        label[4:10, 5:11, 1:3] = 1
        volumes.append((np.where(label > 0, 60.0, -100.0).astype(np.float32) + i, label))
    write_msd_volumes(
        root, "case", volumes, phantom_affine((1.0, 1.0, 3.0)), "small", {"0": "CT"}, {"background": 0, "liver": 1}
    )
    if missing_label is not None:
        (root / "labelsTr" / f"case_{missing_label:03d}.nii.gz").unlink()
    card = {
        "name": "small",
        "title": "small",
        "modality": "CT",
        "dims": 3,
        "license": "CC0-1.0",
        "citation": "generated",
        "source": {"kind": "msd", "root": str(root)},
        "labels": {"background": 0, "liver": 1},
        "targets": ["liver"],
        "intensity": {"window": [-160, 240]},
        "split": {"val": 0.2, "seed": 0, **split},
    }
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


def validation_case(card: Path) -> str:
    from adapt.data.cards import load_card
    from adapt.data.sources import list_cases
    from adapt.data.splits import split_cases

    loaded = load_card(card)
    return split_cases(list_cases(loaded, Path(loaded.source["root"])), loaded.split)["val"][0].id


SMALL = [  # (the dataset, what the message says)
    ("one case", dict(cases=1), "the split puts none of its 1 case(s) in validation"),
    ("no validation share", dict(cases=3, val=0), "the split puts none of its 3 case(s) in validation"),
    ("its validation case skipped as bad", dict(cases=3, bad_val=True), "validation case(s) were skipped as bad"),
]


@pytest.mark.parametrize("data, said", [r[1:] for r in SMALL], ids=[r[0] for r in SMALL])
def test_a_dataset_without_a_validation_case_is_refused_before_training(tmp_path, forbid_model, data, said):
    from adapt.train import train

    data = dict(data)
    bad_val = data.pop("bad_val", False)
    card = dataset(tmp_path / "data", **data)
    if bad_val:  # the validation case's label goes missing, and bad cases are skipped
        index = int(validation_case(card).split("_")[1])
        (tmp_path / "data" / "labelsTr" / f"case_{index:03d}.nii.gz").unlink()
    cfg = compose_cfg(tmp_path / "run", *FAST, f"data.card={card}", f"data.skip_bad_cases={bad_val}")
    code, message, _ = run_user_action(lambda: train(cfg))
    assert code == 2 and "Traceback" not in message, message
    assert "no validation case" in message and said in message and "split.val" in message
    assert not (tmp_path / "run" / "adapter").exists()


def test_skipped_training_cases_are_reported_not_counted(tmp_path):
    from adapt.data.datamodule import build_datamodule
    from adapt.evaluation.sweep import describe_run
    from adapt.training.record import training_cases

    card = dataset(tmp_path / "data", cases=5)
    val = validation_case(card)
    bad = next(f"case_{i:03d}" for i in range(5) if f"case_{i:03d}" != val)
    (tmp_path / "data" / "labelsTr" / f"{bad}.nii.gz").unlink()
    module = build_datamodule(
        {
            "card": str(card),
            "skip_bad_cases": True,
            "cache": "memory",
            "batch_size": 1,
            "val_batch_size": 1,
            "num_workers": 0,
        },
        image_size=64,
        seed=0,
    )
    record = training_cases(module, None)
    assert record["train_cases"] == 3 and bad not in record["train_case_ids"]  # 4 training cases, 1 skipped
    assert record["skipped_case_ids"] == {"train": [bad], "val": []} and record["val_cases"] == 1

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(
        json.dumps({"adapter": {"kind": "lora", "rank": 4}, "steps": 1, "data": {"card": "small", **record}})
    )
    row = describe_run(run)
    assert row["labelled_cases"] == 3 and row["skipped_cases"] == 1


def test_a_record_without_a_datamodule_split_is_empty():
    from adapt.training.record import training_cases

    assert training_cases(SimpleNamespace(), None) == {}
