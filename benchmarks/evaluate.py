"""Evaluation throughput: slices per second, and the share of time spent outside the model.

Random weights of SAM2.1-hiera-tiny (no download) at each ``--sizes`` input side, CT phantoms
of ``--shape`` voxels written as NIfTI, the ``box`` protocol with every slice that holds the
liver predicted in batches of ``--batch``. Per size the table reports:

* model slices/s -- slices over the seconds inside the model (the survey's FPS);
* end-to-end slices/s -- slices over the whole loop as ``python -m adapt.evaluate`` runs it
  (``adapt.evaluation.pipeline``: the next case read and the last one scored beside the model):
  reading the NIfTI files, intensity scaling, prompt simulation, the model, reassembly on the
  stored grid, Dice/IoU/NSD/HD95 in 3D and the confusion matrix;
* outside -- the share of the loop spent outside the model (target: at most 10 %).

Model loading is not timed. One warm-up case runs first (allocations, lazy imports).

    python benchmarks/evaluate.py                          # 1024 and 256 on CPU
    python benchmarks/evaluate.py --sizes 1024 --device cuda --precision bf16 --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from adapt.data.cards import load_card
from adapt.data.synthetic import write_ct_phantoms
from adapt.evaluation.case import Protocol, evaluate_case
from adapt.evaluation.cases import EvalCase
from adapt.evaluation.pipeline import evaluate_cases
from adapt.inference.engine import Engine
from adapt.evaluation.models import ModelSpec, load_model
from adapt.inference.runner import Predictor


def run(size: int, cases: list[EvalCase], args: argparse.Namespace) -> dict[str, float]:
    """Time the per-case loop at one input size."""
    card = load_card("ct_phantom")
    spec = ModelSpec("zero-shot", None, {}, {"name": f"random:{args.model}", "image_size": size})
    predictor = Predictor(load_model(spec, card), args.device)
    engine = Engine(predictor, args.batch, args.precision)
    protocol = Protocol(prompt="box", clicks=tuple(args.clicks))
    classes = card.target_ids()
    evaluate_case(engine, cases[0], 0, classes, protocol, card.slice_axis)  # warm-up
    engine.model_seconds, engine.planes = 0.0, 0
    start = time.perf_counter()
    for _ in evaluate_cases(engine, cases, classes, protocol, card.slice_axis):
        pass
    total = time.perf_counter() - start
    return {
        "size": size,
        "slices": engine.planes,
        "model_s": engine.model_seconds,
        "total_s": total,
        "model_fps": engine.planes / engine.model_seconds,
        "e2e_fps": engine.planes / total,
        "outside": 1 - engine.model_seconds / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 256])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 16], help="phantom voxels (x y z)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--clicks", type=int, nargs="*", default=[])
    parser.add_argument("--precision", default="32", choices=["32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        entries = write_ct_phantoms(Path(tmp), num_cases=args.cases + 1, shape=tuple(args.shape))
        cases = [EvalCase(f"case{i}", Path(tmp) / e["image"], Path(tmp) / e["label"]) for i, e in enumerate(entries)]
        results = [run(size, cases, args) for size in args.sizes]
    print(
        f"\nevaluation throughput: {args.model} (random weights), {args.device}, precision {args.precision}, "
        f"batch {args.batch}, {args.cases} phantoms of {tuple(args.shape)}, clicks {args.clicks or 'off'}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'size':>6} {'slices':>7} {'model s':>9} {'total s':>9} {'model slices/s':>15} {'e2e slices/s':>13} {'outside':>8}"
    )
    for r in results:
        print(
            f"{r['size']:>6} {r['slices']:>7} {r['model_s']:>9.2f} {r['total_s']:>9.2f} {r['model_fps']:>15.2f} "
            f"{r['e2e_fps']:>13.2f} {100 * r['outside']:>7.1f}%"
        )


if __name__ == "__main__":
    main()
