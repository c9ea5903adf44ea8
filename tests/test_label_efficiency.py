"""Label efficiency: ``data.train_cases=k`` trains on k seeded training patients (nested as k grows,
validation untouched), the schema checks k, and a Hydra multirun over k x adapter kinds is collected
into one table by ``python -m adapt.evaluation.sweep``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from adapt.conf import CONFIG_DIR, REPO_ROOT, register_recipes, register_resolvers
from adapt.data.cards import load_card
from adapt.data.datamodule import build_datamodule
from adapt.data.sources import Case, data_root, list_cases
from adapt.data.splits import split_cases, subset_order, training_subset
from adapt.errors import ConfigError
from adapt.evaluation.sweep import CSV_NAME, MD_NAME, main as sweep_main
from adapt.schema import validate
from conftest import TWO_STEPS, errors, execute, figures

register_resolvers()
register_recipes()


def cases(count: int, per_patient: int = 1) -> list[Case]:
    return [
        Case(f"c{i}_{j}", Path(f"i{i}_{j}"), Path(f"l{i}_{j}"), group=f"p{i:02d}")
        for i in range(count)
        for j in range(per_patient)
    ]


def test_subsets_are_prefixes_of_one_seeded_permutation_of_patients():
    train = cases(12, per_patient=2)  # two cases (e.g. scans) per patient stay together
    chosen = [{c.group for c in training_subset(train, k, seed=3)} for k in range(1, 13)]
    assert [len(c) for c in chosen] == list(range(1, 13))
    assert all(a < b for a, b in zip(chosen, chosen[1:]))  # nested
    assert chosen[4] == set(subset_order(train, 3)[:5])
    assert len(training_subset(train, 5, seed=3)) == 10  # whole patients
    assert training_subset(train, "all", 3) == training_subset(train, None, 3) == train
    assert chosen[1] != {c.group for c in training_subset(train, 2, seed=4)}  # the seed draws them
    with pytest.raises(ConfigError, match=r"data.train_cases=13 .* 1 to 12"):
        training_subset(train, 13)


def test_validation_is_untouched_by_the_subset():
    every = cases(20)
    full = split_cases(every, {"val": 0.2, "test": 0.1, "seed": 0})
    small = split_cases(every, {"val": 0.2, "test": 0.1, "seed": 0}, train_cases=2, subset_seed=7)
    assert small["val"] == full["val"] and small["test"] == full["test"]
    assert len(small["train"]) == 2 and set(small["train"]) <= set(full["train"])


def test_datamodule_trains_on_k_patients_and_validates_on_all():
    full = build_datamodule({"card": "ct_phantom", "cache": "memory"}, 64, seed=0)
    two = build_datamodule({"card": "ct_phantom", "cache": "memory", "train_cases": 2}, 64, seed=0)
    assert len({c.group for c in two.splits["train"]}) == 2 < len(full.splits["train"])
    assert two.splits["val"] == full.splits["val"] and len(two.val_set) == len(full.val_set)
    assert {c.id for c in two.train_set.store.cases} <= {c.id for c in full.splits["train"]}


def compose_train(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["out_dir=unused", *overrides])


def test_schema_checks_train_cases_against_the_training_patients():
    card = load_card("ct_phantom")
    train = split_cases(list_cases(card, data_root(card)), card.split)["train"]
    validate(compose_train(f"data.train_cases={len(train)}"), "train")
    validate(compose_train("data.train_cases=all"), "train")
    for value, message in (
        (len(train) + 1, f"must be <= {len(train)}, the number of training cases"),
        (0, "must be all (or null) or a number of training cases"),
        ("some", "must be all (or null)"),
    ):
        with pytest.raises(ConfigError, match="data.train_cases") as error:
            validate(compose_train(f"data.train_cases={value}"), "train")
        assert message in str(error.value)


@pytest.mark.slow
def test_multirun_sweep_over_cases_and_adapters_writes_one_table_and_the_notebook_plots_it(tmp_path, monkeypatch):

    sweep = tmp_path / "sweep"
    overrides = [o for o in TWO_STEPS if not o.startswith("validate_before")]
    command = [
        sys.executable,
        "-m",
        "adapt.train",
        "-m",
        "recipe=demo",
        *overrides,
        "validate_before=true",
        "data.train_cases=1,2,all",
        "adapter=lora,bottleneck",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(runs) == 6
    for kind in ("lora", "bottleneck"):
        ids = {
            r["data"]["train_cases_setting"]: set(r["data"]["train_case_ids"])
            for r in runs
            if r["adapter"]["kind"] == kind
        }
        assert len(ids[1]) == 1 and len(ids[2]) == 2 and ids[1] < ids[2] < ids["all"]  # nested
    assert len({r["data"]["val_cases"] for r in runs}) == 1  # validation untouched

    assert sweep_main([str(sweep)]) == 0
    table = (sweep / MD_NAME).read_text()
    rows = (sweep / CSV_NAME).read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("run,adapter,labelled_cases")
    assert "| labelled cases | bottleneck | lora r=8 |" in table and "| 0 (zero-shot) |" in table
    assert "| 1 |" in table and "| 2 |" in table and f"| {len(ids['all'])} |" in table
    assert sweep_main([str(tmp_path / "nothing")]) == 2

    book = execute("compare_adapters.ipynb", {"SAM2_ADAPT_RUN_DIRS": str(sweep)}, monkeypatch)
    assert not errors(book) and figures(book) == 2  # Dice against parameters, and against labelled cases
