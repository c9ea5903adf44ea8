"""How label files store label ids: a card's ``mask_values``, read and written.

Binary masks are usually saved as pictures, 0 and 255, so that a viewer shows them; the model
works with label ids (0, 1). Without a record of that encoding the project read such files only
through a threshold and wrote its own masks as 0/1, which look black beside the user's. A card's
``mask_values`` (label name -> the value stored in the label files, e.g. ``{background: 0,
lesion: 255}``) says how the files store each label; ``LabelEncoding`` maps stored values to ids
when a label file is read (``decode``) and ids back to stored values when a mask is written
(``encode``). A label may list several stored values (``lesion: [255, 1]``) when a folder mixes
encodings: every one is read, the first is written. Labels the mapping leaves out are stored as
their id.

``source.mask_threshold`` still serves masks whose values are not exact (JPEG noise, coloured
copies); a file of exactly 0 and 1 is read as ids rather than thresholded into background (each
file's encoding is its own: a folder mixing 0/1 and 0/255 masks gives neither empty labels nor
two classes). With ``mask_values``, a file holding values the mapping does not know is thresholded (pixels at or above it
become the label written with the highest value, the rest the one written with the lowest);
without a threshold such a file is refused with its values named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adapt.data.names import OUTPUT_CHOICES
from adapt.errors import ConfigError, DataError, check_choice

INT32_MAX = 2**31 - 1


def label_names(label_map: Mapping[Any, Any] | None) -> dict[str, int]:
    """``{name: value}`` from a label map written either way round (``{"1": "liver"}`` too)."""
    if not label_map:
        return {}
    items = list(label_map.items())
    if all(str(k).lstrip("-").isdigit() and isinstance(v, str) for k, v in items):
        return {v: int(k) for k, v in items}
    return {str(k): int(v) for k, v in items}


def as_values(value: Any) -> tuple[int, ...] | None:
    """A label's stored values as a tuple (one integer or a non-empty list), ``None`` when malformed."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return tuple(values)


def check_mask_values(
    mask_values: Any, labels: Mapping[str, int], where: str, label_suffix: str = "", maximum: int = INT32_MAX
) -> None:
    """Refuse a malformed ``mask_values`` card field.

    Args:
        mask_values: the field as written in the card.
        labels: the card's ``labels`` (name -> id).
        where: ``data card <file>``, named in every message.
        label_suffix: the label files' suffix where the card names it (``.png``), named in a message.
        maximum: the largest value those files store (``adapt.data.formats.label_maximum``).

    Raises:
        ConfigError: naming the card, ``mask_values`` and the entry at fault.
    """
    if not isinstance(mask_values, dict) or not mask_values:
        raise ConfigError(
            f"{where}: mask_values must map label names to the value stored in the label files "
            f"(e.g. mask_values: {{background: 0, lesion: 255}}), got {mask_values!r}"
        )
    seen: dict[int, str] = {}
    for name in labels:
        if name not in mask_values:
            seen.setdefault(int(labels[name]), name)
    for name, value in mask_values.items():
        if name not in labels:
            raise ConfigError(f"{where}: mask_values names {name!r}, which is not in labels {list(labels)}")
        values = as_values(value)
        if values is None:
            raise ConfigError(
                f"{where}: mask_values.{name} must be an integer or a list of integers "
                f"(the first is written), got {value!r}"
            )
        for v in values:
            if not 0 <= v <= maximum:
                kind = f"{label_suffix} label files" if label_suffix else "label files"
                raise ConfigError(f"{where}: mask_values.{name}={v} is out of range for {kind} (0..{maximum})")
            if v in seen:
                raise ConfigError(
                    f"{where}: mask_values.{name}={v} is also the stored value of {seen[v]!r}; "
                    "each stored value must mean one label (labels left out of mask_values are "
                    "stored as their id)"
                )
            seen[v] = name


def nonfinite_label(path: Path | str) -> DataError:
    """The error of a label map holding NaN or infinities (never replaced: labels are ids)."""
    return DataError(
        f"{path}: label map holds NaN or infinite values; labels must be integer ids (re-export the label file)"
    )


#: Integer types a label plane keeps as read (those torch and MONAI's resampling take); others become int64.
KEPT_INTEGERS = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.int64))


#: Up to this many candidate ids, ``present_ids`` compares values; above, ``np.unique`` is cheaper.
FEW_IDS = 24


def present_ids(array: np.ndarray) -> np.ndarray:
    """The distinct values of an integer label array, ascending.

    A uint8 map with few ids (most datasets) is compared with each value up to its maximum: on a
    512 x 512 x 56 volume ~10 ms per value, where ``np.unique`` hashes every voxel (~250 ms) and
    ``np.bincount`` first copies the volume to int64.
    """
    if array.dtype == np.uint8 and array.size and (top := int(array.max())) < FEW_IDS:
        return np.array([v for v in range(top + 1) if (array == v).any()], dtype=np.uint8)
    return np.unique(array)


def integer_plane(array: np.ndarray, path: Path | str) -> np.ndarray:
    """The single-channel integer map of a label file's channel-first ``array``.

    Raises:
        DataError: different channels (a colour-coded map), non-finite or non-integer values.
    """
    if array.shape[0] > 1 and not all(np.array_equal(array[0], array[c]) for c in range(1, array.shape[0])):
        raise DataError(
            f"{path}: label image has {array.shape[0]} different channels; store labels as "
            f"one channel of integer ids, or set source.mask_threshold in the card for RGB masks"
        )
    plane = array[0]
    if np.issubdtype(plane.dtype, np.floating):
        if not np.isfinite(plane).all():
            raise nonfinite_label(path)
        rounded = np.rint(plane)
        if not np.allclose(plane, rounded, atol=1e-3):
            raise DataError(f"{path}: label map has non-integer values; labels must be integer ids")
        plane = rounded
    if (
        plane.dtype in KEPT_INTEGERS and plane.flags.writeable
    ):  # no int64 copy (8x the bytes of a uint8 label volume): ids are unchanged
        return plane
    return plane.astype(np.int64)


@dataclass(frozen=True)
class LabelEncoding:
    """How one dataset's label files store its label ids (see the module doc).

    Attributes:
        labels: label name -> id (the card's ``labels``).
        values: label name -> stored values, the first written (the card's ``mask_values``); empty:
            ids are stored as they are.
        threshold: the card's ``source.mask_threshold`` for masks that are not exact.
        where: what the encoding comes from (named in errors).
    """

    labels: Mapping[str, int] = field(default_factory=dict)
    values: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    threshold: float | None = None
    where: str = "the data card"

    @classmethod
    def of_card(cls, card: Any) -> "LabelEncoding":
        """The encoding a ``DataCard`` declares."""
        values = {k: as_values(v) or () for k, v in (card.mask_values or {}).items()}
        return cls(dict(card.labels), values, card.source.get("mask_threshold"), f"data card {card.path or card.name}")

    @classmethod
    def of_adapter(cls, metadata: Mapping[str, Any], choice: str = "card") -> "LabelEncoding":
        """The encoding an adapter (``sam2_adapt.json``) or export records; ``choice="ids"``: none."""
        check_choice("mask_values", choice, OUTPUT_CHOICES)
        recorded = metadata.get("mask_values") or {} if choice == "card" else {}
        labels = {str(k): int(v) for k, v in (metadata.get("label_map") or {}).items() if _is_int(v)}
        return cls(labels, {k: as_values(v) or () for k, v in recorded.items()}, None, "the adapter's mask_values")

    def reading(self) -> dict[int, int]:
        """Stored value -> label id: every listed value, and the id of each label left out."""
        lookup = {int(i): int(i) for n, i in self.labels.items() if n not in self.values}
        for name, values in self.values.items():
            lookup.update({v: int(self.labels[name]) for v in values})
        return lookup

    def writing(self) -> dict[int, int]:
        """Label id -> the value written for it (the first stored value of each listed label)."""
        return {int(self.labels[n]): v[0] for n, v in self.values.items() if v and n in self.labels}

    def decode(self, array: np.ndarray, path: Path | str) -> np.ndarray:
        """Label ids of a label file's channel-first ``array`` (``[C, ...]``), decided for this file.

        Raises:
            DataError: the file holds values the encoding does not know (no threshold applies),
                or cannot be read as one channel of integers.
        """
        if not self.values:
            if self.threshold is not None:
                if self.threshold > 1 and set(np.unique(array).tolist()) == {0, 1}:
                    return array.max(axis=0).astype(np.uint8)  # a 0/1 file among 0/255 pictures: its own ids
                return (array.max(axis=0) >= self.threshold).astype(np.uint8)
            return integer_plane(array, path)
        lookup = self.reading()
        try:
            plane = integer_plane(array, path)
        except DataError:
            if self.threshold is None:
                raise
            return self._thresholded(array)
        found = np.unique(plane)
        unknown = [int(v) for v in found if int(v) not in lookup]
        if not unknown:
            keys = np.array(sorted(lookup))
            return np.array([lookup[k] for k in keys.tolist()], dtype=np.int64)[np.searchsorted(keys, plane)]
        if self.threshold is not None:
            return self._thresholded(array)
        raise DataError(
            f"{path}: stores values {unknown[:8]} that {self.where} does not list (mask_values "
            f"{ {n: list(v) for n, v in self.values.items()} }, reading {sorted(lookup)}); add them to "
            "mask_values (a list per label, e.g. lesion: [255, 1]), set source.mask_threshold for "
            "masks that are not exact (JPEG), or fix the label file"
        )

    def _thresholded(self, array: np.ndarray) -> np.ndarray:
        written = {n: self.values[n][0] if self.values.get(n) else int(i) for n, i in self.labels.items()}
        low, high = (int(self.labels[min(written, key=written.get)]), int(self.labels[max(written, key=written.get)]))
        return np.where(array.max(axis=0) >= self.threshold, high, low).astype(np.int64)

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Stored values of the label ids ``ids`` (ids the encoding does not list are kept)."""
        table = self.writing()
        if not table:
            return ids
        out = np.asarray(ids).astype(np.int64, copy=True)
        for label_id, value in table.items():
            out[np.asarray(ids) == label_id] = value
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
