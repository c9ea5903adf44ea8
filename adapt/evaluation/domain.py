"""Cross-domain evaluation: an adapter on another card of the same structure, label maps matched by name.

An adapter remembers the card it was trained on (``data_card``), that card's label map and its
targets. Evaluated on another card (``data.card=``), its classes are its own targets looked up
*by name* in the other card's labels, so an adapter trained where ``liver: 6`` is scored where
``liver: 1``: prompts are drawn from, and predictions compared with, the other card's voxels of
value 1, and its masks are written with that value. A target the other card does not name is
left out (and reported); none in common is an error that shows both maps.

``summary.json["domain"]`` says which it was: ``in-domain`` (the training card),
``out-of-domain`` (another card), or ``none`` (zero-shot SAM2, trained on nothing), with the
matched label values. With ``in_domain=true`` an out-of-domain evaluation also runs on the
adapter's own card (its ``split=``, ``in_domain_root=`` where its files are), and
``summary.json["domain"]`` and the printed table put the two side by side, with the gap
(out-of-domain minus in-domain) per class and metric.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from adapt.errors import ConfigError
from adapt.data.encoding import label_names
from adapt.metrics.registry import HEADLINE
from adapt.evaluation.cases import evaluation_card, load_cases
from adapt.data.cards import load_card
from adapt.data.cards import card_path

log = logging.getLogger(__name__)


def trained_on(metadata: Mapping[str, Any]) -> str | None:
    """The name of the card an adapter was trained on (``None``: zero-shot SAM2)."""
    return metadata.get("data_card") or None


def trained_targets(metadata: Mapping[str, Any]) -> dict[str, int]:
    """The adapter's targets and their label values on its training card.

    Adapters record ``targets``; for older ones, the training card's targets if that card loads,
    else every non-zero label of the recorded label map.
    """
    labels = label_names(metadata.get("label_map"))
    targets = metadata.get("targets")
    if not targets and trained_on(metadata):
        try:
            targets = load_card(trained_on(metadata)).targets
        except ConfigError:
            targets = None
    names = targets or [name for name, value in labels.items() if value != 0]
    return {name: labels.get(name) for name in names}


def kind(metadata: Mapping[str, Any], card_name: str) -> str:
    """``in-domain``, ``out-of-domain`` or ``none`` (no training card: zero-shot)."""
    source = trained_on(metadata)
    return "none" if not source else "in-domain" if source == card_name else "out-of-domain"


def matched_classes(metadata: Mapping[str, Any], card: Any) -> dict[str, int]:
    """Class name -> label value in ``card``'s files: the card's targets in-domain (and for zero-shot
    SAM2); out-of-domain, the adapter's targets found by name in the card's labels.

    Raises:
        ConfigError: no target of the adapter is a label of the card (shows both label maps).
    """
    if kind(metadata, card.name) != "out-of-domain":
        return card.target_ids()
    targets = trained_targets(metadata)
    labels = label_names(card.labels)
    matched = {name: int(labels[name]) for name in targets if name in labels}
    missing = [name for name in targets if name not in labels]
    if not matched:
        raise ConfigError(
            f"the adapter was trained on {list(targets)} of data card {trained_on(metadata)!r} "
            f"(labels {dict(label_names(metadata.get('label_map')))}); data card {card.name!r} names "
            f"none of them (labels {labels}); rename the label in one card, or evaluate on a card "
            "of the same structure"
        )
    if missing:
        log.warning(
            "data card %r has no label named %s: those targets of the adapter are not evaluated", card.name, missing
        )
    return matched


def describe(metadata: Mapping[str, Any], card: Any, classes: Mapping[str, int]) -> dict[str, Any]:
    """``summary.json["domain"]``: which domain, and each class's value on both cards."""
    targets = trained_targets(metadata) if trained_on(metadata) else {}
    return {
        "kind": kind(metadata, card.name),
        "trained_on": trained_on(metadata),
        "evaluated_on": card.name,
        "classes": {name: {"trained": targets.get(name), "evaluated": int(value)} for name, value in classes.items()},
        "unmatched": [name for name in targets if name not in classes],
    }


def in_domain_cases(
    metadata: Mapping[str, Any],
    card: Any,
    classes: Mapping[str, int],
    choice: Any,
    root: str | None,
    split: str,
    folder: Any = None,
) -> tuple[Any, list[Any], dict[str, int]]:
    """The adapter's own card, its cases of ``split`` and the evaluated classes' values on it (``in_domain=``).

    ``choice``: ``true`` (the card the adapter carries in ``folder``, at its recorded data root or
    ``root``; for older adapters the recorded card by name) or a card stem or path.

    Raises:
        ConfigError: the evaluation is not out-of-domain, or the card does not name a class.
    """

    if kind(metadata, card.name) != "out-of-domain":
        raise ConfigError(
            f"in_domain={choice} puts an out-of-domain evaluation beside the adapter's own card; "
            f"this evaluation is {kind(metadata, card.name)} (data card {card.name!r}); give data.card= "
            "another card of the same structure"
        )
    if choice is True or str(choice).lower() == "true":
        own, root = evaluation_card(folder, metadata, None, root, "in_domain_root")
    else:
        own = load_card(card_path(str(choice), key="in_domain"))
    own, cases = load_cases(own, root, split, metadata)
    if own.name != trained_on(metadata):
        raise ConfigError(
            f"in_domain={choice}: that card is {own.name!r}, the adapter was trained on "
            f"{trained_on(metadata)!r}; give the card it was trained on"
        )
    labels = label_names(own.labels)
    missing = [name for name in classes if name not in labels]
    if missing:
        raise ConfigError(f"in_domain: data card {own.name!r} has no label named {missing} (labels {labels})")
    return own, cases, {name: int(labels[name]) for name in classes}


def side_by_side(
    inside: Mapping[str, tuple[list[Any], Mapping[str, Any]]],
    outside: Mapping[str, Mapping[str, Any]],
    own: Any,
    split: str,
) -> dict[str, Any]:
    """The ``summary.json["domain"]`` entries of an ``in_domain=`` evaluation: each run's in-domain
    summary (classes, overall) and, per run, class and metric, in-domain vs out-of-domain and the gap."""
    runs = {run: summary for run, (_, summary) in inside.items()}
    return {
        "in_domain": {
            "card": own.name,
            "split": split,
            "cases": next(iter(runs.values()))["cases"],
            "label_values": next(iter(runs.values()))["label_values"],
            **{run: {"classes": s["classes"], "overall": s["overall"]} for run, s in runs.items()},
        },
        "out_of_domain": {
            "card": next(iter(outside.values()))["data_card"],
            "split": split,
            "cases": next(iter(outside.values()))["cases"],
        },
        "models": {run: outside[run]["adapter"] for run in runs},
        "gap": {run: compare(runs[run], outside[run]) for run in runs},
    }


def compare(in_domain: Mapping[str, Any], out_domain: Mapping[str, Any]) -> dict[str, Any]:
    """Per class and headline metric: the in-domain and out-of-domain means and the gap (out - in)."""
    table: dict[str, Any] = {}
    for name, stats in out_domain["classes"].items():
        mine = in_domain["classes"].get(name) or {}
        table[name] = {}
        for metric in HEADLINE:
            inside, outside = (mine.get(metric) or {}).get("mean"), (stats.get(metric) or {}).get("mean")
            table[name][metric] = {
                "in_domain": inside,
                "out_of_domain": outside,
                "gap": None if inside is None or outside is None else outside - inside,
            }
    return table


def print_table(domain: Mapping[str, Any], console: Any = None) -> None:
    """In-domain against out-of-domain, per run, class and metric."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=160))
    table = Table(
        title=f"in-domain ({domain['trained_on']}, {domain['in_domain']['split']}) vs out-of-domain "
        f"({domain['evaluated_on']}, {domain['out_of_domain']['split']})"
    )
    for column in ("model", "class", "metric", "in-domain", "out-of-domain", "gap"):
        table.add_column(column, overflow="fold")
    show = lambda v, sign="": "-" if v is None else f"{v:{sign}.4f}"  # noqa: E731
    for run, classes in domain["gap"].items():
        for name, metrics in classes.items():
            for metric, cells in metrics.items():
                table.add_row(
                    domain["models"][run],
                    name,
                    metric,
                    show(cells["in_domain"]),
                    show(cells["out_of_domain"]),
                    show(cells["gap"], "+"),
                )
    console.print(table)
