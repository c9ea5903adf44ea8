"""``python -m adapt.data check card=<card>``: a card's data described and checked before any training.

``check_card`` lists and splits the cases as training does (``list_cases``, ``split_cases``),
reads every case with the training readers (``adapt.data.statistics.case_stats``) and collects
every problem at once instead of stopping at the first. Errors are what would stop or corrupt
training; warnings what deserves a look:

=============================  ========  ==============================================================
problem                        severity  why
=============================  ========  ==============================================================
unpaired image                 error     an image whose label file is missing (training stops on it)
missing image                  error     a listed image that is not there
unreadable file                error     truncated or foreign file
size mismatch                  error     image and label grids differ (shape, affine, GeoTIFF CRS/transform)
label values not in the card   error     ids the card's ``labels`` do not list
empty label                    error     no target in the label map (training refuses it unless
                                         ``data.empty_share>0`` or ``data.skip_bad_cases=true``)
channels                       error     neither 1 nor 3 channels without ``intensity.channels``, or
                                         fewer than it selects
wrong dimensions               error     a 2D file for a ``dims: 3`` card or a volume for ``dims: 2``
non-finite pixels              error     NaN/Inf with ``intensity.nonfinite: error``
unpaired label                 warning   a label file beside the others that no image uses
mixed spacing                  warning   voxel sizes differ by more than 1 % and the card keeps each grid
target never found             warning   a target of the card in no label file
no validation case             warning   the split leaves validation empty
=============================  ========  ==============================================================

A card's unlabelled images (``source.unlabelled: true``) are not checked; the statistics table says
how many were skipped.

``print_report`` prints the statistics and the problems as tables (rich); ``plot_report`` saves
one figure (matplotlib, Agg): cases per split, label voxels per class, spacing and size
histograms, and the intensity histogram with the card's window (or per-case percentiles) drawn.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.cards import DataCard, load_card
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import FORMATS, for_name
from adapt.data.sources import Case, data_root, link_loop, list_cases, partition_cases, unlabelled_note
from adapt.data.splits import split_cases
from adapt.data.statistics import CaseStats, case_stats
from adapt.transforms.intensity import DEFAULT_PERCENTILES

SEVERITIES = ("error", "warning")


@dataclass
class Problem:
    """One thing found wrong: how bad, what, where (file or case), and the details."""

    severity: str
    what: str
    where: str
    detail: str = ""


@dataclass
class Report:
    """A card's data: its cases by split, each case's statistics, and every problem."""

    card: DataCard
    root: Path
    splits: dict[str, list[Case]]
    stats: dict[str, CaseStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unlabelled: list[Case] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def add(self, severity: str, what: str, where: Any, detail: str = "") -> None:
        self.problems.append(Problem(severity, what, str(where), detail))


def check_card(card: str | Path | DataCard, root: str | None = None) -> Report:
    """Read every case of ``card`` and list what is wrong (see the module doc).

    Raises:
        ConfigError / DataNotFoundError: the card is invalid or its data is not there (as in training).
    """
    card = card if isinstance(card, DataCard) else load_card(card)
    folder = data_root(card, root)
    cases = list_cases(card, folder)
    report = Report(
        card,
        folder,
        split_cases(cases, card.split, f"data card {card.path or card.name}"),
        unlabelled=partition_cases(card, folder)[1],
    )
    encoding = LabelEncoding.of_card(card)
    for n, case in enumerate(cases):
        if not Path(case.image).exists():
            report.add("error", "missing image", case.image, f"case {case.id} is listed but its image is not there")
            continue
        if not Path(case.label).exists():
            report.add("error", "unpaired image", case.image, f"no label at {case.label}")
            continue
        stats = case_stats(case.image, case.label, encoding, seed=n)
        report.stats[case.id] = stats
        _case_problems(report, card, case, stats)
    _unpaired_labels(report, cases, report.unlabelled)
    _dataset_problems(report, card)
    return report


def _case_problems(report: Report, card: DataCard, case: Case, stats: CaseStats) -> None:
    if stats.error:
        report.add("error", "unreadable file", case.id, stats.error)
        return
    if stats.shape != stats.label_shape or not stats.affine_matches:
        what = (
            f"image {stats.shape} vs label {stats.label_shape}"
            if stats.shape != stats.label_shape
            else (stats.grid_problem or "image and label grids differ").split(":", 1)[-1].strip().replace("\n", "; ")
        )
        report.add("error", "size mismatch", case.label, what)
    if card.dims == 3 and not FORMATS[stats.kind].volume:
        report.add("error", "wrong dimensions", case.image, "a 2D image, but the card has dims: 3")
    if card.dims == 2 and stats.volume:
        report.add("error", "wrong dimensions", case.image, f"a volume {stats.shape}, but the card has dims: 2")
    wanted = card.intensity.get("channels")
    if (wanted is None and stats.channels not in (1, 3)) or (wanted and max(wanted) >= stats.channels):
        report.add("error", "channels", case.image, f"{stats.channels} channels; intensity.channels={wanted}")
    if stats.nonfinite and card.intensity.get("nonfinite", "error") == "error":
        report.add(
            "error",
            "non-finite pixels",
            case.image,
            f"{stats.nonfinite} NaN/Inf pixels (intensity.nonfinite: zero or min replaces them)",
        )
    unknown = sorted(set(stats.label_counts) - set(card.labels.values()))
    if unknown:
        report.add("error", "label values not in the card", case.label, f"values {unknown}; card labels {card.labels}")
    targets = set(card.target_ids().values())
    if not targets & {v for v, c in stats.label_counts.items() if c}:
        kind = "all background" if set(stats.label_counts) <= {0} else f"values {sorted(stats.label_counts)}"
        report.add(
            "error",
            "empty label",
            case.label,
            f"no target {card.targets} ({kind}); training refuses it "
            "unless data.empty_share>0 or data.skip_bad_cases=true",
        )


def _unpaired_labels(report: Report, cases: list[Case], unlabelled: list[Case]) -> None:
    """Files in the label folders that no case uses (and that are no case's image, an unlabelled one's too:
    a per-case folder holds images and labels side by side)."""
    used = {Path(c.label).resolve() for c in cases} | {Path(c.image).resolve() for c in [*cases, *unlabelled]}
    for folder in sorted({Path(c.label).parent for c in cases if Path(c.label).parent.is_dir()}):
        if folder.resolve() == report.root.resolve():
            continue
        for path in sorted(folder.iterdir()):
            if link_loop(path):
                report.add("error", "symbolic link loop", path, "the link leads back to itself; fix or remove it")
            elif not path.name.startswith(".") and for_name(path.name) and path.resolve() not in used:
                report.add("warning", "unpaired label", path, "no image of the card uses it")


def _dataset_problems(report: Report, card: DataCard) -> None:
    readable = [s for s in report.stats.values() if not s.error]
    spacings = np.array([s.spacing for s in readable if s.spacing and len(s.spacing) == 3 and s.volume])
    if card.dims == 3 and card.spacing is None and len(spacings) > 1:
        spread = spacings.max(axis=0) - spacings.min(axis=0)
        if (spread > 0.01 * np.median(spacings, axis=0)).any():
            report.add(
                "warning",
                "mixed spacing",
                f"{len(spacings)} cases",
                f"voxel sizes from {np.round(spacings.min(axis=0), 3).tolist()} to "
                f"{np.round(spacings.max(axis=0), 3).tolist()} mm; set spacing: [x, y] or [x, y, z] to resample",
            )
    if card.intensity.get("channels") is None:  # chosen channels make every case alike
        by_count = Counter(s.channels for s in readable)
        if len(by_count) > 1:
            common = by_count.most_common(1)[0][0]
            for s in readable:
                if s.channels != common:
                    report.add(
                        "error",
                        "mixed channels",
                        s.image,
                        f"{s.channels} channels where {by_count[common]} "
                        f"cases have {common}; convert the file, or set intensity.channels (e.g. [0])",
                    )
    found = set().union(*(s.label_counts for s in readable)) if readable else set()
    for name, value in card.target_ids().items():
        if readable and value not in found:
            report.add("warning", "target never found", name, f"label value {value} occurs in no label file")
    if not report.splits.get("val"):
        report.add("warning", "no validation case", card.name, f"split {card.split} leaves validation empty")


# --------------------------------------------------------------------------- output


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """The statistics as ``(quantity, value)`` rows."""
    stats = [s for s in report.stats.values() if not s.error]
    rows = [
        (
            "cases",
            f"{sum(len(v) for v in report.splits.values())} "
            f"(train {len(report.splits['train'])}, val {len(report.splits['val'])}, "
            f"test {len(report.splits['test'])})",
        )
    ]
    if report.unlabelled:
        rows.append(("unlabelled images", unlabelled_note(len(report.unlabelled), "check")))
    if not stats:
        return rows
    rows.append(("files", _counts(s.kind for s in stats)))
    shapes = np.array([s.shape for s in stats if len(s.shape) == len(stats[0].shape)])
    rows.append(
        (
            "size (min / median / max)",
            " / ".join(str(np.percentile(shapes, q, axis=0).astype(int).tolist()) for q in (0, 50, 100)),
        )
    )
    rows.append(("channels, dtype", f"{_counts(s.channels for s in stats)}; {_counts(s.dtype for s in stats)}"))
    spacings = [s.spacing for s in stats if s.spacing]
    if spacings and len({len(s) for s in spacings}) == 1:
        array = np.array(spacings)
        rows.append(
            (
                "spacing (min / median / max)",
                " / ".join(str(np.round(np.percentile(array, q, axis=0), 3).tolist()) for q in (0, 50, 100)),
            )
        )
    for key, title in (("orientation", "orientation"), ("modality", "DICOM Modality"), ("crs", "CRS")):
        values = [getattr(s, key) for s in stats if getattr(s, key)]
        if values:
            rows.append((title, _counts(values)))
    for name, value in report.card.labels.items():
        voxels = sum(s.label_counts.get(value, 0) for s in stats)
        present = sum(bool(s.label_counts.get(value)) for s in stats)
        mark = " (target)" if name in report.card.targets else ""
        rows.append((f"label {name} = {value}{mark}", f"{voxels:,} voxels in {present} of {len(stats)} cases"))
    samples = [s.sample for s in stats if s.sample.size and s.sample.shape[0] == stats[0].sample.shape[0]]
    if samples:
        values = np.concatenate(samples, axis=1)
        for c, row in enumerate(np.nanpercentile(values, (0.5, 50, 99.5), axis=1).T):
            rows.append((f"intensity channel {c} (0.5 / 50 / 99.5 %)", " / ".join(f"{v:g}" for v in np.round(row, 2))))
    rows.append(("card intensity", str(dict(report.card.intensity) or "default")))
    return rows


def _counts(values: Any) -> str:
    return ", ".join(f"{k} ({n})" if n > 1 else str(k) for k, n in Counter(map(str, values)).most_common())


def print_report(report: Report, console: Any = None) -> None:
    """The statistics table and the problems table."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=160))  # logs: no folded cells
    table = Table(title=f"data card {report.card.name}: {report.root}")
    table.add_column("quantity")
    table.add_column("value", overflow="fold")
    for quantity, value in summary_rows(report):
        table.add_row(quantity, value)
    console.print(table)
    if not report.problems:
        console.print("no problem found")
        return
    problems = Table(title=f"{len(report.errors)} error(s), {len(report.problems) - len(report.errors)} warning(s)")
    for column in ("severity", "problem", "where", "detail"):
        problems.add_column(column, overflow="fold")
    for p in sorted(report.problems, key=lambda p: (SEVERITIES.index(p.severity), p.what)):
        problems.add_row(p.severity, p.what, p.where, p.detail)
    console.print(problems)


def plot_report(report: Report, path: str | Path) -> Path:
    """Save the figure of the statistics (see the module doc) as ``path`` (PNG, PDF, SVG: by suffix)."""
    from matplotlib.figure import Figure  # no pyplot: drawn on the Agg canvas whatever the session's backend

    stats = [s for s in report.stats.values() if not s.error]
    figure = Figure(figsize=(15, 8), layout="constrained")
    axes = figure.subplots(2, 3)
    figure.suptitle(f"data card {report.card.name} ({report.root})")
    splits = {k: len(v) for k, v in report.splits.items()}
    axes[0, 0].bar(list(splits), list(splits.values()), color="tab:blue")
    axes[0, 0].set(title="cases per split", ylabel="cases")
    names = list(report.card.labels)
    voxels = [sum(s.label_counts.get(report.card.labels[n], 0) for s in stats) for n in names]
    axes[0, 1].bar(names, voxels, color=["tab:orange" if n in report.card.targets else "tab:gray" for n in names])
    axes[0, 1].set(title="label voxels per class (targets in orange)", yscale="log")
    axes[0, 1].tick_params(axis="x", rotation=45)
    _histograms(axes[0, 2], [s.spacing for s in stats if s.spacing], "voxel spacing per axis", "mm (or map units)")
    _histograms(axes[1, 0], [s.shape for s in stats], "size per axis", "voxels / pixels")
    _intensity(axes[1, 1], report, stats)
    axes[1, 2].axis("off")
    lines = [f"{p.severity}: {p.what} - {Path(p.where).name}" for p in report.problems[:14]]
    more = len(report.problems) - len(lines)
    axes[1, 2].text(
        0,
        1,
        "\n".join(lines + ([f"... and {more} more"] if more > 0 else [])) or "no problem found",
        va="top",
        family="monospace",
        fontsize=8,
    )
    axes[1, 2].set_title("problems")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def _histograms(axis: Any, values: list[tuple[float, ...]], title: str, unit: str) -> None:
    axis.set(title=title, xlabel=unit, ylabel="cases")
    if not values or len({len(v) for v in values}) != 1:
        axis.text(0.5, 0.5, "none", ha="center", transform=axis.transAxes)
        return
    array = np.array(values, dtype=float)
    for a in range(array.shape[1]):
        axis.hist(array[:, a], bins=20, alpha=0.6, label=f"axis {a}")
    axis.legend()


def _intensity(axis: Any, report: Report, stats: list[CaseStats]) -> None:
    """Histogram of the first kept channel, with the window (or the median per-case percentiles) drawn."""
    intensity = report.card.intensity
    channel = int((intensity.get("channels") or [0])[0])
    samples = [s.sample[channel] for s in stats if s.sample.shape[0] > channel]
    axis.set(title=f"intensity, channel {channel}", xlabel="stored value", ylabel="pixels (sampled)")
    if not samples:
        return
    values = np.concatenate(samples)
    values = values[np.isfinite(values)]
    axis.hist(values, bins=100, color="tab:blue", alpha=0.7)
    if intensity.get("window") is not None:
        bounds, label = [float(v) for v in intensity["window"]], "window"
    elif intensity.get("percentiles") is None and all(s.dtype == "uint8" for s in stats):
        bounds, label = [0.0, 255.0], "8-bit /255"
    else:
        q = intensity.get("percentiles") or DEFAULT_PERCENTILES
        per_case = np.array([np.nanpercentile(v, q) for v in samples])
        bounds, label = np.median(per_case, axis=0).tolist(), f"percentiles {list(q)} (median over cases)"
    for bound in bounds:
        axis.axvline(bound, color="tab:red", linestyle="--")
    axis.axvspan(bounds[0], bounds[1], color="tab:red", alpha=0.08, label=label)
    axis.legend()
