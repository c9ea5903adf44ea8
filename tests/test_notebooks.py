"""The notebooks run top to bottom on the outputs of a tiny offline run, figures included."""

from __future__ import annotations

import pytest
from conftest import errors, execute, figures, phantom_data, train_tiny
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
        cfg.merge_with({"adapter": str(lora), "data": {"root": str(data)}, "out": str(lora / "eval_val"),
                        "compare": "none", "clicks": [1], "split": "all", "batch_size": 16, "device": "cpu"})
        evaluate(cfg)
        yield base


@pytest.mark.slow
def test_evaluate_notebook_shows_table_box_plots_scatter_overlays_and_click_curve(outputs, monkeypatch):
    book = execute("evaluate.ipynb", {"SAM2_ADAPT_EVAL_DIRS": str(outputs / "runs" / "lora" / "eval_val")}, monkeypatch)
    assert not errors(book)
    assert figures(book) == 4  # box plots, size scatter, best/median/worst overlays, click curve
    text = "".join(str(out.get("data", {}).get("text/plain", "")) + out.get("text", "")
                   for cell in book.cells for out in cell.get("outputs", []))
    assert "zero-shot tiny" in text and "liver" in text


@pytest.mark.slow
def test_compare_notebook_tables_runs_and_plots_dice_against_parameters(outputs, monkeypatch):
    book = execute("compare_adapters.ipynb", {"SAM2_ADAPT_RUN_DIRS": str(outputs / "runs")}, monkeypatch)
    assert not errors(book)
    assert figures(book) == 1
    table = next(out["data"]["text/plain"] for cell in book.cells for out in cell.get("outputs", [])
                 if "trainable" in out.get("data", {}).get("text/plain", ""))
    assert "lora r=8" in table and "decoder" in table and "eval_val dice" in table
