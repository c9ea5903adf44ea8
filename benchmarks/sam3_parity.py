"""Our SAM 3 tracker video path against Meta's ``sam3`` tracker on identical random weights, at any size.

``tests/test_sam3_video_parity.py`` runs this comparison in CI at a small size (side 112). This
script runs it at the small size or at SAM 3 as released (``--released``: the ViT-L of 32 blocks
at side 1008, decoder width 256, 4 memory-attention layers; Meta's tracker with its image encoder),
which does not fit the test suite's time: on this project's 2-core CPU machine (shared, load 10-16)
``--released --frames 2`` took 189 s to build both models and 874 s to track, 4.8 GB resident;
on a GPU (``--device cuda``) it should take seconds (not measured here). Both models hold the
same random weights (the released size draws them scaled by fan-in, ``meta_reference.randomize``,
so that activations stay of order one through 32 blocks); a box on frame 0 of a video of moving shapes is tracked forward by Meta's demo
API and by ``adapt.inference.propagation.propagate``; per frame it prints the largest absolute
difference of the low-res logits and the largest logit, the object scores' difference, the
stored memories' difference, and the share of mask pixels that disagree where Meta's logit is
farther than 1e-3 from 0. Meta's code and the stand-ins for its CUDA-only calls come from
``tests/sam3_video_reference.py`` (test code, imported by path).

    python benchmarks/sam3_parity.py                           # the small size (seconds)
    python benchmarks/sam3_parity.py --released --frames 2     # SAM 3 as released (about 5 GB of RAM)
    python benchmarks/sam3_parity.py --released --device cuda  # the same on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the references are test helpers, not part of ``adapt``

import sam3_video_reference  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--released", action="store_true", help="SAM 3 as released: side 1008, ViT-L (466 M parameters in ours)"
    )
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dims = sam3_video_reference.RELEASED if args.released else sam3_video_reference.SMALL
    started = time.perf_counter()
    tracker, model = sam3_video_reference.build_pair(dims, args.seed)
    tracker, model = tracker.to(args.device), model.to(args.device)
    built = time.perf_counter()
    frames, box = sam3_video_reference.moving_video(args.frames, args.height, args.width)
    runs = sam3_video_reference.track_both(tracker, model, frames, box)
    print(
        f"SAM 3 tracker, side {dims.size}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters "
        f"(ours), {args.frames} frames {args.height}x{args.width}, {args.device}; built in {built - started:.0f} s, "
        f"tracked in {time.perf_counter() - built:.0f} s"
    )
    print(
        "| frame | max abs diff, low-res logits | max abs logit (Meta) | object score diff | memory diff | mask pixels differing |"
    )
    print("|---|---|---|---|---|---|")
    for t in range(args.frames):
        ours, meta = runs["steps"][t], runs["meta"][t]
        logits = meta["pred_masks"].float().cpu()
        diff = float((ours.low_res.float().cpu() - logits).abs().max())
        score = float((ours.object_score.float().cpu() - meta["object_score_logits"].float().cpu()).abs().max())
        stored = runs["memories"][t]["maskmem_features"].float().cpu()
        theirs = meta["maskmem_features"].float().cpu().flatten(2).permute(2, 0, 1)
        video = runs["meta_video"][t].float().cpu().numpy()
        mask = runs["result"].masks[0, t]
        decided = abs(video) > 1e-3
        wrong = float(((mask != (video > 0)) & decided).mean())
        print(
            f"| {t} | {diff:.3g} | {float(logits.abs().max()):.3g} | {score:.3g} | "
            f"{float((stored - theirs).abs().max()):.3g} | {wrong:.2%} |"
        )


if __name__ == "__main__":
    main()
