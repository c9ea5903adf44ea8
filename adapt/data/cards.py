"""Data cards: the facts about one dataset, validated when loaded.

A card (``data_cards/<name>.yaml``) says what the data is (modality, dimensions, licence,
citation), where its files come from (``source``), what the labels mean (``labels``,
``targets``), and how to turn pixels into model input (``intensity``, ``spacing``,
``slice_axis``, ``split``). Unknown keys are rejected with their name at every level, so a
typo never silently falls back to a default. ``data_cards/README.md`` documents each field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from adapt.conf import CARD_DIR
from adapt.data.encoding import FILE_MAXIMUM, check_mask_values
from adapt.errors import ConfigError
from adapt.guards import NONFINITE_POLICIES

MODALITIES = ("CT", "MR", "PET", "US", "XR", "endoscopy", "dermoscopy", "RGB", "multispectral", "SAR")
SOURCE_KINDS = ("msd", "folder", "csv", "synthetic")
GENERATORS = ("ct", "mr", "aerial")
_COMMON_SOURCE_KEYS = {"kind", "root", "url", "md5", "access", "mask_threshold"}
SOURCE_KEYS = {
    "msd": _COMMON_SOURCE_KEYS | {"task"},
    "folder": _COMMON_SOURCE_KEYS | {"images", "labels"},
    "csv": _COMMON_SOURCE_KEYS | {"manifest"},
    "synthetic": _COMMON_SOURCE_KEYS | {"generator", "num_cases", "seed", "shape"},
}
REQUIRED_SOURCE_KEYS = {"msd": set(), "folder": {"images", "labels"}, "csv": {"manifest"}, "synthetic": set()}
INTENSITY_KEYS = {"window", "percentiles", "channels", "nonfinite"}
#: Placeholders of a ``folder`` source's ``labels`` template (see ``adapt.data.sources``).
LABEL_PLACEHOLDERS = ("{name}", "{stem}", "{parent}", "{digits}")
SPLIT_KEYS = {"val", "test", "seed"}
#: What ``python -m adapt.data init`` writes for the facts no file holds; ``adapt.train`` refuses them.
TODO_LICENSE = "TODO: the dataset's licence as published (an SPDX id such as CC-BY-4.0, or its own terms)"
TODO_CITATION = "TODO: what users of this dataset must cite (paper or dataset reference)"


@dataclass
class DataCard:
    """One dataset's facts. See ``data_cards/README.md`` for every field.

    Attributes:
        name: the card's stem, used in cache paths and adapter metadata.
        title: human-readable dataset name.
        modality: one of ``MODALITIES``.
        dims: 3 for volumes (sliced for SAM2), 2 for images.
        license: SPDX id or the dataset's own terms, as published.
        citation: what users of the data must cite.
        source: where the files are (``kind``-specific keys, see ``SOURCE_KEYS``); ``url`` and
            ``md5`` (one or a list) for ``python -m adapt.data download``, or ``access``: how to
            obtain data that has no public URL (named in the missing-data error).
        labels: label name -> integer id in the label files.
        targets: label names that become objects (each its own mask and prompt).
        intensity: ``window`` ``[lo, hi]`` (fixed, e.g. HU) or ``percentiles`` ``[lo, hi]``
            (per case and channel), plus ``channels`` (source channels/bands to keep, in order).
        spacing: target voxel spacing in mm (2 values: in-plane only; 3: all axes, ``null`` keeps an
            axis' own spacing), or null.
        slice_axis: axis of the RAS-oriented volume that slices are taken along (2 = axial).
        split: ``val``/``test`` as fractions of cases or explicit case-id lists, and ``seed``.
        mask_values: label name -> the value (or list of values, the first written) stored in the
            label files, e.g. ``{background: 0, lesion: 255}`` for 0/255 masks; ``None``: label ids are
            stored as they are (``adapt.data.encoding``).
        path: the YAML file the card was read from.
    """

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
    mask_values: dict[str, Any] | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        where = f"data card {self.path or self.name}"
        self._check_types(where)
        if self.modality not in MODALITIES:
            raise ConfigError(f"{where}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.dims not in (2, 3):
            raise ConfigError(f"{where}: dims must be 2 or 3, got {self.dims}")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"{where}: slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        self._check_source(where)
        self._check_labels(where)
        if self.mask_values is not None:
            check_mask_values(self.mask_values, self.labels, where, self._label_suffix())
        self._check_intensity(where)
        self._check_split(where)
        if self.spacing is not None:
            if self.dims == 2:
                raise ConfigError(f"{where}: spacing applies to 3D cards (dims: 3); remove it")
            if len(self.spacing) not in (2, 3) or any(s is not None and float(s) <= 0 for s in self.spacing):
                raise ConfigError(f"{where}: spacing must be 2 (in-plane) or 3 positive values in mm, got {self.spacing}")

    def _check_types(self, where: str) -> None:
        """Each field's type, before any check that would trip over a wrong one (a string of letters
        taken for a list of targets, a scalar spacing, a fraction written as a string)."""
        for key in ("name", "title", "modality", "license", "citation"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{where}: {key} must be text, got {getattr(self, key)!r}")
        for key, example in (("dims", "3"), ("slice_axis", "2")):
            if not _is_int(getattr(self, key)):
                raise ConfigError(f"{where}: {key} must be an integer (e.g. {key}: {example}), got {getattr(self, key)!r}")
        if not isinstance(self.targets, list) or not all(isinstance(t, str) for t in self.targets):
            raise ConfigError(f"{where}: targets must be a list of label names (e.g. targets: [{self.targets}]), "
                              f"got {self.targets!r}")
        if self.spacing is not None and (not isinstance(self.spacing, list) or not all(s is None or _is_number(s) for s in self.spacing)):
            raise ConfigError(f"{where}: spacing must be a list of 2 (in-plane) or 3 numbers in mm "
                              f"(e.g. spacing: [1.5, 1.5, 3.0]) or null, got {self.spacing!r}")
        for key in ("window", "percentiles", "channels"):
            value = self.intensity.get(key)
            if value is not None and (not isinstance(value, list) or not all(_is_number(v) for v in value)):
                raise ConfigError(f"{where}: intensity.{key} must be a list of numbers, got {value!r}")
        for key in ("val", "test"):
            value = self.split.get(key)
            if value is not None and not _is_number(value) and not isinstance(value, list):
                raise ConfigError(f"{where}: split.{key} must be a fraction of the cases (a number such as 0.2, "
                                  f"not text) or a list of case ids, got {value!r}")

    def _check_source(self, where: str) -> None:
        kind = self.source.get("kind")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"{where}: source.kind {kind!r} is not one of {SOURCE_KINDS}")
        _reject_unknown(self.source, SOURCE_KEYS[kind], f"{where}: source (kind {kind})")
        missing = sorted(REQUIRED_SOURCE_KEYS[kind] - set(self.source))
        if missing:
            raise ConfigError(f"{where}: source (kind {kind}) needs {missing}")
        labels = self.source.get("labels")
        if kind == "folder" and (not isinstance(labels, str) or not any(p in labels for p in LABEL_PLACEHOLDERS)
                                 or any(c in labels for c in "*?[")):
            raise ConfigError(f"{where}: source.labels={labels!r} must be a path template that names each image's "
                              f"label file with {', '.join(LABEL_PLACEHOLDERS)} (e.g. \"masks/{{stem}}.png\"), "
                              "not a glob")
        if kind == "synthetic" and self.source.get("generator", "ct") not in GENERATORS:
            raise ConfigError(f"{where}: source.generator {self.source['generator']!r} is not one of {GENERATORS}")
        urls, md5s = _as_list(self.source.get("url")), _as_list(self.source.get("md5"))
        if md5s and len(md5s) != len(urls):
            raise ConfigError(f"{where}: source.md5 has {len(md5s)} entries for {len(urls)} source.url entries")

    def _check_labels(self, where: str) -> None:
        ids = list(self.labels.values())
        if len(set(ids)) != len(ids) or not all(isinstance(i, int) and i >= 0 for i in ids):
            raise ConfigError(f"{where}: labels must map names to distinct non-negative integer ids, got {self.labels}")
        unknown = [t for t in self.targets if t not in self.labels]
        if unknown or not self.targets:
            raise ConfigError(f"{where}: targets {unknown or self.targets} must be non-empty names from labels {list(self.labels)}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"{where}: targets {self.targets} repeat a name")

    def _label_suffix(self) -> str:
        """The label files' suffix where the source names it (``folder``: its template; ``msd``: NIfTI)."""
        if self.source.get("kind") in ("msd", "synthetic"):
            return ".nii.gz"
        template = str(self.source.get("labels") or "").lower()
        return next((s for s in FILE_MAXIMUM if template.endswith(s)), "")

    def _check_intensity(self, where: str) -> None:
        _reject_unknown(self.intensity, INTENSITY_KEYS, f"{where}: intensity")
        if "window" in self.intensity and "percentiles" in self.intensity:
            raise ConfigError(f"{where}: intensity has both window and percentiles; keep one")
        for key, bounds in (("window", None), ("percentiles", (0, 100))):
            value = self.intensity.get(key)
            if value is None:
                continue
            ok = len(value) == 2 and float(value[0]) < float(value[1])
            if ok and bounds:
                ok = bounds[0] <= float(value[0]) and float(value[1]) <= bounds[1]
            if not ok:
                raise ConfigError(f"{where}: intensity.{key} must be [low, high] with low < high"
                                  f"{' within [0, 100]' if bounds else ''}, got {value}")
        if self.intensity.get("nonfinite", "error") not in NONFINITE_POLICIES:
            raise ConfigError(f"{where}: intensity.nonfinite must be one of {NONFINITE_POLICIES} (error refuses a "
                              f"file holding NaN/Inf; zero or min replace them), got {self.intensity['nonfinite']!r}")
        channels = self.intensity.get("channels")
        if channels is not None and (len(channels) not in (1, 3) or any(int(c) < 0 for c in channels)):
            raise ConfigError(f"{where}: intensity.channels must list 1 (grey) or 3 (RGB) source channel "
                              f"indices, got {channels}")

    def _check_split(self, where: str) -> None:
        _reject_unknown(self.split, SPLIT_KEYS, f"{where}: split")
        fractions = [float(self.split[k]) for k in ("val", "test") if isinstance(self.split.get(k), (int, float))]
        if any(f < 0 or f >= 1 for f in fractions) or sum(fractions) >= 1:
            raise ConfigError(f"{where}: split fractions val/test must be in [0, 1) and leave cases to train, "
                              f"got {self.split}")

    def todo_fields(self) -> list[str]:
        """Fields still holding a TODO placeholder (``license``, ``citation``): training refuses them."""
        return [key for key in ("license", "citation") if getattr(self, key).strip().upper().startswith("TODO")]

    def require_facts(self) -> None:
        """Refuse a card whose licence or citation is still a TODO (a card drafted by ``adapt.data init``).

        Raises:
            ConfigError: naming the card file and the fields to fill in.
        """
        todo = self.todo_fields()
        if todo:
            raise ConfigError(f"data card {self.path or self.name}: {' and '.join(todo)} still say TODO; write the "
                              f"dataset's licence as published and what its users must cite into the card before "
                              f"training (python -m adapt.data init leaves them for you to fill in)")

    def target_ids(self) -> dict[str, int]:
        """``{target name: label id}`` in the card's target order."""
        return {name: int(self.labels[name]) for name in self.targets}

    def urls(self) -> list[tuple[str, str | None]]:
        """``(url, md5 or None)`` for each download of the source."""
        urls, md5s = _as_list(self.source.get("url")), _as_list(self.source.get("md5"))
        return list(zip(urls, md5s or [None] * len(urls)))

    def to_dict(self) -> dict[str, Any]:
        """The card's fields as plain data (JSON/YAML serialisable), without its file path."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "path"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _reject_unknown(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(allowed)}")


def card_path(name_or_path: str | Path, key: str = "data.card") -> Path:
    """A card stem in ``data_cards/`` or a path to a YAML file; ``key`` is the setting named when neither exists."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{key}: {path} does not exist")
        return path
    candidate = CARD_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        raise ConfigError(f"{key}={name_or_path!r} is not a shipped card; choose from {shipped_cards()} "
                          f"or give a path to a card YAML")
    return candidate


def shipped_cards() -> list[str]:
    """Stems of the cards in ``data_cards/``."""
    return sorted(p.stem for p in CARD_DIR.glob("*.yaml"))


def load_card(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> DataCard:
    """Read and validate a data card.

    Args:
        name_or_path: a stem in ``data_cards/`` or a path to a YAML file.
        overrides: top-level fields replacing the file's (e.g. from a test).

    Raises:
        ConfigError: unknown card, unknown key (named), missing field, or an invalid value.
    """
    path = card_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"data card {path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"data card {path}: expected a mapping of fields, got {type(raw).__name__}")
    raw.update(overrides or {})
    fields = {f.name for f in dataclasses.fields(DataCard)} - {"path"}
    _reject_unknown(raw, fields, f"data card {path}")
    missing = sorted(f.name for f in dataclasses.fields(DataCard)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw)
    if missing:
        raise ConfigError(f"data card {path}: missing field(s) {missing}")
    for key in ("source", "labels", "intensity", "split", "mask_values"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"data card {path}: {key} must be a mapping, got {raw[key]!r}")
    raw["intensity"] = raw.get("intensity") or {}
    return DataCard(**raw, path=str(path))
