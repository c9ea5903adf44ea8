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

Then the card lists the saved cases as labelled; ``python -m adapt.train`` trains on the enlarged set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from adapt.annotate.worklist import read
from adapt.errors import ConfigError, DataError
from adapt.storage import check_writable, write_atomically

RECORD_FILE = "annotate.json"


def fingerprint(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of an image (a DICOM series: of its folder)."""
    stat = Path(path).stat()
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def record(out: Path, card: Any, root: str | None, cases: list[Any]) -> Path:
    """``annotate.json``: what ``save`` needs to find the labels' places and to see that the data has not changed."""
    content = {
        "card": str(card.path) if card.path else card.name,
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
    if cases == "accepted":
        return [r for r in heads if r["flag"] == "accept"]
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
    if not worklist.is_file() or not (worklist.parent / RECORD_FILE).is_file():
        raise ConfigError(
            f"worklist={worklist}: no worklist.csv with its {RECORD_FILE} there; give the worklist.csv "
            "that python -m adapt.annotate wrote"
        )
    recorded = json.loads((worklist.parent / RECORD_FILE).read_text())["cases"]
    plans = []
    for row in chosen(read(worklist), str(cases), worklist):
        facts = recorded.get(row["case"])
        image = Path(row["image"])
        if facts is None or not image.exists() or fingerprint(image) != facts["fingerprint"]:
            raise DataError(
                f"{worklist}: the worklist no longer matches the data: the image of case {row['case']} "
                f"({image}) is gone or changed since it was pre-annotated; run python -m adapt.annotate again"
            )
        if facts["label"] is None:
            raise ConfigError(
                f"case {row['case']}: its card names no label path (a csv row with an empty label); "
                "write the label's path into the manifest's label column, then save again"
            )
        label, pre = Path(facts["label"]), Path(row["pre"])
        if label.exists():
            raise DataError(
                f"{label}: case {row['case']} has a label already (saved since the worklist was made); "
                "it is kept: leave the case out (cases=id,id) or remove that label yourself"
            )
        if not pre.is_file():
            raise DataError(
                f"{pre}: the pre-annotation of case {row['case']} is missing (a DICOM series is saved "
                "by hand: copy its folder)"
            )
        plans.append((pre, label))
    for folder in sorted({label.parent for _, label in plans}):
        check_writable(folder, "the label folder")
    written = []
    for pre, label in plans:
        label.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(
            label, lambda f, pre=pre: _copy(pre, f), "the label folder", "free space in the dataset's folder"
        )
        written.append(label)
    return written


def _copy(source: Path, target: Any) -> None:
    with source.open("rb") as f:
        shutil.copyfileobj(f, target)
