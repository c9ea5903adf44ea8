"""The table printed at the end of a run: what was trained, how much, and what it gained."""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from adapt.models.backbones import BACKBONES


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def print_summary(result: Mapping[str, Any], console: Console | None = None) -> None:
    """Print backbone, adapter, parameter counts, before/after Dice and IoU, and the run path.

    Args:
        result: the ``metrics.json`` content written by ``adapt.train.train``.
    """
    console = console or Console()
    model = result["model"]
    if not model["pretrained"]:
        console.print(
            Panel(
                f"[bold]{model['name']}[/] has RANDOM weights: the model was not downloaded "
                "(offline, or model=tiny).\nThe numbers below test the pipeline, not SAM2.",
                title="[bold red]NOT PRETRAINED",
                border_style="red",
            )
        )
    trainable, total = result["params"]["trainable"], result["params"]["total"]
    table = Table(title="sam2-adapt run summary", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    row = BACKBONES.get(str(model.get("backbone") or "sam2"), BACKBONES["sam2"])
    table.add_row(
        "backbone", f"{model['name']}: {row.title} ({'pretrained' if model['pretrained'] else 'RANDOM weights'})"
    )
    asked = model.get("requested_image_size")
    moved = f" (model.image_size={asked} mapped to the nearest side its trunk takes, a multiple of {row.size_multiple})"
    table.add_row("image size", f"{model['image_size']}{moved if asked else ''}")
    table.add_row("adapter", result["adapter"]["kind"])
    if result.get("initialised_from"):
        table.add_row("initialised from", str(result["initialised_from"]["source"]))
    table.add_row("trainable / total", f"{trainable:,} / {total:,} ({100 * trainable / total:.2f}%)")
    table.add_row("data", f"{result['data']['card']} ({result['data']['bad_cases']} bad cases skipped)")
    table.add_row("steps", str(result["steps"]))
    for key in ("val/dice", "val/iou"):
        before, after = result["before"].get(key), result["after"].get(key)
        gain = f"  ({after - before:+.4f})" if before is not None and after is not None else ""
        table.add_row(f"{key} before → after", f"{_fmt(before)} → {_fmt(after)}{gain}")
    table.add_row("wall time", f"{result['seconds']:.1f} s")
    table.add_row("run directory", result["run_dir"])
    console.print(table)
    # Plain and unwrapped, so it can be copied into the next command.
    console.print(f"run written to {result['run_dir']}", soft_wrap=True, highlight=False)
