"""Train SAM2's memory on clips: prompt one or a few frames, predict the rest through memory.

Each clip of a batch (``adapt.data.clips``) runs through ``adapt.models.tracking.track_clip``
on ``Sam2VideoModel`` with the autograd graph kept across frames, so the loss on a frame
that had no prompt reaches the memory encoder, memory attention, object pointers and every
adapter layer on the way (LoRA presets ``memory`` and ``all`` included).

The loss follows SAM2's training recipe, per frame and object, averaged over the clip:

* frames where the target is **present**: Dice + BCE (or focal) on the best of the decoder's
  candidate masks, plus the MSE between the predicted IoU and the candidates' real IoU,
  plus the object-presence BCE on the object-score logit (target 1);
* frames where the target is **absent**: the presence BCE alone (target 0).

Why absent frames get no empty-mask terms: in SAM2 an object judged absent has its masks
replaced by a constant "no object" logit (``NO_OBJ_SCORE``), so the presence head, not the
mask head, is responsible for empty frames; supervising the mask head towards empty masks
there would spend its capacity on outputs inference throws away (SAM2's own loss multiplies
the mask terms by the object's presence for the same reason). Mask terms are computed on
the decoder's candidates *before* that replacement, so a frame the model wrongly judges
absent still teaches the mask head (instead of a constant -1024 logit with no gradient).
Frames a one-directional run never visits are left out of the average.

Logged per stage: ``loss`` and its parts; ``dice``/``iou`` over the whole clip as one 3D
mask per object (the volumetric score, and the monitored ``val/dice``); ``dice_frame``/
``iou_frame`` averaged over frames; ``dice_tracked`` over the frames without a prompt.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from adapt.data.clips import build_clip_datamodule
from adapt.errors import ConfigError, check_choice
from adapt.metrics import dice_score, iou_score
from adapt.models.channels import model_pixels
from adapt.models.primitives import upsample_logits
from adapt.models.tracking import DIRECTIONS, ClipOutput, clip_prompts, track_clip
from adapt.tasks.base import BaseTask
from adapt.tasks.losses import LossWeights, presence_loss, segmentation_loss


def clip_loss(
    out: ClipOutput,
    target: torch.Tensor,
    present: torch.Tensor,
    weights: LossWeights,
    presence_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAM2's clip loss: mask terms where the object is present, presence BCE everywhere.

    Args:
        out: the tracked clip (``T`` frames, ``N`` objects).
        target: ``[T, N, H, W]`` binary masks.
        present: ``[T, N]`` bool, the object on each frame.
        weights: Dice / pixel / IoU weights.
        presence_weight: weight of the object-presence BCE.

    Returns:
        ``(loss, parts)``: the mean over visited (frame, object) pairs of
        ``present * (dice + pixel + iou) + presence_weight * presence_bce``; ``parts`` holds
        the mask terms averaged over present pairs and ``presence`` over all visited pairs.
    """
    size = tuple(target.shape[-2:])
    present = present.bool()
    frames = [t for t in range(len(out.decoder_candidates)) if out.decoder_candidates[t] is not None]
    if not frames:
        raise ValueError("clip_loss: no frame of the clip was visited")
    num_objects = target.shape[1]
    total = target.new_zeros(())
    sums: dict[str, torch.Tensor] = {}
    presence = target.new_zeros(())
    num_present = 0
    for t in frames:
        obj = present[t]
        bce = presence_loss(out.object_score[t][:, 0], obj) * num_objects  # summed over objects
        presence = presence + bce
        total = total + presence_weight * bce
        count = int(obj.sum())
        if count == 0:
            continue
        logits = upsample_logits(out.decoder_candidates[t][obj], size)[None]  # [1, n, M, H, W]
        mask_loss, parts, _ = segmentation_loss(
            logits, target[t][obj][None].float(), out.candidate_iou[t][obj][None], weights
        )
        total = total + mask_loss * count
        for name, value in parts.items():
            sums[name] = sums.get(name, 0) + value * count
        num_present += count
    pairs = len(frames) * num_objects
    parts = {name: value / num_present for name, value in sums.items()}
    parts["presence"] = presence / pairs
    return total / pairs, parts


class PropagationTask(BaseTask):
    """SAM2 with memory, trained on clips of slices or frames (``task=propagation``).

    The ``prompts`` option of ``BaseTask`` takes ``direction`` (``both``, ``forward`` or
    ``backward`` from the prompted frames); ``loss`` takes ``presence`` (weight of the
    object-presence BCE, default 1) besides the segmentation weights.

    Args:
        mask_prompts: prompt with the ground-truth mask of the prompted frames (the data's
            ``prompt.kind=mask``) instead of its simulated boxes/points.
        **kwargs: ``BaseTask``'s options.
    """

    video = True
    #: ``adapt.train`` builds clips, not slices, for this task.
    build_datamodule = staticmethod(build_clip_datamodule)

    def __init__(self, *args: Any, mask_prompts: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask_prompts = mask_prompts
        if self.embedding_cache is not None:
            raise ConfigError(
                "task=propagation does not use the embedding cache (frames are encoded per clip); "
                "set embedding_cache.mode=off"
            )
        if int(self.hparams.prompts.get("iterations", 0)):
            raise ConfigError(
                "prompts.iterations (correction clicks) applies to task=segmentation; "
                "task=propagation prompts once per clip: set prompts.iterations=0"
            )
        direction = self.hparams.prompts.get("direction", "both")
        check_choice("prompts.direction", direction, DIRECTIONS)
        self.direction = direction

    @classmethod
    def options_from_data(cls, datamodule: Any) -> dict[str, Any]:
        return {
            **super().options_from_data(datamodule),
            "mask_prompts": bool(getattr(datamodule, "mask_prompts", False)),
        }

    def configure_losses(self) -> None:
        options = dict(self.hparams.loss)
        self.presence_weight = float(options.pop("presence", 1.0))
        self.loss_weights = LossWeights(**options)

    def forward(self, batch: Mapping[str, Any], index: int) -> ClipOutput:
        """Track clip ``index`` of the batch from its prompted frames (``image`` ``[B, T, C, S, S]``)."""
        pixels = model_pixels(self.model, batch["image"][index], self.image_size)
        return track_clip(self.model, pixels, clip_prompts(batch, index, self.mask_prompts), self.direction)

    def _step(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        label, present = batch["label"], batch["present"]
        clips, num_objects = label.shape[0], label.shape[2]
        size = tuple(label.shape[-2:])
        log = self.log_options(stage, clips * num_objects)
        losses, parts, scores = [], [], {k: [] for k in ("dice", "iou", "dice_frame", "iou_frame", "dice_tracked")}
        for i in range(clips):
            out = self(batch, i)
            loss, clip_parts = clip_loss(out, label[i], present[i], self.loss_weights, self.presence_weight)
            losses.append(loss)
            parts.append(clip_parts)
            visited = out.visited.to(label.device)
            pred = upsample_logits(out.low_res[visited, :, 0], size) > 0  # [T', N, H, W]
            truth = label[i][visited] > 0.5
            scores["dice"].append(dice_score(pred.transpose(0, 1), truth.transpose(0, 1), dims=3))
            scores["iou"].append(iou_score(pred.transpose(0, 1), truth.transpose(0, 1), dims=3))
            per_frame = dice_score(pred, truth)  # [T', N]
            scores["dice_frame"].append(per_frame.mean(0))
            scores["iou_frame"].append(iou_score(pred, truth).mean(0))
            tracked = ~batch["prompt_frames"][i][visited]
            if tracked.any():
                scores["dice_tracked"].append(per_frame[tracked].mean(0))
        loss = torch.stack(losses).mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        for name in parts[0]:
            self.log(f"{stage}/loss_{name}", torch.stack([p[name] for p in parts if name in p]).mean(), **log)
        for name, values in scores.items():
            if values:
                self.log(
                    f"{stage}/{name}", torch.cat(values).mean(), prog_bar=name == "dice" and stage != "train", **log
                )
        return loss
