"""Seconds per clip training step of ``task=propagation`` (SAM2 with memory), on random weights.

One clip of ``K`` frames (a rectangle drifting across the frames, a box prompt on the middle
frame), tracked forward and backward through SAM2's memory by ``PropagationTask``'s own
training step (image encoder on all ``K`` frames, memory attention and memory encoder per
frame, the clip loss), then backward and an AdamW step. Each (size, adapter) row runs in a
fresh interpreter so its peak memory is its own (RSS on CPU, ``max_memory_allocated`` on CUDA).

    python benchmarks/clip_step.py --sizes 1024 512 --frames 8 --steps 2
    python benchmarks/clip_step.py --device cuda --model sam2.1_hiera_base_plus --frames 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from typing import Any

import torch

from train_step import peak_memory_mb, timed  # benchmarks/ sits on sys.path when run as a script

ADAPTERS = {
    # Encoder + decoder + memory LoRA: the demo_3d recipe's choice (the image encoder trains).
    "lora-all": ["encoder_attn", "decoder_attn", "memory"],
    # Frozen image encoder: only the decoder and the memory adapt (no encoder backward).
    "lora-memory": ["decoder_attn", "memory"],
}


def clip_batch(frames: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One clip ``[1, K, 1, S, S]`` with a drifting rectangle; the middle frame is box-prompted."""
    generator = torch.Generator().manual_seed(0)
    image = 0.3 * torch.rand(1, frames, 1, size, size, generator=generator)
    label = torch.zeros(1, frames, 1, size, size)
    boxes = torch.zeros(1, frames, 1, 4)
    side, step = size // 4, max(size // (4 * frames), 1)
    for t in range(frames):
        x0, y0 = size // 4 + t * step, size // 3
        label[0, t, 0, y0 : y0 + side, x0 : x0 + side] = 1
        boxes[0, t, 0] = torch.tensor([x0, y0, x0 + side - 1, y0 + side - 1], dtype=torch.float32)
    prompted = torch.zeros(1, frames, dtype=torch.bool)
    prompted[0, frames // 2] = True
    batch = {
        "image": image + 0.5 * label,
        "label": label,
        "present": label.flatten(3).any(-1),
        "prompt_frames": prompted,
        "boxes": boxes * prompted[..., None, None],
    }
    return {k: v.to(device) for k, v in batch.items()}


def measure(args: argparse.Namespace, size: int, adapter: str) -> dict[str, Any]:
    """Mean seconds of ``args.steps`` clip steps after ``args.warmup`` warm-up steps."""
    from adapt.tasks.propagation import PropagationTask

    device = torch.device(args.device)
    name = args.model if args.model == "tiny" else f"random:{args.model}"
    task = (
        PropagationTask(
            model={"name": name, "image_size": size, "gradient_checkpointing": args.checkpointing},
            adapter={"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "targets": ADAPTERS[adapter]},
            optim={"lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 0, "min_lr_ratio": 0.1},
            loss={"dice": 1.0, "pixel_term": 1.0, "iou": 1.0, "pixel": "bce", "presence": 1.0},
        )
        .to(device)
        .train()
    )
    trainable, total = task.parameter_counts()
    optimizer = task.build_optimizer()
    batch = clip_batch(args.frames, size, device)

    def step() -> None:
        loss = task.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = [timed(step, device) for _ in range(args.warmup + args.steps)][args.warmup :]
    mean = sum(times) / len(times)
    return {
        "size": size,
        "adapter": adapter,
        "trainable": trainable,
        "total": total,
        "s/clip": mean,
        "s/frame": mean / args.frames,
        "peak_mb": peak_memory_mb(device),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", help="preset or hub id (random weights), or tiny")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--frames", type=int, default=8, help="clip length K")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--adapters", nargs="+", default=list(ADAPTERS), choices=list(ADAPTERS))
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the Hiera blocks")
    parser.add_argument("--row", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # self.log outside a Trainer, deprecations
    if args.row:
        print(json.dumps(measure(args, int(args.row[0]), args.row[1])))
        return
    memory = "peak CUDA MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(
        f"{args.model} video model (random weights), clip of K={args.frames} frames, box on the middle frame, "
        f"{args.device}, {args.threads} threads, mean of {args.steps} steps after {args.warmup} warm-up"
        f"{', Hiera gradient checkpointing' if args.checkpointing else ''}"
    )
    header = (
        f"| {'size':>5} | {'adapter':<11} | {'trainable':>10} | {'total':>11} | {'s/clip step':>11} "
        f"| {'s/frame':>7} | {memory:>12} |"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for size in args.sizes:
        for adapter in args.adapters:
            child = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--row", str(size), adapter], capture_output=True, text=True
            )
            if child.returncode != 0:  # e.g. out of memory: say so and go on with the other rows
                reason = (child.stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1][:60]
                print(f"| {size:>5} | {adapter:<11} | failed: {reason}", flush=True)
                continue
            row = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"| {size:>5} | {adapter:<11} | {row['trainable']:>10,} | {row['total']:>11,} | "
                f"{row['s/clip']:>11.2f} | {row['s/frame']:>7.2f} | {row['peak_mb']:>12.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
