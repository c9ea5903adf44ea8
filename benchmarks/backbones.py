"""Every backbone side by side: image encoder, one-box predict, video per frame, peak memory, LoRA r=8 share.

One row per released architecture of ``adapt.models.backbones`` (the four SAM2.1 sizes, the SAM 3
tracker, EdgeTAM), each at its native side, each in a fresh child process so that its memory
columns are its own. The models are the released architectures with **RANDOM weights**, built
offline (``load_sam2("random:<preset>")``): speed and memory do not depend on the weights, the
masks are meaningless. Per row:

* ``encoder``: ``Predictor.embed`` of one image (resize, normalisation, trunk, neck), the
  median of ``--repeats`` calls after one warm-up ``predict``;
* ``predict``: ``Predictor.segment`` with one box (``adapt.inference.runner``, the runner that
  ``adapt.predict`` and the app use: embed, prompt encoder, mask decoder, upsampling), likewise;
  ``decode`` is its prompt-and-decoder part alone, on embeddings already computed (each further
  prompt on the same image costs this);
* ``video``: seconds per tracked frame through the memory path (``adapt.inference.propagation``:
  a box on frame 0, then ``--frames - 1`` frames forward, each encoded, attended to the memory
  bank, decoded and written into memory), the mean over the tracked frames;
* ``peak``: the memory high-water mark above the row's starting point, of the image path (model
  and predict) and of the video path (video model and propagation) separately; on a CPU the
  resident set size (``VmHWM`` of ``/proc/self/status``, reset between the paths), on CUDA
  ``torch.cuda.max_memory_allocated``;
* ``params`` and ``LoRA r=8``: the image model's parameters, and what LoRA r=8 (alpha 16) on the
  ``encoder_attn`` and ``decoder_attn`` presets (``configs/adapter/lora.yaml``) trains, with its
  share of the total adapted model.

EdgeTAM's trunk comes from ``timm``, which imports torchvision; where torchvision is not
installed (a CPU-only torch), timm is imported behind the tests' stand-in for it
(``tests/timm_reference.py``, loaded by path: test code, not part of ``adapt``; RepViT uses none
of torchvision's code) and the table says so. Without timm the row reads "needs timm".

    python benchmarks/backbones.py --threads 1 --repeats 1 --frames 3    # every row, CPU (RESULTS.md; ~13 min loaded)
    python benchmarks/backbones.py --sizes sam2.1_hiera_tiny edgetam --repeats 3
    python benchmarks/backbones.py --device cuda --repeats 10 --frames 8
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from train_step import clock

from adapt.models.backbones import HUB_IDS, backbone_of

ROOT = Path(__file__).resolve().parent.parent
LORA = {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]}


def with_timm() -> str:
    """Make timm importable for EdgeTAM; returns how (``timm``, or the torchvision stand-in)."""
    if importlib.util.find_spec("timm") is None:
        raise ImportError("needs timm (pip install 'sam2-adapt[edgetam]')")
    if importlib.util.find_spec("torchvision") is not None:
        return "timm"
    spec = importlib.util.spec_from_file_location("timm_reference", ROOT / "tests" / "timm_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.with_timm()
    return "timm behind the tests' torchvision stand-in"


class Memory:
    """The memory high-water mark of this process above the point where it was made."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0.0
        self.reset()

    @staticmethod
    def _status(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
        return float("nan")

    def reset(self) -> None:
        """Start a new high-water mark from what is resident (allocated) now."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux)
            self.start = self._status("VmRSS")

    def peak(self) -> float:
        """MB above the starting point at the highest moment since ``reset``."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.start
        return self._status("VmHWM") - self.start


class Timed:
    """Calls of ``fn`` with their ``(wall, CPU)`` seconds kept in ``calls``, and the last call's output."""

    def __init__(self, fn: Callable[..., Any], device: torch.device) -> None:
        self.fn, self.device, self.calls, self.last = fn, device, [], None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = clock(self.device)
        self.last = self.fn(*args, **kwargs)
        end = clock(self.device)
        self.calls.append((end[0] - wall, end[1] - cpu))
        return self.last

    def median(self) -> tuple[float, float]:
        """The call with the median wall seconds (the faster middle one of an even count)."""
        return sorted(self.calls)[(len(self.calls) - 1) // 2]


def scene(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` RGB planes ``[T, 3, S, S]`` in [0, 1] with a bright square drifting right, and its box on frame 0."""
    rng = np.random.default_rng(0)
    planes = 0.3 * rng.random((frames, 3, size, size), dtype=np.float32)
    side = size // 4
    for t in range(frames):
        x = size // 4 + t * size // 64
        planes[t, :, size // 3 : size // 3 + side, x : x + side] += 0.6
    return planes, np.array([size // 4, size // 3, size // 4 + side - 1, size // 3 + side - 1], np.float32)


def image_path(preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The image model: parameters, predict and its encoder part, decode, peak memory, LoRA r=8's share.

    The first ``predict`` warms up (per-size constants, the allocator) and is dropped, unless it took
    more than ``--single-above`` CPU seconds: then it is the one measurement (the warm-up is a small
    part of such a call, and repeating it would take minutes on a CPU). ``decode`` runs on the
    embeddings of the last ``predict``.
    """
    from adapt.adapters import apply_adapter
    from adapt.adapters.loading import LoadedAdapter
    from adapt.inference.runner import Predictor
    from adapt.models.sam2 import count_parameters, load_sam2

    memory = Memory(device)
    model, info = load_sam2(f"random:{preset}", image_size=args.image_size)
    params = count_parameters(model)[1]
    predictor = Predictor(LoadedAdapter(model.eval(), {}, {}, {}, info, Path(".")), device=str(device))
    encoder = predictor.embed = Timed(predictor.embed, device)  # the encoder part of every predict call
    predict = Timed(predictor.segment, device)
    planes, box = scene(info.image_size, 1)
    with torch.inference_mode():
        predict(planes[0], box=box)
        single = predict.calls[0][1] > args.single_above
        if not single:
            predict.calls.clear(), encoder.calls.clear()
            for _ in range(args.repeats):
                predict(planes[0], box=box)
        embeddings = encoder.last
        prompts = predictor.model_prompts(info.image_size, info.image_size, boxes=box[None])
        decode = Timed(predictor.decode, device)
        for _ in range(max(3, args.repeats)):
            decode(embeddings, prompts)
    peak = memory.peak()
    trainable, total = count_parameters(apply_adapter(model, LORA))
    return {
        "side": info.image_size,
        "params": params,
        "lora": trainable,
        "lora_share": trainable / total,
        "encoder": encoder.median()[0],
        "encoder_cpu": encoder.median()[1],
        "predict": predict.median()[0],
        "decode": decode.median()[0],
        "decode_cpu": decode.median()[1],
        "calls": len(predict.calls),
        "peak_image": peak,
    }


def video_path(preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The video model: seconds per tracked frame through the memory path, peak memory."""
    from adapt.inference.propagation import SlicePrompt, propagate
    from adapt.models.sam2 import load_sam2

    memory = Memory(device)
    model, info = load_sam2(f"random:{preset}", image_size=args.image_size, video=True)
    model = model.to(device).eval()
    planes, box = scene(info.image_size, args.frames)
    stamps: list[tuple[float, float]] = []

    def stamp(_frame: int, _where: str) -> None:
        stamps.append(clock(device))

    propagate(model, planes, {0: SlicePrompt(boxes=box)}, direction="forward", stop_after=None, on_frame=stamp)
    wall, cpu = np.diff(np.array(stamps), axis=0).mean(axis=0)  # the first stamp ends the prompted frame
    return {"video": float(wall), "video_cpu": float(cpu), "peak_video": memory.peak()}


PATHS = {"image": image_path, "video": video_path}


def measure(preset: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    """One path (``image`` or ``video``) of one row, in this (child) process."""
    result: dict[str, Any] = {"note": ""}
    if backbone_of(preset).extra == "edgetam":
        try:
            result["note"] = with_timm()
        except ImportError as err:
            return {"error": str(err)}
    return {**result, **PATHS[path](preset, args, torch.device(args.device))}


def run_child(preset: str) -> dict[str, Any]:
    """``preset``'s row, each path in a fresh interpreter, so that its memory is its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result: dict[str, Any] = {"preset": preset}
    for path in PATHS:
        command = [sys.executable, __file__, *sys.argv[1:], "--child", f"{preset}:{path}"]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            return {**result, "error": f"{path} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"}
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
        if "error" in result:
            break
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(HUB_IDS), choices=list(HUB_IDS), help="rows (presets)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed predict calls after the warm-up (median)")
    parser.add_argument(
        "--single-above",
        type=float,
        default=20.0,
        help="a row whose first predict takes more CPU seconds is timed by that call alone",
    )
    parser.add_argument("--frames", type=int, default=3, help="video frames (at least 2): 1 prompted, the rest tracked")
    parser.add_argument("--image-size", type=int, default=None, help="one side for every row (default: each native)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 2 or args.repeats < 1:
        parser.error("--frames needs at least 2 (one prompted, one tracked) and --repeats at least 1")
    return args


HEADER = (
    "| backbone | side | params | LoRA r=8 trainable | encoder s | encoder CPU s | predict s | decode ms | decode CPU ms "
    "| video s/frame | video CPU s/frame | peak {mem} predict | peak {mem} video | load |"
)


def table_row(r: dict[str, Any], repeats: int) -> str:
    """One Markdown row; ``*`` marks the times of a row measured by one call (``--single-above``)."""
    if "error" in r:
        return f"| {r['preset']} | {r['error']} |" + " |" * 11 + f" {r['load']} |"
    one = "*" if r["calls"] < repeats else ""
    return (
        f"| {r['preset']} | {r['side']} | {r['params'] / 1e6:.1f} M | {r['lora']:,} ({100 * r['lora_share']:.2f} %) "
        f"| {r['encoder']:.3f}{one} | {r['encoder_cpu']:.3f}{one} | {r['predict']:.3f}{one} | {1000 * r['decode']:.1f} | {1000 * r['decode_cpu']:.1f} "
        f"| {r['video']:.3f} | {r['video_cpu']:.3f} | {r['peak_image']:.0f} | {r['peak_video']:.0f} | {r['load']} |"
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        logging.disable(logging.WARNING)  # the header says RANDOM weights once, for every row
        warnings.filterwarnings("ignore")
        preset, _, path = args.child.rpartition(":")
        print(json.dumps(measure(preset, path, args)))
        return
    started, load = time.perf_counter(), os.getloadavg()[0]
    print(
        f"RANDOM WEIGHTS of the released architectures (nothing downloaded; speed and memory only): "
        f"{args.device}, {args.threads} threads, median of {args.repeats} predict calls after a warm-up "
        f"(* one call: the first took over {args.single_above:g} CPU s), video: mean of {args.frames - 1} tracked "
        f"frames, torch {torch.__version__}",
        flush=True,
    )
    header = HEADER.format(mem="GPU MB" if args.device.startswith("cuda") else "RSS MB")
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|", flush=True)
    notes = []
    for preset in args.sizes:
        before = os.getloadavg()[0]
        result = {**run_child(preset), "load": f"{before:.1f} → {os.getloadavg()[0]:.1f}"}
        print(table_row(result, args.repeats), flush=True)
        if result.get("note"):
            notes.append(f"{preset}: {result['note']}")
    for note in notes:
        print(f"note: {note}")
    print("load: the 1-minute load average before and after the row, on", os.cpu_count(), "CPUs")
    print("backbones: " + "; ".join(f"{p} = {backbone_of(p).title}" for p in args.sizes))
    print(
        f"{time.perf_counter() - started:.0f} s in all; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )


if __name__ == "__main__":
    main()
