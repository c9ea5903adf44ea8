"""``python -m adapt.train recipe=demo`` (or another recipe) end to end: wall seconds, CPU seconds, peak memory, Dice.

The quick start promises a demo of a few minutes on a 2-core CPU. Each run here is the
command a user types (a subprocess, its own run folder, its output to a file as in a batch
job), timed from outside: wall seconds, user + system CPU seconds of the process and its
children, the peak resident memory, and the val Dice and IoU before and after from the run's
``metrics.json``. The machine's load average before and after is printed beside every row:
on a shared machine the wall time follows the load, so compare CPU seconds across loads,
and wall seconds only between quiet rows. The progress lines the run prints (it is not a
terminal) say where the time went; pass ``--keep DIR`` to keep the run folder and its output.

    python benchmarks/demo.py --runs 1                     # the recipe as the README runs it
    python benchmarks/demo.py --runs 1 -- data.augment=false   # extra overrides after --
    python benchmarks/demo.py --recipe demo_bands              # the 4-band recipe (input projection 4 -> 3)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(recipe: str, extra: list[str], folder: Path) -> dict[str, float | str | int]:
    """One run of ``recipe`` in ``folder``; its timings, memory, Dice and the load around it."""
    run = folder / "run"
    log = folder / "train.log.txt"
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "adapt.train", f"recipe={recipe}", *extra, f"hydra.run.dir={run}"],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"recipe={recipe} failed (exit {code}); its output: {log}")
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "rss_gb": after.ru_maxrss / 2**20,  # kilobytes on Linux
        "dice": f"{metrics['before'].get('val/dice', float('nan')):.3f} → {metrics['after']['val/dice']:.3f}",
        "iou": f"{metrics['before'].get('val/iou', float('nan')):.3f} → {metrics['after']['val/iou']:.3f}",
        "steps": metrics["steps"],
        "load": f"{load_before:.1f} → {os.getloadavg()[0]:.1f}",
    }


def clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="demo", help="the recipe to run (demo, demo_3d, demo_bands, ...)")
    parser.add_argument("--runs", type=int, default=1, help="runs, one after the other")
    parser.add_argument("--keep", type=Path, help="write the runs here (kept) instead of a temporary folder")
    parser.add_argument("extra", nargs="*", help="overrides added to the recipe (after --)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; recipe={args.recipe}; overrides: {args.extra or 'none'}")
    print(
        "| wall | user+sys CPU | peak RSS | steps | val Dice before → after | val IoU before → after | load 1 min before → after |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in range(args.runs):
        if args.keep:
            (args.keep / str(n)).mkdir(parents=True)
            row = one_run(args.recipe, args.extra, args.keep / str(n))
        else:
            with tempfile.TemporaryDirectory(prefix="demo-bench-") as folder:
                row = one_run(args.recipe, args.extra, Path(folder))
        print(
            f"| {clock(row['wall'])} | {row['cpu']:.0f} s | {row['rss_gb']:.1f} GB | {row['steps']} | {row['dice']} | "
            f"{row['iou']} | {row['load']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
