"""``python -m adapt.data init <folder>``: a data card drafted from the files themselves.

``init_card`` finds the layout (``adapt.data.inspect``), reads every case
(``adapt.data.statistics``) and proposes each field from what it found:

* ``dims`` from the files (volumes, DICOM series and frame folders are 3D); ``modality`` from
  DICOM's Modality, dataset.json's (MSD's ``modality``, nnU-Net v2's ``channel_names["0"]``: ``CT``;
  ``MRI``, ``T1``, ``T2``, ``FLAIR``, ``ADC``, ``DWI`` are MR), or the pixels (values down to -1000 are
  CT's HU);
* ``labels`` from the label ids in the label files, named by dataset.json where it names them,
  else ``background`` (0) and ``label_<id>``; ``targets`` every non-background label found;
* ``mask_values``, how the files store the labels, decided per file (``file_encoding``): binary
  masks stored as pictures (0/255) are label 1 stored as 255, so ``mask_values: {background: 0,
  label_1: 255}`` and every mask the project writes for the card is 0/255 too; a folder mixing
  0/1 and 0/255 files reads each file by its own values (``label_1: [255, 1]``: the dominant
  encoding first, the one written) and ``init`` reports the mix; lossy (JPEG) masks, and coloured ones
  of more colours than classes, add ``mask_threshold: 128``; colour-coded maps (channels that differ,
  each pixel one of at most ``MAX_COLOURS`` exact colours over the folder, not JPEG) get one label per
  colour (``colour_encoding``: black is ``background``) and their colours as ``mask_values``, so a
  red-on-black copy of a binary mask is an exact two-label card;
* ``intensity``: 8-bit files ``window: [0, 255]``; CT a window from the 0.5 and 99.5 HU
  percentiles inside the labels (what nnU-Net clips CT to); anything else per-case
  percentiles; ``channels`` when a file has neither 1 nor 3 of them (all of them, for the learned
  input projection) and ``channel_names`` from dataset.json's ``modality``;
* ``spacing: null`` (the voxel sizes found are written beside it), ``slice_axis`` the axis of
  the thickest voxels; ``split`` 20 % validation;
* ``license`` and ``citation`` as explicit TODOs: ``adapt.train`` refuses the card until they are
  filled (``DataCard.todo_fields``), because they are facts no file holds.

Images without a label are kept as unlabelled cases (``source.unlabelled: true``) where the source
can list them (``adapt.data.inspect``). The card is checked before ``init`` returns: it loads
(``load_card``) and lists exactly the pairs found (``list_cases``) and the unlabelled images kept.
"""

from __future__ import annotations

import csv
import datetime
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from adapt.data.cards import MAX_CHANNELS, TODO_CITATION, TODO_LICENSE, load_card
from adapt.data.encoding import MAX_COLOURS, LabelEncoding, channels_differ, colour_text, exact_colours
from adapt.data.inspect import Layout, find_layout
from adapt.data.formats import FORMATS, for_path, header_channels, is_lossy, read_raster
from adapt.data.sources import data_root, list_cases, partition_cases
from adapt.data.statistics import CaseStats, case_stats, guess_modality
from adapt.errors import ConfigError, DataError

MASK_THRESHOLD = 128
CT_PERCENTILES = (0.5, 99.5)


def init_card(
    folder: str | Path,
    out: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
    max_cases: int | None = None,
) -> tuple[Path, Layout, list[CaseStats]]:
    """Inspect ``folder`` and write a card for it (see the module doc).

    Args:
        folder: the dataset's folder.
        out: the card file to write (default ``./<name>.yaml``).
        name: the card's ``name`` (default: the folder's name, lower case).
        overwrite: replace an existing ``out``.
        max_cases: read at most this many cases for the statistics (evenly spread); all by default.

    Returns:
        ``(card path, layout, statistics of the cases read)``.
    """
    layout = find_layout(folder)
    name = name or slug(layout.root.name)
    out = Path(out or f"{name}.yaml").expanduser().absolute()
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"init: out={out} must be a .yaml file")
    if out.exists() and not overwrite:
        raise ConfigError(f"init: {out} exists; choose another out= or pass overwrite=true")
    chosen = layout.pairs
    if max_cases and len(chosen) > max_cases:
        chosen = [chosen[int(i)] for i in np.linspace(0, len(chosen) - 1, max_cases).round()]
    encoding = propose_encoding([label for _, label in chosen])
    layout.notes += encoding.notes
    stats = [case_stats(image, label, encoding.reader, seed=n) for n, (image, label) in enumerate(chosen)]
    readable = [s for s in stats if not s.error]
    if not readable:
        raise DataError(f"init: no case under {layout.root} could be read; the first: {stats[0].error}")
    layout.notes += unlabelled_channel_notes(layout.unlabelled, readable)
    fields, notes = propose(layout, readable, name, encoding, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if layout.source["kind"] == "csv" and layout.csv_rows is not None:
        manifest = out.with_name(f"{out.stem}_cases.csv")
        with manifest.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "label", "case"])
            writer.writeheader()
            writer.writerows(layout.csv_rows)
        fields["source"]["manifest"] = os.path.relpath(manifest, layout.root)
    out.write_text(render(fields, notes, layout, len(stats), out))
    _verify(out, layout)
    return out, layout, stats


def unlabelled_channel_notes(unlabelled: Sequence[Path], stats: list[CaseStats]) -> list[str]:
    """A note on the unlabelled images (not read, their headers only) that store another channel count than
    the labelled cases: an ACDC folder's ``*_4d.nii.gz`` cine (its frames read as channels) is kept as a case
    to annotate, and an adapter trained on the card refuses it (``adapt.inference.io.check_channel_count``)."""
    counts = Counter(s.channels for s in stats)
    if not unlabelled or not counts:
        return []
    usual = counts.most_common(1)[0][0]
    found = [(p, header_channels(p)) for p in unlabelled]
    odd = [(p, c) for p, c in found if c is not None and c != usual and {c, usual} != {1, 3}]
    if not odd:
        return []
    return [
        f"{len(odd)} unlabelled image(s) store {odd[0][1]} channel(s) where the labelled cases have "
        f"{usual} (e.g. {odd[0][0]}; a volume's 4th axis -- time frames, echoes -- is read as channels): an adapter "
        "trained on this card refuses them; move them out of the folder (or drop their rows from a CSV manifest)"
    ]


def slug(text: str) -> str:
    """A card name: lower case letters, digits and underscores."""
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "dataset"
    return text if text[0].isalpha() else f"d_{text}"


def file_encoding(path: Path) -> tuple[str, Counter[int]]:
    """How one label file stores its labels, and its pixels per exact colour (``exact_colours``: empty for a
    file of more colours, a JPEG or one that is not 8-bit).

    The kind is ``colours`` (channels that differ, each pixel one of a few exact colours: a colour-coded
    map), ``lossy`` (JPEG noise, or channels that differ in more colours than classes), ``0/255`` (a binary
    mask stored as a picture), ``empty`` (background only) or ``ids`` (label ids as they are); an unreadable
    file is ``ids`` (reading the case reports it).
    """
    try:
        raster = read_raster(path)
    except DataError:
        return "ids", Counter()
    pictures = for_path(path).colours and not is_lossy(path.name)  # never a label volume's voxels packed
    colours = exact_colours(raster.array) if pictures else None
    if channels_differ(raster.array):
        return ("colours" if colours is not None else "lossy"), colours or Counter()
    values = set(np.unique(raster.array).tolist())
    if is_lossy(path.name) and max(values) > 1:
        return "lossy", Counter()
    if values <= {0}:
        return "empty", colours or Counter()
    return ("0/255" if values <= {0, 255} else "ids"), colours or Counter()


@dataclass
class ProposedEncoding:
    """The card's ``mask_values`` and ``mask_threshold`` from the label files, the reader they make, and notes;
    ``labels``: the label map the encoding implies (a colour-coded folder's: one label per colour)."""

    mask_values: dict[str, Any] | None = None
    threshold: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def reader(self) -> LabelEncoding:
        """The encoding that reads every file the way the card will (label 1 is ``FOREGROUND``)."""
        labels = self.labels or ({"background": 0, FOREGROUND: 1} if self.mask_values else {})
        return LabelEncoding.declared(labels, self.mask_values, self.threshold, "init")


#: The name ``init`` gives label 1 until the card names it (``label_names``).
FOREGROUND = "label_1"


def propose_encoding(labels: Sequence[Path]) -> ProposedEncoding:
    """Decide each label file's encoding (``file_encoding``) and the card's from all of them.

    A folder of colour-coded maps (``colour_encoding``) gets one label per colour. Binary masks stored as
    pictures (0/255, or lossy) make label 1 stored as 255; files of ids that hold 1 in the same folder are
    read by their own values too (both listed, the dominant first).
    """
    files = [file_encoding(p) for p in labels]
    counts = Counter(kind for kind, _ in files)
    colours = sum((found for _, found in files), Counter())
    if counts["colours"] and not counts["lossy"] and len(colours) <= MAX_COLOURS:
        return colour_encoding(colours, dict(counts))
    pictures = counts["0/255"] + counts["lossy"] + counts["colours"]
    proposal = ProposedEncoding(counts=dict(counts))
    if not pictures:
        return proposal
    stored = [255, 1] if pictures >= counts["ids"] else [1, 255]
    proposal.mask_values = {"background": 0, FOREGROUND: stored if counts["ids"] else 255}
    proposal.threshold = MASK_THRESHOLD if counts["lossy"] or counts["colours"] else None
    if counts["ids"]:
        proposal.notes.append(
            f"label files mix encodings: {pictures} store the mask as 0/255, {counts['ids']} as "
            f"label ids (0/1); each file is read by its own values, and masks are written as "
            f"{'0/255' if stored[0] == 255 else '0/1'} (the more common; mask_values says which)"
        )
    return proposal


def colour_encoding(colours: Counter[int], counts: dict[str, int]) -> ProposedEncoding:
    """One label per colour of a colour-coded folder: ``background`` for black where present, then
    ``label_1``, ``label_2``, ... from the most pixels to the fewest (ids from 1, so that 0 stays
    background: a mask the project writes stores an unlabelled pixel as black)."""
    ordered = sorted((c for c in colours if c != 0), key=lambda c: (-colours[c], c))
    labels = {"background": 0} if 0 in colours else {}
    labels.update({f"label_{n}": n for n in range(1, len(ordered) + 1)})
    packed = ([0] if 0 in colours else []) + ordered
    mask_values = {name: colour_text(c) for name, c in zip(labels, packed)}
    total = sum(colours.values())
    shares = ", ".join(f"{n} {v} ({100 * colours[c] / total:.3g} %)" for (n, v), c in zip(mask_values.items(), packed))
    note = f"colour-coded label files: {len(packed)} colours, one label each ({shares})"
    return ProposedEncoding(mask_values, None, counts, [note], labels)


def propose(
    layout: Layout, stats: list[CaseStats], name: str, encoding: ProposedEncoding, out: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """The card's fields, and a comment per field saying where each value came from."""
    manifest = layout.manifest or {}
    channels = manifest.get("modality") or manifest.get("channel_names")  # MSD's, nnU-Net v2's
    modality, why = guess_modality(stats, _first(channels))
    dims = 3 if any(s.volume for s in stats) else 2
    threshold = encoding.threshold
    labels, found = label_names(stats, manifest.get("labels"), encoding.mask_values is not None)
    implied = {**labels, **encoding.reader.labels}  # every label mask_values names, found in a file or not
    labels = dict(sorted(implied.items(), key=lambda item: item[1]))
    targets = [n for n, v in labels.items() if v in found and n not in ("background", "no_data")]
    source = {"kind": layout.source["kind"], "root": _root_for(layout.root, out)}
    source.update({k: v for k, v in layout.source.items() if k != "kind"})
    if threshold is not None:
        source["mask_threshold"] = threshold
    intensity, intensity_note = propose_intensity(stats, modality, channels)
    kinds = sorted({s.kind for s in stats})
    fields: dict[str, Any] = {
        "name": name,
        "title": str(manifest.get("name") or layout.root.name),
        "modality": modality,
        "dims": dims,
        "license": TODO_LICENSE,
        "citation": TODO_CITATION,
        "source": source,
        "labels": labels,
        "targets": targets or [n for n in labels if labels[n] != 0][:1],
        "intensity": intensity,
    }
    notes = {
        "modality": f"from {why}; check it (data_cards/README.md lists the modalities)",
        "dims": f"{'volumes' if dims == 3 else 'images'}: {', '.join(FORMATS[k].title for k in kinds)}"
        + "".join(f", {c}" for c in sorted({s.crs for s in stats if s.crs})),
        "labels": (
            f"one per colour of the label files ({', '.join(f'{n} {v}' for n, v in encoding.mask_values.items())})"
            if encoding.reader.colours
            else f"label ids found in the label files{' (names from dataset.json)' if manifest.get('labels') else ''}"
        )
        + f"{'; masks thresholded at 128' if threshold else ''}: rename them (and in mask_values)",
        "targets": "every label found except background; keep the ones to segment",
        "intensity": intensity_note,
    }
    named = manifest.get("labels") if encoding.mask_values is None else None
    unnamed = sorted(v for v in found if v > 0 and named and labels.get(f"label_{v}") == v)
    if unnamed:  # a manifest that missed a structure, or label files with ids they should not hold
        missing = f"label id(s) {unnamed} are in the label files but not in {layout.root / 'dataset.json'}'s labels"
        notes["labels"] += f"; {missing}: name them here, or fix the files"
        layout.notes.append(f"{missing}; the card calls them {', '.join(f'label_{v}' for v in unnamed)}: rename them")
    if encoding.mask_values is not None:
        fields["mask_values"] = encoding.mask_values
        notes["mask_values"] = (
            "how the label files store each label ("
            + ", ".join(f"{n} files {k}" for k, n in sorted(encoding.counts.items()))
            + "); masks are written the same way"
        )
    if dims == 3:
        fields["spacing"], notes["spacing"] = None, spacing_note(stats)
        fields["slice_axis"], notes["slice_axis"] = slice_axis(stats)
    fields["split"] = {"val": 0.2, "seed": 0}
    notes["split"] = f"by case, {len(layout.pairs)} cases; list ids (val: [a, b]) to fix it"
    return fields, notes


def _first(modality: Any) -> str | None:
    if isinstance(modality, dict) and modality:
        return str(next(iter(modality.values())))
    return str(modality) if modality else None


def _root_for(root: Path, out: Path) -> str:
    """The data folder as the card names it: relative to the card when one holds the other, else absolute."""
    relative = os.path.relpath(root, out.parent)
    return relative if not relative.startswith("..") else str(root)


def label_names(stats: list[CaseStats], named: Any, pictures: bool = False) -> tuple[dict[str, int], set[int]]:
    """``{name: value}`` for every value found (and every value dataset.json names), and the values found."""
    found = set().union(*(s.label_counts for s in stats))
    known: dict[int, str] = {}
    if isinstance(named, dict) and not pictures:
        for key, value in named.items():  # MSD: {"0": "background", "1": "liver"}; nnU-Net v2: {"liver": 1}
            number, text = (key, value) if str(key).lstrip("-").isdigit() else (value, key)
            if str(number).lstrip("-").isdigit():
                known[int(number)] = slug(str(text)) if int(number) else "background"
    values = sorted(found | set(known))
    names = {v: known.get(v) or ("background" if v == 0 else f"label_{v}") for v in values if v >= 0}
    return {n: v for v, n in names.items()}, found


def propose_intensity(stats: list[CaseStats], modality: str, names: Any = None) -> tuple[dict[str, Any], str]:
    """The card's ``intensity`` section from the data, and how it was chosen; ``names``: the channels'
    names where the data gives them (dataset.json's ``modality``: ``{"0": "T2", "1": "ADC"}``)."""
    channels = max(s.channels for s in stats)
    intensity: dict[str, Any] = {}
    note = ""
    counts = sorted({s.channels for s in stats})
    if len(counts) > 1:  # one batch needs one channel count: the channels every file has
        intensity["channels"] = [0, 1, 2] if min(counts) >= 3 else [0]
        note = f"cases differ in channels ({' and '.join(map(str, counts))}): the first channel(s) of each file; "
    else:
        named = [str(names[k]) for k in sorted(names, key=int)] if isinstance(names, dict) else []
        if channels > 1 and len(named) == channels and len(set(named)) == channels:  # MSD sequences, named
            intensity.update(channels=list(range(channels)), channel_names=named)
        if channels not in (1, 3):
            intensity["channels"] = list(range(min(channels, MAX_CHANNELS)))
            note = (
                f"{channels} channels/bands, the first {len(intensity['channels'])} kept: the adapter learns an "
                "input projection to 3 (adapter.input_channels=auto); or pick 1 or 3 (e.g. [2, 1, 0] for B, G, R); "
            )
    kept = intensity.get("channels") or list(range(channels))
    if all(s.dtype == "uint8" for s in stats):
        intensity["window"] = [0, 255]
        return intensity, note + "8-bit files"
    if modality == "CT":
        inside = [s.inside[0] for s in stats if s.inside.size] or [s.sample[0] for s in stats]
        low, high = (float(v) for v in np.nanpercentile(np.concatenate(inside), CT_PERCENTILES))
        low, high = 10 * np.floor(low / 10), 10 * np.ceil(high / 10)
        if high > low:
            intensity["window"] = [int(low), int(high)]
            return intensity, note + "HU: 0.5-99.5 % of the voxels inside the labels, over all cases"
    intensity["percentiles"] = [2, 98] if modality == "multispectral" else [0.5, 99.5]
    values = np.concatenate([s.sample[kept] for s in stats if s.sample.size], axis=1)
    found = ", ".join(f"{lo:g}..{hi:g}" for lo, hi in np.nanpercentile(values, intensity["percentiles"], axis=1).T)
    return intensity, note + f"per case and channel (over all cases: {found})"


def spacing_note(stats: list[CaseStats]) -> str:
    if all(s.kind == "frames" for s in stats):
        return "video frames: pixel units, frame t is slice t along axis 2"
    spacings = np.array([s.spacing for s in stats if s.spacing and len(s.spacing) == 3])
    if not len(spacings):
        return "no voxel size in the files"
    median = np.median(spacings, axis=0)
    mixed = (spacings.max(axis=0) - spacings.min(axis=0) > 0.01 * median).any()
    text = f"voxel size found (stored axes, mm): median {np.round(median, 3).tolist()}"
    if mixed:
        text += f", from {np.round(spacings.min(axis=0), 3).tolist()} to {np.round(spacings.max(axis=0), 3).tolist()}"
        text += "; mixed: a list such as [1.0, 1.0] resamples every case in-plane"
    orientations = sorted({s.orientation for s in stats if s.orientation})
    return text + f"; stored as {'/'.join(orientations)} (read as RAS); null keeps each file's grid"


def slice_axis(stats: list[CaseStats]) -> tuple[int, str]:
    """The RAS axis of the thickest voxels when they are clearly thicker, else axial (2)."""
    if all(s.kind == "frames" for s in stats):
        return 2, "frames are the slices along axis 2"
    axes = [
        s.slice_spacing_axis
        for s in stats
        if s.spacing and len(s.spacing) == 3 and max(s.spacing) > 1.2 * sorted(s.spacing)[1]
    ]
    if not axes:
        return 2, "axial (0 sagittal, 1 coronal, 2 axial); the voxels are about as thick in every direction"
    axis = int(np.bincount(axes).argmax())
    return (
        axis,
        f"{('sagittal', 'coronal', 'axial')[axis]}: the axis of the thickest voxels (0 sagittal, 1 coronal, 2 axial)",
    )


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True, sort_keys=False)
    return text.removesuffix("\n...\n").rstrip("\n")


def render(fields: dict[str, Any], notes: dict[str, str], layout: Layout, cases: int, out: Path) -> str:
    """The card as YAML with a header and a comment beside each proposed value."""
    lines = [
        f"# Drafted by `python -m adapt.data init {layout.root}` on {datetime.date.today()}",
        f"# from {cases} cases: {layout.description}.",
        "# Check every value; fill in license and citation (training refuses the TODOs), then run",
        f"#   python -m adapt.data check card={out}",
        f"#   python -m adapt.train data.card={out}",
    ]
    if layout.unlabelled:
        lines.append(
            f"# Kept: {len(layout.unlabelled)} image(s) without a label, as unlabelled cases (source.unlabelled: "
            "true): training, evaluation and check skip them; python -m adapt.annotate pre-annotates them."
        )
    left_out = len(layout.unpaired_images) - len(layout.unlabelled)
    if left_out or layout.unpaired_labels:
        lines.append(
            f"# Left out: {left_out} image(s) without a label, "
            f"{len(layout.unpaired_labels)} label(s) without an image (listed by init)."
        )
    for key, value in fields.items():
        note = f"  # {notes[key]}" if key in notes else ""
        if isinstance(value, dict) and key in ("source", "intensity"):
            lines.append(f"{key}:{note}")
            lines += [f"  {k}: {_flow(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_flow(value)}{note}")
    return "\n".join(lines) + "\n"


def _verify(out: Path, layout: Layout) -> None:
    """The written card loads and lists exactly the pairs found (a failure here is a bug of ``init``)."""
    card = load_card(out)
    cases = list_cases(card, data_root(card))
    listed = {(Path(c.image).resolve(), Path(c.label).resolve()) for c in cases}
    wanted = {(i.resolve(), lab.resolve()) for i, lab in layout.pairs}
    if not wanted <= listed:
        missing = sorted(str(i) for i, _ in wanted - listed)[:3]
        raise DataError(
            f"init: the card written to {out} does not list every pair found (e.g. {missing}); "
            "please report this layout"
        )
    kept = {Path(c.image).resolve() for c in partition_cases(card, data_root(card))[1]}
    if not {p.resolve() for p in layout.unlabelled} <= kept:
        raise DataError(
            f"init: the card written to {out} does not list every unlabelled image kept; please report this layout"
        )
