"""Robustness under shift: every case again with its input corrupted, per shift and severity.

``python -m adapt.evaluate adapter=<run> compare=none shift=[noise,blur,contrast,gamma,bias_field,resolution,motion]
severity=[1,2,3,4,5] out=<dir>`` evaluates the clean cases first (``cases.csv``, the summary, as
without ``shift``), then each (shift, severity) with the same prompts, the adapter and the
compared model (zero-shot SAM2 with ``compare=none``) seeing the same corrupted pixels. The
corruption (``adapt.transforms.shifts.Shift``) is applied in ``evaluate_case`` to the model
input that ``to_unit`` made, after reading and before the model; its seed is drawn from
``seed=``, the case and the condition, so one seed gives one set of corruptions and severity 0
reproduces the clean evaluation exactly.

Outputs: ``summary.json["robustness"]`` and ``robustness.csv`` (mean Dice and NSD over cases
and classes per condition and run, and the relative drop from the clean score: ``(clean -
shifted) / clean``), ``robustness_cases.csv`` (the per-case rows of the shifted conditions),
and a printed table with both runs side by side.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from adapt.errors import ConfigError
from adapt.metrics.registry import SHIFTED
from adapt.transforms.shifts import SEVERITIES, SHIFTS, Shift, family
from adapt.evaluation.report import COLUMNS, write_cases

CLEAN = ("none", 0)
METRICS = SHIFTED
CSV_COLUMNS = ("shift", "severity", "parameter", "run", "model", *METRICS, *(f"{m}_drop" for m in METRICS))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    return list(value)


def conditions(shift: Any, severity: Any) -> list[tuple[str, int]]:
    """``shift=`` x ``severity=`` as ``(shift, severity)`` pairs; ``[]`` without ``shift`` (clean only).

    ``shift=all`` is every shift; severities are 0 to 5.

    Raises:
        ConfigError: an unknown shift or a severity outside 0-5 (names the key and the choices).
    """
    names = [str(s) for s in _as_list(shift) if str(s).lower() not in ("none", "null", "")]
    if names == ["all"]:
        names = list(SHIFTS)
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise ConfigError(f"shift={unknown} is not one of {list(SHIFTS)} (or all)")
    levels = _as_list(severity if severity is not None else [1, 2, 3, 4, 5])
    if not levels or any(isinstance(v, bool) or not isinstance(v, int) or v not in SEVERITIES for v in levels):
        raise ConfigError(f"severity={levels} must be a list of severities from {SEVERITIES[0]} to {SEVERITIES[-1]}")
    return [(name, int(level)) for name in dict.fromkeys(names) for level in sorted(set(levels))]


def shift_for(
    name: str, severity: int, modality: str, preprocessing: Mapping[str, Any], seed: int, case_index: int
) -> Shift:
    """The corruption of one case: its modality's scale, the adapter's window, a seed of (seed, case, condition)."""
    window = (preprocessing.get("intensity") or {}).get("window")
    state = np.random.SeedSequence([int(seed), int(case_index), SHIFTS.index(name), int(severity)])
    return Shift(
        name,
        int(severity),
        family(modality),
        int(state.generate_state(1)[0]),
        tuple(float(v) for v in window) if window else None,
    )


def _mean(rows: Sequence[Mapping[str, Any]], metric: str) -> float | None:
    values = [float(r[metric]) for r in rows if r.get(metric) is not None and math.isfinite(float(r[metric]))]
    return float(np.mean(values)) if values else None


def _drop(clean: float | None, shifted: float | None) -> float | None:
    if clean is None or shifted is None or clean <= 0:
        return None
    return (clean - shifted) / clean


def summarize(
    rows: Iterable[Mapping[str, Any]],
    pairs: Sequence[tuple[str, int]],
    labels: Mapping[str, str],
    modality: str,
    seed: int,
) -> dict[str, Any]:
    """Per condition (clean first) and run: mean Dice and NSD over cases and classes, and the relative drop."""
    rows = list(rows)
    by: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (row["run"], str(row.get("shift") or CLEAN[0]), int(row.get("severity") or 0))
        by.setdefault(key, []).append(row)
    runs = [run for run in ("adapter", "compare") if run in labels]
    table = []
    for name, severity in [CLEAN, *pairs]:
        entry: dict[str, Any] = {
            "shift": name,
            "severity": severity,
            "parameter": Shift(name, severity, family(modality)).parameter if name in SHIFTS else None,
        }
        for run in runs:
            scores = {m: _mean(by.get((run, name, severity), []), m) for m in METRICS}
            clean = {m: _mean(by.get((run, *CLEAN), []), m) for m in METRICS}
            entry[run] = {**scores, **{f"{m}_drop": _drop(clean[m], scores[m]) for m in METRICS}}
        table.append(entry)
    return {"family": family(modality), "seed": int(seed), "models": dict(labels), "conditions": table}


def write(summary: Mapping[str, Any], shifted_rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``robustness.csv`` (one row per condition and run) and ``robustness_cases.csv``."""

    with (out / "robustness.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for entry in summary["conditions"]:
            for run, model in summary["models"].items():
                scores = entry.get(run) or {}
                writer.writerow(
                    {
                        "shift": entry["shift"],
                        "severity": entry["severity"],
                        "parameter": entry["parameter"],
                        "run": run,
                        "model": model,
                        **{k: _cell(scores.get(k)) for k in CSV_COLUMNS[5:]},
                    }
                )
    write_cases(shifted_rows, out / "robustness_cases.csv", ("shift", "severity", *COLUMNS))


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _show(scores: Mapping[str, Any] | None, metric: str) -> str:
    if not scores or scores.get(metric) is None:
        return "-"
    drop = scores.get(f"{metric}_drop")
    return f"{scores[metric]:.4f}" + ("" if drop is None else f" ({-100 * drop:+.1f} %)")


#: A severity family in words, for the table's title.
FAMILY_WORDS = {
    "ct": "CT",
    "mr": "MR",
    "aerial": "aerial and satellite tiles",
    "other": "ultrasound, X-ray, PET and photos",
}


def title(summary: Mapping[str, Any]) -> str:
    """The robustness table's title in words: what is measured, on which scales, with which seed."""
    return (
        f"Robustness to acquisition shifts: Dice and NSD under each shift and severity, mean over cases and "
        f"classes, in brackets the change from the clean input (severities scaled for "
        f"{FAMILY_WORDS.get(summary['family'], summary['family'])}; random shifts drawn with seed {summary['seed']})"
    )


def print_table(summary: Mapping[str, Any], console: Any = None) -> None:
    """Dice and NSD per shift and severity, both runs side by side, with the change from clean in %."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=200))  # logs: no folded cells
    models = summary["models"]
    table = Table(title=title(summary))
    for column in ("shift", "severity", "parameter", *(f"{models[r]} {m}" for r in models for m in METRICS)):
        table.add_column(column, overflow="fold")
    for entry in summary["conditions"]:
        parameter = "-" if entry["parameter"] is None else f"{entry['parameter']:g}"
        table.add_row(
            entry["shift"],
            str(entry["severity"]),
            parameter,
            *(_show(entry.get(r), m) for r in models for m in METRICS),
        )
    console.print(table)
