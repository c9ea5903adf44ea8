"""The annotation loop of ``python -m adapt.app adapter=<run> worklist=<out>/worklist.csv``.

``python -m adapt.annotate`` ranked a card's unlabelled cases and wrote a pre-annotation of each; the
page steps through the worklist in its order (most uncertain first), opens each case's image with its
pre-annotation shown as the mask, and the annotator either accepts it as it is or corrects it with a
box and clicks (``adapt.app.session.Session``: the runner, a volume followed through the scan). Either
way the label is saved into the dataset's label folder by ``adapt.annotate.save.save_labels``, the
code of ``annotate save``: the same checks (the image unchanged since the worklist was made, no label
there yet, the folder writable), the same messages, each label written whole. A corrected mask is
written first into the session's own folder in its label's format (``pre_name``) and the image's geometry, with the label
values as the dataset card's files store them, then copied as a pre-annotation is.

Nothing here knows Gradio (``adapt.app.page`` wires it); the loop's state is one ``Loop`` per tab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapt.annotate.save import pre_name, read_record, save_labels
from adapt.annotate.worklist import read
from adapt.app.session import Session
from adapt.data.cards import load_card
from adapt.data.encoding import LabelEncoding
from adapt.errors import ConfigError

#: The worklist's columns the page shows, then the case's state in this loop.
COLUMNS = ("rank", "case", "uncertainty", "expected_dice", "flag")


@dataclass
class Loop:
    """A worklist being worked through: its case rows in order, the one open, the labels saved.

    Args:
        worklist: the ``worklist.csv`` of ``python -m adapt.annotate``.
        rows: its case rows (one per case, ``slice`` empty), in the worklist's order.
        record: its ``annotate.json`` (the card, the data root, each case's label path).
    """

    worklist: Path
    rows: list[dict[str, str]]
    record: dict[str, Any]
    position: int = 0
    saved: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def open(cls, worklist: str | Path) -> "Loop":
        """Read a worklist and its record.

        Raises:
            ConfigError: no worklist or record there, or a worklist without cases.
        """
        worklist = Path(worklist)
        record = read_record(worklist)
        rows = [r for r in read(worklist) if r.get("slice") == ""]
        if not rows:
            raise ConfigError(f"worklist={worklist}: it lists no case; run python -m adapt.annotate again")
        return cls(worklist, rows, record)

    @property
    def out(self) -> Path:
        """The folder of ``python -m adapt.annotate`` (the worklist's)."""
        return self.worklist.parent

    @property
    def current(self) -> dict[str, str]:
        return self.rows[self.position]

    def step(self, by: int) -> dict[str, str]:
        """Move ``by`` cases along the worklist (held at its ends); returns the case now open."""
        self.position = min(max(self.position + int(by), 0), len(self.rows) - 1)
        return self.current

    def label_path(self, case: str) -> Path | None:
        label = self.record["cases"].get(case, {}).get("label")
        return None if label is None else Path(label)

    def state(self, case: str) -> str:
        """``saved`` (here), ``labelled`` (a label is there, saved otherwise) or ``to do``."""
        if case in self.saved:
            return "saved"
        label = self.label_path(case)
        return "labelled" if label is not None and label.exists() else "to do"

    def remaining(self) -> int:
        """Cases of the worklist that have no label yet."""
        return sum(self.state(r["case"]) == "to do" for r in self.rows)

    def table(self) -> list[list[str]]:
        """The worklist as the page shows it: ``COLUMNS``, then the case's state (``state``)."""
        return [[r[c] for c in COLUMNS] + [self.state(r["case"])] for r in self.rows]

    def show(self, session: Session) -> str:
        """Open the current case's image in ``session`` with its pre-annotation as the mask; returns a status line."""
        row = self.current
        session.open([row["image"]])
        pixels = session.show_labels(Path(row["pre"]))
        return (
            f"case {self.position + 1} of {len(self.rows)}: {row['case']} ({row['flag']}, uncertainty "
            f"{row['uncertainty']}), its pre-annotation shown ({pixels} pixels); accept it, or correct it with a "
            "box and clicks, then save the label"
        )

    def accept(self) -> Path:
        """Save the current case's pre-annotation as its label (``save_labels``)."""
        row = self.current
        return self._saved(save_labels(self.worklist, {row["case"]: Path(row["pre"])}))

    def save_corrected(self, session: Session) -> Path:
        """Save the session's mask (segmented from the annotator's prompt) as the current case's label, stored
        as the dataset card's label files store labels."""
        row = self.current
        if session.source is None or Path(session.source) != Path(row["image"]):
            raise ConfigError(f"the image open is not case {row['case']}'s; step to the case again (next/previous)")
        card = load_card(self.record["card"])
        name = pre_name(Path(row["image"]), self.label_path(row["case"]), session.scan.kind)
        written = session.save(folder=session.work / "labels", encoding=LabelEncoding.of_card(card), name=name)
        return self._saved(save_labels(self.worklist, {row["case"]: written}))

    def _saved(self, written: list[Path]) -> Path:
        [label] = written
        self.saved[self.current["case"]] = label
        return label

    def status(self, label: Path) -> str:
        """The status line after a save: what was saved where, and how many remain."""
        return f"saved case {self.current['case']}'s label to {label}; {self.remaining()} of {len(self.rows)} remain"
