"""Evaluation of adapters on a data card: per-volume metrics, click curves, comparisons.

Modules, one concern each:
    cases    the cases of a card's split (through the data layer)
    case     one case: prompts, prediction through the batched runner (``adapt.inference.engine``),
             reassembly on the stored grid, 3D metrics
    models   the adapter or zero-shot SAM2 to run
    report   cases.csv, summary.json, the printed table
    runner   evaluate(cfg): checks first, then every run over the same cases and prompts
"""

from adapt.evaluation.runner import evaluate

__all__ = ["evaluate"]
