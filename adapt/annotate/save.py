"""``python -m adapt.annotate save worklist=<out>/worklist.csv [cases=accepted|all|id,id]``: reviewed
pre-annotations become labels.

Each chosen case's pre-annotation (as the annotator left it: accepted as written, or corrected in
place in their tool) is copied to the label path the card gives the case (``folder``: its label
template; MSD: ``labelsTr/<image name>``), written whole or not at all. Nothing is saved until every
chosen case passes, and an existing label is never replaced:

* the worklist must still match the data: ``annotate.json`` beside it records the card, its data
  root and each image's size and modification time; an image changed or gone since is refused;
* a case labelled since (its label file exists) is refused, naming the file;
* a label folder that cannot be written is refused before anything is written.

``save_labels`` does the checks and the writes for any masks given per case: ``save`` gives the
pre-annotations, the app's annotation loop (``adapt.app.annotation``) a case's mask as accepted or
corrected there, so both refuse the same things with the same messages.

Then the card lists the saved cases as labelled; ``python -m adapt.train`` trains on the enlarged set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from adapt.annotate.worklist import read
from adapt.data.cards import load_card
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import FORMATS, for_name, mask_name, read_raster, strip_suffix, suffix
from adapt.data.headers import check_grids
from adapt.errors import ConfigError, DataError
from adapt.storage import check_writable, write_atomically

RECORD_FILE = "annotate.json"


def fingerprint(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of an image; of a DICOM series (a folder) its files' total size and newest time,
    then their number: a slice rewritten in place changes its file, not the folder's own size or time."""
    path = Path(path)
    if not path.is_dir():
        stat = path.stat()
        return [int(stat.st_size), int(stat.st_mtime_ns)]
    stats = [f.stat() for f in sorted(path.iterdir()) if f.is_file()]
    return [sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0), len(stats)]


def pre_name(image: Path, label: Path | None, kind: str) -> str:
    """The file name of a case's pre-annotation (and of a mask corrected in the app): in the format of the
    label file the card names for the case, so that saving it is a copy (a DICOM series' label is a NIfTI
    file), else as ``predict`` names a mask of the image (``adapt.data.formats.mask_name``)."""
    wanted = None if label is None else for_name(Path(label).name)
    if wanted is not None and wanted is not FORMATS[kind] and FORMATS[kind].volume and wanted.volume:
        return strip_suffix(Path(image).name) + suffix(label)
    return mask_name(kind, Path(image).name)


def record(out: Path, card: Any, root: str | None, cases: list[Any]) -> Path:
    """``annotate.json``: what ``save`` needs to find the labels' places and to see that the data has not changed."""
    content = {
        "card": str(Path(card.path).resolve()) if card.path else card.name,  # read from any folder
        "root": root,
        "cases": {
            c.id: {
                "image": str(c.image),
                "label": None if c.label is None else str(c.label),
                "fingerprint": fingerprint(c.image),
            }
            for c in cases
        },
    }
    path = Path(out) / RECORD_FILE
    text = json.dumps(content, indent=2).encode()
    write_atomically(path, lambda f: f.write(text), "out", "free space in out=")
    return path


def chosen(rows: list[dict[str, str]], cases: str, worklist: Path) -> list[dict[str, str]]:
    """The worklist's case rows that ``cases=`` selects (``accepted``, ``all`` or ids joined by commas)."""
    heads = [r for r in rows if r["slice"] == ""]
    if not heads:
        raise ConfigError(f"worklist={worklist}: it lists no case; run python -m adapt.annotate again")
    if cases == "accepted":
        found = [r for r in heads if r["flag"] == "accept"]
        if not found:
            raise ConfigError(
                f"cases=accepted: none of the {len(heads)} case(s) of {worklist} is flagged accept; save the ones "
                "you reviewed by id (cases=id,id) or every case (cases=all)"
            )
        return found
    if cases == "all":
        return heads
    wanted = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = sorted(set(wanted) - {r["case"] for r in heads})
    if unknown:
        raise ConfigError(f"cases={cases}: {unknown} are not in {worklist}")
    return [r for r in heads if r["case"] in wanted]


def save(worklist: str | Path, cases: str = "accepted") -> list[Path]:
    """Copy the chosen pre-annotations into the label folder (see the module doc); returns the labels written.

    Raises:
        ConfigError: no worklist or record, a selection that names unknown cases, an unwritable label folder.
        DataError: the data changed since the worklist was made, or a label exists already.
    """
    worklist = Path(worklist)
    read_record(worklist)
    rows = chosen(read(worklist), str(cases), worklist)
    return save_labels(worklist, {row["case"]: Path(row["pre"]) for row in rows})


def read_record(worklist: str | Path) -> dict[str, Any]:
    """The ``annotate.json`` beside a worklist: its card, data root and each case's image, label path and
    fingerprint.

    Raises:
        ConfigError: no worklist, or no record beside it.
    """
    worklist = Path(worklist)
    if not worklist.is_file() or not (worklist.parent / RECORD_FILE).is_file():
        raise ConfigError(
            f"worklist={worklist}: no worklist.csv with its {RECORD_FILE} there; give the worklist.csv "
            "that python -m adapt.annotate wrote"
        )
    path = worklist.parent / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        record = f"{type(err).__name__}: {err}"
    if not isinstance(record, dict) or not isinstance(record.get("cases"), dict) or "card" not in record:
        why = record if isinstance(record, str) else "no card and cases in it"
        raise ConfigError(
            f"{path}: not the record python -m adapt.annotate writes beside worklist={worklist} ({why}); "
            "run python -m adapt.annotate again (out=<new folder>)"
        )
    return record


def label_target(worklist: Path, case: str, image: Path, recorded: dict[str, Any]) -> Path:
    """The label path of ``case``, once its image is as it was pre-annotated and it has no label yet.

    Raises:
        DataError: the image changed or is gone, or a label exists already.
        ConfigError: the card names no label path for the case.
    """
    facts = recorded["cases"].get(case)
    if facts is None or not image.exists() or fingerprint(image) != facts["fingerprint"]:
        raise DataError(
            f"{worklist}: the worklist no longer matches the data: the image of case {case} "
            f"({image}) is gone or changed since it was pre-annotated; run python -m adapt.annotate again"
        )
    if facts["label"] is None:
        raise ConfigError(
            f"case {case}: its card names no label path (a csv row with an empty label); "
            "write the label's path into the manifest's label column, then save again"
        )
    label = Path(facts["label"])
    if label.exists():
        raise DataError(
            f"{label}: case {case} has a label already (saved since the worklist was made); "
            "it is kept: leave the case out (cases=id,id) or remove that label yourself"
        )
    return label


def save_labels(worklist: str | Path, files: dict[str, Path]) -> list[Path]:
    """Copy each case's file (its pre-annotation, or a mask corrected in the app, in the image's format) to
    the case's label path: every case checked first (``label_target``, the label folders writable), then each
    label written whole; returns the labels written, in the order of ``files``.

    Raises:
        ConfigError: a case not in the worklist, an unwritable label folder.
        DataError: the data changed since the worklist was made, a label exists already, a file is missing.
    """
    worklist = Path(worklist)
    recorded = read_record(worklist)
    images = {r["case"]: Path(r["image"]) for r in read(worklist) if r["slice"] == ""}
    encoding = None  # the card's, read once a mask is to be checked
    plans = []
    for case, source in files.items():
        if case not in images:
            raise ConfigError(f"case {case} is not in {worklist}")
        label = label_target(worklist, case, images[case], recorded)
        if not Path(source).is_file():
            raise DataError(
                f"{source}: the mask of case {case} is missing or not a file (its label {label} is one file); "
                "run python -m adapt.annotate again"
            )
        if for_name(Path(source).name) is not for_name(label.name):
            raise DataError(
                f"{source}: the mask of case {case} is not in the format of its label {label}; "
                f"save it as *{suffix(label)} (python -m adapt.annotate writes it so)"
            )
        encoding = encoding or LabelEncoding.of_card(load_card(recorded["card"]))
        check_mask(Path(source), images[case], encoding, case)
        plans.append((Path(source), label))
    for folder in sorted({label.parent for _, label in plans}):
        check_writable(folder, "the label folder")
    written = []
    for source, label in plans:
        label.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(
            label, lambda f, source=source: _copy(source, f), "the label folder", "free space in the dataset's folder"
        )
        written.append(label)
    return written


def check_mask(source: Path, image: Path, encoding: LabelEncoding, case: str) -> None:
    """Refuse a mask that would become a label training cannot use: a file that does not read (cut short, or
    saved as something else by an annotation tool), one on another grid than its image, or one holding values
    the card's labels do not list. Training would stop on it (or learn from it) only hours later.

    Raises:
        DataError: naming the mask, the case, what is wrong and the fix.
    """
    fix = f"correct the mask of case {case} in your tool (the image's grid, the card's label values) and save again"
    try:
        ids = encoding.decode(read_raster(source).array, source)
        check_grids([(image, source)], "mask", fix)
    except DataError as err:
        raise DataError(f"case {case}: its mask cannot become its label: {err}") from None
    unknown = sorted(set(np.unique(ids).tolist()) - set(encoding.labels.values()))
    if unknown:
        raise DataError(
            f"{source}: the mask of case {case} holds label id(s) {unknown} that {encoding.where} does not list "
            f"({dict(encoding.labels)}); {fix}"
        )


def _copy(source: Path, target: Any) -> None:
    with source.open("rb") as f:
        shutil.copyfileobj(f, target)
