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
from adapt.data.encoding import check_mask_values
from adapt.data.formats import FORMATS, for_name, label_maximum, stores_colours, suffix
from adapt.errors import ConfigError
from adapt.guards import NONFINITE_POLICIES

MODALITIES = ("CT", "MR", "PET", "US", "XR", "endoscopy", "dermoscopy", "RGB", "multispectral", "SAR")
SOURCE_KINDS = ("msd", "nnunet", "folder", "csv", "synthetic")
GENERATORS = ("ct", "mr", "aerial")
_COMMON_SOURCE_KEYS = {"kind", "root", "url", "md5", "access", "mask_threshold", "unlabelled"}
SOURCE_KEYS = {
    "msd": _COMMON_SOURCE_KEYS | {"task"},
    "nnunet": _COMMON_SOURCE_KEYS | {"dataset"},
    "folder": _COMMON_SOURCE_KEYS | {"images", "labels"},
    "csv": _COMMON_SOURCE_KEYS | {"manifest"},
    "synthetic": _COMMON_SOURCE_KEYS | {"generator", "num_cases", "seed", "shape"},
}
REQUIRED_SOURCE_KEYS = {
    "msd": set(),
    "nnunet": set(),
    "folder": {"images", "labels"},
    "csv": {"manifest"},
    "synthetic": set(),
}
INTENSITY_KEYS = {"window", "percentiles", "channels", "channel_names", "nonfinite"}
#: Most channels or bands a card may select (Sentinel-2 has 13).
MAX_CHANNELS = 16
#: Placeholders of a ``folder`` source's ``labels`` template (see ``adapt.data.sources``).
LABEL_PLACEHOLDERS = ("{name}", "{stem}", "{parent}", "{digits}")
SPLIT_KEYS = {"val", "test", "seed"}
#: Fields that may be null (no spacing given; no intensity options).
NULLABLE = {"spacing", "intensity", "mask_values"}
EXAMPLES = {"dims": "3", "slice_axis": "2", "targets": "[liver]", "spacing": "[1.5, 1.5, 3.0]", "split.val": "0.2"}


@dataclass(frozen=True)
class FieldType:
    """What one card field (or ``section.key``) holds: ``kind`` (``text``, ``int``, ``number``, ``texts``,
    ``ints``, ``numbers``, ``mapping``; ``a|b`` for either), numeric bounds for each number, and choices."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value``, or ``None``."""
        if not any(_is_kind(value, kind) for kind in self.kind.split("|")):
            return "must be " + " or ".join(KIND_WORDS[kind] for kind in self.kind.split("|"))
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values) or value in ("", []):
            return "is empty"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {list(self.choices)}"
        numbers = [v for v in values if _is_number(v)]
        if any(v != v or v in (float("inf"), float("-inf")) for v in numbers):
            return "must be finite"
        if self.low is not None and any(v < self.low for v in numbers):
            return f"must be >= {self.low}"
        if self.high is not None and any(v > self.high for v in numbers):
            return f"must be <= {self.high}"
        return None


KIND_WORDS = {
    "bool": "true or false",
    "text": "text",
    "int": "an integer",
    "number": "a number",
    "texts": "a list of text",
    "ints": "a list of integers",
    "numbers": "a list of numbers",
    "mapping": "a mapping of keys",
    "spacings": "a list of 2 or 3 numbers in mm (null keeps an axis' own)",
}
#: Every field and section key a card may hold, with what it holds: checked first when a card is loaded
#: (``DataCard._check_types``), and faulted row by row by ``tests/test_generated_card_faults.py``.
FIELD_TYPES = {
    "name": FieldType("text"),
    "title": FieldType("text"),
    "modality": FieldType("text", choices=MODALITIES),
    "dims": FieldType("int", choices=(2, 3)),
    "license": FieldType("text"),
    "citation": FieldType("text"),
    "source": FieldType("mapping"),
    "labels": FieldType("mapping"),
    "targets": FieldType("texts"),
    "intensity": FieldType("mapping"),
    "spacing": FieldType("spacings", low=1e-6),
    "slice_axis": FieldType("int", choices=(0, 1, 2)),
    "split": FieldType("mapping"),
    "mask_values": FieldType("mapping"),  # its entries: encoding.check_mask_values
    "source.kind": FieldType("text", choices=SOURCE_KINDS),
    "source.root": FieldType("text"),
    "source.url": FieldType("text|texts"),
    "source.md5": FieldType("text|texts"),
    "source.access": FieldType("text"),
    "source.mask_threshold": FieldType("number", low=1e-6),
    "source.task": FieldType("text"),
    "source.dataset": FieldType("text"),
    "source.images": FieldType("text"),
    "source.labels": FieldType("text"),
    "source.manifest": FieldType("text"),
    "source.generator": FieldType("text", choices=GENERATORS),
    "source.num_cases": FieldType("int", low=1),
    "source.seed": FieldType("int", low=0),
    "source.shape": FieldType("ints", low=1),
    "source.unlabelled": FieldType("bool"),
    "intensity.window": FieldType("numbers"),
    "intensity.percentiles": FieldType("numbers", low=0, high=100),
    "intensity.channels": FieldType("ints", low=0),
    "intensity.channel_names": FieldType("texts"),
    "intensity.nonfinite": FieldType("text", choices=NONFINITE_POLICIES),
    "split.val": FieldType("number|texts", low=0),
    "split.test": FieldType("number|texts", low=0),
    "split.seed": FieldType("int", low=0),
}
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
            (per case and channel), plus ``channels`` (source channels/bands to keep, in order: 1 or
            3, or up to ``MAX_CHANNELS`` for an input projection) and their ``channel_names``.
        spacing: target voxel spacing in mm (2 values: in-plane only; 3: all axes, ``null`` keeps an
            axis' own spacing), or null.
        slice_axis: axis of the RAS-oriented volume that slices are taken along (2 = axial).
        split: ``val``/``test`` as fractions of cases or explicit case-id lists, and ``seed``.
        mask_values: label name -> the value (or list of values, the first written) stored in the
            label files, e.g. ``{background: 0, lesion: 255}`` for 0/255 masks, or colours for colour-coded
            maps (``{background: "#000000", urban: "#00ffff"}``); ``None``: label ids are stored as they are
            (``adapt.data.encoding``).
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
        self._check_types(where)  # types, ranges and choices of every field (FIELD_TYPES)
        self._check_source(where)
        self._check_labels(where)
        if self.mask_values is not None:
            found = self._label_suffix()
            check_mask_values(self.mask_values, self.labels, where, found, label_maximum(found), self._colours(found))
        self._check_intensity(where)
        self._check_split(where)
        if self.spacing is not None:
            if self.dims == 2:
                raise ConfigError(f"{where}: spacing applies to 3D cards (dims: 3); remove it")
            if len(self.spacing) not in (2, 3) or any(s is not None and float(s) <= 0 for s in self.spacing):
                raise ConfigError(
                    f"{where}: spacing must be 2 (in-plane) or 3 positive values in mm, got {self.spacing}"
                )

    def _check_types(self, where: str) -> None:
        """Each field's and section key's type, emptiness and range (``FIELD_TYPES``), before any check that
        would trip over a wrong one (a string of letters taken for a list of targets, a scalar spacing, a
        fraction written as a string)."""
        for key, spec in FIELD_TYPES.items():
            section, _, name = key.rpartition(".")
            holder = getattr(self, section) if section else {f: getattr(self, f) for f in FIELD_TYPES if "." not in f}
            if (
                not isinstance(holder, Mapping)
                or name not in holder
                or holder[name] is None
                and (section or key in NULLABLE)
            ):
                continue  # absent, or null where null is the default
            problem = spec.problem(holder[name])
            if problem:
                example = f" (e.g. {key}: {EXAMPLES[key]})" if key in EXAMPLES else ""
                raise ConfigError(f"{where}: {key} {problem}{example}, got {holder[name]!r}")

    def _check_source(self, where: str) -> None:
        kind = self.source.get("kind")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"{where}: source.kind {kind!r} is not one of {SOURCE_KINDS}")
        _reject_unknown(self.source, SOURCE_KEYS[kind], f"{where}: source (kind {kind})")
        missing = sorted(REQUIRED_SOURCE_KEYS[kind] - set(self.source))
        if missing:
            raise ConfigError(f"{where}: source (kind {kind}) needs {missing}")
        labels = self.source.get("labels")
        if kind == "folder" and (
            not isinstance(labels, str)
            or not any(p in labels for p in LABEL_PLACEHOLDERS)
            or any(c in labels for c in "*?[")
        ):
            raise ConfigError(
                f"{where}: source.labels={labels!r} must be a path template that names each image's "
                f'label file with {", ".join(LABEL_PLACEHOLDERS)} (e.g. "masks/{{stem}}.png"), '
                "not a glob"
            )
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
            raise ConfigError(
                f"{where}: targets {unknown or self.targets} must be non-empty names from labels {list(self.labels)}"
            )
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"{where}: targets {self.targets} repeat a name")

    def _colours(self, label_suffix: str) -> bool:
        """Whether the label files can store colours: 2D pictures (PNG, TIFF), not label volumes."""
        return self.dims == 2 and stores_colours(label_suffix)

    def _label_suffix(self) -> str:
        """The label files' suffix where the source names it (``folder``: its template; ``msd``: NIfTI)."""
        if self.source.get("kind") in ("msd", "synthetic"):
            return FORMATS["nifti"].suffixes[-1]
        template = str(self.source.get("labels") or "")
        return suffix(template) if for_name(template) else ""

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
                raise ConfigError(
                    f"{where}: intensity.{key} must be [low, high] with low < high"
                    f"{' within [0, 100]' if bounds else ''}, got {value}"
                )
        if self.intensity.get("nonfinite", "error") not in NONFINITE_POLICIES:
            raise ConfigError(
                f"{where}: intensity.nonfinite must be one of {NONFINITE_POLICIES} (error refuses a "
                f"file holding NaN/Inf; zero or min replace them), got {self.intensity['nonfinite']!r}"
            )
        channels = self.intensity.get("channels")
        if channels is not None and not 1 <= len(channels) <= MAX_CHANNELS:
            raise ConfigError(
                f"{where}: intensity.channels must list 1 to {MAX_CHANNELS} source channel indices "
                f"(1 grey, 3 RGB, others through the input projection), got {channels}"
            )
        names = self.intensity.get("channel_names")
        if names is not None and (channels is None or len(names) != len(channels) or len(set(names)) != len(names)):
            raise ConfigError(
                f"{where}: intensity.channel_names must name each of intensity.channels once, in "
                f"order ({len(channels or [])} names), got {names}"
            )

    def _check_split(self, where: str) -> None:
        _reject_unknown(self.split, SPLIT_KEYS, f"{where}: split")
        fractions = [float(self.split[k]) for k in ("val", "test") if isinstance(self.split.get(k), (int, float))]
        if any(f < 0 or f >= 1 for f in fractions) or sum(fractions) >= 1:
            raise ConfigError(
                f"{where}: split fractions val/test must be in [0, 1) and leave cases to train, got {self.split}"
            )

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
            raise ConfigError(
                f"data card {self.path or self.name}: {' and '.join(todo)} still say TODO; write the "
                f"dataset's licence as published and what its users must cite into the card before "
                f"training (python -m adapt.data init leaves them for you to fill in)"
            )

    def require_volumes(self, what: str) -> None:
        """Refuse a 2D card for ``what`` (``task=propagation``), which follows objects through slices.

        Raises:
            ConfigError: naming the card file, its ``dims`` and the task to use instead.
        """
        if self.dims != 3:
            raise ConfigError(
                f"data card {self.path or self.name} has dims={self.dims}: {what} follows an object through the "
                "slices of a volume (or the frames of a video), which 2D images do not have; use "
                "task=segmentation for 2D images"
            )

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


def _is_kind(value: Any, kind: str) -> bool:
    """Whether ``value`` is of one ``FieldType`` kind."""
    if kind in ("texts", "ints", "numbers", "spacings"):
        inner = {"texts": "text", "ints": "int", "numbers": "number", "spacings": "number"}[kind]
        return isinstance(value, list) and all(_is_kind(v, inner) or kind == "spacings" and v is None for v in value)
    return {
        "text": lambda v: isinstance(v, str),
        "int": _is_int,
        "number": _is_number,
        "bool": lambda v: isinstance(v, bool),
        "mapping": lambda v: isinstance(v, Mapping),
    }[kind](value)


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
        raise ConfigError(
            f"{key}={name_or_path!r} is not a shipped card; choose from {shipped_cards()} or give a path to a card YAML"
        )
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
    missing = sorted(
        f.name
        for f in dataclasses.fields(DataCard)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw
    )
    if missing:
        raise ConfigError(f"data card {path}: missing field(s) {missing}")
    for key in ("source", "labels", "intensity", "split", "mask_values"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"data card {path}: {key} must be a mapping, got {raw[key]!r}")
    raw["intensity"] = raw.get("intensity") or {}
    return DataCard(**raw, path=str(path))
