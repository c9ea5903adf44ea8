"""Promptless multi-class segmentation (``task=semantic``): one forward, one mask per class.

SAMed / Medical-SAM-Adapter style: learnable per-class prompt tokens replace the user's
prompt (see ``adapt.models.semantic``), so the model segments every target of the data card
at once and works without ground truth at inference. Trained with softmax cross-entropy
plus Dice over the foreground classes; per-class Dice/IoU and their means are logged.

Batches carry ``label`` as one binary channel per target of the card, in the card's order
(the data layer's ``objects: all``); the class map is background where no channel is set.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from adapt.errors import ConfigError
from adapt.metrics import dice_score, iou_score
from adapt.models.channels import model_pixels
from adapt.models.primitives import image_embeddings, upsample_logits
from adapt.models.semantic import ATTRIBUTE, add_class_prompts, class_logits
from adapt.tasks.base import BaseTask
from adapt.transforms.slices import split_nodata

log = logging.getLogger(__name__)


def class_map(label: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` binary target channels to class indices ``[B, H, W]`` (0 = background)."""
    background = 1 - label.amax(dim=1, keepdim=True)
    return torch.cat([background, label], dim=1).argmax(dim=1)


def soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean soft Dice loss over the foreground channels of ``[B, K, H, W]`` probabilities."""
    inter = (probs * onehot).sum((-1, -2))
    dice = (2 * inter + smooth) / (probs.sum((-1, -2)) + onehot.sum((-1, -2)) + smooth)
    return 1 - dice[:, 1:].mean()


class SemanticTask(BaseTask):
    """Class-aware head over SAM2's mask decoder; every adapter kind trains it.

    Args (beyond ``BaseTask``'s):
        classes: names of the target classes, in the order of the label channels.
    """

    def __init__(self, *args: Any, classes: Sequence[str], **kwargs: Any) -> None:
        if len(classes) < 1:
            raise ConfigError("task=semantic needs at least one target class in the data card")
        self.classes = list(classes)
        super().__init__(*args, classes=list(classes), **kwargs)

    @staticmethod
    def build_datamodule(data_cfg: Mapping[str, Any], **options: Any) -> Any:
        """Slices with every target of the card in one sample, whatever ``data.objects`` says.

        The head predicts all classes at once, so per-object samples (``objects=each``) would
        teach it that the other organs of a slice are background.
        """
        if data_cfg.get("objects", "all") != "all":
            log.info("task=semantic: data.objects=all (every target of a slice in one sample)")
        return BaseTask.build_datamodule({**data_cfg, "objects": "all"}, **options)

    @classmethod
    def options_from_data(cls, datamodule: Any) -> dict[str, Any]:
        return {**super().options_from_data(datamodule), "classes": list(datamodule.card.targets)}

    def prepare_model(self, model: torch.nn.Module) -> list[str]:
        add_class_prompts(model, len(self.classes) + 1)
        return [ATTRIBUTE]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, K, H, W]`` (K = classes + background) at the image's resolution."""
        low_res = class_logits(
            self.model, image_embeddings(self.model, model_pixels(self.model, image, self.image_size))
        )
        return upsample_logits(low_res, image.shape[-2:])

    def _step(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        label, valid = split_nodata(batch["label"])  # nodata pixels: out of the loss and the scores
        if label.shape[1] != len(self.classes):
            raise ConfigError(
                f"task=semantic expects {len(self.classes)} label channels (one per target), "
                f"got {label.shape[1]}; set data.objects=all"
            )
        target = class_map(label)
        logits = self(batch["image"])
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
        if valid is not None:
            probs, onehot, target = probs * valid, onehot * valid, target.masked_fill(~valid[:, 0], -100)
        ce = F.cross_entropy(logits, target, ignore_index=-100)
        dice_loss = soft_dice_loss(probs, onehot)
        loss = ce + dice_loss
        log = self.log_options(stage, label.shape[0])
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        self.log(f"{stage}/loss_ce", ce, **log)
        self.log(f"{stage}/loss_dice", dice_loss, **log)
        pred = F.one_hot(logits.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).bool()[:, 1:]
        if valid is not None:
            pred = pred & valid
        truth = label > 0.5
        dice, iou = dice_score(pred, truth), iou_score(pred, truth)
        for index, name in enumerate(self.classes):
            self.log(f"{stage}/dice_{name}", dice[:, index].mean(), **log)
            self.log(f"{stage}/iou_{name}", iou[:, index].mean(), **log)
        self.log(f"{stage}/dice", dice.mean(), prog_bar=stage != "train", **log)
        self.log(f"{stage}/iou", iou.mean(), **log)
        return loss
