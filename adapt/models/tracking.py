"""Track the objects of a clip through SAM2's memory, with autograd: the training forward pass.

A clip is ``T`` frames (video frames or consecutive slices of a volume) with prompts on a
few of them. The prompted frames are decoded first, without memory; the others are then
predicted in SAM2's visiting order, forward from the first prompted frame and backward from
it, every prediction conditioned on the memory bank (see ``adapt.models.memory``). The two
directions are independent: each sees the prompted frames and its own tracked frames only,
as MedSAM2 runs its volumes (Meta's predictor would let the backward pass read forward
predictions from the far side of the prompt, which are not a slice's neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import torch

from transformers.models.sam2_video.modeling_sam2_video import NO_OBJ_SCORE

from adapt.models.memory import FrameFeatures, FramePrompt, MemoryTracker, StepOutput, encode_frames
from adapt.models.names import DIRECTIONS

Direction = Literal["forward", "backward", "both"]


def visiting_order(num_frames: int, prompted: Sequence[int], direction: Direction = "both") -> list[tuple[int, bool]]:
    """Unprompted frames in tracking order, each as ``(frame, reverse)``.

    ``forward`` visits the frames after the first prompted one, ``backward`` those before the
    last prompted one (towards frame 0), ``both`` the forward pass then the backward pass from
    the first prompted frame, so every frame is visited exactly once.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    marks = sorted(set(int(t) for t in prompted))
    if not marks:
        raise ValueError("SAM2 tracking needs at least one prompted frame")
    if marks[0] < 0 or marks[-1] >= num_frames:
        raise ValueError(f"prompted frames {marks} fall outside 0..{num_frames - 1}")
    skip = set(marks)
    forward = [(t, False) for t in range(marks[0] + 1, num_frames) if t not in skip]
    start = marks[-1] if direction == "backward" else marks[0]
    backward = [(t, True) for t in range(start - 1, -1, -1) if t not in skip]
    return {"forward": forward, "backward": backward, "both": forward + backward}[direction]


@dataclass
class ClipOutput:
    """Per-frame outputs of a tracked clip of ``T`` frames and ``N`` objects.

    Frames not visited (one direction only) hold ``NO_OBJ_SCORE`` logits and scores, IoU 0,
    and ``None`` candidates; ``visited`` says which frames carry predictions.

    Attributes:
        low_res: selected mask logits ``[T, N, 1, h, w]``.
        iou: their predicted IoU ``[T, N, 1]``.
        object_score: object-presence logits ``[T, N, 1]``.
        candidates: per frame, every candidate mask ``[N, M, h, w]`` (for best-of-M losses).
        candidate_iou: per frame, their predicted IoUs ``[N, M]``.
        decoder_candidates: per frame, the decoder's candidates before SAM2 blanks an object
            judged absent (``StepOutput.decoder_candidates``), what training supervises.
        visited: ``[T]`` bool, prompted or tracked.
        prompted: the conditioning frames.
        order: the tracked frames as ``(frame, reverse)`` in visiting order.
    """

    low_res: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    candidates: list[torch.Tensor | None]
    candidate_iou: list[torch.Tensor | None]
    decoder_candidates: list[torch.Tensor | None]
    visited: torch.Tensor
    prompted: list[int]
    order: list[tuple[int, bool]]


def track_clip(
    model: torch.nn.Module,
    pixels: torch.Tensor | None,
    prompts: Mapping[int, FramePrompt],
    direction: Direction = "both",
    storage_dtype: torch.dtype = torch.float32,
    features: Sequence[FrameFeatures] | None = None,
) -> ClipOutput:
    """Run SAM2's prompt-then-track loop over a clip, keeping the autograd graph.

    Args:
        model: ``Sam2VideoModel`` (peft-wrapped or not); ``model.training`` selects SAM2's
            training or inference behaviour (see ``MemoryTracker``).
        pixels: ``[T, 3, S, S]`` normalised frames (``adapt.models.primitives.preprocess``), encoded
            in one batch; or ``None`` with ``features`` precomputed.
        prompts: frame index -> the prompt of every object on that frame.
        direction: ``forward``, ``backward`` or ``both`` (see ``visiting_order``).
        storage_dtype: memory-bank dtype (float32 to train; bfloat16 as transformers infers).
        features: per-frame vision features, instead of ``pixels``.
    """
    if features is None:
        if pixels is None:
            raise ValueError("track_clip needs pixels or precomputed features")
        features = encode_frames(model, pixels)
    num_frames = len(features)
    order = visiting_order(num_frames, list(prompts), direction)
    tracker = MemoryTracker(model, num_frames, storage_dtype)
    outputs = {frame: out for frame, _, out in follow(tracker, prompts, order, lambda t, reverse: features[t])}
    return _collect(outputs, num_frames, sorted(prompts), order)


def follow(
    tracker: MemoryTracker,
    prompts: Mapping[int, FramePrompt],
    order: Sequence[tuple[int, bool]],
    features_at: Callable[[int, bool], FrameFeatures],
    stop: Callable[[StepOutput], bool] | None = None,
) -> Iterator[tuple[int, str, StepOutput]]:
    """SAM2's prompt-then-track loop, the one both training clips and propagation run.

    The prompted frames are decoded and remembered first; then each direction of ``order``
    (``visiting_order``) is tracked with its own memory of tracked frames, the memories no
    later lookup can reach being dropped as it goes. Yields ``(frame, "prompt" | "forward" |
    "backward", output)``; ``stop(output)`` true ends the current direction (the object is gone).

    Args:
        tracker: a fresh ``MemoryTracker`` for the clip or volume.
        prompts: frame index -> the prompt of every object on that frame.
        order: ``(frame, reverse)`` of the unprompted frames, forward pass first.
        features_at: the vision features of a frame (``reverse`` tells lazy encoders the direction).
        stop: an early end of a direction, after the frame that triggers it.
    """
    for frame in sorted(prompts):
        yield frame, "prompt", tracker.prompt(frame, features_at(frame, False), prompts[frame])
    for reverse in (False, True):
        frames = [frame for frame, backwards in order if backwards == reverse]
        tracker.reset_tracking()
        for frame in frames:
            out = tracker.track(frame, features_at(frame, reverse), reverse)
            tracker.forget_beyond(frame, reverse)
            yield frame, "backward" if reverse else "forward", out
            if stop is not None and stop(out):
                break


def _collect(
    outputs: dict[int, StepOutput], num_frames: int, prompted: list[int], order: list[tuple[int, bool]]
) -> ClipOutput:
    """Stack per-frame outputs along time, filling unvisited frames with "absent"."""
    ref = next(iter(outputs.values()))

    def stack(get: Any, fill: float) -> torch.Tensor:
        blank = torch.full_like(get(ref), fill)
        return torch.stack([get(outputs[t]) if t in outputs else blank for t in range(num_frames)])

    visited = torch.zeros(num_frames, dtype=torch.bool)
    visited[list(outputs)] = True
    return ClipOutput(
        low_res=stack(lambda o: o.low_res, NO_OBJ_SCORE),
        iou=stack(lambda o: o.iou, 0.0),
        object_score=stack(lambda o: o.object_score, NO_OBJ_SCORE),
        candidates=[outputs[t].candidates if t in outputs else None for t in range(num_frames)],
        candidate_iou=[outputs[t].candidate_iou if t in outputs else None for t in range(num_frames)],
        decoder_candidates=[_decoder_candidates(outputs[t]) if t in outputs else None for t in range(num_frames)],
        visited=visited,
        prompted=prompted,
        order=order,
    )


def _decoder_candidates(out: StepOutput) -> torch.Tensor:
    return out.candidates if out.decoder_candidates is None else out.decoder_candidates


def clip_prompts(batch: Mapping[str, Any], index: int, mask_prompts: bool = False) -> dict[int, FramePrompt]:
    """The prompts of clip ``index`` of a clip batch, keyed by frame.

    Reads ``prompt_frames [B, T]`` and, on those frames, ``boxes [B, T, N, 4]``,
    ``points [B, T, N, k, 2]`` + ``point_labels [B, T, N, k]``; with ``mask_prompts`` the
    frame's ground truth ``label [B, T, N, S, S]`` is the prompt instead (SAM2's mask prompt).
    """
    frames = torch.nonzero(batch["prompt_frames"][index]).flatten().tolist()
    if not frames:
        raise ValueError(f"clip {index} of the batch has no prompted frame (prompt_frames is all False)")
    prompts = {}
    for t in frames:
        if mask_prompts:
            prompts[t] = FramePrompt.build(mask=batch["label"][index, t] > 0.5)
            continue
        boxes, points, labels = (batch.get(k) for k in ("boxes", "points", "point_labels"))
        prompts[t] = FramePrompt.build(
            boxes=boxes[index, t] if boxes is not None else None,
            points=points[index, t] if points is not None else None,
            labels=labels[index, t] if labels is not None else None,
        )
    return prompts
