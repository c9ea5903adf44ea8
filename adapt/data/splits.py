"""Train/val/test splits by case (patient), deterministic under a seed.

Slices of one volume, and cases of one patient (``Case.group``), always land on the same
side: a model must never be validated on a neighbour of a slice it was trained on. The
split is a pure function of the sorted group names and the seed, so it does not depend on
file-system order or on which other options a run uses.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adapt.data.sources import SPLITS, Case
from adapt.errors import ConfigError


def split_cases(cases: list[Case], split: Mapping[str, Any], where: str = "data card") -> dict[str, list[Case]]:
    """Assign every case to ``train``, ``val`` or ``test``.

    Precedence: a ``split`` given by the source (CSV column) for the cases that have one;
    then explicit id lists ``split.val`` / ``split.test`` (case or group ids); then fractions
    of groups drawn with ``split.seed``.

    Args:
        cases: all cases of the dataset.
        split: the card's ``split`` section.
        where: names the card in errors.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.

    Raises:
        ConfigError: explicit ids that match no case.
    """
    side: dict[str, str] = {}
    for case in cases:
        if case.split:
            side[case.group] = case.split
    explicit = {name: split.get(name) for name in ("val", "test") if isinstance(split.get(name), (list, tuple))}
    if explicit:
        known = {c.id for c in cases} | {c.group for c in cases}
        for name, ids in explicit.items():
            unknown = sorted(set(map(str, ids)) - known)
            if unknown:
                raise ConfigError(f"{where}: split.{name} lists ids {unknown[:5]} that match no case")
            wanted = set(map(str, ids))
            for case in cases:
                if case.id in wanted or case.group in wanted:
                    side.setdefault(case.group, name)
    free = sorted({c.group for c in cases} - set(side))
    fractions = {name: float(split.get(name) or 0) for name in ("val", "test") if name not in explicit}
    if free and fractions:
        order = [free[i] for i in np.random.default_rng(int(split.get("seed", 0))).permutation(len(free))]
        start = 0
        for name, fraction in fractions.items():
            count = int(round(fraction * len(free)))
            if fraction > 0 and count == 0 and len(free) - start > 1:
                count = 1  # a requested split is never silently empty
            for group in order[start:start + count]:
                side[group] = name
            start += count
    out: dict[str, list[Case]] = {name: [] for name in SPLITS}
    for case in cases:
        out[side.get(case.group, "train")].append(case)
    if not out["train"]:
        raise ConfigError(f"{where}: the split leaves no case to train on ({len(cases)} cases); lower split.val/test")
    return out
