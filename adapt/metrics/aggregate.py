"""Summaries of per-case scores that never hide an undefined value inside a mean.

HD95 of a case with an empty mask, NSD of a case with nothing in either mask, the IoU
of an absent class: these are ``nan`` by convention (see ``docs/metrics.md``). A plain
``np.mean`` would turn the whole column into ``nan``, and ``np.nanmean`` would drop them
without a trace; :func:`summarize` drops them *and* counts them, so a table can say
"HD95 12.3 mm over 18 cases, 2 undefined".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Stats = dict[str, float | int | None]


def _number(value: Any) -> float | None:
    """The value as a float, or None when it is not a number (a case id, a path)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # 0-dim tensor or array
        return _number(value.item())
    return None


def _columns(
    values: Mapping[str, Iterable[Any]] | Sequence[Mapping[str, Any]], metrics: Sequence[str] | None
) -> dict[str, list[Any]]:
    """Columns from either ``{metric: values}`` or rows ``[{metric: value, ...}, ...]``."""
    if isinstance(values, Mapping):
        columns = {str(k): list(v) for k, v in values.items()}
    else:
        rows = list(values)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        columns = {k: [row.get(k) for row in rows] for k in keys}
    if metrics is not None:
        missing = [m for m in metrics if m not in columns]
        if missing:
            raise KeyError(f"no values for metrics {missing}; have {sorted(columns)}")
        return {m: columns[m] for m in metrics}
    # Without a list, the metrics are the columns holding at least one number.
    return {k: v for k, v in columns.items() if any(_number(x) is not None for x in v)}


def summarize(
    values: Mapping[str, Iterable[Any]] | Sequence[Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    ddof: int = 0,
) -> dict[str, Stats]:
    """Mean, std, median, min, max, count and count_undefined of each metric.

    Undefined entries (``nan``, ``±inf``, ``None``, a row without the metric) are left
    out of every statistic and counted in ``count_undefined``; ``count`` is the number
    used. A metric with no defined value gets ``None`` statistics, so the result has no
    ``nan`` and ``json.dumps(..., allow_nan=False)`` accepts it.

    Args:
        values: ``{"dice": [...], "hd95": [...]}`` or per-case rows
            ``[{"case": "liver_0", "dice": 0.91, "hd95": nan}, ...]``.
        metrics: which metrics to summarise; default every column holding a number.
        ddof: delta degrees of freedom of the std; 0 (population) keeps one case at std 0.

    Returns:
        ``{metric: {"mean", "std", "median", "min", "max", "count", "count_undefined"}}``.
    """
    summary: dict[str, Stats] = {}
    for name, column in _columns(values, metrics).items():
        numbers_ = [_number(x) for x in column]
        defined = np.array([x for x in numbers_ if x is not None and math.isfinite(x)], dtype=np.float64)
        stats: Stats = dict.fromkeys(("mean", "std", "median", "min", "max"))
        if defined.size:
            stats.update(
                mean=float(defined.mean()),
                median=float(np.median(defined)),
                min=float(defined.min()),
                max=float(defined.max()),
            )
        if defined.size > ddof:
            stats["std"] = float(defined.std(ddof=ddof))
        stats.update(count=int(defined.size), count_undefined=len(column) - int(defined.size))
        summary[name] = stats
    return summary
