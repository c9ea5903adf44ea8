"""Adapter kinds and the one entry point that applies them to a frozen SAM2.

Kinds: ``lora`` and ``dora`` (peft), ``bottleneck`` (ours, Medical-SAM-Adapter style),
``decoder`` (mask decoder trained, encoder frozen) and ``full`` (everything trained). What each
kind is and supports is one row of ``adapt.adapters.kinds.KINDS``, which loads without torch
(the config schema reads it at the door); ``adapt.adapters.registry`` applies them. The names
below are imported from ``registry`` on first use, so ``import adapt.adapters.kinds`` stays light.
``io`` saves and reads an adapter folder; ``loading`` puts one (a run, a folder or a Hub id)
onto the base it records.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ADAPTER_KINDS",
    "KINDS",
    "OUR_LAYOUTS",
    "PEFT_LAYOUT",
    "TARGET_PRESETS",
    "Kind",
    "apply_adapter",
    "adapter_options",
    "plain_name",
    "trainable_parameters",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("adapt.adapters.registry"), name)  # lazy: start-up (torch)
    raise AttributeError(f"module 'adapt.adapters' has no attribute {name!r}")
