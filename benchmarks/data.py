"""Training-loader throughput (samples/s) next to the model's consumption rate.

For a 3D card (CT phantoms written as gzipped NIfTI, larger than the demo's) and a 2D card
(Kvasir-SEG-layout JPEG pairs at Kvasir's typical 576 x 720), the training loader of
``adapt.data.datamodule`` runs with ``data.num_workers`` 0, 1, 2 and ``data.cache`` none /
memory / disk, with the defaults otherwise (augmentation on, box prompts, batch 4, model
input 1024). The first batch (worker start-up) is not counted; the time to index and cache
the dataset is shown separately. The model rate is a plain training step of SAM2.1
hiera-tiny (random weights, LoRA, forward + loss + backward + AdamW) on a batch of the same
size, from ``benchmarks/train_step.py``. The loader keeps up when its rate is several
times the model's (the target is 3x with the defaults).

    python benchmarks/data.py
    python benchmarks/data.py --size 512 --batches 8 --workers 0 2 --caches memory
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def fake_data(root: Path, ct_shape: tuple[int, int, int], ct_cases: int, images: int) -> dict[str, dict[str, str]]:
    """Write the benchmark datasets; return the ``data`` config of each card."""
    from PIL import Image

    from adapt.data.synthetic import write_ct_phantoms

    write_ct_phantoms(root / "ct", num_cases=ct_cases, shape=ct_shape)
    spec = importlib.util.spec_from_file_location("fake_data_generate", HERE.parent / "tests" / "data" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for i in range(images):
        image, mask = generate.photo_pair(i, shape=(576, 720))
        for folder, array in (("images", image), ("masks", np.stack([mask * 255] * 3, axis=-1))):
            (root / "kvasir" / "Kvasir-SEG" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / "kvasir" / "Kvasir-SEG" / folder / f"img{i:04d}.jpg", quality=90)
    return {"3D CT (NIfTI)": {"card": "ct_phantom", "root": str(root / "ct")},
            "2D RGB (JPEG)": {"card": "kvasir_seg", "root": str(root / "kvasir")}}


def loader_rate(data: dict[str, object], size: int, batch: int, workers: int, cache: str, batches: int,
                cache_dir: Path) -> tuple[float, float]:
    """``(seconds to index and cache, samples/s of the training loader)``."""
    from adapt.data.datamodule import build_datamodule

    start = time.perf_counter()
    dm = build_datamodule({**data, "batch_size": batch, "num_workers": workers, "cache": cache,
                           "cache_dir": str(cache_dir), "augment": True}, size, seed=0)
    prepare = time.perf_counter() - start
    iterator = iter(dm.train_dataloader())
    next(iterator)  # worker start-up and first batch
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(iterator)["image"])
        except StopIteration:
            iterator = iter(dm.train_dataloader())
    return prepare, seen / (time.perf_counter() - start)


def model_rate(model: str, size: int, batch: int, steps: int) -> float:
    """Samples/s of hiera-tiny LoRA training steps on CPU (one warm-up step not counted)."""
    from train_step import bare_step, build, make_batch

    device = torch.device("cpu")
    net = build(model, "lora", size, device)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    data = make_batch(batch, size, device)
    bare_step(net, optimizer, data)
    start = time.perf_counter()
    for _ in range(steps):
        bare_step(net, optimizer, data)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="model input side (hiera-tiny: 1024)")
    parser.add_argument("--batch", type=int, default=4, help="data.batch_size (default config: 4)")
    parser.add_argument("--batches", type=int, default=12, help="batches timed per loader setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--caches", nargs="+", default=["none", "memory", "disk"])
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[256, 256, 48])
    parser.add_argument("--ct-cases", type=int, default=6)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--data", nargs="+", default=["3d", "2d"], choices=["3d", "2d"])
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--model-steps", type=int, default=2)
    parser.add_argument("--model-batch", type=int, default=None,
                        help="batch of the model step (default: --batch); smaller saves memory on CPU")
    parser.add_argument("--model-rate", type=float, default=None,
                        help="samples/s of the model measured before (skips the slow model step)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAM2_ADAPT_DATA"] = tmp
        cards = fake_data(Path(tmp), tuple(args.ct_shape), args.ct_cases, args.images)
        rows = []
        print("| data | cache | workers | index+cache s | loader samples/s |")
        print("|---|---|---|---|---|")
        for name, data in cards.items():
            if name[:2].lower() not in args.data:
                continue
            for cache in args.caches:
                for workers in args.workers:
                    cache_dir = Path(tmp) / f"cache-{cache}-{workers}"  # each disk row starts cold
                    prepare, samples = loader_rate(data, args.size, args.batch, workers, cache, args.batches, cache_dir)
                    rows.append((name, cache, workers, prepare, samples))
                    print(f"| {name} | {cache} | {workers} | {prepare:.1f} | {samples:.1f} |", flush=True)
        model_batch = args.model_batch or args.batch
        if args.model_rate:
            rate = args.model_rate
            print(f"\nmodel: {rate:.3f} samples/s (given with --model-rate)\n")
        else:
            print(f"\nmodel: {args.model} LoRA training step, batch {model_batch} at {args.size} px, CPU "
                  f"({torch.get_num_threads()} threads) ...", flush=True)
            rate = model_rate(args.model, args.size, model_batch, args.model_steps)
            print(f"model consumes {rate:.3f} samples/s\n")
        print("| data | cache | workers | loader samples/s | loader / model |")
        print("|---|---|---|---|---|")
        for name, cache, workers, _, samples in rows:
            print(f"| {name} | {cache} | {workers} | {samples:.1f} | {samples / rate:.0f}x |")


if __name__ == "__main__":
    main()
