"""Data cards: the facts about one dataset, validated when loaded.

A card (``data_cards/<name>.yaml``) says what the data is (modality, dimensions, licence,
citation), where its files come from (``source``), what the labels mean (``labels``,
``targets``), and how to turn voxels into model input (``intensity``, ``spacing``,
``slice_axis``, ``split``). Unknown keys are rejected with their name, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from adapt.conf import CARD_DIR
from adapt.errors import ConfigError

MODALITIES = ("CT", "MR", "PET", "US", "XR", "endoscopy", "dermoscopy", "RGB", "multispectral", "SAR")
SOURCE_KINDS = ("msd", "folder", "csv", "synthetic")


@dataclass
class DataCard:
    """One dataset's facts. See ``data_cards/README.md`` for every field."""

    name: str
    title: str
    modality: str
    dims: int
    license: str
    citation: str
    source: dict[str, Any]
    labels: dict[str, int]
    targets: list[str]
    intensity: dict[str, Any] = field(default_factory=dict)
    spacing: list[float] | None = None
    slice_axis: int = 2
    split: dict[str, Any] = field(default_factory=lambda: {"val": 0.2, "seed": 0})
    path: str | None = None

    def __post_init__(self) -> None:
        where = f"data card {self.path or self.name}"
        if self.modality not in MODALITIES:
            raise ConfigError(f"{where}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.dims not in (2, 3):
            raise ConfigError(f"{where}: dims must be 2 or 3, got {self.dims}")
        if self.source.get("kind") not in SOURCE_KINDS:
            raise ConfigError(f"{where}: source.kind {self.source.get('kind')!r} is not one of {SOURCE_KINDS}")
        unknown = [t for t in self.targets if t not in self.labels]
        if unknown or not self.targets:
            raise ConfigError(f"{where}: targets {unknown or self.targets} must be non-empty names from labels {list(self.labels)}")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"{where}: slice_axis must be 0, 1 or 2, got {self.slice_axis}")

    def target_ids(self) -> dict[str, int]:
        """``{target name: label id}`` in the card's target order."""
        return {name: int(self.labels[name]) for name in self.targets}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "path"}


def card_path(name_or_path: str | Path) -> Path:
    """A card stem in ``data_cards/`` or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"data.card: {path} does not exist")
        return path
    candidate = CARD_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(p.stem for p in CARD_DIR.glob("*.yaml"))
        raise ConfigError(f"data.card={name_or_path!r} is not a shipped card; choose from {known} or give a path")
    return candidate


def load_card(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> DataCard:
    """Read and validate a data card.

    Raises:
        ConfigError: unknown card, unknown key (named), missing field, or an invalid value.
    """
    path = card_path(name_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    raw.update(overrides or {})
    fields = {f.name for f in dataclasses.fields(DataCard)} - {"path"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"data card {path}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    missing = sorted(f.name for f in dataclasses.fields(DataCard)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw)
    if missing:
        raise ConfigError(f"data card {path}: missing field(s) {missing}")
    return DataCard(**raw, path=str(path))
