"""What a finished run leaves behind: ``metrics.json`` and the adapter folder with its metadata.

Everything needed to evaluate, serve or share the adapter later travels with it (``adapter/``:
peft's files plus ``sam2_adapt.json``): the base model and its weights' fingerprint, the task,
the data card (a copy, ``data_card.yaml``, and a record of the cases it was trained on), the
preprocessing and label encoding ``predict`` must repeat, the prompt it was trained with and
the validation metrics. ``metrics.json`` is the run's summary for notebooks and sweeps: what
was trained, on how many patients, before and after. Only the cases that trained the adapter
count: those skipped as bad are listed apart, so a label-efficiency curve is drawn over the
labelled cases actually used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from adapt.adapters.io import save_adapter
from adapt.data.card_copy import CARD_FILE, RECORD_KEY, card_record, card_text
from adapt.data.sources import list_cases
from adapt.models.provenance import base_fingerprint
from adapt.tasks import MONITOR


def training_cases(datamodule: Any, setting: Any) -> dict[str, Any]:
    """How many patients the run trained and validated on, and which trained (``data.train_cases``).

    Only the cases actually used count: those skipped as bad (``data.skip_bad_cases=true``) are
    listed apart (``skipped_case_ids``), so a label-efficiency curve is drawn over the labelled
    cases that trained the adapter.
    """
    splits = getattr(datamodule, "splits", None)
    if not splits:
        return {}
    skipped = getattr(datamodule, "skipped", None) or {}
    used = {
        side: sorted({c.group for c in splits[side] if c.id not in set(skipped.get(side, ()))})
        for side in ("train", "val")
    }
    return {
        "train_cases": len(used["train"]),
        "val_cases": len(used["val"]),
        "train_cases_setting": "all" if setting is None else setting,
        "train_case_ids": used["train"],
        "skipped_case_ids": {side: sorted(ids) for side, ids in skipped.items()},
    }


def run_metrics(
    cfg: DictConfig,
    task: Any,
    datamodule: Any,
    steps: int,
    scores: Mapping[str, dict[str, float]],
    params: tuple[int, int],
    seconds: float,
    run_dir: Path,
    initialised_from: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``metrics.json`` (``scores``: the validation metrics ``before`` and ``after``;
    ``initialised_from``: the adapter a warm start began from, ``adapt.adapters.warm_start``)."""
    trainable, total = params
    return {
        "name": cfg.name,
        "model": task.model_info.to_dict(),
        "adapter": OmegaConf.to_container(cfg.adapter, resolve=True),
        "params": {"trainable": trainable, "total": total},
        "data": {
            "card": datamodule.card.name,
            "bad_cases": datamodule.num_bad_cases,
            **training_cases(datamodule, cfg.data.get("train_cases")),
        },
        "monitor": MONITOR,
        "before": scores["before"],
        "after": scores["after"],
        "steps": steps,
        "seconds": seconds,
        "run_dir": str(run_dir),
        "initialised_from": dict(initialised_from) if initialised_from else None,
    }


def save_run(
    cfg: DictConfig, task: Any, datamodule: Any, weights: Mapping[str, Any], metrics: Mapping[str, Any], run_dir: Path
) -> None:
    """Write the adapter (``weights``: the task's full state dict, gathered) and ``metrics.json``."""
    card = datamodule.card
    save_adapter(
        task.model,
        dict(task.hparams.adapter),
        run_dir / "adapter",
        weights={name.removeprefix("model."): value for name, value in weights.items()},
        metadata={
            "base_model": {"name": task.model_info.name, "revision": task.model_info.revision},
            "model": task.model_info.to_dict(),
            "task": cfg.task,
            "recipe": cfg.name,
            "data_card": card.name,
            RECORD_KEY: card_record(card, datamodule.root, list_cases(card, datamodule.root)),
            "base_fingerprint": base_fingerprint(task.model_info),
            "targets": list(card.targets),
            "license": getattr(card, "license", None),
            "preprocessing": datamodule.preprocessing,
            "label_map": datamodule.label_map,
            "mask_values": card.mask_values,
            "classes": getattr(task, "classes", None),
            "prompt": OmegaConf.to_container(cfg.data.prompt, resolve=True),
            "metrics": metrics["after"],
            "initialised_from": metrics.get("initialised_from"),
        },
        files={CARD_FILE: card_text(card)},
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
