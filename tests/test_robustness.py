"""Robustness under shift: seeded corruptions of the model input (MONAI transforms where MONAI has them),
identity at severity 0, and ``python -m adapt.evaluate ... shift=... severity=...`` tables for the adapter and
zero-shot SAM2 side by side."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import errors, execute, figures, phantom_data, train_tiny
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR, REPO_ROOT
from adapt.errors import ConfigError
from adapt.evaluation import evaluate
from adapt.evaluation.robustness import conditions
from adapt.transforms.shifts import FAMILIES, SHIFTS, Shift, family, scale_table

STACK = np.random.default_rng(0).random((3, 1, 32, 40)).astype(np.float32) * 0.8 + 0.1


@pytest.mark.parametrize("name", SHIFTS)
def test_each_shift_is_identity_at_severity_0_seeded_and_grows_with_severity(name):
    for group in FAMILIES:
        assert Shift(name, 0, group, seed=1)(STACK) is STACK
        changes = []
        for severity in range(1, 6):
            first, again = (Shift(name, severity, group, seed=5, window=(-160.0, 240.0))(STACK) for _ in range(2))
            assert first.shape == STACK.shape and first.dtype == np.float32 and 0 <= first.min() <= first.max() <= 1
            np.testing.assert_array_equal(first, again)  # one seed, one corruption
            changes.append(float(np.abs(first - STACK).mean()))
        assert changes[0] > 0 and changes[-1] > changes[0], (name, group, changes)
    if name in ("noise", "bias_field"):  # the random ones draw from their seed
        assert not np.array_equal(Shift(name, 3, "mr", seed=1)(STACK), Shift(name, 3, "mr", seed=2)(STACK))


def test_scales_follow_the_modality_and_are_documented():
    assert [family(m) for m in ("CT", "MR", "RGB", "multispectral", "US")] == ["ct", "mr", "aerial", "aerial", "other"]
    ct = Shift("noise", 2, "ct", seed=0, window=(-160.0, 240.0))  # 25 HU in a 400 HU window
    assert np.std(ct(np.full((4, 1, 64, 64), 0.5, np.float32)) - 0.5) == pytest.approx(25 / 400, rel=0.05)
    haze = Shift("contrast", 5, "aerial")(np.zeros((1, 3, 4, 4), np.float32))
    assert np.allclose(haze, 0.5 * 0.9)  # half the airlight
    assert scale_table() in (REPO_ROOT / "docs" / "evaluation.md").read_text()


def test_conditions_parse_and_refuse():
    assert conditions(None, [1, 2]) == []
    assert conditions("blur", 3) == [("blur", 3)]
    assert len(conditions("all", [0, 5])) == 2 * len(SHIFTS)
    with pytest.raises(ConfigError, match="shift="):
        conditions(["fog"], [1])
    with pytest.raises(ConfigError, match="severity="):
        conditions(["noise"], [6])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("robustness")
    with phantom_data(base) as data:
        yield SimpleNamespace(data=data, run=train_tiny(base / "run", data))


def run_eval(env, out: Path, **values):
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": str(env.run),
            "compare": "none",
            "out": str(out),
            "clicks": [1],
            "batch_size": 8,
            "device": "cpu",
            "save_masks": 0,
            "data": {"root": str(env.data)},
            **values,
        }
    )
    return evaluate(cfg)


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_every_shift_at_severity_0_equals_the_clean_evaluation_and_the_table_holds_both_runs(
    env, tmp_path, capsys, monkeypatch
):

    out = tmp_path / "eval"
    summary = run_eval(env, out, shift="all", severity=[0, 4])
    clean = {(r["run"], r["case"], r["class"]): r for r in read(out / "cases.csv")}
    assert {r["run"] for r in clean.values()} == {"adapter", "compare"}  # cases.csv: the clean rows only
    shifted = read(out / "robustness_cases.csv")
    assert {(r["shift"], r["severity"]) for r in shifted} == {(s, v) for s in SHIFTS for v in ("0", "4")}
    for row in shifted:
        if row["severity"] == "0":
            reference = clean[(row["run"], row["case"], row["class"])]
            for key in ("dice", "iou", "nsd", "hd95", "pred_voxels"):
                assert row[key] == reference[key], (row["shift"], key)

    table = summary["robustness"]
    assert table["family"] == "ct" and table["models"]["compare"].startswith("zero-shot")
    assert [(c["shift"], c["severity"]) for c in table["conditions"]][:3] == [("none", 0), ("noise", 0), ("noise", 4)]
    by = {(c["shift"], c["severity"]): c for c in table["conditions"]}
    for run in ("adapter", "compare"):
        base = by[("none", 0)][run]["dice"]
        for name in SHIFTS:
            assert by[(name, 0)][run]["dice"] == base and by[(name, 0)][run]["dice_drop"] in (0.0, None)
            hit = by[(name, 4)][run]
            if base:
                assert hit["dice_drop"] == pytest.approx((base - hit["dice"]) / base)
    assert by[("noise", 4)]["parameter"] == 75  # HU, CT's scale
    stored = json.loads((out / "summary.json").read_text())
    assert stored["robustness"] == json.loads(json.dumps(table))
    lines = read(out / "robustness.csv")
    assert len(lines) == 2 * (1 + 2 * len(SHIFTS)) and {"dice_drop", "nsd_drop", "model"} <= set(lines[0])
    printed = capsys.readouterr().out
    assert "Robustness to acquisition shifts" in " ".join(printed.split()) and "bias_field" in printed

    book = execute("evaluate.ipynb", {"SAM2_ADAPT_EVAL_DIRS": str(out)}, monkeypatch)
    assert not errors(book)
    assert figures(book) == 4  # box plots, size scatter, click curve (no masks kept), Dice against severity


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers(env, tmp_path):
    first, second = (
        run_eval(env, tmp_path / name, shift=["noise", "bias_field"], severity=[3], seed=7)["robustness"]["conditions"]
        for name in ("a", "b")
    )
    assert first == second and len(first) == 3


def test_bad_shift_options_are_refused_before_any_model_loads(env, tmp_path):
    for values, message in (({"shift": "fog"}, "shift="), ({"shift": "noise", "severity": [9]}, "severity=")):
        with pytest.raises(ConfigError, match=message):
            run_eval(env, tmp_path / "x", **values)
