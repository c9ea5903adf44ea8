"""Exports written whole or not at all, kept apart from their inputs, and checked when they are loaded.

* ``python -m adapt.export`` prints its check once and no tracer warnings, and says at run time what
  an export of a propagation adapter leaves out (its memory path), recording it in ``export.json``;
* ``out=`` that is, holds or lies inside the adapter is refused before anything is written or deleted;
* a failure while writing leaves no partial export and keeps a previous one whole;
* an export missing a graph, holding a graph of another export, or whose ``export.json`` does not
  describe its graphs is refused by name when it is loaded (``backend=onnx``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_user_action
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny propagation adapter and its ONNX export, made by the command line (output kept)."""
    from tiny_adapters import make_adapter

    base = tmp_path_factory.mktemp("export_faults")
    adapter = make_adapter(base / "adapter", 128)
    metadata = json.loads((adapter / "sam2_adapt.json").read_text())
    (adapter / "sam2_adapt.json").write_text(json.dumps({**metadata, "task": "propagation"}))
    done = subprocess.run(
        [sys.executable, "-m", "adapt.export", f"adapter={adapter}", "format=onnx", f"out={base / 'onnx'}"],
        capture_output=True,
        text=True,
        cwd=base,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return base, adapter, base / "onnx", done.stdout + done.stderr


def test_export_output_is_quiet_and_says_what_it_leaves_out(made):
    _, _, onnx, output = made
    assert "TracerWarning" not in output and "Constant folding" not in output
    assert output.count("check against torch") == 1
    assert "task=propagation" in output and "memory path" in output and "propagation=boxes" in output
    record = json.loads((onnx / "export.json").read_text())
    assert "memory" in record["left_out"]
    assert record["graphs"]["bytes"] == {p.name: p.stat().st_size for p in onnx.glob("*.onnx")}


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def export_action(adapter: Path, out: Path, **values):
    from adapt.export.__main__ import run

    cfg = OmegaConf.load(CONFIG_DIR / "export.yaml")
    cfg.merge_with({"adapter": str(adapter), "format": "onnx", "out": str(out), "check": False, **values})
    return lambda: run(cfg)


OUT_PLACES = [  # (where out= points, relative to the adapter, how the message relates them)
    ("the adapter itself", lambda a: a, "is the adapter"),
    ("a folder inside it", lambda a: a / "onnx", "lies inside the adapter"),
    ("the folder holding it", lambda a: a.parent, "contains the adapter"),
]


@pytest.mark.parametrize("place, said", [r[1:] for r in OUT_PLACES], ids=[r[0] for r in OUT_PLACES])
def test_out_overlapping_the_adapter_is_refused_before_anything_is_deleted(made, tmp_path, forbid_model, place, said):
    adapter = tmp_path / "runs" / "adapter"
    shutil.copytree(made[1], adapter)
    before = snapshot(tmp_path)
    code, message, _ = run_user_action(export_action(adapter, place(adapter), overwrite=True))
    assert code == 2 and "Traceback" not in message, message
    assert f"out={place(adapter)} {said}" in message
    assert snapshot(tmp_path) == before


def test_a_failed_write_leaves_no_partial_export_and_keeps_the_previous_one(made, tmp_path, monkeypatch):
    from adapt.inference import graphs

    previous = tmp_path / "previous"
    shutil.copytree(made[2], previous)
    before = snapshot(previous)
    original = graphs.export_graphs

    def disk_fills(model, out_dir, *args, **kwargs):
        original(model, out_dir, *args, **kwargs)  # the graphs are written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(graphs, "export_graphs", disk_fills)
    code, message, _ = run_user_action(export_action(made[1], previous, overwrite=True))
    assert code == 2 and "is full" in message and "out=" in message, message
    assert snapshot(previous) == before  # not one new graph moved in, not one old file removed
    assert [p.name for p in tmp_path.iterdir()] == ["previous"]  # no staging folder left beside


def drop(name: str):
    return lambda folder: (folder / name).unlink()


def swap_in_a_bigger_graph(folder: Path) -> None:
    with (folder / "image_encoder.onnx").open("ab") as file:
        file.write(b"\0" * 64)


def record_other_size(folder: Path) -> None:
    record = json.loads((folder / "export.json").read_text())
    record["image_size"] = 256
    record["graphs"].pop("bytes")
    (folder / "export.json").write_text(json.dumps(record))


BROKEN_EXPORTS = [  # (what is wrong, how, what the message says)
    ("a graph missing", drop("prompt_decoder.onnx"), ["the export is incomplete", "prompt_decoder.onnx"]),
    ("a graph of another export", swap_in_a_bigger_graph, ["image_encoder.onnx", "does not belong to this export"]),
    ("export.json of another size", record_other_size, ["image_encoder.onnx", "records image_size 256"]),
]


@pytest.mark.parametrize("break_, names", [r[1:] for r in BROKEN_EXPORTS], ids=[r[0] for r in BROKEN_EXPORTS])
def test_a_broken_export_is_named_when_loaded(made, tmp_path, forbid_model, break_, names):
    from adapt.predict import run
    from PIL import Image

    folder = tmp_path / "onnx"
    shutil.copytree(made[2], folder)
    break_(folder)
    Image.new("L", (40, 32), 90).save(tmp_path / "photo.png")
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(folder),
            "backend": "onnx",
            "input": str(tmp_path / "photo.png"),
            "output": str(tmp_path / "mask.png"),
            "prompt": "box 2,2,20,20",
            "device": "cpu",
        }
    )
    code, message, _ = run_user_action(lambda: run(cfg))
    assert code == 2 and "Traceback" not in message, message
    assert all(name in message for name in names), message
    assert not (tmp_path / "mask.png").exists()
