"""Seconds per training step of SAM2 with each adapter kind, measured side by side.

Random weights of the chosen architecture (no download), one fixed batch with box prompts,
AdamW over the trainable parameters, forward + Dice/BCE/IoU loss + backward + step, as the
segmentation task trains. Prints a table; peak RSS is the process high-water mark after
each kind (monotone, so read the increments).

    python benchmarks/train_step.py --size 1024 --batch 1 --steps 3 --kinds lora bottleneck decoder
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from adapt.adapters import apply_adapter
from adapt.losses import LossWeights, segmentation_loss
from adapt.models.sam2 import count_parameters, load_sam2, preprocess

SPECS = {
    "lora": {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]},
    "dora": {"kind": "dora", "rank": 8, "alpha": 16, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]},
    "bottleneck": {"kind": "bottleneck"},
    "decoder": {"kind": "decoder"},
    "full": {"kind": "full"},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_batch(batch: int, size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    label = torch.zeros(batch, 1, size, size)
    label[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    image = 0.3 * torch.rand(batch, 1, size, size, generator=generator) + 0.5 * label
    boxes = torch.tensor([[[size / 3, size / 4, 2 * size / 3 - 1, size / 2 - 1]]]).repeat(batch, 1, 1)
    return {"image": image, "label": label, "boxes": boxes}


def time_kind(model_name: str, kind: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    model, _ = load_sam2(f"random:{model_name}", image_size=size)
    model = apply_adapter(model, SPECS[kind]).train()
    trainable, total = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = make_batch(batch, size)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        out = model(pixel_values=preprocess(data["image"]), input_boxes=data["boxes"], multimask_output=False)
        logits = F.interpolate(out.pred_masks[:, :, 0], size=(size, size), mode="bilinear")
        loss = segmentation_loss(logits[:, :, None], data["label"], out.iou_scores, LossWeights())[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    return {"kind": kind, "trainable": trainable, "total": total, "s/step": mean,
            "samples/s": batch / mean, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--kinds", nargs="+", default=["lora", "bottleneck", "decoder"], choices=sorted(SPECS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.model} (random weights) at {args.size}px, batch {args.batch}, "
          f"{args.threads} threads, mean of {args.steps} steps after {args.warmup} warm-up")
    header = f"{'kind':<11}{'trainable':>12}{'total':>13}{'%':>8}{'s/step':>9}{'samples/s':>11}{'peak RSS MB':>13}"
    print(header)
    print("-" * len(header))
    for kind in args.kinds:
        row = time_kind(args.model, kind, args.size, args.batch, args.steps, args.warmup)
        print(f"{row['kind']:<11}{row['trainable']:>12,}{row['total']:>13,}{100 * row['trainable'] / row['total']:>8.2f}"
              f"{row['s/step']:>9.2f}{row['samples/s']:>11.3f}{row['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
