"""The notebooks run top to bottom on the outputs of a tiny offline run, figures included; what the
evaluation notebook draws is checked from its figures' artists (``execute(..., probe=True)``) on 0/255
PNG masks, for 2 cases and for 200."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import errors, execute, figures, load_user_folders, phantom_data, train_tiny
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR
from adapt.evaluation import evaluate


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two tiny runs (LoRA, decoder), the first evaluated against its zero-shot base with clicks."""
    base = tmp_path_factory.mktemp("notebooks")
    with phantom_data(base) as data:
        lora = train_tiny(base / "runs" / "lora", data)
        train_tiny(base / "runs" / "decoder", data, "adapter=decoder")
        cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
        cfg.merge_with(
            {
                "adapter": str(lora),
                "data": {"root": str(data)},
                "out": str(lora / "eval_val"),
                "compare": "none",
                "clicks": [1],
                "split": "all",
                "batch_size": 16,
                "device": "cpu",
            }
        )
        evaluate(cfg)
        yield base


@pytest.mark.slow
def test_evaluate_notebook_shows_table_box_plots_scatter_overlays_and_click_curve(outputs, monkeypatch):
    book = execute("evaluate.ipynb", {"SAM2_ADAPT_EVAL_DIRS": str(outputs / "runs" / "lora" / "eval_val")}, monkeypatch)
    assert not errors(book)
    assert figures(book) == 4  # box plots, size scatter, best/median/worst overlays, click curve
    text = "".join(
        str(out.get("data", {}).get("text/plain", "")) + out.get("text", "")
        for cell in book.cells
        for out in cell.get("outputs", [])
    )
    assert "zero-shot tiny" in text and "liver" in text


@pytest.mark.slow
def test_compare_notebook_tables_runs_and_plots_dice_against_parameters(outputs, monkeypatch):
    book = execute("compare_adapters.ipynb", {"SAM2_ADAPT_RUN_DIRS": str(outputs / "runs")}, monkeypatch)
    assert not errors(book)
    assert figures(book) == 1
    table = next(
        out["data"]["text/plain"]
        for cell in book.cells
        for out in cell.get("outputs", [])
        if "trainable" in out.get("data", {}).get("text/plain", "")
    )
    assert "lora r=8" in table and "decoder" in table and "eval_val dice" in table


#: A card as the README's BUSI example writes one: masks stored as 0/255, read through mask_threshold.
PNG_CARD = """name: scans
title: Ultrasound scans
modality: US
dims: 2
license: CC0-1.0
citation: "Doe J. Ultrasound scans (2026)."
source: {{kind: folder, root: {root}, images: "images/*.png", labels: "masks/{{name}}", mask_threshold: 128}}
labels: {{background: 0, lesion: 1}}
targets: [lesion]
intensity: {{percentiles: [0.5, 99.5]}}
split: {{val: 0.5, seed: 0}}
"""


def widen(folder, out, count: int):
    """``out``: the evaluation in ``folder`` with ``count`` cases per run in ``cases.csv`` (its cases repeated
    under new names, sizes spread over three decades and Dice over [0, 1]); masks and summary as they are."""
    shutil.copytree(folder, out)
    rows = pd.read_csv(folder / "cases.csv")
    rng = np.random.default_rng(0)
    wide = []
    for _run, group in rows.groupby("run"):
        picked = group.iloc[np.arange(count) % len(group)].copy()
        picked["case"] = [case if i < len(group) else f"{case}_{i:03d}" for i, case in enumerate(picked["case"])]
        picked["gt_voxels"] = np.round(10 ** rng.uniform(1, 4, count)).astype(int)
        picked["dice"] = rng.uniform(0, 1, count)
        wide.append(picked)
    pd.concat(wide).to_csv(out / "cases.csv", index=False)
    return out


@pytest.fixture(scope="module")
def png_evaluations(tmp_path_factory):
    """Zero-shot tiny SAM2 evaluated on two 0/255-mask PNG scans (clicks and a shift scored), and the same
    evaluation widened to 200 cases."""
    base = tmp_path_factory.mktemp("png_notebook")
    data = load_user_folders().write_ultrasound_folder(base / "scans", num_cases=2, shape=(48, 56))
    card = base / "scans.yaml"
    card.write_text(PNG_CARD.format(root=data))
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": "none",
            "model": "tiny",
            "image_size": 64,
            "data": {"card": str(card)},
            "out": str(base / "two"),
            "split": "all",
            "clicks": [1],
            "shift": ["noise"],
            "severity": [1],
            "device": "cpu",
        }
    )
    evaluate(cfg)
    return {2: base / "two", 200: widen(base / "two", base / "wide", 200)}


@pytest.mark.slow
@pytest.mark.parametrize("count", [2, 200])
def test_evaluate_notebook_draws_0_255_ground_truth_and_keeps_its_figures_readable(png_evaluations, count, monkeypatch):
    book = execute("evaluate.ipynb", {"SAM2_ADAPT_EVAL_DIRS": str(png_evaluations[count])}, monkeypatch, probe=True)
    assert not errors(book)
    drawn = book.metadata["figures"]
    assert len(drawn) == 5  # box plots, size scatter, overlays, click curve, robustness
    for figure in drawn:
        for axes in figure["axes"]:
            assert not axes["ticks_overlap"], (figure["suptitle"], axes["title"], axes["xticks"])
            assert not axes["legend_covers_axes"], (figure["suptitle"], axes["title"])
    [size] = [a for f in drawn for a in f["axes"] if a["xlabel"].startswith("ground-truth size")]
    assert len(size["xticks"]) >= 2
    [overlays] = [f for f in drawn if f["legend"]]
    key = {entry["text"]: entry["colour"] for entry in overlays["legend"]}
    for panel in overlays["axes"]:  # every case's 0/255 ground truth is drawn, in the legend's colours
        assert panel["contours"] == [key["ground truth"]], panel
        assert panel["overlays"] == [key["prediction"]], panel
    [robustness] = [a for f in drawn for a in f["axes"] if a["title"] == "noise"]
    assert robustness["legend"] and {e["text"] for e in robustness["legend"]} >= {
        f"zero-shot tiny [{png_evaluations[count].name}]"
    }
    assert json.loads((png_evaluations[count] / "summary.json").read_text())["label_reading"]["mask_threshold"] == 128
