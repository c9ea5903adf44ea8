"""Seconds per training step of SAM2 with each adapter kind, one fresh process per kind.

Random weights of the chosen architecture (no download), one fixed batch with box prompts,
AdamW over the trainable parameters, forward + Dice/BCE/IoU loss + backward + step, as the
segmentation task trains. ``decoder+cache`` is the frozen-encoder fast path after its first
epoch: the image embeddings are computed once, and every step runs the prompt encoder and
mask decoder only. Each kind runs in its own child process, so the peak memory column is
that kind's own high-water mark (RSS on CPU, ``max_memory_allocated`` on CUDA). Wall and
process-CPU seconds are both given: on a shared machine the CPU seconds are the steadier.

``--blocks all 4`` measures the encoder adapters (lora, dora, bottleneck) in every Hiera block
and in the last 4 (``adapter.blocks=4``); ``--prefix-cache`` adds, for each restricted row, the
step after the first epoch of the frozen-prefix cache: the prefix's output computed once, each
step running the adapted blocks, the neck and the decoder (``adapt.models.hiera_prefix``).
``--rounds R`` runs every row R times, rows alternating, and reports the median round (the
faster middle one for even R), so a change of the machine's load falls on every row alike;
each round's numbers go to stderr as they come.

    python benchmarks/train_step.py --size 1024 --batch 1 --steps 3 --kinds lora bottleneck decoder decoder+cache full
    python benchmarks/train_step.py --size 1024 --kinds lora --blocks all 4 --prefix-cache --rounds 3
    python benchmarks/train_step.py --device cuda --precision bf16 --model sam2.1_hiera_base_plus --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from adapt.adapters import apply_adapter
from adapt.models.hiera_prefix import encode_prefix, encode_suffix, first_trained_block
from adapt.models.primitives import base_model, decode, image_embeddings, preprocess
from adapt.models.sam2 import count_parameters, load_sam2
from adapt.tasks.losses import LossWeights, segmentation_loss

LORA = {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]}
SPECS = {
    "lora": LORA,
    "dora": {**LORA, "kind": "dora"},
    "bottleneck": {"kind": "bottleneck"},
    "decoder": {"kind": "decoder"},
    "decoder+cache": {"kind": "decoder"},
    "full": {"kind": "full"},
}


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory: CUDA allocations on a GPU, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_batch(batch: int, size: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``batch`` images with one rectangle each and its box prompt (pixel coordinates)."""
    generator = torch.Generator().manual_seed(0)
    label = torch.zeros(batch, 1, size, size)
    label[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    image = 0.3 * torch.rand(batch, 1, size, size, generator=generator) + 0.5 * label
    boxes = torch.tensor([[[size / 3, size / 4, 2 * size / 3 - 1, size / 2 - 1]]]).repeat(batch, 1, 1)
    return {k: v.to(device) for k, v in {"image": image, "label": label, "boxes": boxes}.items()}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (as ``trainer.precision=bf16-mixed``), or nothing for full precision."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(model_name: str, kind: str, size: int, device: torch.device, blocks: int | None = None) -> torch.nn.Module:
    """SAM2 with random weights of ``model_name`` and the adapter of ``kind`` (in the last ``blocks``
    Hiera blocks, if given), in train mode."""
    model, _ = load_sam2(model_name if model_name == "tiny" else f"random:{model_name}", image_size=size)
    spec = SPECS[kind] if blocks is None else {**SPECS[kind], "blocks": blocks}
    return apply_adapter(model, spec).to(device).train()


def parse_row(row: str) -> tuple[str, int | None, bool]:
    """``lora``, ``lora/last4`` or ``lora/last4+prefix`` -> ``(kind, blocks, prefix cache)``."""
    name, prefix = row.removesuffix("+prefix"), row.endswith("+prefix")
    kind, _, last = name.partition("/last")
    return kind, int(last) if last else None, prefix


def loss_of(
    model: torch.nn.Module,
    data: dict[str, torch.Tensor],
    embeddings: list[torch.Tensor] | None = None,
    prefix: tuple[int, list[torch.Tensor]] | None = None,
) -> torch.Tensor:
    """The segmentation loss of one batch; with ``embeddings`` the image encoder is skipped, with
    ``prefix`` (first block to run, the prefix's cached output) its frozen prefix is."""
    if prefix is not None:
        embeddings = encode_suffix(base_model(model), prefix[1], prefix[0])
    elif embeddings is None:
        embeddings = image_embeddings(model, preprocess(data["image"]))
    pred = decode(model, embeddings, multimask=False, input_boxes=data["boxes"])
    logits = F.interpolate(pred.low_res[:, :, 0].float(), size=data["label"].shape[-2:], mode="bilinear")
    return segmentation_loss(logits[:, :, None], data["label"], pred.iou, LossWeights())[0]


def bare_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: dict[str, torch.Tensor],
    embeddings: list[torch.Tensor] | None = None,
    precision: str = "32",
    clip: float | None = None,
    prefix: tuple[int, list[torch.Tensor]] | None = None,
) -> float:
    """One plain PyTorch training step (no framework): forward, loss, backward, clip, AdamW."""
    with autocast(data["image"].device, precision):
        loss = loss_of(model, data, embeddings, prefix)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
    optimizer.step()
    return float(loss.detach())


def clock(device: torch.device) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds now, after queued GPU work. CPU seconds (all threads of
    this process) are far less disturbed than wall time by other jobs on a shared machine."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def wall_and_cpu(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """``(wall, CPU)`` seconds of ``fn()``."""
    wall, cpu = clock(device)
    fn()
    wall_end, cpu_end = clock(device)
    return wall_end - wall, cpu_end - cpu


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, waiting for queued GPU work on both sides."""
    return wall_and_cpu(fn, device)[0]


def measure(args: argparse.Namespace, row: str) -> dict[str, Any]:
    """Time ``args.steps`` steps of ``row`` (a kind, see ``parse_row``) after ``args.warmup`` warm-up steps."""
    device = torch.device(args.device)
    kind, blocks, cache_prefix = parse_row(row)
    model = build(args.model, kind, args.size, device, blocks)
    if kind.endswith("+cache"):  # the encoder-side projections are part of the cached output (as in the task)
        sam = base_model(model)
        for conv in (sam.mask_decoder.conv_s0, sam.mask_decoder.conv_s1):
            conv.requires_grad_(False)
    trainable, total = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = make_batch(args.batch, args.size, device)
    embeddings = prefix = None
    if kind.endswith("+cache"):  # what the cache holds after the first epoch
        with torch.no_grad(), autocast(device, args.precision):
            embeddings = [e.float() for e in image_embeddings(model, preprocess(data["image"]))]
    if cache_prefix:  # what the prefix cache holds after the first epoch
        start = first_trained_block(base_model(model))
        with torch.no_grad(), autocast(device, args.precision):
            prefix = (start, [t.float() for t in encode_prefix(base_model(model), preprocess(data["image"]), start)])
    times = [
        wall_and_cpu(lambda: bare_step(model, optimizer, data, embeddings, args.precision, prefix=prefix), device)
        for _ in range(args.warmup + args.steps)
    ][args.warmup :]
    mean = sum(wall for wall, _ in times) / len(times)
    return {
        "kind": row,
        "trainable": trainable,
        "total": total,
        "s/step": mean,
        "cpu_s/step": sum(cpu for _, cpu in times) / len(times),
        "samples/s": args.batch / mean,
        "peak_mb": peak_memory_mb(device),
    }


def run_child(kind: str) -> dict[str, Any]:
    """Measure ``kind`` in a fresh interpreter, so peak memory is that kind's alone."""
    argv = [a for a in sys.argv[1:]]
    result = subprocess.run([sys.executable, __file__, *argv, "--child", kind], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny", help="preset or hub id (random weights), or tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--kinds", nargs="+", default=["lora", "bottleneck", "decoder", "decoder+cache", "full"], choices=list(SPECS)
    )
    parser.add_argument(
        "--blocks",
        nargs="+",
        default=["all"],
        help="Hiera blocks with encoder adapters (lora, dora, bottleneck): all and/or N (the last N)",
    )
    parser.add_argument(
        "--prefix-cache",
        action="store_true",
        help="also time each last-N row from a cached frozen prefix (after the cache's first epoch)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run every row this often, alternating; median reported")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def rows(args: argparse.Namespace) -> list[str]:
    """The configurations to time: each kind, and each adapter kind at each ``--blocks`` value."""
    out = []
    for kind in args.kinds:
        if kind not in ("lora", "dora", "bottleneck"):
            out.append(kind)
            continue
        for blocks in args.blocks:
            out.append(kind if blocks == "all" else f"{kind}/last{int(blocks)}")
            if blocks != "all" and args.prefix_cache:
                out.append(f"{kind}/last{int(blocks)}+prefix")
    return out


def median_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median wall seconds per step (the faster middle one for an even count),
    with its own CPU seconds and memory."""
    ordered = sorted(results, key=lambda r: r["s/step"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return
    memory = "peak CUDA MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(
        f"{args.model} (random weights) at {args.size}px, batch {args.batch}, {args.device}, "
        f"precision {args.precision}, {args.threads} threads, mean of {args.steps} steps after {args.warmup} warm-up"
        + (f", median of {args.rounds} alternating rounds" if args.rounds > 1 else "")
    )
    names = rows(args)
    width = max(13, *(len(n) for n in names))
    header = (
        f"| {'kind':<{width}} | {'trainable':>11} | {'total':>11} | {'%':>6} | {'s/step':>7} | {'CPU s/step':>10} "
        f"| {'samples/s':>9} | {memory:>12} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(run_child(name))
            last = results[name][-1]
            print(
                f"  {name}: {last['s/step']:.3f} s/step, {last['cpu_s/step']:.3f} CPU s/step",
                file=sys.stderr,
                flush=True,
            )
    for name in names:
        row = median_row(results[name])
        print(
            f"| {row['kind']:<{width}} | {row['trainable']:>11,} | {row['total']:>11,} | "
            f"{100 * row['trainable'] / row['total']:>6.2f} | {row['s/step']:>7.3f} | {row['cpu_s/step']:>10.3f} | "
            f"{row['samples/s']:>9.3f} | {row['peak_mb']:>12.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
