"""``export_adapter``: an adapter merged into its base and written for deployment.

* ``format=onnx``: LoRA/DoRA folded into the base weights (peft's ``merge_and_unload``),
  bottleneck adapters kept as the modules they are, then traced into an image-encoder graph
  and two prompt-decoder graphs (``adapt.export.graphs``); ``quantize=int8`` stores their
  linear layers' weights as int8 (``adapt.export.quantize``). The export checks itself: one
  random plane with a box goes through the torch runner and through the graphs
  (``adapt.inference.onnx_backend``), and the largest logit difference is recorded.
* ``format=safetensors``: a plain ``Sam2Model`` folder (``config.json`` + ``model.safetensors``)
  that ``transformers.Sam2Model.from_pretrained`` loads without sam2-adapt
  (``adapt.hub.share.merge_adapter``); bottleneck adapters cannot be folded and are refused.

Both write ``export.json`` (the preprocessing record: ``adapt.export.record``) and the
adapter's ``sam2_adapt.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapt.adapters.io import METADATA_FILE, read_metadata
from adapt.data.card_copy import copy_card
from adapt.errors import ConfigError
from adapt.export import graphs
from adapt.export.quantize import quantize_graphs, weight_bytes
from adapt.export.record import FORMATS, QUANTIZE, RECORD_FILE, build_record, write_record
from adapt.hub.loading import LoadedAdapter, load_adapter, resolve
from adapt.hub.share import CARD_FILE, merge_adapter
from adapt.models.primitives import decode
from adapt.storage import check_writable

log = logging.getLogger(__name__)

#: Files an export owns in ``out`` (replaced with ``overwrite=true``).
EXPORT_FILES = (graphs.ENCODER_FILE, graphs.DECODER_FILE, graphs.MULTIMASK_FILE, RECORD_FILE, METADATA_FILE,
                "config.json", "model.safetensors", CARD_FILE)


def check_request(format: str, quantize: str, metadata: dict[str, Any], source: Path) -> None:
    """Refuse, before any weight is read, what cannot be exported.

    Raises:
        ConfigError: unknown format or quantisation, int8 outside ONNX, a semantic head, or a
            bottleneck adapter for a plain transformers folder.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not one of {list(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize={quantize!r} is not one of {list(QUANTIZE)}")
    if quantize != "none" and format != "onnx":
        raise ConfigError("quantize=int8 applies to ONNX graphs; use format=onnx (safetensors keeps float32 weights)")
    adapter = metadata.get("adapter") or {}
    if adapter.get("task_modules") or metadata.get("task") == "semantic":
        raise ConfigError(f"{source} is a semantic adapter (class prompts, task=semantic): only promptable adapters "
                          "are exported; use it with backend=torch")
    if format == "safetensors" and adapter.get("kind") == "bottleneck":
        raise ConfigError(f"{source} is a bottleneck adapter: its layers cannot be folded into a plain transformers "
                          "Sam2Model; export it with format=onnx (the layers are kept in the graphs)")


def prepare_out(out: str | Path, overwrite: bool) -> Path:
    """``out``, writable and empty -- or, with ``overwrite``, cleared of a previous export's files."""
    out = check_writable(Path(out).expanduser(), "out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; give a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"out={out} exists and is not empty; choose another out= or pass overwrite=true")
        for name in EXPORT_FILES:
            (out / name).unlink(missing_ok=True)
    return out


def merged_model(loaded: LoadedAdapter) -> torch.nn.Module:
    """The adapted SAM2 as one plain module: LoRA/DoRA folded into the weights, other kinds as they are."""
    from peft import PeftModel

    model = loaded.model
    return (model.merge_and_unload() if isinstance(model, PeftModel) else model).eval()


def check_graphs(loaded: LoadedAdapter, out: Path, seed: int = 0) -> dict[str, float]:
    """Largest differences between the torch runner and the exported graphs on one random plane
    with a box and with a box and two clicks (``adapt.inference.onnx_backend.OnnxPredictor``)."""
    from adapt.inference.onnx_backend import OnnxPredictor
    from adapt.inference.runner import Predictor

    torch_side, onnx_side = Predictor(loaded, device="cpu"), OnnxPredictor(out)
    size = torch_side.size
    image = np.random.default_rng(seed).random((1, 1, size, size), dtype=np.float32)
    box = np.array([[0.2, 0.25, 0.7, 0.8]], np.float32) * size
    points = np.array([[[0.45, 0.5], [0.1, 0.1]]], np.float32) * size
    labels = np.array([[1, 0]])
    found: dict[str, float] = {}
    with torch.inference_mode():
        embeddings = {"torch": torch_side.embed(image), "onnx": onnx_side.embed(image)}
        for name, prompt in {"box": (box, None, None), "box_points": (box, points, labels)}.items():
            logits = {}
            for side, runner in (("torch", torch_side), ("onnx", onnx_side)):
                prompts = runner.model_prompts(size, size, *prompt)
                logits[side] = decode(runner.model, embeddings[side], multimask=runner.single_point(prompts),
                                      **prompts).low_res.float()
            found[f"max_logit_diff_{name}"] = float((logits["torch"] - logits["onnx"]).abs().max())
            found[f"max_abs_logit_{name}"] = float(logits["torch"].abs().max())
    return found


def export_adapter(adapter: str | Path, format: str = "onnx", out: str | Path = "export", quantize: str = "none",
                   revision: str | None = None, overwrite: bool = False, check: bool = True,
                   allow_base_mismatch: bool = False) -> Path:
    """Export an adapter (run dir, adapter folder or Hub id) merged into its base; returns ``out``.

    Args:
        adapter: the adapter to export.
        format: ``onnx`` (graphs for onnxruntime) or ``safetensors`` (a plain transformers folder).
        out: the folder to write; refused if not empty unless ``overwrite``.
        quantize: ``none`` or ``int8`` (ONNX only).
        revision: Hub revision of the adapter.
        check: compare the graphs with the torch runner on a random plane and record the result.
        allow_base_mismatch: export onto other base weights than the adapter's own (warned loudly).
    """
    source = resolve(str(adapter), revision)
    metadata = read_metadata(source)
    if not metadata:
        raise ConfigError(f"{source} has no {METADATA_FILE}; export adapters written by python -m adapt.train")
    check_request(format, quantize, metadata, source)
    out = prepare_out(out, overwrite)
    loaded = load_adapter(source, video=False, allow_base_mismatch=allow_base_mismatch)
    size = int(loaded.model_info.image_size)
    label = str(adapter) if not Path(str(adapter)).exists() else str(source.resolve())
    if format == "safetensors":
        merge_adapter(loaded, out, overwrite=True)
        write_record(build_record(metadata, size, format, label), out)
        return out
    loaded = dataclasses.replace(loaded, model=merged_model(loaded))
    if quantize == "int8":
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            paths = quantize_graphs(graphs.export_graphs(loaded.model, tmp), out)
    else:
        paths = graphs.export_graphs(loaded.model, out)
    record = build_record(metadata, size, format, label, quantize, {k: p.name for k, p in paths.items()})
    record["graph_bytes"] = weight_bytes(paths)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    copy_card(source, out)  # the data card travels with the export, as with the adapter
    write_record(record, out)
    if check:
        record["check"] = check_graphs(loaded, out)
        write_record(record, out)
        log.info("export check against torch: %s", record["check"])
    return out
