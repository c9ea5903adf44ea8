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

Colour-coded label maps (DeepGlobe Land Cover, ISPRS Potsdam/Vaihingen, iSAID, CamVid: an RGB picture,
one colour per class) are declared with colours, ``mask_values: {background: "#000000", urban:
"#00ffff"}`` (a list per label too, the first written). Such a file's channels are packed into one
integer plane, ``r << 16 | g << 8 | b`` (``pack_colours``), and each colour is that integer: decoding
is then the same lookup as for integer values (one code path for both, its errors and its threshold),
and a card's colours are ordinary stored values to every check. A grey file under a colour card is
the colour (v, v, v) of each value v, as a viewer shows it (a mask saved in grey mode, or a white or
black tile stored as one channel). Masks are written in the card's colours: ``encode`` gives an RGB
array (channels last), which ``adapt.data.formats.write_labels`` stores as an RGB picture, so that
the project's masks sit beside the user's and read back to the same ids. A colour card lists every
label (a label left out would be stored as its id, which is no colour of the files); colours and
integers are never mixed in one card, and only picture formats (PNG, TIFF) store them: a NIfTI or
DICOM label volume holds one value per voxel.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adapt.data.names import OUTPUT_CHOICES
from adapt.errors import ConfigError, DataError, check_choice

INT32_MAX = 2**31 - 1
#: A colour as a card writes it.
COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
#: How many distinct colours a folder's label files may hold to be read as classes (``adapt.data init``).
MAX_COLOURS = 64


def label_names(label_map: Mapping[Any, Any] | None) -> dict[str, int]:
    """``{name: value}`` from a label map written either way round (``{"1": "liver"}`` too)."""
    if not label_map:
        return {}
    items = list(label_map.items())
    if all(str(k).lstrip("-").isdigit() and isinstance(v, str) for k, v in items):
        return {v: int(k) for k, v in items}
    return {str(k): int(v) for k, v in items}


def as_values(value: Any) -> tuple[int, ...] | None:
    """A label's stored values as a tuple (one integer, one colour ``"#rrggbb"`` or a non-empty list of
    either, colours packed as ``pack_colours`` packs a file), ``None`` when malformed or mixed."""
    values = value if isinstance(value, list) else [value]
    if values and all(isinstance(v, str) and COLOUR.fullmatch(v) for v in values):
        return tuple(int(v[1:], 16) for v in values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return tuple(values)


def is_colour(value: Any) -> bool:
    """Whether a ``mask_values`` entry is written as colours (a string, or a list holding one)."""
    return any(isinstance(v, str) for v in (value if isinstance(value, list) else [value]))


def colour_text(packed: int) -> str:
    """``0x00ffff`` -> ``"#00ffff"``: a packed colour as a card writes it."""
    return f"#{int(packed):06x}"


def pack_colours(array: np.ndarray, path: Path | str) -> np.ndarray:
    """One integer plane ``r << 16 | g << 8 | b`` of a label file's channel-first 8-bit ``array`` (a grey
    file's value v is the colour (v, v, v); a fourth channel, alpha, is left out).

    Raises:
        DataError: two channels, or values that are not 8-bit integers (a colour-coded map stores bytes).
    """
    if array.shape[0] == 2:
        raise DataError(f"{path}: label image has 2 channels; colour-coded label files are RGB (or grey)")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise nonfinite_label(path)
        if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.rint(array))):
            raise _not_bytes(path, array)
    channels = np.asarray(array[:3] if array.shape[0] >= 3 else array[:1].repeat(3, axis=0), dtype=np.int32)
    return (channels[0] << 16) | (channels[1] << 8) | channels[2]


def _not_bytes(path: Path | str, array: np.ndarray) -> DataError:
    return DataError(
        f"{path}: label values {array.min()}..{array.max()} ({array.dtype}) are no colours: the card's "
        "mask_values are colours (#rrggbb), which label files store as 8-bit RGB; re-export the file as an "
        "8-bit RGB PNG, or write integer mask_values for a card of integer label files"
    )


def exact_colours(array: np.ndarray) -> Counter[int] | None:
    """Pixels per packed colour of a channel-first label array, ``None`` where it is not a colour-coded map:
    not 8-bit, of 2 channels, or holding more than ``MAX_COLOURS`` colours (a photograph or lossy copy)."""
    if array.dtype != np.uint8 or array.shape[0] == 2:
        return None
    colours, counts = np.unique(pack_colours(array, ""), return_counts=True)
    return Counter(dict(zip(colours.tolist(), counts.tolist()))) if len(colours) <= MAX_COLOURS else None


def check_mask_values(
    mask_values: Any,
    labels: Mapping[str, int],
    where: str,
    label_suffix: str = "",
    maximum: int = INT32_MAX,
    colours: bool = True,
) -> None:
    """Refuse a malformed ``mask_values`` card field.

    Args:
        mask_values: the field as written in the card.
        labels: the card's ``labels`` (name -> id).
        where: ``data card <file>``, named in every message.
        label_suffix: the label files' suffix where the card names it (``.png``), named in a message.
        maximum: the largest value those files store (``adapt.data.formats.label_maximum``).
        colours: whether those files can store colours (``adapt.data.formats.stores_colours``).

    Raises:
        ConfigError: naming the card, ``mask_values`` and the entry at fault.
    """
    if not isinstance(mask_values, dict) or not mask_values:
        raise ConfigError(
            f"{where}: mask_values must map label names to the value stored in the label files "
            f"(e.g. mask_values: {{background: 0, lesion: 255}}), got {mask_values!r}"
        )
    kind = f"{label_suffix} label files" if label_suffix else "label files"
    written = {name: is_colour(value) for name, value in mask_values.items()}
    if any(written.values()):
        _check_colour_card(mask_values, labels, written, where, kind, colours)
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
                f'{where}: mask_values.{name} must be an integer, a colour "#rrggbb" or a list of either '
                f"(the first is written), got {value!r}"
            )
        for v in values:
            shown = colour_text(v) if written[name] else v
            if not written[name] and not 0 <= v <= maximum:
                raise ConfigError(f"{where}: mask_values.{name}={v} is out of range for {kind} (0..{maximum})")
            if v in seen:
                raise ConfigError(
                    f"{where}: mask_values.{name}={shown} is also the stored value of {seen[v]!r}; "
                    "each stored value must mean one label (labels left out of mask_values are "
                    "stored as their id)"
                )
            seen[v] = name


def _check_colour_card(
    mask_values: Mapping[str, Any],
    labels: Mapping[str, int],
    written: Mapping[str, bool],
    where: str,
    kind: str,
    colours: bool,
) -> None:
    """A colour card's own rules (see the module doc): valid ``#rrggbb`` strings, no integers beside
    them, every label listed, and label files that can store colours."""
    for name, value in mask_values.items():
        listed = value if isinstance(value, list) else [value]
        bad = [v for v in listed if not isinstance(v, int) and not (isinstance(v, str) and COLOUR.fullmatch(v))]
        if bad:
            raise ConfigError(
                f'{where}: mask_values.{name}: {bad[0]!r} is not a colour; write colours as "#rrggbb" '
                'with six hexadecimal digits, quoted (e.g. urban: "#00ffff")'
            )
    plain = [name for name, colour in written.items() if not colour or as_values(mask_values[name]) is None]
    if plain:
        raise ConfigError(
            f"{where}: mask_values mixes colours and integer values ({', '.join(plain)}: "
            f"{', '.join(repr(mask_values[n]) for n in plain)}); label files store either colours or "
            'integers: write every label as a colour "#rrggbb" (or every one as an integer)'
        )
    if not colours:
        raise ConfigError(
            f"{where}: mask_values are colours, but {kind} store one value per voxel (NIfTI/DICOM label "
            "volumes hold no colours); write the integer each label is stored as (e.g. background: 0, liver: 1)"
        )
    missing = [name for name in labels if name not in mask_values]
    if missing:
        raise ConfigError(
            f"{where}: mask_values are colours but leave out {missing}; a colour card gives every label its "
            'colour (e.g. background: "#000000"), since a label left out has no colour in the files'
        )


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


def channels_differ(array: np.ndarray) -> bool:
    """Whether a channel-first label array's channels differ: a coloured picture, not a grey one stored as RGB."""
    return array.shape[0] > 1 and not all(np.array_equal(array[0], channel) for channel in array[1:])


def integer_plane(array: np.ndarray, path: Path | str) -> np.ndarray:
    """The single-channel integer map of a label file's channel-first ``array``.

    Raises:
        DataError: different channels (a colour-coded map), non-finite or non-integer values.
    """
    if channels_differ(array):
        raise DataError(
            f"{path}: label image has {array.shape[0]} different channels; a colour-coded map (one colour per "
            'class) needs its colours in the card\'s mask_values (e.g. urban: "#00ffff"; python -m adapt.data '
            "init proposes them), a coloured copy of a binary mask source.mask_threshold; else store labels as "
            "one channel of integer ids"
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
        values: label name -> stored values, the first written (the card's ``mask_values``, colours
            packed as ``pack_colours`` packs a file); empty: ids are stored as they are.
        threshold: the card's ``source.mask_threshold`` for masks that are not exact.
        where: what the encoding comes from (named in errors).
        colours: the values are colours: files are packed before the lookup and masks written as RGB.
    """

    labels: Mapping[str, int] = field(default_factory=dict)
    values: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    threshold: float | None = None
    where: str = "the data card"
    colours: bool = False

    @classmethod
    def declared(
        cls, labels: Mapping[str, int], mask_values: Mapping[str, Any] | None, threshold: Any, where: str
    ) -> "LabelEncoding":
        """The encoding of a label map and a ``mask_values`` field as a card (or a record of one) writes them."""
        written = mask_values or {}
        values = {str(k): as_values(v) or () for k, v in written.items()}
        colours = any(is_colour(v) for v in written.values())
        return cls(dict(labels), values, None if threshold is None else float(threshold), where, colours)

    @classmethod
    def of_card(cls, card: Any) -> "LabelEncoding":
        """The encoding a ``DataCard`` declares."""
        return cls.declared(
            card.labels, card.mask_values, card.source.get("mask_threshold"), f"data card {card.path or card.name}"
        )

    @classmethod
    def of_adapter(cls, metadata: Mapping[str, Any], choice: str = "card") -> "LabelEncoding":
        """The encoding an adapter (``sam2_adapt.json``) or export records; ``choice="ids"``: none."""
        check_choice("mask_values", choice, OUTPUT_CHOICES)
        recorded = metadata.get("mask_values") or {} if choice == "card" else {}
        labels = {str(k): int(v) for k, v in (metadata.get("label_map") or {}).items() if _is_int(v)}
        return cls.declared(labels, recorded, None, "the adapter's mask_values")

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
            DataError: the file holds values (colours) the encoding does not know (no threshold applies),
                or cannot be read as one channel of integers (8-bit colours for a colour encoding).
        """
        if not self.values:
            if self.threshold is not None:
                if self.threshold > 1 and set(np.unique(array).tolist()) == {0, 1}:
                    return array.max(axis=0).astype(np.uint8)  # a 0/1 file among 0/255 pictures: its own ids
                return (array.max(axis=0) >= self.threshold).astype(np.uint8)
            return integer_plane(array, path)
        lookup = self.reading()
        try:
            plane = pack_colours(array, path) if self.colours else integer_plane(array, path)
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
        raise DataError(self._unknown(path, unknown, sorted(lookup)))

    def _unknown(self, path: Path | str, unknown: list[int], read: list[int]) -> str:
        """The refusal of a file storing ``unknown`` values: the first 8 named, and the ways on."""
        if not self.colours:
            return (
                f"{path}: stores values {unknown[:8]} that {self.where} does not list (mask_values "
                f"{ {n: list(v) for n, v in self.values.items()} }, reading {read}); add them to "
                "mask_values (a list per label, e.g. lesion: [255, 1]), set source.mask_threshold for "
                "masks that are not exact (JPEG), or fix the label file"
            )
        listed = {n: [colour_text(c) for c in v] for n, v in self.values.items()}
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        return (
            f"{path}: stores colours {', '.join(map(colour_text, unknown[:8]))}{more} that {self.where} does not "
            f"list (mask_values {listed}); add each to mask_values (a new label, or a list per label: "
            'urban: ["#00ffff", "#00fefe"]), or fix the label file (a colour-coded mask stores exact colours: '
            "re-export it as PNG, not JPEG)"
        )

    def _thresholded(self, array: np.ndarray) -> np.ndarray:
        written = {n: self.values[n][0] if self.values.get(n) else int(i) for n, i in self.labels.items()}
        low, high = (int(self.labels[min(written, key=written.get)]), int(self.labels[max(written, key=written.get)]))
        return np.where(array.max(axis=0) >= self.threshold, high, low).astype(np.int64)

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Stored values of the label ids ``ids`` (ids the encoding does not list are kept); for a colour
        encoding an RGB array, ``ids.shape + (3,)`` uint8 (an id without a colour is its packed value: 0 is
        black), which ``adapt.data.formats.write_labels`` stores as an RGB picture."""
        table = self.writing()
        if not table:
            return ids
        out = np.asarray(ids).astype(np.int64, copy=True)
        for label_id, value in table.items():
            out[np.asarray(ids) == label_id] = value
        if self.colours:
            return np.stack([(out >> 16) & 255, (out >> 8) & 255, out & 255], axis=-1).astype(np.uint8)
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
