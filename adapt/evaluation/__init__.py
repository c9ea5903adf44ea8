"""Evaluation of adapters on a data card: per-volume metrics, click curves, comparisons.

Modules, one concern each:
    cases    the cases of a card's split (through the data layer)
    engine   batched model calls: prompted masks, correction clicks, semantic and auto prompts
    case     one case: prompts, prediction, reassembly on the stored grid, 3D metrics
    models   the adapter or zero-shot SAM2 to run
    report   cases.csv, summary.json, the printed table
    runner   evaluate(cfg): checks first, then every run over the same cases and prompts
    names    the protocol's choices (prompts, splits) that the config schema reads, without torch

``evaluate`` is imported on first use, so ``adapt.evaluation.names`` loads without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from adapt.evaluation.runner import evaluate  # lazy: start-up (the schema reads adapt.evaluation.names)

        return evaluate
    raise AttributeError(f"module 'adapt.evaluation' has no attribute {name!r}")
