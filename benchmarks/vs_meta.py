"""Our inference path against Meta's SAM2 code (``sam2==1.1.0``), side by side in one process.

Both models hold the same random SAM2.1 hiera-tiny weights: Meta's ``build_sam2`` builds the
network from Meta's own config (``sam2.1_hiera_t.yaml``), ``meta_reference.random_checkpoint``
draws every tensor and saves a Meta ``.pt``, and our ``load_sam2`` reads it (as
``tests/test_meta_parity.py`` does, with the same test scene ``natural_image``; the speed of a
network does not depend on its weights). Meta's code comes from its PyPI source distribution
through ``tests/meta_reference.py``, imported here by path: the ``adapt`` package never imports
Meta's code.

Rows (``ours`` / ``Meta``):

* ``encoder``: normalised pixels ``[1, 3, S, S]`` to the decoder's three embedding levels:
  ``primitives.image_embeddings`` / ``forward_image`` + ``_prepare_backbone_features`` + the
  no-memory embedding (what ``SAM2ImagePredictor.set_image`` runs after its transforms).
* ``one-box predict``: an 8-bit RGB image and a box to a boolean mask at the image's size:
  ``Predictor.segment`` (the ``/ 255`` included) / ``set_image`` + ``predict(box,
  multimask_output=False)``.
* ``decoder + upsampling``: the same box on cached embeddings: ``model_prompts`` + ``Predictor.decode`` +
  ``Predictor.masks`` / ``predict`` after ``set_image``.
* ``video, per frame``: a box on frame 0 of a folder of JPEG frames, tracked through every frame
  (reading and resizing the frames included), divided by the number of frames:
  ``read_frames`` + ``propagate(stop_after=None)`` / ``init_state`` + ``add_new_points_or_box`` +
  ``propagate_in_video``. Both fill holes of <= 8 low-res pixels (Meta through the CPU stand-in
  of its CUDA connected components in ``meta_reference``; on a GPU without Meta's compiled
  extension, Meta's code skips hole filling).

Each row runs ``--warmup`` untimed rounds, then ``--repeats`` rounds in which the
implementations take turns, the order rotating each round (the decoder row, a fraction of a
second, runs ``--decoder-repeats`` rounds, the video row ``--video-repeats``). Reported: the medians of wall and
process CPU seconds and their ratios ours / Meta, the median of the per-round wall ratios
(``paired``) and the ratio of the fastest rounds (``fastest``: other jobs only add time). CPU
seconds are less disturbed by other jobs on a shared machine.

``--before`` adds our path as it was before issue 17 to the same rounds (transformers' own
modules, ``adapt.models.sam2_patches.unpatch_sam2``; video frames encoded 8 at a time), so
before, after and Meta are timed side by side.

    python benchmarks/vs_meta.py                                   # CPU, 2 threads, 1024 px
    python benchmarks/vs_meta.py --before                          # ... and our path before issue 17
    python benchmarks/vs_meta.py --threads 1 --video-size 512 --frames 6
    python benchmarks/vs_meta.py --precision bf16                  # both under bf16 autocast
    python benchmarks/vs_meta.py --device cuda --precision bf16 --compile
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # Meta's progress bars; read when tqdm is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def meta_reference() -> Any:
    """``tests/meta_reference.py`` loaded by path (it is test code, not part of ``adapt``)."""
    spec = importlib.util.spec_from_file_location("meta_reference", REPO / "tests" / "meta_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["meta_reference"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Row:
    """Timings of one benchmark row: ``(wall, cpu)`` seconds per round of each implementation."""

    name: str
    per: int = 1  # divide by this (frames per video run)
    times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def median(self, which: str, index: int = 0) -> float:
        """Median wall (``index`` 0) or CPU (1) seconds of ``which``, per frame."""
        return statistics.median(t[index] for t in self.times[which]) / self.per

    def paired(self, which: str, other: str = "meta") -> float:
        """Median over rounds of ``which`` / ``other`` within the round (wall)."""
        return statistics.median(a[0] / b[0] for a, b in zip(self.times[which], self.times[other]))

    def fastest(self, which: str, other: str = "meta") -> float:
        """``which`` / ``other`` of their fastest rounds (wall): other jobs only ever add time."""
        return min(t[0] for t in self.times[which]) / min(t[0] for t in self.times[other])


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds of ``fn()`` (GPU work finished)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleave(row: Row, runs: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device) -> Row:
    """Warm every implementation up, then run them in turn ``repeats`` times; the order rotates
    by one each round, so none is always first (or always after the same one)."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    names = list(runs)
    for k in range(repeats):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            row.times.setdefault(name, []).append(timed(runs[name], device))
    return row


@contextlib.contextmanager
def transformers_modules(model: torch.nn.Module) -> Iterator[None]:
    """Our model with transformers' own SAM2 modules for the block (``unpatch_sam2``), patched again after."""
    from adapt.models.sam2_patches import patch_sam2, unpatch_sam2

    unpatch_sam2(model)
    try:
        yield
    finally:
        patch_sam2(model)


def as_before(model: torch.nn.Module, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run as our path was before issue 17: transformers' modules unpatched."""

    def run() -> Any:
        with transformers_modules(model):
            return fn()

    return run


class Setup:
    """Both implementations on identical random weights, with the inputs of every row."""

    def __init__(self, meta_sam2: Any, ref: Any, args: argparse.Namespace, folder: Path) -> None:
        from adapt.adapters.loading import LoadedAdapter
        from adapt.inference.runner import Predictor
        from adapt.models.sam2 import load_sam2

        self.args, self.device, self.folder = args, torch.device(args.device), folder
        self.checkpoint = ref.random_checkpoint(meta_sam2, folder / "sam2.1_hiera_tiny_random.pt", SEED)

        image_predictor = meta_sam2.module("sam2_image_predictor").SAM2ImagePredictor
        self.meta = image_predictor(
            meta_sam2.build(self.checkpoint, overrides=ref.video_overrides(args.size)).to(self.device)
        )
        # Meta's image predictor hard-codes the feature sizes of a 1024 px model.
        self.meta._bb_feat_sizes = [(args.size // stride,) * 2 for stride in (4, 8, 16)]
        ours, info = load_sam2("sam2.1_hiera_tiny", checkpoint=str(self.checkpoint), image_size=args.size)
        loaded = LoadedAdapter(
            model=ours.eval(), preprocessing={}, label_map={}, metadata={}, model_info=info, path=folder
        )
        self.ours = Predictor(loaded, device=args.device)
        if args.compile:
            self.ours.model.vision_encoder.compile()
            self.meta.model.image_encoder.compile()

        self.image = ref.natural_image(args.height, args.width)
        self.box = np.round([0.3 * args.width, 0.2 * args.height, 0.7 * args.width, 0.8 * args.height]).astype(
            np.float32
        )
        unit = torch.from_numpy(self.image.transpose(2, 0, 1).astype(np.float32) / 255)[None]
        from adapt.models.primitives import preprocess

        self.pixels = preprocess(unit, args.size).to(self.device)
        self.meta.set_image(self.image)
        with torch.inference_mode():
            self.embeddings = self.ours.embed(self.image.transpose(2, 0, 1)[None] / np.float32(255))

    # --- image rows ---

    def ours_encoder(self) -> Any:
        from adapt.models.primitives import image_embeddings

        with torch.inference_mode():
            return image_embeddings(self.ours.model, self.pixels)

    def meta_encoder(self) -> Any:
        """What ``SAM2ImagePredictor.set_image`` runs after its transforms."""
        model = self.meta.model
        with torch.no_grad():
            backbone_out = model.forward_image(self.pixels)
            _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
            return [
                feat.permute(1, 2, 0).view(1, -1, *size)
                for feat, size in zip(vision_feats[::-1], self.meta._bb_feat_sizes[::-1])
            ][::-1]

    def ours_one_box(self) -> np.ndarray:
        return self.ours.segment(self.image.transpose(2, 0, 1) / np.float32(255), box=self.box)

    def meta_one_box(self) -> np.ndarray:
        self.meta.set_image(self.image)
        return self.meta.predict(box=self.box, multimask_output=False)[0]

    def ours_decoder(self) -> np.ndarray:
        height, width = self.image.shape[:2]
        with torch.inference_mode():
            prompts = self.ours.model_prompts(height, width, boxes=self.box[None])
            prediction = self.ours.decode(self.embeddings, prompts)
            return self.ours.masks(prediction, height, width).cpu().numpy()

    def meta_decoder(self) -> np.ndarray:
        return self.meta.predict(box=self.box, multimask_output=False)[0]


class VideoSetup:
    """A folder of JPEG frames and both video models (model side ``--video-size``)."""

    def __init__(self, meta_sam2: Any, ref: Any, setup: Setup, args: argparse.Namespace) -> None:
        from adapt.models.sam2 import load_sam2

        size = args.video_size
        self.device = setup.device
        self.frames_dir = setup.folder / "frames"
        self.frames_dir.mkdir()
        for t in range(args.frames):  # Meta reads "<frame index>.jpg"
            Image.fromarray(ref.natural_image(args.video_height, args.video_width, seed=1, t=t)).save(
                self.frames_dir / f"{t:05d}.jpg", quality=95
            )
        self.box = np.round(
            [0.3 * args.video_width, 0.2 * args.video_height, 0.7 * args.video_width, 0.8 * args.video_height]
        ).astype(np.float32)
        self.meta = meta_sam2.build(setup.checkpoint, video=True, overrides=ref.video_overrides(size)).to(self.device)
        self.ours, _ = load_sam2("sam2.1_hiera_tiny", video=True, checkpoint=str(setup.checkpoint), image_size=size)
        self.ours = self.ours.to(self.device).eval()
        if args.compile:
            self.ours.vision_encoder.compile()
            self.meta.image_encoder.compile()

    def run_ours(self, chunk: int | None = None) -> np.ndarray:
        from adapt.inference import propagation

        frames = propagation.read_frames(self.frames_dir)
        return propagation.propagate(
            self.ours,
            frames,
            {0: propagation.SlicePrompt(boxes=self.box)},
            stop_after=None,
            device=self.device,
            chunk=chunk,
        ).masks

    def run_before(self) -> np.ndarray:
        """As before issue 17: transformers' modules unpatched, frames encoded 8 at a time."""
        with transformers_modules(self.ours):
            return self.run_ours(chunk=8)

    def run_meta(self) -> list[np.ndarray]:
        state = self.meta.init_state(video_path=str(self.frames_dir))
        self.meta.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=self.box)
        return [(masks[0, 0] > 0).cpu().numpy() for _, _, masks in self.meta.propagate_in_video(state)]


def precision_context(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """bf16 autocast around both implementations (``--precision bf16``), else nothing."""
    if args.precision == "bf16":
        return torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[Row]) -> str:
    """Markdown: medians of ours and Meta (and ours before issue 17, when timed) with their ratios."""
    before = any("before" in row.times for row in rows)
    head = ["row", "ours s", "Meta s", "ours/Meta", "paired", "fastest", "ours CPU s", "Meta CPU s", "CPU ours/Meta"]
    if before:
        head += ["before s", "before/Meta", "before CPU/Meta", "ours/before paired"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ow, mw, oc, mc = row.median("ours"), row.median("meta"), row.median("ours", 1), row.median("meta", 1)
        cells = [
            row.name,
            f"{ow:.4f}",
            f"{mw:.4f}",
            f"{ow / mw:.3f}",
            f"{row.paired('ours'):.3f}",
            f"{row.fastest('ours'):.3f}",
            f"{oc:.4f}",
            f"{mc:.4f}",
            f"{oc / mc:.3f}",
        ]
        if before:
            bw, bc = row.median("before"), row.median("before", 1)
            cells += [f"{bw:.4f}", f"{bw / mw:.3f}", f"{bc / mc:.3f}", f"{row.paired('ours', 'before'):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="model side for the image rows")
    parser.add_argument("--height", type=int, default=1024, help="image height (pixels)")
    parser.add_argument("--width", type=int, default=1024, help="image width (pixels)")
    parser.add_argument("--video-size", type=int, default=1024, help="model side for the video row")
    parser.add_argument("--video-height", type=int, default=None, help="frame height (default: video size)")
    parser.add_argument("--video-width", type=int, default=None, help="frame width (default: video size)")
    parser.add_argument("--frames", type=int, default=6, help="frames of the video (0 skips the video row)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--decoder-repeats", type=int, default=31, help="rounds of the (short) decoder row")
    parser.add_argument("--video-repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = both under torch.autocast(bfloat16)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile both image encoders")
    parser.add_argument(
        "--before",
        action="store_true",
        help="also time our path as before issue 17 in the same rounds: transformers' SAM2 "
        "modules unpatched (adapt.models.sam2_patches.unpatch_sam2), video frames "
        "encoded 8 at a time",
    )
    parser.add_argument(
        "--rows",
        default="encoder,one-box,decoder,video",
        help="comma-separated subset of encoder, one-box, decoder, video",
    )
    args = parser.parse_args(argv)
    args.video_height = args.video_height or args.video_size
    args.video_width = args.video_width or args.video_size
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    ref = meta_reference()
    wanted = set(args.rows.split(","))
    device = torch.device(args.device)
    print(
        f"# torch {torch.__version__}, {args.threads} threads, device {args.device}, precision {args.precision}"
        f"{', compiled encoders' if args.compile else ''}; "
        f"load average at start {load()}\n",
        flush=True,
    )
    rows: list[Row] = []
    with ref.meta_package() as meta_sam2, tempfile.TemporaryDirectory() as tmp, precision_context(args):
        setup = Setup(meta_sam2, ref, args, Path(tmp))
        image_rows = (
            ("encoder", f"encoder {args.size}", setup.ours_encoder, setup.meta_encoder, args.repeats),
            (
                "one-box",
                f"one-box predict {args.width}x{args.height}",
                setup.ours_one_box,
                setup.meta_one_box,
                args.repeats,
            ),
            ("decoder", "decoder + upsampling", setup.ours_decoder, setup.meta_decoder, args.decoder_repeats),
        )
        for key, name, ours, meta, repeats in image_rows:
            if key in wanted:
                runs = {"ours": ours, "meta": meta}
                if args.before:
                    runs["before"] = as_before(setup.ours.model, ours)
                rows.append(interleave(Row(name), runs, repeats, args.warmup, device))
                print(table(rows[-1:]).splitlines()[-1], f"(load {load()})", flush=True)
        if "video" in wanted and args.frames:
            video = VideoSetup(meta_sam2, ref, setup, args)
            runs = {"ours": video.run_ours, "meta": video.run_meta}
            if args.before:
                runs["before"] = video.run_before
            name = f"video {args.video_size}, per frame ({args.frames} frames)"
            rows.append(interleave(Row(name, per=args.frames), runs, args.video_repeats, args.warmup, device))
            print(table(rows[-1:]).splitlines()[-1], f"(load {load()})", flush=True)
    print()
    print(table(rows))
    print(f"\nload average at end {load()}")


if __name__ == "__main__":
    main()
