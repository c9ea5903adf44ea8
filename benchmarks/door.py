"""How long a command takes to answer a mistake: the door, measured from outside.

Each row runs ``python -m <command> <arguments>`` in a fresh process (as a user does) and times it
until it exits, wall-clock and CPU (user + system of the process), the median of ``--repeats``
runs. ``import torch`` alone is the first row, the yardstick: the door answers before torch,
Lightning and transformers are imported, so a mistake should cost about that or less. The last
column says whether the command answered with exit status 2 (a user error), or 0 for ``--help``.

    python benchmarks/door.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROKEN_CARD = (
    "name: broken\ntitle: t\nmodality: CT\ndims: 4\nlicense: CC0-1.0\ncitation: c\n"
    "source: {kind: folder, root: ., images: '*.nii.gz', labels: '*.nii.gz'}\nlabels: {background: 0, x: 1}\n"
)

#: (what, arguments after ``python``, expected exit status); {card}: a broken card, {missing}: no such folder.
CASES = [
    ("import torch (yardstick)", ["-c", "import torch"], 0),
    ("train: bad value", ["-m", "adapt.train", "optim.lr=-1"], 2),
    ("train: unknown group choice", ["-m", "adapt.train", "task=nope"], 2),
    ("train: unknown Trainer key", ["-m", "adapt.train", "+trainer.max_stepz=3"], 2),
    ("train: bad data card", ["-m", "adapt.train", "data.card={card}"], 2),
    ("train: missing data folder", ["-m", "adapt.train", "data.card=msd_spleen", "data.root={missing}"], 2),
    ("train --help", ["-m", "adapt.train", "--help"], 0),
    ("evaluate: bad value", ["-m", "adapt.evaluate", "batch_size=0"], 2),
    ("evaluate --help", ["-m", "adapt.evaluate", "--help"], 0),
    ("predict: bad choice", ["-m", "adapt.predict", "backend=tensorrt"], 2),
    ("export: bad choice", ["-m", "adapt.export", "quantize=int4"], 2),
    ("app: bad range", ["-m", "adapt.app", "port=0"], 2),
    ("hub push: bad repo id", ["-m", "adapt.hub", "push", "repo_id=no-slash"], 2),
    ("hub --help", ["-m", "adapt.hub", "--help"], 0),
    ("data check: bad card", ["-m", "adapt.data", "check", "card={card}"], 2),
    ("data init: missing folder", ["-m", "adapt.data", "init", "{missing}"], 2),
]


def timed(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """``(wall, CPU, exit status)`` of ``python args`` run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        card = work / "broken.yaml"
        card.write_text(BROKEN_CARD)
        print(f"{'case':34s} {'wall s':>7s} {'CPU s':>6s}  exit")
        for what, arguments, expected in CASES:
            filled = [a.format(card=card, missing=work / "no_such_folder") for a in arguments]
            runs = [timed(filled, work) for _ in range(args.repeats)]
            status = runs[-1][2]
            verdict = "ok" if status == expected else f"{status} (expected {expected})"
            print(
                f"{what:34s} {statistics.median(r[0] for r in runs):7.2f} "
                f"{statistics.median(r[1] for r in runs):6.2f}  {verdict}"
            )


if __name__ == "__main__":
    main()
