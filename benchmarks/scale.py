"""The data path at scale: N CT-like cases through preparation, run start, samples and metrics.

Generates N CT-like cases (MSD layout, gzipped NIfTI, int16 HU with noise, 512 x 512 x 48-64
voxels of 0.8 x 0.8 x 2.5 mm, a liver and a tumour label; ``--shape`` makes them smaller for a
quick run) and measures, for each N, every stage in a fresh process so that peak memory is the
stage's own:

* ``prepare``: ``python -m adapt.data prepare`` (worker processes; the cache training reads);
* ``first run``: a training datamodule built on an empty disk cache (what happens before the
  first step when nothing was prepared: with the early start, the label pass; the cases are then
  written in the background);
* ``start``: the same on the prepared cache, its files evicted from the page cache first
  (``posix_fadvise(DONTNEED)`` on the cache's own files): bytes read from storage;
* ``sample``: training samples read with the cache evicted before each: bytes read per sample
  against the plane's own bytes (float16 pixels + label);
* ``metrics``: Dice, IoU, NSD and HD95 of one volume against a noisy mask (random specks over the
  whole volume around a dilated truth, as a random tiny model predicts), the evaluation's work
  outside the model.
* ``first step``: ``adapt.train`` with ``model=tiny`` (to isolate the data path) on an empty disk
  cache: seconds from the call to the end of the first optimizer step (after imports; with the
  early start, ``data.early_start``, the label pass and the cases of the first batches);
  ``first step, prepared``: the same on the cache ``prepare`` wrote.
* ``evaluate``: ``adapt.evaluate adapter=none model=tiny`` on the validation cases (a random tiny
  model's noisy masks): its time, and the share spent outside the model (reading cases, metrics,
  writing masks: ``1 - model_seconds / seconds`` of ``summary.json``).

Wall and CPU seconds (the stage's process and its children), peak RSS, bytes read from storage
(``/proc/self/io`` ``read_bytes``, Linux), and the disk used by the source and the cache are
reported, with each stage projected to N = 1,000 (per-case cost x 1,000). ``--code <checkout>``
runs the stages that an older checkout has (first run, start, sample, metrics, evaluate) with that
code, for before/after tables. The machine's load average is printed with the table.

    python benchmarks/scale.py --cases 4 16
    python benchmarks/scale.py --cases 64                                # the issue's N (a quiet machine)
    python benchmarks/scale.py --cases 4 --shape 128 128 24 32          # quick
    python benchmarks/scale.py --cases 4 --code /path/to/older/checkout
    python benchmarks/scale.py --cases 4 16 64 --cases-root ~/scale-cases  # keep the cases for the next run
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SPACING = (0.8, 0.8, 2.5)


def write_cases(root: Path, count: int, side: tuple[int, int], slices: tuple[int, int], seed: int = 0) -> Path:
    """``count`` CT-like cases in the MSD layout under ``root``; returns the card written for them.

    Case ``i`` is the same for every ``count`` above ``i`` (one seeded sequence), so the first N cases of
    a larger set are the set of N; a case whose two files exist is kept (its numbers still drawn), so a
    folder written once serves later runs (``--cases-root``: writing 64 cases takes ~9 min on 2 cores).
    """
    import nibabel as nib
    import yaml

    rng = np.random.default_rng(seed)
    entries = []
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        depth = int(rng.integers(slices[0], slices[1] + 1))
        x, y, z = np.ogrid[: side[0], : side[1], :depth]
        cx, cy = side[0] / 2, side[1] / 2
        body = ((x - cx) / (0.45 * side[0])) ** 2 + ((y - cy) / (0.35 * side[1])) ** 2 < 1
        liver = ((x - 0.6 * side[0]) / (0.15 * side[0])) ** 2 + ((y - 0.45 * side[1]) / (0.12 * side[1])) ** 2 + (
            (z - depth / 2) / (0.3 * depth)
        ) ** 2 < 1
        tumour = ((x - 0.62 * side[0]) / (0.04 * side[0])) ** 2 + ((y - 0.45 * side[1]) / (0.04 * side[1])) ** 2 + (
            (z - depth / 2) / (0.1 * depth)
        ) ** 2 < 1
        hu = np.where(body, 40.0, -1000.0) + np.where(liver, 20.0, 0.0) - np.where(tumour, 30.0, 0.0)
        image = (hu + rng.normal(0, 15, (side[0], side[1], depth))).astype(np.int16)
        label = (liver & ~tumour).astype(np.uint8) + 2 * tumour.astype(np.uint8)
        affine = np.diag([*SPACING, 1.0])
        name = f"ct_{i:04d}.nii.gz"
        if not all((root / folder / name).exists() for folder in ("imagesTr", "labelsTr")):
            nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
            nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    card = yaml.safe_load((HERE.parent / "data_cards" / "ct_phantom.yaml").read_text())
    card.update(
        name="scale_ct",
        source={"kind": "msd", "root": str(root)},
        labels={"background": 0, "liver": 1, "tumour": 2},
        targets=["liver", "tumour"],
    )
    path = root / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


# ----------------------------------------------------------------------------------- in the stage's process


def read_bytes() -> int:
    """Bytes this process has caused to be fetched from storage (Linux ``/proc/self/io``)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("read_bytes"))


def evict(folder: Path) -> None:
    """Drop ``folder``'s files from the page cache (they were fsynced when written)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cpu_now() -> float:
    """CPU seconds of this process and its finished children (preparation workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def datamodule(card: str, cache: str, workers: int | None) -> Any:
    from adapt.data.datamodule import build_datamodule

    return build_datamodule(
        {"card": card, "cache": "disk", "cache_dir": cache, "prepare_workers": workers, "val_max_slices_per_case": 8},
        1024,
        seed=0,
    )


#: The tiny random model for one step: the stages measure the data path, not the model.
TINY = [
    "model=tiny",
    "model.image_size=128",
    "embedding_cache.mode=off",
    "logger=csv",
    "validate_before=false",
    "trainer.max_steps=1",
    "trainer.max_epochs=-1",
    "trainer.limit_val_batches=0",
    "data.batch_size=4",
    "optim.warmup_steps=1",
    "data.cache=disk",
]


def compose(command: str, overrides: list[str]) -> Any:
    """``command``'s config from ``configs/`` with ``overrides``, as its command line composes it."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers

    register_resolvers()
    register_recipes()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(command, overrides=overrides, return_hydra_config=False)


def first_step(card: str, cache: str, out: Path, start: float) -> float:
    """Seconds from ``start`` to the end of the first training step of ``adapt.train`` (tiny model)."""
    import lightning as L

    import adapt.training.callbacks as callbacks
    from adapt.train import train

    seen: list[float] = []

    class FirstStep(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            seen.append(time.perf_counter())

    build = callbacks.build_callbacks
    callbacks.build_callbacks = lambda *args, **kwargs: build(*args, **kwargs) + [FirstStep()]
    train(compose("train", [f"data.card={card}", f"data.cache_dir={cache}", *TINY, f"out_dir={out}"]))
    return seen[0] - start


def evaluate(card: str, cache: str, out: Path) -> dict[str, float]:
    """``python -m adapt.evaluate adapter=none model=tiny`` on the validation split: the run's own seconds
    (``summary.json``, after imports) and the share of them outside the model."""
    done = subprocess.run(
        [sys.executable, "-m", "adapt.evaluate", f"data.card={card}", "adapter=none", "model=tiny", f"out={out}"],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"evaluate failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    model = summary["throughput"]["model_seconds"]
    return {"eval_seconds": summary["seconds"], "outside": 1 - model / summary["seconds"]}


def stage(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run one stage here, imports done before the clocks start: its wall and CPU seconds, and its own numbers."""
    import nibabel as nib
    from scipy import ndimage

    import adapt.data.datamodule  # noqa: F401  (imported before timing: the stages measure work, not imports)
    from adapt.metrics import case_metrics

    card, cache, root = options["card"], options["cache"], Path(options["root"])
    if name.startswith("first step"):
        import adapt.train  # noqa: F401
    result: dict[str, Any] = {}
    if name == "metrics":
        path = sorted((root / "labelsTr").glob("*.nii.gz"))[0]
        truth = np.asarray(nib.load(path).dataobj) == 1
        noise = ndimage.gaussian_filter(np.random.default_rng(0).random(truth.shape, dtype=np.float32), 2)
        pred = (noise > np.quantile(noise, 0.97)) | ndimage.binary_dilation(truth, iterations=2)
    if name in ("first run", "start", "sample"):
        evict(root if name == "first run" else Path(cache))
    wall, cpu, read = time.perf_counter(), cpu_now(), read_bytes()
    if name == "prepare":
        from adapt.data.__main__ import main

        with open(os.devnull, "w") as quiet:
            sys.stdout, out = quiet, sys.stdout
            try:
                result["status"] = main(["prepare", f"card={card}", f"cache_dir={cache}"])
            finally:
                sys.stdout = out
    elif name in ("first run", "start"):
        result["samples"] = len(datamodule(card, cache, options.get("workers")).train_set)
    elif name == "sample":
        dm = datamodule(card, cache, 1)
        chosen = np.random.default_rng(0).choice(len(dm.train_set), size=min(16, len(dm.train_set)), replace=False)
        reads, own = [], []
        for i in chosen:
            evict(Path(cache))
            before = read_bytes()
            image, label = dm.train_set.plane(int(i))
            reads.append(read_bytes() - before)
            own.append(image.size * 2 + label.size * np.dtype(label.dtype).itemsize)  # float16 pixels + labels
        result.update(sample_read=float(np.mean(reads)), plane=float(np.mean(own)))
    elif name == "metrics":
        row = case_metrics(pred, truth, SPACING, tolerance_mm=2.0)
        result.update(nsd=row["nsd"], hd95=row["hd95"])
    elif name.startswith("first step"):
        result["first_step"] = first_step(card, cache, Path(options["out"]), wall)
    elif name == "evaluate":
        result.update(evaluate(card, cache, Path(options["out"])))
    else:
        raise ValueError(name)
    return {**result, "seconds": time.perf_counter() - wall, "cpu": cpu_now() - cpu, "read": read_bytes() - read}


def run_stage(name: str, options: dict[str, Any], code: Path) -> dict[str, Any]:
    """``stage(name)`` in a fresh process with ``code`` on the path: its result and the process's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, __file__, "--stage", name, json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        cwd=code,
    )
    if done.returncode:
        raise RuntimeError(f"stage {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_main(name: str, options: str) -> None:
    result = stage(name, json.loads(options))
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({**result, "rss_mb": max(me.ru_maxrss, children.ru_maxrss) / 1024}))


# ----------------------------------------------------------------------------------- the table


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def measure(
    n: int,
    tmp: Path,
    side: tuple[int, int],
    slices: tuple[int, int],
    code: Path,
    workers: int | None,
    cases_root: Path | None = None,
) -> list[list[str]]:
    root = (cases_root or tmp) / f"n{n}"
    card = write_cases(root, n, side, slices)
    source = folder_bytes(root, "*.nii.gz")
    cache = tmp / f"cache-{n}-{code.name}"
    options = {"card": str(card), "cache": str(cache), "root": str(root), "workers": workers}
    ours = code == HERE.parent
    results = {}
    if ours:
        results["prepare"] = run_stage("prepare", options, code)
        results["first run"] = run_stage("first run", {**options, "cache": str(cache) + "-first"}, code)
    else:
        results["first run"] = run_stage("first run", options, code)
    size = folder_bytes(cache)
    results["start"] = run_stage("start", options, code)
    results["sample"] = run_stage("sample", options, code)
    results["metrics"] = run_stage("metrics", options, code)
    if ours:
        results["first step"] = run_stage(
            "first step", {**options, "cache": str(cache) + "-step", "out": str(tmp / f"run-{n}")}, code
        )
        results["first step, prepared"] = run_stage(
            "first step, prepared", {**options, "out": str(tmp / f"run-{n}-p")}, code
        )
    results["evaluate"] = run_stage("evaluate", {**options, "out": str(tmp / f"eval-{n}-{code.name}")}, code)
    rows = []
    for name, r in results.items():
        per_case = name in ("prepare", "first run", "start")
        note = ""
        if name == "start":
            note = f"read {r['read'] / 1e6:,.1f} MB = {r['read'] / max(size, 1):.1%} of the cache"
        elif name == "sample":
            note = (
                f"read {r['sample_read'] / 1e3:,.0f} kB per sample for a {r['plane'] / 1e3:,.0f} kB plane "
                f"({r['sample_read'] / r['plane']:.2f}x)"
            )
        elif name == "metrics":
            note = f"per volume and class (NSD {r['nsd']:.4f}, HD95 {r['hd95']:.1f} mm)"
        elif name == "first run":
            note = f"{r['read'] / 1e6:,.0f} MB read"
        elif name.startswith("first step"):
            note = f"{r['first_step']:.1f} s to the end of the first step (model=tiny)"
        elif name == "evaluate":
            note = f"{r['outside']:.0%} of {r['eval_seconds']:.1f} s outside the model (model=tiny, validation cases)"
        projected = f"{r['seconds'] / n * 1000 / 60:,.1f} min" if per_case else "-"
        rows.append(
            [
                str(n),
                code.name if not ours else "this",
                name,
                f"{r['seconds']:.2f}",
                f"{r['cpu']:.2f}",
                f"{r['rss_mb']:,.0f}",
                projected,
                note,
            ]
        )
    rows.append(
        [
            str(n),
            code.name if not ours else "this",
            "disk",
            "-",
            "-",
            "-",
            f"{size / n * 1000 / 1e9:,.1f} GB",
            f"source {source / 1e6:,.1f} MB, cache {size / 1e6:,.1f} MB ({size / source:.2f}x)",
        ]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--shape", type=int, nargs=4, default=[512, 512, 48, 64], metavar=("X", "Y", "Z_MIN", "Z_MAX"))
    parser.add_argument("--workers", type=int, default=None, help="data.prepare_workers (default: every core)")
    parser.add_argument("--code", type=Path, nargs="*", default=[], help="older checkouts to run the same stages with")
    parser.add_argument(
        "--cases-root", type=Path, help="write the cases under this folder and keep them for later runs"
    )
    parser.add_argument("--stage", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return stage_main(*args.stage)
    load = lambda: " ".join(f"{v:.2f}" for v in os.getloadavg())  # noqa: E731
    print(
        f"load average {load()} at the start; {os.cpu_count()} cores; cases {args.shape[0]} x {args.shape[1]} x "
        f"{args.shape[2]}-{args.shape[3]} at {SPACING} mm\n"
    )
    header = ["N", "code", "stage", "wall s", "CPU s", "peak RSS MB", "at N = 1,000", "notes"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="sam2-adapt-scale-") as tmp:
        for n in args.cases:
            for code in [HERE.parent, *[c.resolve() for c in args.code]]:
                shape = tuple(args.shape[:2]), tuple(args.shape[2:])
                for row in measure(n, Path(tmp), *shape, code, args.workers, args.cases_root):
                    print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nload average {load()} at the end")


if __name__ == "__main__":
    main()
