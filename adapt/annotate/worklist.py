"""The worklist: unlabelled cases (and a volume's slices) ranked by uncertainty, each mask flagged.

``worklist.csv`` has one row per case (``slice`` empty) followed by one row per scored slice of a
volume, cases most uncertain first, slices most uncertain first within their case. Columns:
``rank``, ``case``, ``slice``, ``source`` (where the prompt came from, ``adapt.annotate.prompts``),
``iou`` (IoU head), ``agreement`` (under prompt jitter), ``uncertainty`` (``adapt.annotate.scores``),
``expected_dice`` (the adapter's calibration of ``iou``; empty without one), ``flag`` (``accept`` or
``review``), ``image`` and ``pre`` (the pre-annotation), both absolute: the app and ``save`` read the
worklist from any folder. A case row carries its most uncertain
slice's scores; an empty pre-annotation is ``review`` with uncertainty 1.

The flag: with the adapter's ``calibration.json``, ``accept`` when the expected Dice is at least
``accept_dice``; without one, ``adapt.annotate.calibration.DEFAULT_RULE``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

from adapt.annotate.calibration import Calibration
from adapt.annotate.exports import write_text
from adapt.annotate.scores import PlaneScore
from adapt.data.tables import read_rows
from adapt.errors import ConfigError

WORKLIST_FILE = "worklist.csv"
#: A mask's flag: ``accept`` (``save cases=accepted`` saves it) or ``review``.
FLAGS = ("accept", "review")


@dataclass
class Row:
    """One line of the worklist."""

    rank: int
    case: str
    slice: int | str
    source: str
    iou: float
    agreement: float
    uncertainty: float
    expected_dice: float | str
    flag: str
    image: str
    pre: str


def flag(iou: float, agreement: float, calibration: Calibration | None, accept_dice: float) -> tuple[str, float | str]:
    """``(accept|review, expected Dice or "")`` of one mask (see the module doc)."""
    if calibration is not None:
        expected = float(calibration([iou])[0])
        return ("accept" if expected >= accept_dice else "review"), round(expected, 4)
    return ("accept" if iou >= accept_dice and agreement >= accept_dice else "review"), ""


def case_rows(
    case: str,
    source: str,
    image: Path,
    pre: Path,
    planes: Sequence[PlaneScore],
    volume: bool,
    calibration: Calibration | None,
    accept_dice: float,
) -> list[Row]:
    """The case's row (its most uncertain plane) and, for a volume, a row per scored slice."""

    def row(plane: PlaneScore | None, where: int | str) -> Row:
        if plane is None:
            return Row(
                0,
                case,
                where,
                source,
                0.0,
                0.0,
                1.0,
                "",
                "review",
                str(Path(image).resolve()),
                str(Path(pre).resolve()),
            )
        verdict, expected = flag(plane.iou, plane.agreement, calibration, accept_dice)
        return Row(
            0,
            case,
            where,
            source,
            round(plane.iou, 4),
            round(plane.agreement, 4),
            round(plane.uncertainty, 4),
            expected,
            verdict,
            str(Path(image).resolve()),
            str(Path(pre).resolve()),
        )

    ordered = sorted(planes, key=lambda p: -p.uncertainty)
    head = row(ordered[0] if ordered else None, "")
    if ordered and any(row(p, "").flag == "review" for p in ordered):
        head.flag = "review"
    return [head] + ([row(p, p.plane) for p in ordered] if volume else [])


def rank(groups: list[list[Row]]) -> list[Row]:
    """Cases most uncertain first (ties by case id); ``rank`` numbers the case rows 1, 2, ..."""
    out = []
    for n, group in enumerate(sorted(groups, key=lambda g: (-g[0].uncertainty, g[0].case)), start=1):
        for row in group:
            row.rank = n
        out += group
    return out


def write(rows: list[Row], folder: Path) -> Path:
    """``worklist.csv`` in ``folder``, written whole."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(Row)])
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return write_text(Path(folder) / WORKLIST_FILE, buffer.getvalue())


def read(path: Path) -> list[dict[str, str]]:
    """The rows of a worklist, as written or as edited by hand in a spreadsheet (``adapt.data.tables``).

    Raises:
        ConfigError: a column of ``Row`` missing, or a flag other than ``accept``/``review`` (a typo would leave
            the case out of ``cases=accepted`` without a word); the file, the line and the fix named.
    """
    fix = "put the worklist back as python -m adapt.annotate wrote it, or run that again"
    rows = read_rows(path, [f.name for f in fields(Row)], f"worklist={path}", fix)
    for line, row in enumerate(rows, start=2):
        if row["flag"] not in FLAGS:
            raise ConfigError(f"worklist={path}, line {line}: flag {row['flag']!r} is not one of {FLAGS}; {fix}")
    return rows


def print_table(rows: list[Row], limit: int = 30) -> None:
    """The case rows as a table (rich), most uncertain first."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    cases = [r for r in rows if r.slice == ""]
    table = Table(title=f"worklist: {len(cases)} case(s), {sum(r.flag == 'review' for r in cases)} to review")
    for column in ("rank", "case", "source", "iou", "agreement", "uncertainty", "expected_dice", "flag", "worst slice"):
        table.add_column(column)
    worst: dict[str, int | str] = {}
    for r in rows:
        if r.slice != "":
            worst.setdefault(r.case, r.slice)  # slices come most uncertain first
    for r in cases[:limit]:
        first = worst.get(r.case, "")
        table.add_row(
            str(r.rank),
            r.case,
            r.source,
            f"{r.iou:.3f}",
            f"{r.agreement:.3f}",
            f"{r.uncertainty:.3f}",
            str(r.expected_dice),
            r.flag,
            str(first),
        )
    console.print(table)
