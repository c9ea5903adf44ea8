"""``python -m adapt.export``: ONNX graphs that reproduce the torch runner, int8, a plain transformers folder,
and ``backend=onnx`` in predict and evaluate.

The adapters are tiny random SAM2s with logits O(1-10) (``tests/tiny_adapters.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import phantom_data
from tiny_adapters import BOTTLENECK, make_adapter
from omegaconf import OmegaConf
from PIL import Image

import adapt
from adapt import predict
from adapt.conf import CONFIG_DIR
from adapt.errors import ConfigError
from adapt.evaluation import evaluate
from adapt.export.build import export_adapter
from adapt.inference.record import read_record
from adapt.inference.onnx_backend import OnnxPredictor, load_predictor
from adapt.inference.runner import Predictor
from adapt.models.primitives import decode, preprocess


#: Prompts of two planes (H=150, W=200), in plane pixels; ``point`` is a lone click (three candidates).
PROMPTS = {
    "box": dict(boxes=[[30, 40, 150, 120], [10, 20, 60, 90]]),
    "points": dict(points=[[[80, 60], [20, 30]], [[40, 50], [100, 20]]], labels=[[1, 0], [1, 1]]),
    "point": dict(points=[[[80, 60]], [[40, 50]]], labels=[[1], [1]]),
    "box_points": dict(
        boxes=[[30, 40, 150, 120], [10, 20, 60, 90]],
        points=[[[80, 60], [35, 45]], [[40, 50], [12, 22]]],
        labels=[[1, 0], [1, 0]],
    ),
}


@pytest.fixture(scope="module")
def at_512(tmp_path_factory):
    base = tmp_path_factory.mktemp("export512")
    adapter = make_adapter(base / "adapter", 512)
    return SimpleNamespace(base=base, adapter=adapter, onnx=export_adapter(adapter, "onnx", base / "onnx", check=False))


@pytest.fixture(scope="module")
def at_1024(tmp_path_factory):
    base = tmp_path_factory.mktemp("export1024")
    adapter = make_adapter(base / "adapter", 1024)
    return SimpleNamespace(base=base, adapter=adapter, onnx=export_adapter(adapter, "onnx", base / "onnx", check=False))


def compare_runners(adapter: Path, export: Path, height: int = 150, width: int = 200) -> dict[str, dict[str, float]]:
    """Torch runner vs ONNX runner on two non-square planes: embeddings, then every prompt of ``PROMPTS``."""
    torch_side, onnx_side = Predictor(adapt.load_adapter(adapter), device="cpu"), OnnxPredictor(export)
    images = np.random.default_rng(0).random((2, 1, height, width), dtype=np.float32)
    found = {}
    with torch.inference_mode():
        embedded = torch_side.embed(images), onnx_side.embed(images)
        found["embeddings"] = {"max_diff": max(float((a - b).abs().max()) for a, b in zip(*embedded))}
        for name, prompt in PROMPTS.items():
            prompt = {k: np.asarray(v, np.float32 if k != "labels" else np.int64) for k, v in prompt.items()}
            prompts = torch_side.model_prompts(height, width, **prompt)
            multimask = Predictor.single_point(prompts)
            ours, theirs = (
                decode(side.model, emb, multimask, **prompts) for side, emb in zip((torch_side, onnx_side), embedded)
            )
            masks = Predictor.masks(ours, height, width), Predictor.masks(theirs, height, width)
            found[name] = {
                "max_diff": float((ours.low_res - theirs.low_res).abs().max()),
                "iou_diff": float((ours.iou - theirs.iou).abs().max()),
                "max_abs": float(ours.low_res.abs().max()),
                "candidates": ours.low_res.shape[2],
                "mask_pixels_differ": int((masks[0] != masks[1]).sum()),
                "mask_pixels": int(masks[0].sum()),
            }
    return found


def check_parity(found: dict[str, dict[str, float]]) -> None:
    assert found["embeddings"]["max_diff"] < 1e-4, found
    for name in PROMPTS:
        row = found[name]
        assert row["max_diff"] < 1e-4 and row["iou_diff"] < 1e-4, (name, found)
        assert row["max_abs"] > 1.0, "logits too small for the tolerance to mean anything"
        assert row["mask_pixels_differ"] == 0 and row["mask_pixels"] > 0, (name, row)
    assert found["point"]["candidates"] == 3 and found["box"]["candidates"] == 1


def test_onnx_graphs_reproduce_torch_at_512(at_512):
    check_parity(compare_runners(at_512.adapter, at_512.onnx))
    record = read_record(at_512.onnx, format="onnx")
    assert record["image_size"] == 512 and record["quantize"] == "none"
    assert record["slice_axis"] == 2 and record["intensity"] == {"window": [-160, 240]}
    assert record["label_map"] == {"background": 0, "liver": 1, "spine": 2} and record["targets"] == ["liver"]
    assert record["adapter"]["kind"] == "lora" and record["source"] == str(at_512.adapter.resolve())
    assert record["prompts"]["labels"]["box top-left"] == 2 and record["pixels"]["mean"] == [0.485, 0.456, 0.406]
    session = ort.InferenceSession(str(at_512.onnx / "prompt_decoder.onnx"))
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["point_coords"] == ["batch", "points", 2] and shapes["image_embed"][0] == "batch"


@pytest.mark.slow
def test_onnx_graphs_reproduce_torch_at_1024(at_1024):
    check_parity(compare_runners(at_1024.adapter, at_1024.onnx))


def test_bottleneck_is_kept_in_the_graphs_and_refused_for_safetensors(tmp_path):
    adapter = make_adapter(tmp_path / "adapter", 128, BOTTLENECK)
    out = export_adapter(adapter, "onnx", tmp_path / "onnx")  # check=True: the export measures itself
    check = read_record(out)["check"]
    assert check["max_logit_diff_box"] < 1e-4 and check["max_logit_diff_box_points"] < 1e-4
    assert read_record(out)["adapter"]["kind"] == "bottleneck"
    with pytest.raises(ConfigError, match="bottleneck adapter: its layers cannot be folded"):
        export_adapter(adapter, "safetensors", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(ConfigError, match="not empty"):
        export_adapter(adapter, "onnx", out)
    with pytest.raises(ConfigError, match="quantize=int8 applies to ONNX"):
        export_adapter(adapter, "safetensors", tmp_path / "x", quantize="int8")


def test_safetensors_folder_loads_with_plain_transformers(at_512, tmp_path):
    out = export_adapter(at_512.adapter, "safetensors", tmp_path / "merged")
    assert {"config.json", "model.safetensors", "export.json", "sam2_adapt.json"} <= {p.name for p in out.iterdir()}
    # Plain transformers, in a process where sam2-adapt cannot be imported at all.
    code = (
        "import sys; sys.modules['adapt'] = None\n"
        "import torch\nfrom transformers import Sam2Model\n"
        f"model = Sam2Model.from_pretrained({str(out)!r}).eval()\n"
        f"pixels, boxes = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "with torch.no_grad():\n"
        "    masks = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks\n"
        f"torch.save(masks, {str(tmp_path / 'masks.pt')!r})\n"
    )
    image = torch.rand(1, 1, 150, 200, generator=torch.Generator().manual_seed(0))
    pixels, boxes = preprocess(image, 512), torch.tensor([[[80.0, 100.0, 400.0, 420.0]]])
    torch.save((pixels, boxes), tmp_path / "inputs.pt")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        ours = adapt.load_adapter(at_512.adapter).model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
    plain = torch.load(tmp_path / "masks.pt")
    assert plain.shape == ours.pred_masks.shape == (1, 1, 1, 128, 128) and ours.pred_masks.abs().max() > 1
    # from_pretrained picks SDPA attention where our constructed base runs eager: close, not bitwise.
    torch.testing.assert_close(plain, ours.pred_masks, atol=1e-4, rtol=1e-4)


def predict_cfg(adapter: Path, input: Path, output: Path, prompt: str, **extra) -> OmegaConf:
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "input": str(input),
            "output": str(output),
            "prompt": prompt,
            "device": "cpu",
            **extra,
        }
    )
    return cfg


def test_predict_backend_onnx_writes_what_torch_writes(at_512, tmp_path):
    """PNG with box + clicks, and a NIfTI volume followed from one prompted slice (boxes chained, the
    export has no memory model): the files written by both backends are equal."""
    png = tmp_path / "plane.png"
    Image.fromarray((np.random.default_rng(1).random((150, 200)) * 255).astype(np.uint8)).save(png)
    volume = tmp_path / "ct.nii.gz"
    data = np.full((40, 48, 5), -1000, np.int16)
    data[10:30, 12:36, 1:4] = 80
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.7, 2.5, 1.0])), volume)
    for case, prompt in (
        (png, "box 30,40,150,120; point 80,60; point 35,45 label=0"),
        (volume, "box 10,12,30,36 slice=2"),
    ):
        written = {}
        for backend in ("torch", "onnx"):
            adapter = at_512.onnx if backend == "onnx" else at_512.adapter
            output = tmp_path / backend / ("m.png" if case.suffix == ".png" else "m.nii.gz")
            [written[backend]] = predict.run(
                predict_cfg(adapter, case, output, prompt, backend=backend, propagation="boxes")
            )
        if case.suffix == ".png":
            torch_mask, onnx_mask = (np.asarray(Image.open(p)) for p in written.values())
        else:
            torch_mask, onnx_mask = (np.asarray(nib.load(p).dataobj) for p in written.values())
            assert np.allclose(nib.load(written["onnx"]).affine, np.diag([0.8, 0.7, 2.5, 1.0]))
        assert torch_mask.any() and np.array_equal(torch_mask, onnx_mask), case.name


def test_backend_mismatches_are_named(at_512):
    with pytest.raises(ConfigError, match="is an ONNX export: run it with backend=onnx"):
        load_predictor(at_512.onnx, "torch")
    with pytest.raises(ConfigError, match="backend=onnx runs an ONNX export"):
        load_predictor(at_512.adapter, "onnx")
    with pytest.raises(ConfigError, match="propagation=memory needs SAM2's memory model"):
        OnnxPredictor(at_512.onnx, propagation="memory")


def test_evaluate_backend_onnx_puts_torch_beside(at_512, tmp_path):
    with phantom_data(tmp_path) as data:
        cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
        cfg.merge_with(
            {
                "adapter": str(at_512.onnx),
                "backend": "onnx",
                "data": {"root": str(data)},
                "out": str(tmp_path / "eval"),
                "clicks": [1],
                "batch_size": 4,
                "device": "cpu",
                "save_masks": 0,
            }
        )
        summary = evaluate(cfg)
    assert summary["backend"] == "onnx" and summary["quantize"] == "none"
    assert summary["compare"]["backend"] == "torch" and summary["compare"]["adapter"] == str(at_512.adapter.resolve())
    assert summary["protocol"]["clicks"] == []  # no mask prompt in the export: clicks off, said in the log
    ours, theirs = (s["classes"]["liver"]["dice"]["mean"] for s in (summary, summary["compare"]))
    assert ours > 0 and ours == pytest.approx(theirs, abs=1e-6)
    assert abs(summary["compare"]["difference"]["liver"]["dice"]) < 1e-6


@pytest.mark.slow
def test_cli_exports_int8_and_evaluate_puts_it_beside_torch(at_512, tmp_path):
    out = tmp_path / "int8"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapt.export",
            f"adapter={at_512.adapter}",
            "format=onnx",
            "quantize=int8",
            f"out={out}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "check against torch" in done.stdout
    record = read_record(out)
    assert record["quantize"] == "int8" and record["graph_bytes"] < 0.6 * sum(
        p.stat().st_size for p in at_512.onnx.glob("*.onnx")
    )
    # int8 weights move the logits by a few per cent of their range (the fp32 graphs: ~1e-6)
    assert 1e-4 < record["check"]["max_logit_diff_box"] < 0.15 * record["check"]["max_abs_logit_box"]
    nodes = {n.op_type for n in onnx.load(str(out / "image_encoder.onnx")).graph.node}
    assert "MatMulInteger" in nodes and "Conv" in nodes  # linear layers int8, convolutions float
    with phantom_data(tmp_path) as data:
        cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
        cfg.merge_with(
            {
                "adapter": str(out),
                "backend": "onnx",
                "data": {"root": str(data)},
                "out": str(tmp_path / "eval"),
                "clicks": "off",
                "batch_size": 4,
                "device": "cpu",
                "save_masks": 0,
            }
        )
        summary = evaluate(cfg)
    assert summary["quantize"] == "int8" and summary["adapter"].startswith("onnx int8")
    assert summary["compare"]["backend"] == "torch"
    change = summary["compare"]["difference"]["liver"]
    assert change["dice"] is not None and abs(change["dice"]) < 0.1 and abs(change["iou"]) < 0.1
    refused = subprocess.run(
        [sys.executable, "-m", "adapt.export", f"adapter={at_512.adapter}", "format=tflite", f"out={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert (
        refused.returncode == 2 and "format='tflite' is not one of" in refused.stderr and not (tmp_path / "x").exists()
    )


def test_export_config_passes_its_schema_and_names_what_is_missing():
    from adapt.export.__main__ import run
    from adapt.schema import validate

    cfg = OmegaConf.load(CONFIG_DIR / "export.yaml")
    validate(cfg, "export")
    with pytest.raises(ConfigError, match="adapter= and out= are required"):
        run(cfg)
    cfg.quantize = "int4"
    with pytest.raises(ConfigError, match="quantize='int4' is not one of"):
        run(cfg)


@pytest.mark.parametrize("recorded_in", ["both", "export.json"])
def test_an_export_writes_masks_in_the_cards_encoding(at_512, tmp_path, recorded_in):
    """``export.json`` carries the card's ``mask_values`` beside the label map: predict backend=onnx writes the
    card's 0/255 (the adapter's own ``sam2_adapt.json`` copy may be absent or older)."""
    import json
    import shutil

    from adapt.inference.record import build_record

    export = shutil.copytree(at_512.onnx, tmp_path / "export")
    metadata = json.loads((export / "sam2_adapt.json").read_text())
    encoded = {**metadata, "mask_values": {"background": 0, "liver": 255}}
    record = json.loads((export / "export.json").read_text())
    record["mask_values"] = build_record(encoded, 512, "onnx", "x")["mask_values"]
    (export / "export.json").write_text(json.dumps(record))
    if recorded_in == "both":
        (export / "sam2_adapt.json").write_text(json.dumps(encoded))
    png = tmp_path / "plane.png"
    Image.fromarray((np.random.default_rng(1).random((150, 200)) * 255).astype(np.uint8)).save(png)
    for choice, values in (("card", {0, 255}), ("ids", {0, 1})):
        [out] = predict.run(
            predict_cfg(
                export, png, tmp_path / choice / "m.png", "box 30,40,150,120", backend="onnx", mask_values=choice
            )
        )
        assert set(np.unique(np.asarray(Image.open(out))).tolist()) == values
