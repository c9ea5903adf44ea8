"""``export_adapter``: an adapter merged into its base and written for deployment.

* ``format=onnx``: LoRA/DoRA folded into the base weights (peft's ``merge_and_unload``),
  bottleneck adapters kept as the modules they are, then traced into an image-encoder graph
  and two prompt-decoder graphs (``adapt.inference.graphs``); ``quantize=int8`` stores their
  linear layers' weights as int8 (``adapt.export.quantize``). The export checks itself: one
  random plane with a box goes through the torch runner and through the graphs
  (``adapt.inference.onnx_backend``), and the largest logit difference is recorded.
* ``format=safetensors``: a plain ``Sam2Model`` folder (``config.json`` + ``model.safetensors``)
  that ``transformers.Sam2Model.from_pretrained`` loads without sam2-adapt
  (``adapt.hub.share.merge_adapter``); bottleneck adapters and learned input projections
  (``adapt.models.channels``) have no place there and are refused.

Both write ``export.json`` (the preprocessing record: ``adapt.inference.record``) and the
adapter's ``sam2_adapt.json``. An export is written whole or not at all, as adapters are: every
file goes to a staging folder beside ``out`` (the check against torch runs there) and is moved
in once all are written (``adapt.storage.write_folder_atomically``); a previous export's files
are replaced only then. ``out`` must lie apart from the adapter and its run (``check_apart``),
checked before anything is written. A propagation adapter's memory path is not exported: the
export says so when it starts and records it (``left_out``).
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
from adapt.adapters.kinds import kind_of
from adapt.data.card_copy import copy_card
from adapt.inference import graphs
from adapt.export.quantize import quantize_graphs, weight_bytes
from adapt.adapters.loading import LoadedAdapter, load_adapter, resolve
from adapt.errors import ConfigError, check_choice
from adapt.inference.names import EXPORT_FORMATS, QUANTIZE
from adapt.inference.record import RECORD_FILE, build_record, write_record
from adapt.hub.share import CARD_FILE, merge_adapter
from adapt.models.channels import ATTRIBUTE as CHANNELS
from adapt.models.channels import METADATA_KEY as CHANNELS_KEY
from adapt.models.channels import input_projection
from adapt.storage import check_apart, check_writable, write_folder_atomically
from adapt.inference.runner import Predictor
from adapt.inference.onnx_backend import OnnxPredictor

log = logging.getLogger(__name__)

#: Files an export owns in ``out`` (replaced with ``overwrite=true``).
EXPORT_FILES = (
    graphs.ENCODER_FILE,
    graphs.DECODER_FILE,
    graphs.MULTIMASK_FILE,
    RECORD_FILE,
    METADATA_FILE,
    "config.json",
    "model.safetensors",
    CARD_FILE,
)


def check_request(format: str, quantize: str, metadata: dict[str, Any], source: Path) -> None:
    """Refuse, before any weight is read, what cannot be exported.

    Raises:
        ConfigError: unknown format or quantisation, int8 outside ONNX, a semantic head, or a
            bottleneck adapter for a plain transformers folder.
    """
    check_choice("format", format, EXPORT_FORMATS)
    check_choice("quantize", quantize, QUANTIZE)
    if quantize != "none" and format != "onnx":
        raise ConfigError("quantize=int8 applies to ONNX graphs; use format=onnx (safetensors keeps float32 weights)")
    adapter = metadata.get("adapter") or {}
    if set(adapter.get("task_modules") or []) - {CHANNELS} or metadata.get("task") == "semantic":
        raise ConfigError(
            f"{source} is a semantic adapter (class prompts, task=semantic): only promptable adapters "
            "are exported; use it with backend=torch"
        )
    if format == "safetensors" and metadata.get(CHANNELS_KEY):
        raise ConfigError(
            f"{source} learned an input projection of {metadata[CHANNELS_KEY].get('count')} channels, which "
            "a plain transformers Sam2Model has no place for; export it with format=onnx (the "
            "projection is kept in the image-encoder graph)"
        )
    kind = kind_of(adapter)
    if format == "safetensors" and kind is not None and not kind.merges:
        raise ConfigError(
            f"{source} is a {kind.name} adapter: its layers cannot be folded into a plain transformers "
            "Sam2Model; export it with format=onnx (the layers are kept in the graphs)"
        )


def prepare_out(out: str | Path, overwrite: bool, inputs: dict[str, Path | None]) -> Path:
    """``out``, writable, apart from ``inputs`` (``adapt.storage.check_apart``) and empty -- or, with
    ``overwrite``, holding a previous export whose files the new one replaces once it is complete."""
    out = check_writable(Path(out).expanduser(), "out")
    check_apart(out, "out", inputs)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out={out} exists and is not empty; choose another out= or pass overwrite=true")
    return out


def left_out(metadata: dict[str, Any]) -> str | None:
    """What an export of this adapter does not hold (``None``: nothing it was trained to use)."""
    if metadata.get("task") != "propagation":
        return None
    return (
        "the adapter was trained with task=propagation, but an export holds the image encoder and the prompt "
        "decoder only: SAM2's memory path (memory attention, memory encoder, object pointers) and any adapter "
        "weights there are left out, so backend=onnx follows a volume by chaining boxes from slice to slice "
        "(propagation=boxes); use backend=torch to propagate through memory"
    )


def merged_model(loaded: LoadedAdapter) -> torch.nn.Module:
    """The adapted SAM2 as one plain module: LoRA/DoRA folded into the weights, other kinds as they are."""
    from peft import PeftModel

    model = loaded.model
    return (model.merge_and_unload() if isinstance(model, PeftModel) else model).eval()


def check_graphs(loaded: LoadedAdapter, out: Path, seed: int = 0) -> dict[str, float]:
    """Largest differences between the torch runner and the exported graphs on one random plane
    with a box and with a box and two clicks (``adapt.inference.onnx_backend.OnnxPredictor``): the
    runner's logits at the decoder's own side (``Predictor.logits``, ``S/4``: nothing interpolated)."""

    torch_side, onnx_side = Predictor(loaded, device="cpu"), OnnxPredictor(out)
    size = torch_side.size
    projection = input_projection(loaded.model)
    channels = 1 if projection is None else int(projection.channels)
    image = np.random.default_rng(seed).random((1, channels, size, size), dtype=np.float32)
    box = np.array([[0.2, 0.25, 0.7, 0.8]], np.float32) * size
    points = np.array([[[0.45, 0.5], [0.1, 0.1]]], np.float32) * size
    labels = np.array([[1, 0]])
    found: dict[str, float] = {}
    for name, prompt in {"box": (box, None, None), "box_points": (box, points, labels)}.items():
        logits = {
            side: runner.logits(image, *prompt, size=(size // 4, size // 4))
            for side, runner in (("torch", torch_side), ("onnx", onnx_side))
        }
        found[f"max_logit_diff_{name}"] = float((logits["torch"] - logits["onnx"]).abs().max())
        found[f"max_abs_logit_{name}"] = float(logits["torch"].abs().max())
    return found


def export_adapter(
    adapter: str | Path,
    format: str = "onnx",
    out: str | Path = "export",
    quantize: str = "none",
    revision: str | None = None,
    overwrite: bool = False,
    check: bool = True,
    allow_base_mismatch: bool = False,
) -> Path:
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
    given = Path(str(adapter)).expanduser()
    out = prepare_out(out, overwrite, {"the adapter": source, "the adapter's run": given if given.exists() else None})
    note = left_out(metadata)
    if note:
        log.warning("export: %s", note)
    loaded = load_adapter(source, video=False, allow_base_mismatch=allow_base_mismatch)
    size = int(loaded.model_info.image_size)
    label = str(adapter) if not given.exists() else str(source.resolve())
    written: set[str] = set()

    def write(staging: Path) -> None:
        if format == "safetensors":
            merge_adapter(loaded, staging, overwrite=True)
            write_record(build_record(metadata, size, format, label, left_out=note), staging)
        else:
            write_graphs(
                dataclasses.replace(loaded, model=merged_model(loaded)),
                metadata,
                staging,
                size,
                label,
                quantize,
                check,
                note,
            )
        copy_card(source, staging)  # the data card travels with the export, as with the adapter
        written.update(p.name for p in staging.iterdir())

    write_folder_atomically(out, write, "out", "free some space, or export to a larger disk (out=<a folder there>)")
    for name in set(EXPORT_FILES) - written:  # a previous export's files that this one does not have
        (out / name).unlink(missing_ok=True)
    return out


def write_graphs(
    loaded: LoadedAdapter,
    metadata: dict[str, Any],
    out: Path,
    size: int,
    label: str,
    quantize: str,
    check: bool,
    note: str | None,
) -> None:
    """The graphs, ``sam2_adapt.json`` and ``export.json`` of an ONNX export into ``out`` (a staging folder),
    with the check against torch recorded when ``check``."""
    if quantize == "int8":
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            paths = quantize_graphs(graphs.export_graphs(loaded.model, tmp), out)
    else:
        paths = graphs.export_graphs(loaded.model, out)
    record = build_record(
        metadata,
        size,
        "onnx",
        label,
        quantize,
        {k: p.name for k, p in paths.items()},
        {p.name: p.stat().st_size for p in paths.values()},
        note,
    )
    record["graph_bytes"] = weight_bytes(paths)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    write_record(record, out)
    if check:
        record["check"] = check_graphs(loaded, out)
        write_record(record, out)
