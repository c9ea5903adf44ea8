"""The preprocessing record of an export (``export.json``): what a runtime must do to the pixels
and prompts before the graphs, and what the masks mean.

An exported graph takes normalised pixels on the model's square grid and prompts on that grid;
everything before that -- reading the file, the card's intensity window or percentiles,
bands, the voxel spacing it was trained on, the slice axis -- is written here, next to the
label map and the card's ``mask_values`` (how its label files store each label, so masks are
written in that encoding), so ``adapt.predict backend=onnx`` (and anyone reimplementing it)
repeats it without the adapter's data card. The adapter's own ``sam2_adapt.json`` and its copy
of the data card (``data_card.yaml``: evaluation reads it when ``data.card=`` is not given) are
copied beside it; ``data_card`` here names the card, its data root and case fingerprint.
The record lists the graph files and their sizes, so an export missing a graph, or holding one of
another export, is called incomplete when it is read (``check_complete``), before any session loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from adapt.data.card_copy import RECORD_KEY
from adapt.errors import ArtefactError, ConfigError
from adapt.inference import graphs
from adapt.inference.names import EXPORT_FORMATS
from adapt.models.backbones import BACKBONES

RECORD_FILE = "export.json"
FORMAT_VERSION = 1


def build_record(
    metadata: Mapping[str, Any],
    image_size: int,
    format: str,
    source: str,
    quantize: str = "none",
    files: Mapping[str, str] | None = None,
    sizes: Mapping[str, int] | None = None,
    left_out: str | None = None,
) -> dict[str, Any]:
    """The ``export.json`` content of an export of the adapter described by ``metadata``.

    Args:
        metadata: the adapter's ``sam2_adapt.json``.
        image_size: the model's square input side ``S``.
        format: ``onnx`` or ``safetensors``.
        source: the adapter the export was made from (folder or Hub id), for comparisons.
        quantize: ``none`` or ``int8`` (onnxruntime's dynamic quantisation of the weights).
        files: the graph files, ``{"image_encoder": name, ...}`` (ONNX only).
        sizes: each graph file's size in bytes, checked when the export is loaded (``check_complete``).
        left_out: what the export does not hold of what the adapter was trained to use, in words.
    """
    import torch
    import transformers

    preprocessing = dict(metadata.get("preprocessing") or {})
    backbone = BACKBONES[str((metadata.get("model") or {}).get("backbone") or "sam2")]
    record: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": format,
        "quantize": quantize,
        "source": source,
        "adapter": dict(metadata.get("adapter") or {}),
        "base_model": dict(metadata.get("base_model") or {}),
        "task": metadata.get("task", "segmentation"),
        "image_size": int(image_size),
        "preprocessing": preprocessing,
        "intensity": preprocessing.get("intensity"),
        "bands": preprocessing.get("bands"),
        "spacing": preprocessing.get("spacing"),
        "slice_axis": preprocessing.get("slice_axis"),
        "channels": preprocessing.get("channels"),
        "dims": preprocessing.get("dims"),
        "orientation": preprocessing.get("orientation"),
        "label_map": dict(metadata.get("label_map") or {}),
        "mask_values": metadata.get("mask_values"),
        "targets": list(metadata.get("targets") or []),
        "data_card": {"name": metadata.get("data_card"), **dict(metadata.get(RECORD_KEY) or {})},
        "base_fingerprint": metadata.get("base_fingerprint"),
        "pixels": {
            "range": "intensities mapped to [0, 1] by `intensity` (window, percentiles or bands)",
            "resize": f"to {image_size} x {image_size}, bilinear, antialiased, pixel centres aligned "
            "(torch.nn.functional.interpolate(antialias=True, align_corners=False)), clamped to [0, 1]",
            "channels": "1 -> repeated to 3; 2 -> (c0, c1, mean); 3 kept; more -> means of 3 contiguous groups",
            "mean": list(backbone.mean),
            "std": list(backbone.std),
        },
        "prompts": {
            "coordinates": f"x * {image_size} / W, y * {image_size} / H of the W x H plane (no half-pixel shift)",
            "labels": dict(graphs.POINT_LABELS),
            "order": "box corners first, then clicks; the padding point is added inside the graph",
            "multimask": "prompt_decoder_multimask for a lone click without a box (the best of 3 by iou_scores), "
            "prompt_decoder otherwise",
        },
        "masks": f"low_res_masks are logits at {backbone.low_res_side(image_size)} x {backbone.low_res_side(image_size)}: "
        "resize to H x W "
        "(bilinear, align_corners=False) and threshold at 0",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "left_out": left_out,
    }
    if format == "onnx":
        record["graphs"] = {
            "opset": graphs.OPSET,
            "files": dict(files or {}),
            "bytes": dict(sizes or {}),
            "image_encoder": {
                "inputs": {"pixels": ["batch", 3, image_size, image_size]},
                "outputs": list(graphs.EMBEDDINGS),
            },
            "decoder": {
                "inputs": [
                    *graphs.EMBEDDINGS,
                    "point_coords [batch, points, 2] float32",
                    "point_labels [batch, points] int64",
                ],
                "outputs": ["low_res_masks [batch, masks, S/4, S/4]", "iou_scores [batch, masks]"],
            },
        }
    return record


def write_record(record: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``export.json`` into ``out_dir``."""
    path = Path(out_dir) / RECORD_FILE
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``python -m adapt.export``."""
    return (Path(path) / RECORD_FILE).is_file()


def read_record(path: str | Path, format: str | None = None) -> dict[str, Any]:
    """The ``export.json`` of an export folder, checked to be ours (and of ``format`` when given) and
    whole (``check_complete``).

    Raises:
        ConfigError: the folder is not an export (says how to make one).
        ArtefactError: the record is broken or of a newer format.
    """
    path = Path(path)
    if not is_export(path):
        raise ConfigError(
            f"{path} is not an export folder (no {RECORD_FILE}); make one with "
            f"python -m adapt.export adapter=<run or adapter dir> format=onnx out={path}"
        )
    try:
        record = json.loads((path / RECORD_FILE).read_text())
    except ValueError as err:
        raise ArtefactError(f"{path / RECORD_FILE}: broken JSON ({err}); export the adapter again") from None
    if not isinstance(record, dict) or record.get("format") not in EXPORT_FORMATS:
        raise ArtefactError(f"{path / RECORD_FILE} is not an export record of sam2-adapt; export the adapter again")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtefactError(
            f"{path / RECORD_FILE} was written by a newer sam2-adapt (format "
            f"{record['format_version']}); update sam2-adapt or export again with this version"
        )
    if format is not None and record["format"] != format:
        raise ConfigError(
            f"{path} holds a {record['format']} export; backend=onnx needs format=onnx "
            f"(python -m adapt.export adapter=... format=onnx out=DIR)"
        )
    check_complete(path, record)
    return record


def check_complete(path: str | Path, record: Mapping[str, Any]) -> None:
    """Refuse an export whose files are not the ones its ``export.json`` lists: a graph missing (a copy or an
    export cut short) or of another size (a graph of another export dropped in, a truncated copy).

    Raises:
        ArtefactError: names the export, the files and how to get a whole export.
    """
    path = Path(path)
    fix = "export the adapter again (python -m adapt.export adapter=<run> format=onnx out=DIR) or copy the whole folder"
    graphs_ = record.get("graphs") or {}
    if record.get("format") == "onnx":
        files = {
            "image_encoder": graphs.ENCODER_FILE,
            "decoder": graphs.DECODER_FILE,
            "decoder_multimask": graphs.MULTIMASK_FILE,
            **(graphs_.get("files") or {}),
        }
    else:
        files = {"model": "model.safetensors", "config": "config.json"}
    missing = sorted(name for name in files.values() if not (path / name).is_file())
    if missing:
        raise ArtefactError(
            f"{path}: the export is incomplete, {missing} missing (its {RECORD_FILE} lists "
            f"{sorted(files.values())}); {fix}"
        )
    for name, size in (graphs_.get("bytes") or {}).items():
        found = (path / name).stat().st_size
        if found != int(size):
            raise ArtefactError(
                f"{path / name}: {found} bytes where {RECORD_FILE} records {size}: the graph does not "
                f"belong to this export (or was cut short); {fix}"
            )
