"""Train/val/test splits by case (patient), deterministic under a seed.

Slices of one volume, and cases of one patient (``Case.group``), always land on the same
side: a model must never be validated on a neighbour of a slice it was trained on. The
split is a pure function of the sorted group names and the seed, so it does not depend on
file-system order or on which other options a run uses.

A dataset too small for its split -- no case left for validation, before or after bad cases
are skipped -- is refused before training (``require_validation``): without one, no ``val/dice``
is measured, no best checkpoint chosen, and Lightning would fail at the end of the first epoch.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adapt.data.sources import SPLITS, Case
from adapt.errors import ConfigError


def split_cases(
    cases: list[Case],
    split: Mapping[str, Any],
    where: str = "data card",
    train_cases: int | str | None = None,
    subset_seed: int = 0,
) -> dict[str, list[Case]]:
    """Assign every case to ``train``, ``val`` or ``test``.

    Precedence: a ``split`` given by the source (CSV column) for the cases that have one;
    then explicit id lists ``split.val`` / ``split.test`` (case or group ids); then fractions
    of groups drawn with ``split.seed``.

    Args:
        cases: all cases of the dataset.
        split: the card's ``split`` section.
        where: names the card in errors.
        train_cases: ``data.train_cases``: keep only this many training patients (``None`` or
            ``all``: every one); see ``training_subset``. Validation and test are untouched.
        subset_seed: seed of that draw.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.

    Raises:
        ConfigError: explicit ids that match no case; more training cases asked for than there are.
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
            for group in order[start : start + count]:
                side[group] = name
            start += count
    out: dict[str, list[Case]] = {name: [] for name in SPLITS}
    for case in cases:
        out[side.get(case.group, "train")].append(case)
    if not out["train"]:
        raise ConfigError(f"{where}: the split leaves no case to train on ({len(cases)} cases); lower split.val/test")
    out["train"] = training_subset(out["train"], train_cases, subset_seed, where)
    return out


def subset_order(cases: list[Case], seed: int) -> list[str]:
    """The training patients (groups) in the seeded order ``data.train_cases=k`` takes the first k of.

    One permutation of the sorted group names, so the k-subset is a prefix of it: the patients of
    ``k=2`` are among those of ``k=5`` (nested), whatever else the run changes.
    """
    groups = sorted({c.group for c in cases})
    return [groups[i] for i in np.random.default_rng(int(seed)).permutation(len(groups))]


def training_subset(cases: list[Case], count: int | str | None, seed: int = 0, where: str = "data card") -> list[Case]:
    """The cases of the first ``count`` patients of ``subset_order`` (``None``/``all``: every case).

    Raises:
        ConfigError: ``count`` is not a number >= 1 or exceeds the training patients (names ``data.train_cases``).
    """
    if count is None or str(count) == "all":
        return cases
    order = subset_order(cases, seed)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(order):
        raise ConfigError(
            f"data.train_cases={count!r} must be all or a number of training cases (patients) from 1 "
            f"to {len(order)}, the training cases of {where}"
        )
    kept = set(order[:count])
    return [c for c in cases if c.group in kept]


def require_validation(splits: Mapping[str, list[Case]], where: str, skipped: list[str] | tuple[str, ...] = ()) -> None:
    """Refuse a split whose validation side is empty (``skipped``: validation cases left out as bad).

    Raises:
        ConfigError: names the card, the case counts and how to get a validation case.
    """
    kept = [c for c in splits["val"] if c.id not in set(skipped)]
    if kept:
        return
    total = sum(len(v) for v in splits.values())
    why = (
        f"its {len(splits['val'])} validation case(s) were skipped as bad ({sorted(skipped)[:5]})"
        if skipped
        else f"the split puts none of its {total} case(s) in validation"
    )
    raise ConfigError(
        f"{where}: no validation case: {why} ({len(splits['train'])} train, {len(splits.get('test', []))} "
        "test); training measures val/dice on the validation cases to choose its best checkpoint. "
        "Add cases, raise split.val in the card (e.g. 0.2; a dataset of one case cannot be split), "
        "or list validation ids (split.val: [case_id, ...])"
    )
