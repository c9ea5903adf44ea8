"""What an evaluation writes and prints: ``cases.csv``, ``summary.json`` and a table.

``cases.csv`` has one row per case and class (and per run when two adapters are compared,
column ``run``). ``summary.json`` holds, per class, mean/std/median/min/max of every metric
with the number of undefined values (``count_undefined``: HD95 of a case with an empty
mask, for instance; see ``docs/metrics.md``), the dataset-level confusion-matrix scores
(mIoU, per-class and global pixel accuracy), the Dice/IoU-versus-clicks curve and the
throughput. It contains no ``NaN``: undefined aggregate values are ``null``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from adapt.metrics.registry import CLICKED, DISTANCE, HEADLINE, VIDEO, VOLUME, of_family
from adapt.metrics.registry import METRICS as REGISTRY
from adapt.metrics import class_iou, global_accuracy, mean_pixel_accuracy, miou, pixel_accuracy, summarize

METRICS = of_family(VOLUME)
#: DAVIS scores of ``task=propagation`` (slices as frames).
VIDEO_METRICS = of_family(VIDEO)
COLUMNS = (
    "run",
    "case",
    "class",
    *METRICS,
    *VIDEO_METRICS,
    "gt_voxels",
    "pred_voxels",
    "unit",
    "voxel_size",
    "seconds",
    "slices",
    "image",
    "label",
)


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def summarize_run(
    rows: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    confusion: torch.Tensor,
    clicks: Mapping[int, list[dict[str, dict[str, float]]]],
    planes: int,
    model_seconds: float,
    unit: str,
) -> dict[str, Any]:
    """The ``summary.json`` numbers of one run.

    Args:
        rows: ``cases.csv`` rows of this run.
        classes: class names in output order.
        confusion: ``[C+1, C+1]`` confusion matrix over all cases (index 0 = background).
        clicks: per number of clicks, one ``{class: {"dice", "iou"}}`` per case.
        planes: slices (or frames) the model processed; ``model_seconds`` the time inside the model.
        unit: ``slices/s`` or ``frames/s``.
    """
    metrics = METRICS + (VIDEO_METRICS if rows and all(m in rows[0] for m in VIDEO_METRICS) else ())
    per_class = {name: summarize([r for r in rows if r["class"] == name], metrics=metrics) for name in classes}
    names = ["background", *classes]
    accuracy = pixel_accuracy(confusion)
    summary: dict[str, Any] = {
        "cases": len({r["case"] for r in rows}),
        "classes": per_class,
        "overall": summarize(rows, metrics=metrics),
        "miou": _number(miou(confusion)),
        "class_iou": {n: _number(v) for n, v in zip(names, class_iou(confusion))},
        "pixel_accuracy": {n: _number(v) for n, v in zip(names, accuracy)},
        "mean_pixel_accuracy": _number(mean_pixel_accuracy(confusion)),
        "global_accuracy": _number(global_accuracy(confusion)),
        "throughput": {
            "unit": unit,
            "planes": int(planes),
            "model_seconds": model_seconds,
            "per_second": planes / model_seconds if model_seconds > 0 else None,
        },
        "undefined": {m: int(sum(s[m]["count_undefined"] for s in per_class.values())) for m in metrics},
        "distance_unit": distance_unit(rows),
    }
    if clicks:
        summary["clicks"] = click_curve(clicks, classes)
    return summary


def distance_unit(rows: Sequence[Mapping[str, Any]]) -> str:
    """The unit of HD95 and the NSD tolerance over the cases: ``mm``, ``px``, a GeoTIFF's CRS
    unit, or ``mixed`` (cases in different units: their mean means little)."""
    units = {row["unit"] for row in rows}
    return units.pop() if len(units) == 1 else "mixed" if units else "none"


def click_curve(clicks: Mapping[int, list[dict[str, dict[str, float]]]], classes: Sequence[str]) -> dict[str, Any]:
    """Mean Dice and IoU after each number of correction clicks, over cases, per class and overall.

    Keys are click counts as strings (JSON), ``"0"`` being the first prompt alone.
    """
    curve: dict[str, Any] = {}
    for k in sorted(clicks):
        cases = clicks[k]
        entry: dict[str, Any] = {}
        for metric in CLICKED:
            by_class = {c: float(np.mean([case[c][metric] for case in cases])) for c in classes}
            entry[metric] = float(np.mean(list(by_class.values())))
            entry[f"{metric}_per_class"] = by_class
        curve[str(k)] = entry
    return curve


def difference(main: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """``main - other`` of each class's mean of the headline metrics (and mIoU, global accuracy)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, stats in main["classes"].items():
        theirs = other["classes"].get(name, {})
        out[name] = {m: _diff(stats[m]["mean"], (theirs.get(m) or {}).get("mean")) for m in HEADLINE}
    out["dataset"] = {k: _diff(main.get(k), other.get(k)) for k in ("miou", "global_accuracy")}
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def write_cases(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] = COLUMNS) -> Path:
    """``cases.csv``: one row per run, case and class; undefined values are empty cells."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return path


def write_summary(summary: Mapping[str, Any], path: Path) -> Path:
    """``summary.json``, refusing ``NaN`` (undefined values must already be ``null``)."""
    path.write_text(json.dumps(summary, indent=2, allow_nan=False, default=str))
    return path


def _fmt(stats: Mapping[str, Any] | None, spread: bool = True, fmt: str = ".4f") -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    text = f"{stats['mean']:{fmt}}"
    if spread and stats.get("std") is not None:
        text += f" ± {stats['std']:{fmt}}"
    if stats.get("count_undefined"):
        text += f" ({stats['count_undefined']} undefined)"
    return text


def print_table(summary: Mapping[str, Any], console: Console | None = None) -> Table:
    """Per class and metric: mean ± std; with a comparison, the other run and the difference."""
    console = console or Console()
    other = summary.get("compare")
    where = (summary.get("domain") or {}).get("kind", "none")
    title = (
        f"sam2-adapt evaluation: {summary['adapter']} on {summary['data_card']} ({summary['split']}, "
        f"{summary['cases']} cases, prompt={summary['protocol']['prompt']}"
        + ("" if where == "none" else f", {where}: trained on {summary['domain']['trained_on']}")
        + ")"
    )
    table = Table(title=title)
    for column in (
        "class",
        "metric",
        str(summary["adapter"]),
        *((str(other["adapter"]), "difference") if other else ()),
    ):
        table.add_column(column, overflow="fold")
    for name, stats in summary["classes"].items():
        for metric in HEADLINE:
            label = f"{metric} ({summary['distance_unit']})" if REGISTRY[metric].unit == DISTANCE else metric
            fmt = REGISTRY[metric].fmt
            cells = [name, label, _fmt(stats[metric], fmt=fmt)]
            if other:
                delta = other["difference"][name][metric]
                cells += [
                    _fmt(other["classes"].get(name, {}).get(metric), fmt=fmt),
                    "-" if delta is None else f"{delta:+{fmt}}",
                ]
            table.add_row(*cells)
    for key in ("miou", "global_accuracy"):
        value = summary.get(key)
        cells = ["all", key, "-" if value is None else f"{value:.4f}"]
        if other:
            delta = other["difference"]["dataset"][key]
            cells += ["-" if other.get(key) is None else f"{other[key]:.4f}", "-" if delta is None else f"{delta:+.4f}"]
        table.add_row(*cells)
    for k, entry in (summary.get("clicks") or {}).items():
        cells = ["all", f"dice @ {k} clicks", f"{entry['dice']:.4f}"]
        if other:
            theirs = ((other.get("clicks") or {}).get(k) or {}).get("dice")
            cells += ["-", "-"] if theirs is None else [f"{theirs:.4f}", f"{entry['dice'] - theirs:+.4f}"]
        table.add_row(*cells)
    speed = summary["throughput"]
    if speed["per_second"] is not None:
        table.add_row("all", speed["unit"], f"{speed['per_second']:.2f}", *(("", "") if other else ()))
    console.print(table)
    return table
