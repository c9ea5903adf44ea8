"""The cases an evaluation runs on: a data card, its files, one split.

The data layer owns case lists and splits; this module is the one place evaluation asks it
for them, so a rename there is followed here only. Two generations of the data layer are
supported: ``split_cases`` returning ``{"train", "val", "test"}`` (by patient) and the earlier
one returning ``(train, val)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from adapt.data.card_copy import adapter_card, check_cases
from adapt.data.cards import DataCard, load_card
from adapt.data.sources import data_root, list_cases
from adapt.data.splits import split_cases
from adapt.data.names import EVALUATION_SPLITS
from adapt.errors import ConfigError, DataError, check_choice


@dataclass(frozen=True)
class EvalCase:
    """One image and its label file, as evaluation needs them."""

    id: str
    image: Path
    label: Path


def evaluation_card(
    folder: Path | None, metadata: Mapping[str, Any], card: Any, root: Any, key: str = "data.root"
) -> tuple[DataCard, str | None]:
    """The card to evaluate on and its data root: ``data.card=`` when given, else the card the adapter
    carries (``adapt.data.card_copy``, at its recorded root), else the one it names (older adapters).

    Raises:
        ConfigError: no card at all, or the carried card's data has moved and ``key`` is not set.
    """
    if card:
        return load_card(card), root
    carried = adapter_card(folder, metadata, root, key)
    if carried is not None:
        return carried
    if not metadata.get("data_card"):
        raise ConfigError("data.card= is required (the adapter records no data card)")
    return load_card(metadata["data_card"]), root


def load_cases(
    card: str | DataCard, root: str | None, split: str, metadata: Mapping[str, Any] | None = None
) -> tuple[DataCard, list[EvalCase]]:
    """The card and the cases of ``split`` (``all``: every case), with their files checked; with the
    adapter's ``metadata``, a warning when its own card's cases are not those it was trained on.

    Raises:
        ConfigError: unknown card or split, or a split with no case.
        DataNotFoundError: the dataset is not at the root (says how to supply it).
        DataError: a listed image or label file is missing.
    """
    check_choice("split", split, EVALUATION_SPLITS)
    card = card if isinstance(card, DataCard) else load_card(card)
    folder = data_root(card, root)
    cases = list_cases(card, folder, say="evaluation")  # as the training data module lists and splits them
    check_cases(metadata or {}, card, cases, folder)
    chosen = cases if split == "all" else split_cases(cases, dict(card.split), f"data card {card.name}").get(split, [])
    if not chosen:
        raise ConfigError(
            f"data card {card.name!r}: split={split} holds no case (card split: {dict(card.split)}); "
            f"choose another split= ({', '.join(EVALUATION_SPLITS)})"
        )
    for case in chosen:
        for path in (case.image, case.label):
            if not Path(path).exists():
                raise DataError(f"{path}: listed for case {case.id} of data card {card.name!r} but missing")
    # Absolute: cases.csv names them, and is read from other folders (notebooks/).
    return card, [EvalCase(c.id, Path(c.image).absolute(), Path(c.label).absolute()) for c in chosen]
