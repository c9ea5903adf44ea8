"""Training-loader throughput (samples/s): today's path next to native slices, and the rates they must beat.

For a 3D card (CT phantoms written as gzipped NIfTI, 256 x 256 x 48) and a 2D card
(Kvasir-SEG-layout JPEG pairs at Kvasir's typical 576 x 720), the training loader of
``adapt.data.datamodule`` runs with ``data.num_workers`` (default 0 and 1) and ``data.cache``
(default memory and disk), augmentation on, box prompts, batch 4, model input 1024, along two
paths side by side in one process, alternating round by round so the machine's load hits
both alike (medians of the rounds):

* ``loader`` (``data.device_transforms=false``): the loader resizes every sample to S x S
  float32 and augments it (albumentations) before collating;
* ``device`` (``data.device_transforms=true``): the loader ships the native slice (the cache's
  float16, uint8 masks, prompts on the model's grid, 9 augmentation numbers) and the
  datamodule's ``on_after_batch_transfer`` resizes and augments the batch on the device; that
  step is timed on the CPU (and on CUDA when there is one) as ``device ms/batch``.

Each row gives samples/s, samples/s per loader process (``/ max(workers, 1)``), samples per
CPU second of the loader (what one loader process delivers with a core to itself: on a shared
machine the wall rate measures the other jobs too), bytes per sample handed over, and the first batch (worker start-up) is not counted; the time to index
and cache the dataset is shown separately. The GPU appetite the loader must exceed is printed
with the table (quoted figures). Last, unless ``--no-model``, the model's CPU rate: a plain
training step of SAM2.1 hiera-tiny (random weights, LoRA, forward + loss + backward + AdamW)
from ``benchmarks/train_step.py``.

    python benchmarks/data.py --no-model
    python benchmarks/data.py --data 3d --caches memory disk --workers 0 1 --rounds 5 --no-model
    python benchmarks/data.py --model-rate 0.027
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import psutil
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
    return {
        "3D CT (NIfTI)": {"card": "ct_phantom", "root": str(root / "ct")},
        "2D RGB (JPEG)": {"card": "kvasir_seg", "root": str(root / "kvasir")},
    }


#: What the loader must beat: the rate a GPU node consumes (figures quoted, not measured here).
GPU_APPETITE = (
    "SAM2.1-tiny inference runs ~91 frames/s on one A100 at batch 1 (Meta's figure); a node of "
    "8 GPUs training consumes hundreds to ~1000 samples/s: the target is >= 200 samples/s per "
    "loader process (5 processes feed 1000/s)"
)
PATHS = {"loader": False, "device": True}  # data.device_transforms of today's path and of the native one


def build(
    data: dict[str, object], size: int, batch: int, workers: int, cache: str, cache_dir: Path, device_transforms: bool
) -> tuple[object, float]:
    """``(datamodule, seconds to index and cache)`` with the defaults otherwise (augmentation on)."""
    from adapt.data.datamodule import build_datamodule

    start = time.perf_counter()
    dm = build_datamodule(
        {
            **data,
            "batch_size": batch,
            "num_workers": workers,
            "cache": cache,
            "cache_dir": str(cache_dir),
            "augment": True,
            "device_transforms": device_transforms,
        },
        size,
        seed=0,
    )
    return dm, time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU seconds so far of this process and its live children (the loader workers)."""
    me = psutil.Process()
    return sum(t.user + t.system for t in [me.cpu_times()] + [c.cpu_times() for c in me.children(recursive=True)])


def loader_rate(dm: object, batches: int) -> tuple[float, float, dict[str, object]]:
    """``(samples/s, samples per CPU second, last batch)`` of the training loader; the first batch
    (worker start-up) is not counted. CPU seconds are the loader's (workers and the process that
    collects their batches): the rate one loader process would reach with a core of its own."""
    loader = dm.train_dataloader()
    iterator = iter(loader)
    batch = next(iterator)
    start, cpu, seen = time.perf_counter(), cpu_seconds(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        seen += len(batch["image"])
    rates = seen / (time.perf_counter() - start), seen / (cpu_seconds() - cpu)
    if getattr(loader, "_iterator", None) is not None:  # persistent workers: stop them, or they would go on
        loader._iterator._shutdown_workers()  # prefetching while the other path is timed
    return (*rates, batch)


def shipped_bytes(batch: dict[str, object]) -> float:
    """Bytes per sample of the tensors a loader hands over (what crosses into pinned memory and the bus)."""
    total = sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))
    return total / len(batch["image"])


def device_seconds(dm: object, batch: dict[str, object], device: str, repeats: int) -> float:
    """Median seconds of the datamodule's ``on_after_batch_transfer`` (resize + augmentation) on ``device``."""
    times = []
    for _ in range(repeats + 1):
        moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        dm.on_after_batch_transfer(moved, 0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return median(times[1:])  # the first call warms up


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


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
    parser.add_argument("--batches", type=int, default=12, help="batches timed per loader setting and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the two paths alternate within each")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--caches", nargs="+", default=["memory", "disk"])
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[256, 256, 48])
    parser.add_argument("--ct-cases", type=int, default=6)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--data", nargs="+", default=["3d", "2d"], choices=["3d", "2d"])
    parser.add_argument("--device-repeats", type=int, default=5, help="timed calls of the device-side transform")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--model-steps", type=int, default=2)
    parser.add_argument(
        "--model-batch",
        type=int,
        default=None,
        help="batch of the model step (default: --batch); smaller saves memory on CPU",
    )
    parser.add_argument(
        "--model-rate",
        type=float,
        default=None,
        help="samples/s of the model measured before (skips the slow model step)",
    )
    parser.add_argument("--no-model", action="store_true", help="skip the CPU model step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"{load()} at the start; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"devices: {', '.join(devices)}"
    )
    print(f"GPU appetite: {GPU_APPETITE}\n")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAM2_ADAPT_DATA"] = tmp
        cards = fake_data(Path(tmp), tuple(args.ct_shape), args.ct_cases, args.images)
        rows = []
        header = [
            "data",
            "cache",
            "workers",
            "path",
            "index+cache s",
            "loader samples/s",
            "per loader process",
            "samples per loader CPU s",
            "bytes/sample",
            *[f"device ms/batch ({d})" for d in devices],
        ]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for name, data in cards.items():
            if name[:2].lower() not in args.data:
                continue
            for cache in args.caches:
                for workers in args.workers:
                    built = {
                        path: build(
                            data,
                            args.size,
                            args.batch,
                            workers,
                            cache,
                            Path(tmp) / f"cache-{cache}-{workers}-{path}",
                            native,
                        )
                        for path, native in PATHS.items()
                    }  # each disk cache starts cold
                    rates: dict[str, list[float]] = {path: [] for path in PATHS}
                    per_cpu: dict[str, list[float]] = {path: [] for path in PATHS}
                    last: dict[str, dict[str, object]] = {}
                    for _ in range(args.rounds):  # alternate the paths: the machine's load hits both alike
                        for path, (dm, _) in built.items():
                            rate, cpu_rate, last[path] = loader_rate(dm, args.batches)
                            rates[path].append(rate)
                            per_cpu[path].append(cpu_rate)
                    for path, (dm, prepare) in built.items():
                        samples = median(rates[path])
                        device = [
                            device_seconds(dm, last[path], d, args.device_repeats) * 1e3 if PATHS[path] else 0.0
                            for d in devices
                        ]
                        rows.append((name, cache, workers, path, samples))
                        cells = [
                            name,
                            cache,
                            str(workers),
                            path,
                            f"{prepare:.1f}",
                            f"{samples:.1f}",
                            f"{samples / max(workers, 1):.1f}",
                            f"{median(per_cpu[path]):.1f}",
                            f"{shipped_bytes(last[path]):,.0f}",
                            *[f"{ms:.1f}" if PATHS[path] else "-" for ms in device],
                        ]
                        print("| " + " | ".join(cells) + " |", flush=True)
        print(f"\n{load()} at the end of the loader rows")
        print(
            "loader: resize + augmentation on the loader (data.device_transforms=false); device: native slices "
            "out, resize + augmentation in on_after_batch_transfer (data.device_transforms=true); per loader "
            "process = samples/s / max(workers, 1); samples per loader CPU s = what one loader process gives with a "
            "core of its own (CPU seconds of the loader process(es), the least disturbed by other jobs); rates are "
            "medians of the rounds"
        )
        if args.no_model:
            return
        model_batch = args.model_batch or args.batch
        if args.model_rate:
            rate = args.model_rate
            print(f"\nmodel: {rate:.3f} samples/s (given with --model-rate)\n")
        else:
            print(
                f"\nmodel: {args.model} LoRA training step, batch {model_batch} at {args.size} px, CPU "
                f"({torch.get_num_threads()} threads) ...",
                flush=True,
            )
            rate = model_rate(args.model, args.size, model_batch, args.model_steps)
            print(f"model consumes {rate:.3f} samples/s\n")
        print("| data | cache | workers | path | loader samples/s | loader / CPU model |")
        print("|---|---|---|---|---|---|")
        for name, cache, workers, path, samples in rows:
            print(f"| {name} | {cache} | {workers} | {path} | {samples:.1f} | {samples / rate:.0f}x |")


if __name__ == "__main__":
    main()
