"""What ``notebooks/evaluate.ipynb`` draws of one evaluated case: its image, ground truth and prediction.

The notebook once read a case's label file raw and compared it with the class's label id, so a
card whose masks store the object as 255 (most PNG masks; ``source.mask_threshold``) showed no
ground truth at all. Here the files go through evaluation's own readers (``read_case``,
``label_stack``) with the label reading that scored the case, which ``summary.json`` records
(``label_reading``: the card's label map and ``mask_threshold``): what is drawn is what was
scored. The masks evaluation saved hold the label ids it predicted and are read as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def label_reading(card: Any) -> dict[str, Any]:
    """How a card's label files are read, as ``summary.json["label_reading"]`` records it."""
    return {"labels": dict(card.labels), "mask_threshold": card.source.get("mask_threshold")}


def case_view(summary: Mapping[str, Any], row: Mapping[str, Any], mask: str | Path) -> CaseView:
    """The image, ground truth and saved prediction of the evaluated case of ``row`` (a ``cases.csv`` row).

    Args:
        summary: ``summary.json`` of the evaluation (``slice_axis``, ``label_reading``).
        row: the case's row: ``case``, ``image``, ``label``.
        mask: the prediction evaluation saved for it (``summary["masks"][case]``, resolved).
    """
    threshold = (summary.get("label_reading") or {}).get("mask_threshold")
    slice_axis = int(summary.get("slice_axis", 2))
    scan, label = read_case(EvalCase(str(row["case"]), Path(row["image"]), Path(row["label"])), slice_axis)
    predicted = read_scan(mask, slice_axis, label=True)
    return CaseView(scan.pixels[:, 0], label_stack(label, threshold), label_stack(predicted))
