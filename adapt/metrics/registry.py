"""The metrics an evaluation reports, declared once, importable without numpy or torch.

Each row says what a metric is (which way is better, its unit, how to print it) and where it
goes: the per-case row of ``cases.csv`` (``adapt.evaluation.case``), the columns and summary of
the report (``adapt.evaluation.report``), the headline table and compare/domain differences,
and, for the metrics training logs, the model card's ``model-index``. Those places iterate
over this table instead of typing names, so a new metric is its function plus one row here
(``docs/adding_a_metric.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``Metric.family``: computed per case and class by ``adapt.metrics.case.case_metrics``.
VOLUME = "volume"
#: ``Metric.family``: DAVIS scores of ``task=propagation`` (slices as frames, ``adapt.metrics.video``).
VIDEO = "video"
#: ``Metric.unit`` of a distance, measured in the case's unit (mm, px or a GeoTIFF's CRS unit).
DISTANCE = "distance"


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    Attributes:
        name: the key of its value in a case's row, ``cases.csv``'s column and ``summary.json``.
        higher_is_better: Dice-like (``True``) or a distance (``False``).
        family: ``VOLUME`` (every run) or ``VIDEO`` (propagation runs only).
        headline: printed in the table and differenced by ``compare=`` and the domain gap.
        unit: ``""`` (a fraction in [0, 1]) or ``DISTANCE``.
        clicks: in the click curve (after each number of correction clicks, ``clicks=``).
        shifted: reported per shift and severity by the robustness evaluation (with its drop).
        hub_name: its ``metric_type`` in the model card's ``model-index`` (Papers with Code's name),
            for the metrics training logs (``val/<name>`` in ``metrics.json``).
        fmt: how the printed table formats it.
    """

    name: str
    higher_is_better: bool
    family: str = VOLUME
    headline: bool = False
    unit: str = ""
    clicks: bool = False
    shifted: bool = False
    hub_name: str | None = None
    fmt: str = ".4f"


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("dice", True, headline=True, clicks=True, shifted=True, hub_name="dice"),
        Metric("iou", True, headline=True, clicks=True, hub_name="mean_iou"),
        Metric("nsd", True, headline=True, shifted=True),
        Metric("hd95", False, headline=True, unit=DISTANCE),
        Metric("j", True, family=VIDEO),
        Metric("f", True, family=VIDEO),
        Metric("j_and_f", True, family=VIDEO),
    )
}


def of_family(family: str) -> tuple[str, ...]:
    """Names of the metrics of ``family`` (``VOLUME`` or ``VIDEO``), in table order."""
    return tuple(name for name, metric in METRICS.items() if metric.family == family)


#: The headline metrics: the printed table, compare differences, the in/out-of-domain gap.
HEADLINE = tuple(name for name, metric in METRICS.items() if metric.headline)
#: The metrics of the click curve (``adapt.metrics.case.click_scores``).
CLICKED = tuple(name for name, metric in METRICS.items() if metric.clicks)
#: The metrics of the robustness evaluation's table.
SHIFTED = tuple(name for name, metric in METRICS.items() if metric.shifted)
#: Metric name -> the model card's ``metric_type``.
HUB_METRICS = {name: metric.hub_name for name, metric in METRICS.items() if metric.hub_name}
