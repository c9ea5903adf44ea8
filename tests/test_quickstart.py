"""The README's quick start, run as written: train, evaluate with relative paths, open the notebook.

The three commands run as subprocesses in a fresh folder (the user's shell folder), shrunk
only by overrides (the tiny model, two steps, no click curve); the notebook's kernel starts in
``notebooks/`` below it, as Jupyter starts it, and must find ``outputs/evaluate/demo`` and the
masks that ``summary.json`` names relative to that folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from adapt.conf import REPO_ROOT

SHRINK = ["model=tiny", "trainer.max_steps=2", "validate_before=false", "data.val_max_slices_per_case=1"]


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_readme_quick_start_runs_as_written(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    for command in (
        "python -m adapt.train recipe=demo",
        "python -m adapt.evaluate adapter=outputs/demo/<run> compare=none out=outputs/evaluate/demo",
        "jupyter lab notebooks/evaluate.ipynb",
    ):
        assert command in readme, command  # the test follows the README: keep both in step
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "SAM2_ADAPT_DATA": str(tmp_path / "data")}
    env.pop("SAM2_ADAPT_EVAL_DIRS", None)

    run("adapt.train", "recipe=demo", *SHRINK, cwd=tmp_path, env=env)  # 1. fine-tune
    [run_dir] = sorted((tmp_path / "outputs" / "demo").iterdir())
    run(
        "adapt.evaluate",
        f"adapter=outputs/demo/{run_dir.name}",
        "compare=none",
        "out=outputs/evaluate/demo",
        "clicks=off",
        cwd=tmp_path,
        env=env,
    )  # 2. measure
    notebooks = tmp_path / "notebooks"  # 3. look
    notebooks.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "evaluate.ipynb", notebooks)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SAM2_ADAPT_EVAL_DIRS", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(notebooks / "evaluate.ipynb", as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}).execute()
    outputs = [out for cell in book.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    assert sum("image/png" in out.get("data", {}) for out in outputs) >= 3  # box plots, sizes, overlays
