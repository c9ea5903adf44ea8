"""3D Dice on synthetic CT phantoms: a box on every slice vs one box + SAM2 memory propagation.

One run: fine-tune ``recipe=demo_3d`` (task=propagation) briefly, then segment held-out
phantoms (generated with another seed, never seen in training) two ways, before (the base
model) and after (the adapter) the fine-tune:

* ``boxes``: every slice holding the liver gets its ground-truth box and is segmented alone
  by the image model (``adapt.inference.runner.Predictor.segment``); other slices stay empty. One
  prompt per liver slice: the upper bound a user pays for with many prompts.
* ``propagation``: one ground-truth box on the slice with the largest liver area, then SAM2's
  memory carries it through the volume in both directions (``adapt.inference.propagation.propagate``,
  early stop by object score). The standard single-prompt protocol.

Random-weight models (no Hub access) score low on both; the numbers show the pipeline and
the direction of the fine-tune, not SAM2's quality.

    python benchmarks/propagation_vs_boxes.py --model tiny --size 128 --steps 100 --cases 4
    python benchmarks/propagation_vs_boxes.py --steps 100 --override adapter=full optim.lr=3e-4
    python benchmarks/propagation_vs_boxes.py --model sam2.1_hiera_tiny --size 256 --steps 60
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

METHODS = ("boxes", "propagation")


def test_card(folder: Path, cases: int) -> Path:
    """The phantom card with another generator seed and its own folder: held-out test phantoms."""
    from adapt.conf import REPO_ROOT

    card = yaml.safe_load((REPO_ROOT / "data_cards" / "ct_phantom.yaml").read_text())
    card["name"] = "ct_phantom_test"
    card["source"] = {"kind": "synthetic", "num_cases": cases, "seed": 1, "root": str(folder / "phantoms")}
    path = folder / "ct_phantom_test.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def fine_tune(run_dir: Path, args: argparse.Namespace) -> dict:
    """``recipe=demo_3d`` for ``args.steps`` steps; returns its metrics.json content."""
    from hydra import compose, initialize_config_dir

    from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
    from adapt.train import train

    register_resolvers()
    register_recipes()
    overrides = [
        "recipe=demo_3d",
        f"model.image_size={args.size}",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "validate_before=false",
        f"out_dir={run_dir}",
    ]
    if args.model == "tiny":
        overrides.insert(1, "model=tiny")
    else:
        overrides.append(f"model.name={args.model}")
    overrides += args.override
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics, _ = train(cfg)
    return metrics


def base_models(args: argparse.Namespace, preprocessing: dict):
    """The untouched image and video models, shaped as loaded adapters (the "before" column)."""
    from adapt.adapters.loading import LoadedAdapter
    from adapt.models.sam2 import load_sam2

    name = args.model if args.model == "tiny" else f"random:{args.model}"
    image, info = load_sam2(name, image_size=args.size)
    video, _ = load_sam2(name, image_size=args.size, video=True)
    return LoadedAdapter(image.eval(), preprocessing, {}, {}, info, Path(".")), video.eval()


def adapted_models(adapter: Path):
    from adapt.adapters.loading import load_adapter

    return load_adapter(adapter, video=False), load_adapter(adapter, video=True).model


def score(image_model, video_model, volumes: list) -> dict[str, dict[str, float]]:
    """Mean 3D Dice, prompts per case and seconds per case of each method over ``volumes``."""
    from adapt.inference.runner import Predictor
    from adapt.metrics import dice
    from adapt.inference.propagation import SlicePrompt, propagate
    from adapt.transforms.prompts import box_from_mask

    predictor = Predictor(image_model, device="cpu", propagation="boxes")
    rows = {m: {"dice": [], "prompts": [], "seconds": []} for m in METHODS}
    for planes, truth in volumes:
        start = time.perf_counter()
        pred = np.zeros_like(truth)
        slices = np.flatnonzero(truth.any(axis=(1, 2)))
        for k in slices:
            pred[k] = predictor.segment(planes[k], box=box_from_mask(truth[k]))
        rows["boxes"]["seconds"].append(time.perf_counter() - start)
        rows["boxes"]["dice"].append(dice(pred, truth))
        rows["boxes"]["prompts"].append(len(slices))

        k = int(truth.sum(axis=(1, 2)).argmax())
        result = propagate(video_model, planes, {k: SlicePrompt(boxes=box_from_mask(truth[k]))})
        rows["propagation"]["seconds"].append(result.seconds)
        rows["propagation"]["dice"].append(dice(result.masks[0], truth))
        rows["propagation"]["prompts"].append(1)
    return {m: {k: float(np.mean(v)) for k, v in r.items()} for m, r in rows.items()}


def test_volumes(card_path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(planes [D, C, H, W] in [0, 1], liver [D, H, W] bool)`` of every test phantom, as training slices them."""
    from adapt.data.cards import load_card
    from adapt.data.clips import volume_planes
    from adapt.data.volumes import data_root, list_cases, load_volume

    card = load_card(str(card_path))
    axis, liver = card.slice_axis, card.target_ids()["liver"]
    out = []
    for case in list_cases(card, data_root(card)):
        volume = load_volume(card, case)
        depth = volume.label.shape[axis]
        planes = volume_planes(volume.image, axis, 0, depth)
        truth = volume_planes(volume.label == liver, axis, 0, depth)[:, 0]
        out.append((planes, truth))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, or a preset / hub id (random weights offline)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps (clips of demo_3d)")
    parser.add_argument("--cases", type=int, default=4, help="held-out test phantoms")
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides, e.g. adapter=full optim.lr=3e-4"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("SAM2_ADAPT_DATA", str(folder / "data"))
        volumes = test_volumes(test_card(folder, args.cases))
        started = time.perf_counter()
        metrics = fine_tune(folder / "run", args)
        tuned = time.perf_counter() - started
        after_image, after_video = adapted_models(folder / "run" / "adapter")
        before = score(*base_models(args, after_image.preprocessing), volumes)
        after = score(after_image, after_video, volumes)
    print(
        f"\n{args.model} (random weights unless pretrained) at {args.size}px; fine-tune: demo_3d "
        f"{' '.join(args.override)}, {args.steps} "
        f"clip steps in {tuned:.0f} s (val/dice {metrics['after'].get('val/dice', float('nan')):.3f}); "
        f"{len(volumes)} held-out phantoms"
    )
    header = (
        f"| {'method':<12} | {'prompts/case':>12} | {'3D Dice before':>14} | {'3D Dice after':>13} | {'s/case':>6} |"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for method in METHODS:
        print(
            f"| {method:<12} | {after[method]['prompts']:>12.1f} | {before[method]['dice']:>14.3f} | "
            f"{after[method]['dice']:>13.3f} | {after[method]['seconds']:>6.2f} |"
        )


if __name__ == "__main__":
    main()
