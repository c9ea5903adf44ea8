"""What ``notebooks/evaluate.ipynb`` draws of one evaluated case: its image, ground truth and prediction.

The notebook once read a case's label file raw and compared it with the class's label id, so a
card whose masks store the object as 255 (most PNG masks; ``source.mask_threshold``) showed no
ground truth at all. Here the files go through evaluation's own readers (``read_case``,
``label_stack``) with the label reading that scored the case, which ``summary.json`` records
(``label_reading``: the card's label map, ``mask_values`` and ``mask_threshold``): what is drawn
is what was scored. The masks evaluation saved are written in the card's encoding (or as ids with
``mask_values=ids``, recorded as ``masks_written``) and decoded the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.encoding import LabelEncoding
from adapt.evaluation.case import label_stack, read_case
from adapt.evaluation.cases import EvalCase
from adapt.inference.io import read_scan


@dataclass
class CaseView:
    """One case on its slice stack: ``image`` ``[Z, H, W]`` (first channel, file units), ``truth`` and
    ``prediction`` ``[Z, H, W]`` label ids."""

    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray

    def largest_slice(self, value: int) -> int:
        """The slice where label ``value`` covers most ground-truth pixels (0 when it is absent)."""
        return int((self.truth == value).sum(axis=(1, 2)).argmax())


def label_reading(card: Any, written: str = "card") -> dict[str, Any]:
    """How a card's label files are read, and how evaluation wrote its masks (``written``: the
    ``mask_values=`` choice), as ``summary.json["label_reading"]`` records it."""
    return {
        "labels": dict(card.labels),
        "mask_values": card.mask_values,
        "mask_threshold": card.source.get("mask_threshold"),
        "masks_written": written,
    }


def _encodings(reading: Mapping[str, Any]) -> tuple[LabelEncoding, LabelEncoding]:
    """The encodings of the ground-truth files and of the saved masks that ``reading`` records."""
    labels = {str(k): int(v) for k, v in (reading.get("labels") or {}).items()}
    where, values = "summary.json label_reading", reading.get("mask_values")
    truth = LabelEncoding.declared(labels, values, reading.get("mask_threshold"), where)
    saved = (
        LabelEncoding.declared(labels, values, None, where)
        if reading.get("masks_written", "card") == "card"
        else LabelEncoding()
    )
    return truth, saved


def case_view(summary: Mapping[str, Any], row: Mapping[str, Any], mask: str | Path) -> CaseView:
    """The image, ground truth and saved prediction of the evaluated case of ``row`` (a ``cases.csv`` row).

    Args:
        summary: ``summary.json`` of the evaluation (``slice_axis``, ``label_reading``).
        row: the case's row: ``case``, ``image``, ``label``.
        mask: the prediction evaluation saved for it (``summary["masks"][case]``, resolved).
    """
    truth_encoding, saved_encoding = _encodings(summary.get("label_reading") or {})
    slice_axis = int(summary.get("slice_axis", 2))
    scan, label = read_case(EvalCase(str(row["case"]), Path(row["image"]), Path(row["label"])), slice_axis)
    predicted = read_scan(mask, slice_axis, label=True)
    return CaseView(scan.pixels[:, 0], label_stack(label, truth_encoding), label_stack(predicted, saved_encoding))
