"""The framework's training step (Lightning + SegmentationTask) against a bare PyTorch loop.

Same model object, same batch, same optimizer (AdamW over the trainable parameters with
the warm-up/cosine schedule, gradients clipped at 1.0 as ``trainer.gradient_clip_val``):
the difference is what the framework adds per step — Lightning's loop and hooks, our
metrics (Dice/IoU per step) and logging, the callbacks of ``adapt.train``. The two are run
in alternating chunks in ONE process, so both see the same machine load; the table gives
the median seconds per step of each and the median of the per-round ratios.

    python benchmarks/overhead.py --size 1024 --batch 1 --rounds 3 --steps 3
"""

from __future__ import annotations

import argparse

import torch
from harness import StepClock, loader, make_task, median, trainer_for
from torch.optim.lr_scheduler import LambdaLR
from train_step import SPECS, bare_step, make_batch, wall_and_cpu

from adapt.tasks.base import warmup_cosine

PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}


def framework_steps(task, samples, batch: int, steps: int, args) -> list[tuple[float, float]]:
    """Per-step ``(wall, CPU)`` times of ``steps`` steps through ``adapt.train``'s Trainer (first one dropped)."""
    clock = StepClock()
    trainer = trainer_for(args.device, PRECISION[args.precision], max_steps=steps + 1, max_epochs=-1)
    trainer.callbacks.append(clock)
    trainer.fit(task, loader(samples, batch))
    return clock.steps[1:]


def bare_steps(task, data, steps: int, args) -> list[tuple[float, float]]:
    """Per-step ``(wall, CPU)`` times of the plain loop on the same model (first one dropped)."""
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    schedule = LambdaLR(optimizer, lambda step: warmup_cosine(step, 1, steps + 1, 0.01))
    device = torch.device(args.device)

    def step() -> None:
        bare_step(task.model, optimizer, data, precision=args.precision, clip=1.0)
        schedule.step()

    return [wall_and_cpu(step, device) for _ in range(steps + 1)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--kind", default="lora", choices=[k for k in SPECS if "+" not in k])
    parser.add_argument("--rounds", type=int, default=3, help="alternating framework/bare chunks")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32", choices=sorted(PRECISION))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = make_task(args.model, args.size, SPECS[args.kind]).to(args.device)
    data = make_batch(args.batch, args.size, args.device)
    samples = [{k: v[i].cpu() for k, v in data.items()} for i in range(args.batch)] * (args.steps + 1)
    print(
        f"{args.model} (random weights), adapter {args.kind}, {args.size}px, batch {args.batch}, {args.device}, "
        f"precision {args.precision}, {args.threads} threads; {args.rounds} rounds x {args.steps} steps, interleaved"
    )
    print(
        f"| {'round':>5} | {'framework s/step':>16} | {'bare s/step':>11} | {'overhead':>8} "
        f"| {'framework CPU s':>15} | {'bare CPU s':>10} | {'CPU overhead':>12} |"
    )
    print("|" + "|".join("-" * n for n in (7, 18, 13, 10, 17, 12, 14)) + "|")
    ours_all, plain_all, ratios = [], [], {"wall": [], "cpu": []}

    def row(label: str, ours: list, plain: list, wall_ratio: float, cpu_ratio: float) -> None:
        print(
            f"| {label:>5} | {median([w for w, _ in ours]):>16.4f} | {median([w for w, _ in plain]):>11.4f} "
            f"| {100 * (wall_ratio - 1):>+7.1f}% | {median([c for _, c in ours]):>15.4f} "
            f"| {median([c for _, c in plain]):>10.4f} | {100 * (cpu_ratio - 1):>+11.1f}% |",
            flush=True,
        )

    for index in range(args.rounds):
        ours = framework_steps(task, samples, args.batch, args.steps, args)
        plain = bare_steps(task.train(), data, args.steps, args)
        ours_all += ours
        plain_all += plain
        for i, key in enumerate(ratios):
            ratios[key].append(median([t[i] for t in ours]) / median([t[i] for t in plain]))
        row(str(index + 1), ours, plain, ratios["wall"][-1], ratios["cpu"][-1])
    row("all", ours_all, plain_all, median(ratios["wall"]), median(ratios["cpu"]))
    print("overhead = median over rounds of (framework / bare) - 1, wall and process-CPU seconds; target <= 5%")


if __name__ == "__main__":
    main()
