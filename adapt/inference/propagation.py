"""Segment a whole volume or video from prompts on a few slices, through SAM2's memory.

::

    result = propagate(model, volume, {42: SlicePrompt(boxes=[[120, 80, 200, 170]])})
    result.masks            # bool [N, D, H, W] in the volume's own slice grid
    result.forward, result.backward   # slices visited in each direction, in order

A volume ``[D, H, W]`` (or ``[D, C, H, W]``, or video frames ``[T, C, H, W]``) in [0, 1] is
resized slice by slice to SAM2's square input; prompts are given in the input's pixel grid
(``x`` = column, ``y`` = row) and mapped to the model's. The prompted slices are decoded
first, then SAM2 tracks forward and backward from the first prompted slice, each direction
with its own memory (``adapt.models.tracking``), and stops in a direction once every object
has been judged absent (object score at or below ``score_threshold``) on ``stop_after``
consecutive slices: the organ has ended. Logits are resized back bilinearly to the input's
in-plane size before thresholding. Frames are encoded lazily in chunks along the direction,
so a long scan never holds more than a chunk of image features.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from adapt.data.formats import FORMATS
from adapt.errors import ConfigError, DataError
from adapt.models.channels import model_pixels
from adapt.models.memory import (
    FrameFeatures,
    FramePrompt,
    MemoryTracker,
    StepOutput,
    encode_frames,
)
from adapt.models.postprocess import FILL_HOLE_AREA
from adapt.models.primitives import (
    base_model,
    resize_bilinear,
    resize_video_frames,
    to_model_coords,
    upsample_logits,
)
from adapt.models.tracking import DIRECTIONS, Direction, follow, visiting_order

#: Frame files ``read_frames`` takes from a folder: pictures and TIFFs (each read as RGB by Pillow).
IMAGE_SUFFIXES = FORMATS["pillow"].suffixes + FORMATS["tiff"].suffixes


@dataclass
class SlicePrompt:
    """Prompts for ``N`` objects on one slice or frame, in the input's pixel grid.

    One object may be given without its leading axis (``boxes=[x0, y0, x1, y1]``). Give
    boxes and/or points (labels 1 = object, 0 = background), or a mask, not both.

    Attributes:
        boxes: ``[N, 4]`` xyxy.
        points: ``[N, k, 2]`` ``(x, y)``.
        labels: ``[N, k]``; all 1 when omitted.
        mask: ``[N, H, W]`` binary, at the input's in-plane size.
    """

    boxes: np.ndarray | Sequence | None = None
    points: np.ndarray | Sequence | None = None
    labels: np.ndarray | Sequence | None = None
    mask: np.ndarray | None = None

    def to_model(self, height: int, width: int, size: int, device: torch.device) -> FramePrompt:
        """The same prompt on the model's ``size`` x ``size`` grid, mapped as SAM2 maps it."""

        def grid(xy: np.ndarray) -> torch.Tensor:
            return to_model_coords(torch.as_tensor(xy, dtype=torch.float32, device=device), height, width, size)

        if self.mask is not None:
            mask = torch.as_tensor(np.asarray(self.mask), device=device).float()
            mask = mask[None] if mask.ndim == 2 else mask
            if mask.shape[-2:] != (height, width):
                raise ConfigError(
                    f"mask prompt of shape {tuple(mask.shape[-2:])} differs from the slices' {(height, width)}"
                )
            # As transformers' video processor: antialiased resize, then back to binary.
            mask = resize_bilinear(mask, size) >= 0.5
            return FramePrompt.build(mask=mask)
        boxes = points = labels = None
        if self.boxes is not None:
            boxes = grid(np.asarray(self.boxes, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)
        if self.points is not None:
            raw = np.asarray(self.points, np.float32)
            raw = raw[None] if raw.ndim == 2 else raw
            points = grid(raw)
            given = np.ones(raw.shape[:2]) if self.labels is None else np.asarray(self.labels).reshape(raw.shape[:2])
            labels = torch.as_tensor(given, dtype=torch.long, device=device)
        try:
            return FramePrompt.build(boxes=boxes, points=points, labels=labels)
        except ValueError as err:
            raise ConfigError(f"invalid slice prompt: {err}") from None


@dataclass
class Propagation:
    """The result of ``propagate``.

    Attributes:
        masks: ``bool [N, D, H, W]``, one volume per object, in the input's grid.
        scores: object-score logits ``[D, N]`` (NaN on slices never visited).
        prompted: the prompted slices.
        forward: slices tracked forward, in visiting order.
        backward: slices tracked backward, in visiting order.
        seconds: wall time of the propagation (encoding included).
    """

    masks: np.ndarray
    scores: np.ndarray
    prompted: list[int]
    forward: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def visited(self) -> list[int]:
        """Every slice with a prediction, sorted."""
        return sorted(self.prompted + self.forward + self.backward)

    @property
    def fps(self) -> float:
        """Slices (frames) segmented per second."""
        return len(self.visited) / self.seconds if self.seconds > 0 else float("nan")

    def label_map(self) -> np.ndarray:
        """Integer labels ``[D, H, W]``: object ``i`` as ``i + 1`` (later objects drawn over earlier)."""
        out = np.zeros(self.masks.shape[1:], dtype=np.uint16 if len(self.masks) > 255 else np.uint8)
        for i, mask in enumerate(self.masks):
            out[mask] = i + 1
        return out


def default_chunk(device: torch.device) -> int:
    """Frames per image-encoder batch: 8 on a GPU, 1 on a CPU, where a batch costs more per frame
    (hiera-tiny, 1 thread: batches of 4 took 1.2x the CPU seconds per frame at 1024 px and 1.05x
    at 512; ``benchmarks/RESULTS.md``), as SAM2's video predictor encodes one frame at a time."""
    return 1 if device.type == "cpu" else 8


class _LazyFeatures:
    """Image features on demand, encoded ``chunk`` frames at a time along the tracking direction."""

    def __init__(self, model: torch.nn.Module, frames: torch.Tensor, size: int, chunk: int, device: torch.device):
        self.model, self.frames, self.size, self.chunk, self.device = model, frames, size, max(1, chunk), device
        self.cache: dict[int, FrameFeatures] = {}

    def encode(self, indices: Sequence[int]) -> None:
        todo = [i for i in indices if i not in self.cache]
        if todo:
            frames = self.frames[todo]
            if frames.dtype == torch.uint8:  # a video: frames resized as SAM2's video predictor does
                frames = resize_video_frames(frames, self.size)
            pixels = model_pixels(self.model, frames.to(self.device, torch.float32), self.size)
            self.cache.update(zip(todo, encode_frames(self.model, pixels)))

    def pop(self, frame: int, reverse: bool = False) -> FrameFeatures:
        if frame not in self.cache:
            step = -1 if reverse else 1
            stop = max(frame - self.chunk, -1) if reverse else min(frame + self.chunk, len(self.frames))
            self.encode(range(frame, stop, step))
        return self.cache.pop(frame)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (SAM2's inference behaviour), restoring the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_frames(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    frames = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume)
    if frames.ndim == 3:
        frames = frames[:, None]
    if frames.ndim != 4:
        raise DataError(f"propagate expects a volume [D, H, W] or frames [T, C, H, W], got shape {tuple(frames.shape)}")
    if frames.is_floating_point() and frames.numel() and (frames.min() < -1e-3 or frames.max() > 1 + 1e-3):
        raise DataError(
            "propagate expects intensities in [0, 1]; window or rescale the volume first "
            "(e.g. adapt.inference.io.to_unit)"
        )
    if frames.dtype == torch.uint8 and frames.shape[1] == 3:
        return frames  # 8-bit RGB video: resized as 8-bit images (resize_video_frames)
    return frames.float() if frames.is_floating_point() else frames.float() / 255.0


def propagate(
    model: torch.nn.Module,
    volume: np.ndarray | torch.Tensor,
    prompts: Mapping[int, SlicePrompt],
    direction: Direction = "both",
    stop_after: int | None = 3,
    score_threshold: float = 0.0,
    chunk: int | None = None,
    autocast: torch.dtype | None = None,
    storage_dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device | None = None,
    on_frame: Callable[[int, str], None] | None = None,
    fill_hole_area: int = FILL_HOLE_AREA,
) -> Propagation:
    """Segment every slice of ``volume`` from prompts on a few slices, with SAM2's memory.

    Args:
        model: ``Sam2VideoModel`` (possibly with an adapter); run in eval mode, then restored.
        volume: ``[D, H, W]`` or ``[D, C, H, W]`` in [0, 1]; 8-bit RGB frames ``[T, 3, H, W]``
            (``read_frames``) are resized as SAM2's video predictor resizes them
            (``resize_video_frames``: Pillow bicubic on the 8-bit frame), other uint8 input / 255.
        prompts: slice index -> the prompt of every object there (the same objects on each).
        direction: ``both`` (default), ``forward`` or ``backward`` from the prompted slices.
        stop_after: stop a direction once all objects were absent on this many consecutive
            slices; ``None`` visits every slice.
        score_threshold: object-score logit at or below which an object counts as absent.
        chunk: frames encoded per image-encoder batch; ``None`` = ``default_chunk(device)``.
        autocast: e.g. ``torch.bfloat16`` to run under ``torch.autocast``; ``None`` = full precision.
        storage_dtype: memory-bank dtype (bfloat16 as SAM2's predictors store it).
        device: where to run; default the model's device.
        on_frame: called as ``on_frame(slice, "prompt" | "forward" | "backward")`` after each
            slice (progress bars).
        fill_hole_area: background regions of at most this many low-res pixels become object,
            as in SAM2's video predictor (default 8, its value; 0 turns it off).

    Raises:
        ConfigError: no prompt, a prompted slice outside the volume, or invalid prompts.
        DataError: the volume's shape or intensity range is not usable.
    """
    frames = _as_frames(volume)
    depth, _, height, width = frames.shape
    if not prompts:
        raise ConfigError("propagate needs a prompt on at least one slice")
    bad = [k for k in prompts if not 0 <= int(k) < depth]
    if bad:
        raise ConfigError(f"prompted slices {bad} are outside the volume (slices 0..{depth - 1})")
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    sam = base_model(model)
    device = torch.device(device) if device is not None else next(sam.parameters()).device
    size = int(sam.config.image_size)
    started = time.perf_counter()
    cast = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    with _eval_mode(model), torch.inference_mode(), cast:
        features = _LazyFeatures(model, frames, size, chunk or default_chunk(device), device)
        tracker = MemoryTracker(model, depth, storage_dtype, fill_hole_area=fill_hole_area)
        model_prompts = {int(k): p.to_model(height, width, size, device) for k, p in prompts.items()}
        counts = {p.num_objects for p in model_prompts.values()}
        if len(counts) > 1:
            raise ConfigError(f"every prompted slice must carry the same objects; got counts {sorted(counts)}")
        objects = counts.pop()
        result = Propagation(
            masks=np.zeros((objects, depth, height, width), dtype=bool),
            scores=np.full((depth, objects), np.nan),
            prompted=sorted(model_prompts),
        )
        features.encode(result.prompted)
        streak = np.zeros(objects, dtype=int)  # consecutive slices each object was absent on, this direction
        gone = lambda out: stop_after is not None and bool((streak >= stop_after).all())  # noqa: E731
        order = visiting_order(depth, result.prompted, direction)
        current = "prompt"
        for k, where, out in follow(tracker, model_prompts, order, features.pop, gone):
            scores = _store(result, k, out, height, width)
            if where != current:
                streak[:], current = 0, where
            if where != "prompt":
                (result.backward if where == "backward" else result.forward).append(k)
                streak[:] = np.where(scores <= score_threshold, streak + 1, 0)
            if on_frame:
                on_frame(k, where)
    result.seconds = time.perf_counter() - started
    return result


def _store(result: Propagation, k: int, out: StepOutput, height: int, width: int) -> np.ndarray:
    """Write slice ``k``'s masks (upsampled to the input grid) and scores; return the scores."""
    result.masks[:, k] = (upsample_logits(out.low_res[:, 0], (height, width)) > 0).cpu().numpy()
    scores = out.object_score.float()[:, 0].cpu().numpy()
    result.scores[k] = scores
    return scores


def read_frames(source: str | Path | Sequence[str | Path]) -> np.ndarray:
    """Video frames ``[T, 3, H, W]`` uint8 from a folder of images (sorted by name) or a list of files."""
    from PIL import Image

    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder of frames")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise DataError(f"no frames ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"frames differ in size: {sorted(shapes)}")
    return np.stack(frames).transpose(0, 3, 1, 2)
