"""A simulated annotator: how many cases and clicks the worklist's order saves against random order and
against labelling everything.

Generated 2D scans with a hidden ground truth (speckled grey images with one dark elliptical lesion,
as ``tests/data/user_folders.py`` writes them) are pre-annotated by the model from a box around each
lesion (the prompt an annotator draws). Each case gets the worklist's uncertainty
(``adapt.annotate.scores``: IoU head + agreement under prompt jitter). An oracle annotator then
reviews cases in one of four orders -- ``uncertainty`` (the worklist), ``random``, ``oracle`` (worst
true Dice first: the bound no score can beat) and ``everything`` (every case, file order) -- and
corrects each reviewed case with the click simulator (``adapt.transforms.clicks``: the next click in
the centre of the largest error region, the box and all clicks re-prompted) until its Dice reaches
``--target`` or ``--max-clicks`` clicks were spent; a case still below then is drawn by hand (counted
as ``manual``, its Dice becomes 1). Unreviewed cases keep their pre-annotation.

For each order the table gives the reviewed cases, clicks and hand-drawn cases needed until the mean
Dice over all cases reaches ``--target`` (``-`` when it never does), and the curve of mean Dice
against reviewed cases.

With the default ``--model tiny`` (a random tiny SAM2, offline) the pre-annotations and the scores are
noise: the result says how the harness behaves, not what SAM2 can do. With pretrained weights
(``--model sam2.1_hiera_tiny`` once the weights are in the Hugging Face cache, or ``--adapter <run>``)
the same script measures the real saving.

    python benchmarks/annotate.py --cases 16 --size 96            # random tiny SAM2, minutes on a CPU
    python benchmarks/annotate.py --adapter outputs/busi/<run> --cases 100 --target 0.85
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "data"))

ORDERS = ("uncertainty", "random", "oracle", "everything")


def make_cases(count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(image [3, H, W] in [0, 1], truth [H, W] bool)`` of ``count`` generated scans."""
    from user_folders import ultrasound_pair

    cases = []
    for seed in range(count):
        image, mask = ultrasound_pair(seed, (size, size))
        cases.append((np.repeat(image[None].astype(np.float32) / 255.0, 3, axis=0), mask > 0))
    return cases


def load(args: argparse.Namespace):
    """The runner on an adapter, or zero-shot SAM2 of ``--model``."""
    from adapt.data.cards import load_card
    from adapt.evaluation.models import load_model, resolve_spec
    from adapt.inference.runner import Predictor

    spec = resolve_spec(args.adapter or "none", None, args.model, None)
    return Predictor(load_model(spec, load_card("isic2018")), "cpu")


def correct(
    predictor,
    image: np.ndarray,
    truth: np.ndarray,
    box: np.ndarray,
    mask: np.ndarray,
    target: float,
    max_clicks: int,
    seed: int,
) -> tuple[float, int, bool]:
    """``(Dice, clicks, drawn by hand)`` after the oracle's correction clicks on one case."""
    from adapt.annotate.scores import dice
    from adapt.transforms.clicks import correction_click

    rng = np.random.default_rng(seed)
    points, labels, score = [], [], dice(mask, truth)
    for clicks in range(1, max_clicks + 1):
        if score >= target:
            return score, clicks - 1, False
        click = correction_click(mask, truth, rng)
        if click is None:
            return 1.0, clicks - 1, False
        points.append(click[0])
        labels.append(click[1])
        mask = predictor.segment(image, box, np.stack(points), np.array(labels))
        score = dice(mask, truth)
    return (score, max_clicks, False) if score >= target else (1.0, max_clicks, True)


def simulate(
    order: list[int], before: np.ndarray, after: np.ndarray, clicks: np.ndarray, manual: np.ndarray, target: float
) -> dict[str, object]:
    """Effort until the mean Dice reaches ``target`` reviewing in ``order``, and the curve of mean Dice."""
    current, curve, reached = before.copy(), [float(before.mean())], None
    spent_clicks = spent_manual = 0
    if before.mean() >= target:
        reached = (0, 0, 0)
    for n, case in enumerate(order, start=1):
        current[case] = after[case]
        spent_clicks += int(clicks[case])
        spent_manual += int(manual[case])
        curve.append(float(current.mean()))
        if reached is None and current.mean() >= target:
            reached = (n, spent_clicks, spent_manual)
    return {"reached": reached, "curve": curve, "total": (len(order), spent_clicks, spent_manual)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--model", default="tiny", help="zero-shot model preset or Hub id (without --adapter)")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--target", type=float, default=0.8, help="Dice a reviewed case and the dataset must reach")
    parser.add_argument("--max-clicks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from adapt.annotate.scores import dice, object_scores
    from adapt.transforms.prompts import box_from_mask

    load_before, started = os.getloadavg()[0], time.perf_counter()
    predictor = load(args)
    cases = make_cases(args.cases, args.size)
    before, after, clicks, manual, uncertainty = (np.zeros(len(cases)) for _ in range(5))
    for i, (image, truth) in enumerate(cases):
        box = box_from_mask(truth)
        mask = predictor.segment(image, box)
        iou, agreement = object_scores(predictor, image, mask if mask.any() else truth, seed=i)
        uncertainty[i] = 1 - (iou + agreement) / 2 if mask.any() else 1.0
        before[i] = dice(mask, truth)
        after[i], clicks[i], manual[i] = correct(predictor, image, truth, box, mask, args.target, args.max_clicks, i)
    rng = np.random.default_rng(args.seed)
    orders = {
        "uncertainty": list(np.argsort(-uncertainty, kind="stable")),
        "random": list(rng.permutation(len(cases))),
        "oracle": list(np.argsort(before, kind="stable")),
        "everything": list(range(len(cases))),
    }
    results = {name: simulate(order, before, after, clicks, manual, args.target) for name, order in orders.items()}
    results["everything"]["reached"] = results["everything"]["total"]  # every case is labelled, whatever the mean
    spearman = np.corrcoef(np.argsort(np.argsort(uncertainty)), np.argsort(np.argsort(-before)))[0, 1]
    print(
        f"{len(cases)} cases {args.size}x{args.size}, model {args.adapter or args.model}, target Dice {args.target}, "
        f"at most {args.max_clicks} clicks per case; {time.perf_counter() - started:.0f} s wall, load "
        f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"pre-annotation Dice: mean {before.mean():.3f} (min {before.min():.3f}, max {before.max():.3f}); "
        f"rank correlation of uncertainty with 1 - Dice: {spearman:+.2f}"
    )
    print(
        "\n| order | cases reviewed to reach target | clicks | drawn by hand | everything: cases / clicks / by hand |"
    )
    print("|---|---|---|---|---|")
    for name, result in results.items():
        reached, total = result["reached"], result["total"]
        shown = [str(v) for v in reached] if reached else ["-", "-", "-"]
        print(f"| {name} | {' | '.join(shown)} | {total[0]} / {total[1]} / {total[2]} |")
    steps = sorted({0, len(cases) // 4, len(cases) // 2, 3 * len(cases) // 4, len(cases)})
    print("\nmean Dice after reviewing k cases\n\n| order | " + " | ".join(f"k={k}" for k in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name, result in results.items():
        print(f"| {name} | " + " | ".join(f"{result['curve'][k]:.3f}" for k in steps) + " |")


if __name__ == "__main__":
    main()
