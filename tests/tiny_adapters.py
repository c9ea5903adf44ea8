"""Tiny adapters with large enough logits, for the export and app tests (``tests/`` is not a package:
test modules import this file by name, as they do ``conftest``).

The base is the tiny random SAM2 (``load_sam2("tiny", image_size=...)``); LoRA sits on the encoder and
decoder attention, and the decoder's hypernetwork output layers are saved in full and scaled, so the
logits are O(1-10) like a trained model's (a random tiny SAM2's are ~1e-3, where a 1e-4 tolerance
would say nothing). The metadata records the phantom card, as a run of ``recipe=demo`` would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adapt.adapters import apply_adapter
from adapt.adapters.io import save_adapter
from adapt.data.cards import load_card
from adapt.models.sam2 import load_sam2
from adapt.models.semantic import ATTRIBUTE, add_class_prompts

LORA = {
    "kind": "lora",
    "rank": 4,
    "alpha": 8,
    "dropout": 0.0,
    "targets": ["encoder_attn", "decoder_attn"],
    "modules_to_save": [f"output_hypernetworks_mlps.{i}.proj_out" for i in range(4)],
}
BOTTLENECK = {"kind": "bottleneck", "reduction": 4, "placement": ["attn", "mlp"], "blocks": None, "mlp_scale": 0.5}


def make_adapter(folder: Path, size: int, spec: dict = LORA, seed: int = 1, base: str = "tiny") -> Path:
    """A tiny adapter with non-trivial weights at input side ``size``, recorded as trained on ``ct_phantom``.

    ``base`` is a tiny config of any backbone (``tiny_sam3_tracker``, ``tiny_edgetam``). The adapter's own
    initial weights (LoRA's A) are drawn from ``seed`` too, not from the global generator: the same adapter
    whatever ran before in the process (a test that expects a mask of it must not depend on the test order).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        base, info = load_sam2(base, image_size=size)
        model = apply_adapter(base, json.loads(json.dumps(spec)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in ((n, p) for n, p in model.named_parameters() if p.requires_grad):
            if "modules_to_save" in name:
                param.mul_(3000.0)  # the hypernetwork's output: logits O(1-10)
            else:
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
    card = load_card("ct_phantom")
    metadata = {
        "base_model": {"name": info.name, "revision": None},
        "model": info.to_dict(),
        "task": "segmentation",
        "data_card": "ct_phantom",
        "label_map": dict(card.labels),
        "targets": ["liver"],
        "preprocessing": {
            "dims": 3,
            "intensity": dict(card.intensity),
            "slice_axis": card.slice_axis,
            "spacing": card.spacing,
            "bands": None,
            "image_size": size,
        },
    }
    return save_adapter(model, spec, folder, metadata)


def make_semantic_adapter(
    folder: Path, classes: list[str], label_map: dict[str, int], preprocessing: dict, **metadata
) -> Path:
    """A tiny semantic adapter (a class prompt per class and background, the decoder trained) as
    ``task=semantic`` saves it: its class head at its initial weights, for tests that replace
    ``class_logits``."""
    model, info = load_sam2("tiny")
    add_class_prompts(model, len(classes) + 1)
    spec = {"kind": "decoder", "modules": ["mask_decoder"], "task_modules": [ATTRIBUTE]}
    record = {
        "base_model": {"name": "tiny"},
        "model": info.to_dict(),
        "task": "semantic",
        "classes": classes,
        "label_map": label_map,
        **metadata,
        "preprocessing": preprocessing,
    }
    return save_adapter(apply_adapter(model, spec), spec, folder, record)
