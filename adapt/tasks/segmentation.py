"""Prompted 2D segmentation: one forward of SAM2 per slice or image, per-object masks.

A batch carries images and, per object, a binary mask and its simulated prompt (box
and/or points). SAM2's low-resolution logits are upsampled to the label's grid before the
loss. With a single ambiguous point SAM2 returns three candidate masks; training
supervises the best one (as SAM does) and evaluation keeps the one with the highest
predicted IoU, which is what a user of the model gets.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from adapt.losses import LossWeights, segmentation_loss
from adapt.metrics import dice_score, iou_score
from adapt.models.sam2 import preprocess
from adapt.tasks.base import BaseTask


class SegmentationTask(BaseTask):
    """Promptable segmentation of every object of a batch, trained with Dice + BCE/focal + IoU."""

    def configure_losses(self) -> None:
        self.loss_weights = LossWeights(**self.hparams.loss)

    @staticmethod
    def wants_multimask(batch: dict[str, Any]) -> bool:
        """Three candidates only for a single point with no box: the ambiguous prompt."""
        points = batch.get("points")
        return batch.get("boxes") is None and points is not None and points.shape[-2] == 1

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``[B, N, M, H, W]`` at the image's resolution and IoU predictions ``[B, N, M]``."""
        image = batch["image"]
        output = self.model(
            pixel_values=preprocess(image, self.image_size),
            input_boxes=batch.get("boxes"),
            input_points=batch.get("points"),
            input_labels=batch.get("point_labels"),
            multimask_output=self.wants_multimask(batch),
        )
        low_res = output.pred_masks
        b, n, m = low_res.shape[:3]
        logits = F.interpolate(
            low_res.flatten(0, 2).unsqueeze(1).float(),
            size=image.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        return logits.view(b, n, m, *image.shape[-2:]), output.iou_scores

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        logits, iou_pred = self(batch)
        target = batch["label"]
        loss, parts, best = segmentation_loss(logits, target, iou_pred, self.loss_weights)
        if stage != "train":
            best = iou_pred.argmax(dim=2)  # what inference picks, without the ground truth
        chosen = logits.gather(2, best[:, :, None, None, None].expand(-1, -1, 1, *logits.shape[-2:]))
        pred = chosen.squeeze(2) > 0
        objects = target.shape[0] * target.shape[1]
        log = dict(on_step=stage == "train", on_epoch=True, batch_size=objects, sync_dist=stage != "train")
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        for name, value in parts.items():
            self.log(f"{stage}/loss_{name}", value, **log)
        self.log(f"{stage}/dice", dice_score(pred, target > 0.5).mean(), prog_bar=stage != "train", **log)
        self.log(f"{stage}/iou", iou_score(pred, target > 0.5).mean(), **log)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")
