"""sam2-adapt: fine-tune a frozen SAM2 with LoRA or adapter layers on your own domain.

Importing ``adapt`` (which every ``python -m adapt.<command>`` does first) switches off the
connections that libraries make on their own: albumentations' update check at import, Gradio's
analytics, the Hugging Face Hub's telemetry. Hospital networks are often air-gapped, and a
connection attempt is itself a leak, so nothing connects unless a command is asked to (a Hub
model or ``hub push|pull``; ``logger=wandb``). A variable the user set is left as it is
(README, "Offline use").

It also asks numpy not to request transparent huge pages for its arrays (``NUMPY_MADVISE_HUGEPAGE=0``).
numpy advises the kernel to back every array of 4 MB or more with 2 MB pages; where the kernel's
``transparent_hugepage/defrag`` is ``madvise`` (Ubuntu's default), such a page fault first compacts
memory, and on a machine whose memory is fragmented (a page cache full of scans) allocating a CT's
62 MB float32 input took 0.13-0.49 s instead of 0.027 s with ordinary pages. Every command allocates
volume-sized arrays case after case: ``evaluate`` of one validation CT spent ~1 s of its ~3.5 s so
(``benchmarks/RESULTS.md``). Set the variable to 1 to keep numpy's default.
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_adapter"]

#: Environment variables that stop a library's own connections, and the value that does.
OFFLINE_DEFAULTS = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations: a PyPI request at every import
    "GRADIO_ANALYTICS_ENABLED": "False",  # Gradio: usage analytics and its version check
    "HF_HUB_DISABLE_TELEMETRY": "1",  # huggingface_hub: telemetry beside downloads
}
#: numpy's transparent huge pages off (read when numpy is imported; see the module docstring).
MEMORY_DEFAULTS = {"NUMPY_MADVISE_HUGEPAGE": "0"}
for _name, _value in {**OFFLINE_DEFAULTS, **MEMORY_DEFAULTS}.items():
    os.environ.setdefault(_name, _value)

#: Public names imported on first use, so ``import adapt`` does not pull in torch/transformers.
_LAZY = {"load_adapter": "adapt.adapters.loading", "LoadedAdapter": "adapt.adapters.loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapt' has no attribute {name!r}")
