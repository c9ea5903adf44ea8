"""``python -m adapt.evaluation.sweep <folder> [out=<folder>]``: a sweep's runs in one label-efficiency table.

A label-efficiency sweep is a Hydra multirun over ``data.train_cases`` (and usually adapter kinds)::

    python -m adapt.train -m recipe=demo data.train_cases=1,2,5,10,all adapter=lora,bottleneck

Every run writes ``metrics.json`` (validation Dice/IoU before and after training, the training
patients it used: ``data.train_cases``, ``data.train_case_ids``; cases skipped as bad with
``data.skip_bad_cases=true`` are not counted, they are listed in ``data.skipped_case_ids`` and
the ``skipped_cases`` column). ``collect`` finds every run under a
folder (at any depth), ``aggregate`` groups them by adapter and number of labelled cases (mean ±
std over seeds), and ``write_tables`` writes

* ``label_efficiency.csv``: one row per run;
* ``label_efficiency.md``: Dice (mean ± std, runs) per number of labelled cases and adapter, and
  the zero-shot line: the untouched model on the same validation cases (``validate_before``;
  every adapter starts as the identity, so that is zero-shot SAM2).

Validation is the card's validation split whatever ``train_cases`` is, so every row is measured on
the same patients. ``notebooks/compare_adapters.ipynb`` plots the same rows.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adapt.errors import AdaptError, ConfigError
from adapt.exits import USER_ERROR_STATUS, format_error

CSV_NAME, MD_NAME = "label_efficiency.csv", "label_efficiency.md"
COLUMNS = (
    "run",
    "adapter",
    "labelled_cases",
    "train_cases_setting",
    "skipped_cases",
    "val_cases",
    "seed",
    "steps",
    "dice_before",
    "dice_after",
    "iou_after",
    "trainable",
    "card",
)


def _adapter_label(adapter: dict[str, Any]) -> str:
    kind = str(adapter.get("kind", "?"))
    return kind + (f" r={adapter['rank']}" if adapter.get("rank") else "")  # kinds with a rank (LoRA's)


def describe_run(run: Path) -> dict[str, Any]:
    """One run's row (``COLUMNS``) from its ``metrics.json`` and ``config.yaml``."""
    import yaml

    metrics = json.loads((run / "metrics.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    data = metrics.get("data") or {}
    return {
        "run": str(run),
        "adapter": _adapter_label(metrics.get("adapter") or config.get("adapter") or {}),
        "labelled_cases": data.get("train_cases"),
        "train_cases_setting": data.get("train_cases_setting", "all"),
        "skipped_cases": len((data.get("skipped_case_ids") or {}).get("train") or ()),
        "val_cases": data.get("val_cases"),
        "seed": config.get("seed"),
        "steps": metrics.get("steps"),
        "dice_before": (metrics.get("before") or {}).get("val/dice"),
        "dice_after": (metrics.get("after") or {}).get("val/dice"),
        "iou_after": (metrics.get("after") or {}).get("val/iou"),
        "trainable": (metrics.get("params") or {}).get("trainable"),
        "card": data.get("card"),
    }


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every run under ``folder`` (a directory holding ``metrics.json``), sorted by adapter and cases.

    Raises:
        ConfigError: no run there, or runs on different data cards (their numbers do not compare).
    """
    folder = Path(folder).expanduser()
    runs = sorted(p.parent for p in folder.rglob("metrics.json")) if folder.is_dir() else []
    if not runs:
        raise ConfigError(
            f"{folder}: no training run (metrics.json) in this folder or below; give the folder of a "
            "sweep, e.g. multirun/demo/<date>"
        )
    rows = [describe_run(run) for run in runs]
    cards = sorted({str(r["card"]) for r in rows})
    if len(cards) > 1:
        raise ConfigError(
            f"{folder}: runs on different data cards {cards}; a label-efficiency table compares runs "
            "validated on the same cases"
        )
    return sorted(rows, key=lambda r: (r["adapter"], r["labelled_cases"] or 0, str(r["seed"])))


def unfinished(folder: str | Path) -> list[str]:
    """The sweep's jobs under ``folder`` that wrote no ``metrics.json`` (failed, killed or still running),
    each as ``<folder> (<its overrides>)``: Hydra writes ``.hydra/overrides.yaml`` when a job starts."""
    import yaml

    jobs = sorted(p.parent.parent for p in Path(folder).expanduser().rglob(".hydra/overrides.yaml"))
    return [
        f"{job} ({' '.join(map(str, yaml.safe_load((job / '.hydra' / 'overrides.yaml').read_text()) or []))})"
        for job in jobs
        if not (job / "metrics.json").exists()
    ]


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return None, None, 0
    return float(np.mean(kept)), (float(np.std(kept, ddof=1)) if len(kept) > 1 else None), len(kept)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std Dice/IoU per adapter and number of labelled cases, and the zero-shot line."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["adapter"], int(row["labelled_cases"] or 0)), []).append(row)
    cells = []
    for (adapter, cases), members in sorted(groups.items()):
        dice, dice_std, runs = _mean_std([m["dice_after"] for m in members])
        iou, _, _ = _mean_std([m["iou_after"] for m in members])
        cells.append(
            {
                "adapter": adapter,
                "labelled_cases": cases,
                "dice": dice,
                "dice_std": dice_std,
                "iou": iou,
                "runs": runs,
                "setting": members[0]["train_cases_setting"],
            }
        )
    zero, zero_std, zero_runs = _mean_std([r["dice_before"] for r in rows])
    return {
        "cells": cells,
        "zero_shot": {"dice": zero, "dice_std": zero_std, "runs": zero_runs},
        "card": rows[0]["card"] if rows else None,
        "val_cases": rows[0]["val_cases"] if rows else None,
    }


def _cell(mean: float | None, std: float | None, runs: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "") + (f" ({runs})" if runs > 1 else "")


def markdown(summary: dict[str, Any]) -> str:
    """The table: one row per number of labelled cases, one column per adapter, the zero-shot row last."""
    adapters = sorted({c["adapter"] for c in summary["cells"]})
    counts = sorted({c["labelled_cases"] for c in summary["cells"]})
    by = {(c["adapter"], c["labelled_cases"]): c for c in summary["cells"]}
    lines = [
        f"Validation Dice on data card `{summary['card']}` ({summary['val_cases']} validation cases), "
        "mean ± std over runs (number of runs when more than one).",
        "",
        "| labelled cases | " + " | ".join(adapters) + " |",
        "|---:|" + "---:|" * len(adapters),
    ]
    for count in counts:
        cells = [by.get((a, count)) for a in adapters]
        lines.append(
            f"| {count} | " + " | ".join(_cell(c["dice"], c["dice_std"], c["runs"]) if c else "-" for c in cells) + " |"
        )
    zero = summary["zero_shot"]
    lines.append("| 0 (zero-shot) | " + " | ".join(_cell(zero["dice"], zero["dice_std"], 1) for _ in adapters) + " |")
    missing = summary.get("unfinished") or []
    if missing:  # a failed job would otherwise be a row that is simply not there
        lines += [
            "",
            f"Not in the table: {len(missing)} run(s) without metrics.json (failed, killed or still "
            "running; see each one's train.log):",
            *(f"- {job}" for job in missing),
        ]
    return "\n".join(lines) + "\n"


def write_tables(folder: str | Path, out: str | Path | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Collect the runs under ``folder``; write ``label_efficiency.csv`` and ``.md`` into ``out`` (default
    ``folder``). Returns both paths and the aggregated summary."""
    rows = collect(folder)
    out = Path(out or folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with (out / CSV_NAME).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {**aggregate(rows), "unfinished": unfinished(folder)}
    (out / MD_NAME).write_text(markdown(summary))
    return out / CSV_NAME, out / MD_NAME, summary


def main(argv: list[str] | None = None) -> int:
    """``python -m adapt.evaluation.sweep <folder> [out=<folder>]``; user errors exit with status 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
        if not argv or "=" in argv[0] or set(options) - {"out"} or len(options) != len(argv) - 1:
            raise ConfigError("usage: python -m adapt.evaluation.sweep <sweep folder> [out=<folder>]")
        csv_path, md_path, _ = write_tables(argv[0], options.get("out"))
    except AdaptError as err:
        print(format_error(err), file=sys.stderr)
        return USER_ERROR_STATUS
    print(md_path.read_text())
    print(f"written: {csv_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
