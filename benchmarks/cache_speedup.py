"""Epoch time of decoder training with the frozen-encoder embedding cache against without it.

Both runs train ``adapter=decoder`` through ``adapt.train``'s Trainer on the same N distinct
images (batch 1 by default, box prompts); one computes the image encoder at every step, the
other (``embedding_cache.mode=memory``) only in its first epoch. Epochs of the two are run
alternately in ONE process (one ``fit`` of one epoch each, the task and its cache kept), so
both see the same machine load. The speed-up is the median over epochs after the first of
(uncached epoch / cached epoch).

    python benchmarks/cache_speedup.py --size 1024 --images 4 --epochs 3
"""

from __future__ import annotations

import argparse

import torch
from harness import StepClock, loader, make_task, median, trainer_for
from train_step import SPECS, make_batch

PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}


def samples(count: int, size: int) -> list[dict]:
    """``count`` distinct images (shifted copies of the benchmark batch) with cache identities."""
    base = make_batch(1, size)
    out = []
    for index in range(count):
        image = torch.roll(base["image"][0], shifts=index * size // (4 * count), dims=-1)
        out.append(
            {
                "image": image,
                "label": base["label"][0],
                "boxes": base["boxes"][0],
                "meta": {"case": "bench", "slice": index},
            }
        )
    return out


def one_epoch(task, data, batch: int, args) -> tuple[float, float]:
    """``(wall, CPU)`` seconds of one training epoch through the framework."""
    clock = StepClock()
    trainer = trainer_for(args.device, PRECISION[args.precision], max_epochs=1, max_steps=-1)
    trainer.callbacks.append(clock)
    trainer.fit(task, loader(data, batch))
    return clock.epochs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--images", type=int, default=4, help="images per epoch")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32", choices=sorted(PRECISION))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = samples(args.images, args.size)
    tasks = {
        mode: make_task(args.model, args.size, SPECS["decoder"], cache=mode).to(args.device)
        for mode in ("off", "memory")
    }
    print(
        f"{args.model} (random weights), adapter decoder, {args.size}px, {args.images} images/epoch, batch {args.batch}, "
        f"{args.device}, precision {args.precision}, {args.threads} threads; epochs alternate between the two"
    )
    print(
        f"| {'epoch':>5} | {'no cache s':>10} | {'cache s':>8} | {'speed-up':>8} | {'no cache CPU s':>14} "
        f"| {'cache CPU s':>11} | {'CPU speed-up':>12} |"
    )
    print("|" + "|".join("-" * n for n in (7, 12, 10, 10, 16, 13, 14)) + "|")
    later = {"wall": [], "cpu": []}
    for epoch in range(args.epochs):
        plain = one_epoch(tasks["off"], data, args.batch, args)
        cached = one_epoch(tasks["memory"], data, args.batch, args)
        ratio = plain[0] / cached[0], plain[1] / cached[1]
        if epoch > 0:
            later["wall"].append(ratio[0])
            later["cpu"].append(ratio[1])
        print(
            f"| {epoch + 1:>5} | {plain[0]:>10.2f} | {cached[0]:>8.2f} | {ratio[0]:>7.1f}x | {plain[1]:>14.2f} "
            f"| {cached[1]:>11.2f} | {ratio[1]:>11.1f}x |",
            flush=True,
        )
    cache = tasks["memory"].embedding_cache
    print(
        f"speed-up after the first epoch (median): {median(later['wall']):.1f}x wall, {median(later['cpu']):.1f}x CPU "
        f"(target >= 10x); cache: {cache.misses} misses, {cache.hits} hits"
    )


if __name__ == "__main__":
    main()
