"""A metric and a shift are each one function plus one registry row: the tables agree with what
the code computes and the docs print, and no module outside the registry retypes their names
(``docs/adding_a_metric.md``, ``docs/adding_a_shift.md``; adapter kinds: ``tests/test_adapters.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from literals import retyped

from adapt.metrics.registry import CLICKED, HEADLINE, HUB_METRICS, METRICS, SHIFTED, VIDEO, VOLUME, of_family
from adapt.transforms.shift_table import SHIFTS, TABLE, what_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_metric_rows_are_the_keys_the_case_functions_compute():
    """A row's family says which per-case function computes it; each computes exactly its family."""
    from adapt.metrics.case import case_metrics, click_scores, video_scores

    pred = np.zeros((3, 8, 8), bool)
    pred[1, 2:6, 2:6] = True
    truth = np.roll(pred, 1, axis=2)
    volume = case_metrics(pred, truth, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert set(volume) - {"gt_voxels", "pred_voxels"} == set(of_family(VOLUME))
    assert set(video_scores(pred, truth)) == set(of_family(VIDEO))
    assert set(click_scores(pred, truth)) == set(CLICKED)
    assert {metric.family for metric in METRICS.values()} == {VOLUME, VIDEO}


def test_the_report_and_the_card_follow_the_metric_rows():
    from adapt.evaluation import domain, report, robustness
    from adapt.hub import model_card

    assert set(METRICS) <= set(report.COLUMNS)
    assert HEADLINE == ("dice", "iou", "nsd", "hd95") and domain.HEADLINE is HEADLINE
    assert robustness.METRICS == SHIFTED == ("dice", "nsd")
    assert robustness.CSV_COLUMNS[-4:] == ("dice", "nsd", "dice_drop", "nsd_drop")
    assert model_card.HUB_METRICS is HUB_METRICS == {"dice": "dice", "iou": "mean_iou"}
    assert [name for name, m in METRICS.items() if not m.higher_is_better] == ["hd95"]


def test_every_metric_is_documented():
    text = (DOCS / "metrics.md").read_text()
    assert [name for name in METRICS if f"`{name}`" not in text] == []


def test_no_evaluation_module_retypes_a_metric():
    """``tasks/`` logs training's own batch metrics and the sweep tabulates those (``val/dice``)."""
    assert retyped(tuple(METRICS), home=("metrics/", "tasks/", "evaluation/sweep.py"), subject="metric") == []


def test_the_shift_rows_are_the_functions_and_the_documented_tables():
    from adapt.transforms import shifts

    assert tuple(shifts.APPLY) == SHIFTS == tuple(TABLE)
    assert all(callable(shifts.APPLY[name]) for name in SHIFTS)
    assert all(
        set(spec.scales) == set(shifts.FAMILIES) and all(len(v) == 5 for v in spec.scales.values())
        for spec in TABLE.values()
    )
    text = (DOCS / "evaluation.md").read_text()
    assert what_table() in text and shifts.scale_table() in text


@pytest.mark.parametrize("subject", ["shift", "name"])
def test_no_module_retypes_a_shift(subject):
    assert retyped(SHIFTS, home=("transforms/shift_table.py", "transforms/shifts.py"), subject=subject) == []
