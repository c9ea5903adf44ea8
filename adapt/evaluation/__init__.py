"""Evaluation of adapters on a data card: per-volume metrics, click curves, comparisons.

Modules, one concern each:
    cases    the cases of a card's split (through the data layer)
    case     one case: prompts, prediction through the batched runner (``adapt.inference.engine``),
             reassembly on the stored grid, 3D metrics
    models   the adapter or zero-shot SAM2 to run
    report   cases.csv, summary.json, the printed table
    runner   evaluate(cfg): checks first, then every run over the same cases and prompts

The protocol's choices (prompts, splits) live below, in ``adapt.inference.names`` and
``adapt.data.names``, where the config schema reads them without torch. ``evaluate`` is
imported on first use, so importing one module of the package does not load the runner's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        # a module of the package loads without the runner
        from adapt.evaluation.runner import evaluate  # lazy: start-up

        return evaluate
    raise AttributeError(f"module 'adapt.evaluation' has no attribute {name!r}")
