"""sam2-adapt: fine-tune a frozen SAM2 with LoRA or adapter layers on your own domain."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_adapter"]

#: Public names imported on first use, so ``import adapt`` does not pull in torch/transformers.
_LAZY = {"load_adapter": "adapt.hub.loading", "LoadedAdapter": "adapt.hub.loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapt' has no attribute {name!r}")
