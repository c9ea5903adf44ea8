"""Deployment: CPU frames/s of torch fp32, ONNX fp32 and ONNX int8 side by side, and what int8 costs
in Dice/IoU on the CT phantoms.

Per ``--sizes`` input side, a LoRA adapter on **random weights** of SAM2.1-hiera-tiny (no download;
speed does not depend on the weights) is exported with ``adapt.export`` to ONNX fp32 and ONNX int8
(``quantize=int8``). A frame is one plane segmented with one box through the runner
(``Predictor.segment``: resize and normalisation, image encoder, prompt encoder + mask decoder,
upsampling) -- the torch model, or the graphs through onnxruntime (``OnnxPredictor``). The three
backends take turns frame by frame, so a change of machine load hits them alike; wall and process
CPU seconds are both reported (CPU seconds are far less disturbed by other jobs).

Accuracy (``--accuracy-sizes``): the phantoms of data card ``ct_phantom`` are evaluated with box
prompts through ``adapt.evaluation`` (``evaluate_case``, the batched engine) with each backend:
Dice and IoU against the labels, and the Dice between each backend's masks and torch's. With
random weights the Dice against the labels says little about SAM2; the change between backends is
the number to read. ``--adapter DIR`` evaluates a trained adapter too (e.g. ``recipe=demo``'s, at its own size).

    python benchmarks/export.py                                   # 1024 and 512, 1 thread
    python benchmarks/export.py --sizes 512 --threads 2
    python benchmarks/export.py --sizes --accuracy-sizes --adapter outputs/demo/<run>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapt.adapters import apply_adapter
from adapt.adapters.io import save_adapter
from adapt.data.cards import load_card
from adapt.data.synthetic import write_ct_phantoms
from adapt.evaluation.case import Protocol, evaluate_case
from adapt.evaluation.cases import EvalCase
from adapt.inference.engine import Engine
from adapt.export.build import export_adapter
from adapt.inference.record import read_record
from adapt.adapters.loading import load_adapter
from adapt.inference.onnx_backend import OnnxPredictor
from adapt.inference.runner import Predictor
from adapt.metrics import dice
from adapt.models.sam2 import load_sam2

warnings.filterwarnings("ignore")
BACKENDS = ("torch fp32", "onnx fp32", "onnx int8")
LORA = {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]}


def random_adapter(folder: Path, model: str, size: int) -> Path:
    """A LoRA adapter with random (non-zero) weights on random weights of ``model``, recorded as trained
    on ``ct_phantom``."""
    base, info = load_sam2(f"random:{model}", image_size=size)
    adapted = apply_adapter(base, dict(LORA))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in (p for p in adapted.parameters() if p.requires_grad):
            param.add_(0.02 * torch.randn(param.shape, generator=gen))
    card = load_card("ct_phantom")
    metadata = {
        "base_model": {"name": info.name, "revision": None},
        "model": info.to_dict(),
        "task": "segmentation",
        "data_card": card.name,
        "label_map": dict(card.labels),
        "targets": list(card.targets),
        "preprocessing": {
            "dims": 3,
            "intensity": dict(card.intensity),
            "slice_axis": card.slice_axis,
            "spacing": card.spacing,
            "bands": None,
            "image_size": size,
        },
    }
    return save_adapter(adapted, LORA, folder, metadata)


def exports(adapter: Path, folder: Path) -> dict[str, Any]:
    """The adapter exported to ONNX fp32 and int8: folders, seconds, graph bytes, the self-check."""
    found = {}
    for quantize in ("none", "int8"):
        start = time.perf_counter()
        out = export_adapter(adapter, "onnx", folder / f"onnx-{quantize}", quantize)
        record = read_record(out)
        found[quantize] = {
            "dir": out,
            "seconds": time.perf_counter() - start,
            "bytes": record["graph_bytes"],
            "check": record["check"],
        }
    return found


def predictors(adapter: Path, made: dict[str, Any], threads: int) -> dict[str, Predictor]:
    return {
        "torch fp32": Predictor(load_adapter(adapter), device="cpu"),
        "onnx fp32": OnnxPredictor(made["none"]["dir"], threads=threads),
        "onnx int8": OnnxPredictor(made["int8"]["dir"], threads=threads),
    }


def speed(runners: dict[str, Predictor], size: int, frames: int) -> dict[str, dict[str, float]]:
    """Frames/s of each backend, one box per frame, backends interleaved frame by frame."""
    rng = np.random.default_rng(0)
    image = rng.random((1, size, size), dtype=np.float32)
    box = np.array([0.25, 0.3, 0.7, 0.75], np.float32) * size
    for runner in runners.values():
        runner.segment(image, box)  # warm-up: allocations, lazy initialisation
    spent = {name: [0.0, 0.0] for name in runners}
    for _ in range(frames):
        for name, runner in runners.items():
            wall, cpu = time.perf_counter(), time.process_time()
            runner.segment(image, box)
            spent[name][0] += time.perf_counter() - wall
            spent[name][1] += time.process_time() - cpu
    return {
        name: {"fps": frames / wall, "s_per_frame": wall / frames, "cpu_s_per_frame": cpu / frames}
        for name, (wall, cpu) in spent.items()
    }


def accuracy(runners: dict[str, Predictor], cases: list[EvalCase]) -> dict[str, dict[str, float]]:
    """Mean Dice/IoU of each backend on the phantoms (box prompts), and Dice of its masks against torch's."""
    card = load_card("ct_phantom")
    classes, protocol = card.target_ids(), Protocol(prompt="box")
    scores: dict[str, dict[str, list[float]]] = {name: {"dice": [], "iou": [], "agreement": []} for name in runners}
    seconds = {name: 0.0 for name in runners}
    for index, case in enumerate(cases):
        reference = None
        for name, runner in runners.items():
            engine = Engine(runner, batch_size=4)
            result = evaluate_case(engine, case, index, classes, protocol, card.slice_axis)
            seconds[name] += engine.model_seconds
            scores[name]["dice"] += [r["dice"] for r in result.rows]
            scores[name]["iou"] += [r["iou"] for r in result.rows]
            reference = result.prediction if reference is None else reference
            scores[name]["agreement"].append(dice(result.prediction > 0, reference > 0))
    return {
        name: {**{k: float(np.mean(v)) for k, v in s.items()}, "model_s": seconds[name]} for name, s in scores.items()
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 512])
    parser.add_argument("--accuracy-sizes", type=int, nargs="*", default=[512])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--adapter", default=None, help="a trained adapter for the accuracy table too (its own size)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 12], help="phantom voxels (x y z)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"load_before": uptime(), "threads": args.threads, "speed": {}, "accuracy": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        entries = write_ct_phantoms(tmp / "phantoms", num_cases=args.cases, shape=tuple(args.shape))
        cases = [
            EvalCase(f"case{i}", tmp / "phantoms" / e["image"], tmp / "phantoms" / e["label"])
            for i, e in enumerate(entries)
        ]
        sizes = sorted(set(args.sizes) | set(args.accuracy_sizes), reverse=True)
        for size in sizes:
            adapter = random_adapter(tmp / f"adapter-{size}", args.model, size)
            made = exports(adapter, tmp / f"export-{size}")
            runners = predictors(adapter, made, args.threads)
            entry = {"exports": {k: {x: v[x] for x in ("seconds", "bytes", "check")} for k, v in made.items()}}
            if size in args.sizes:
                entry["speed"] = speed(runners, size, args.frames)
                results["speed"][size] = entry
                print(f"{size}: {json.dumps(entry['speed'])}", flush=True)
            if size in args.accuracy_sizes:
                results["accuracy"][f"random {args.model} @{size}"] = {
                    **accuracy(runners, cases),
                    "exports": entry["exports"],
                }
        if args.adapter:
            made = exports(Path(args.adapter), tmp / "export-adapter")
            size = int(load_adapter(args.adapter).model_info.image_size)
            results["accuracy"][f"{args.adapter} @{size}"] = {
                **accuracy(predictors(Path(args.adapter), made, args.threads), cases),
                "exports": {k: {x: v[x] for x in ("seconds", "bytes", "check")} for k, v in made.items()},
            }
    results["load_after"] = uptime()
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nCPU, {args.threads} thread(s), {args.model} random weights, {args.frames} frames per backend "
        f"(one box each, backends interleaved)\nload before: {results['load_before']}\nload after:  {results['load_after']}"
    )
    print("\n| size | backend | frames/s | s/frame | CPU s/frame | graphs MB | max logit diff vs torch (check) |")
    print("|---|---|---|---|---|---|---|")
    for size, entry in results["speed"].items():
        for name, row in entry["speed"].items():
            made = entry["exports"].get({"onnx fp32": "none", "onnx int8": "int8"}.get(name, ""), {})
            check = made.get("check") or {}
            diff = f"{check['max_logit_diff_box']:.2g} (of {check['max_abs_logit_box']:.2g})" if check else "-"
            mb = f"{made['bytes'] / 2**20:.1f}" if made else "-"
            print(
                f"| {size} | {name} | {row['fps']:.3f} | {row['s_per_frame']:.2f} | {row['cpu_s_per_frame']:.2f} | {mb} | {diff} |"
            )
    if results["accuracy"]:
        print(f"\nphantoms (ct_phantom, {args.cases} cases of {tuple(args.shape)}), box prompts, liver:")
        print("\n| adapter | backend | Dice | IoU | Dice vs torch's masks | model s |")
        print("|---|---|---|---|---|---|")
        for label, rows in results["accuracy"].items():
            for name in BACKENDS:
                row = rows[name]
                print(
                    f"| {label} | {name} | {row['dice']:.4f} | {row['iou']:.4f} | {row['agreement']:.4f} | {row['model_s']:.1f} |"
                )


if __name__ == "__main__":
    main()
