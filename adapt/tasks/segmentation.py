"""Prompted 2D segmentation: one forward of SAM2 per slice or image, per-object masks.

A batch carries images and, per object, a binary mask and its simulated prompt (box
and/or points). SAM2's low-resolution logits are upsampled to the label's grid before the
loss. With a single ambiguous point SAM2 returns three candidate masks; training
supervises the best one (as SAM does) and evaluation keeps the one with the highest
predicted IoU, which is what a user of the model gets. With ``clicks.rounds > 0`` every
step continues with correction clicks (SAM2's interactive training), the previous logits
fed back as the mask prompt.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from adapt.errors import ConfigError, check_choice
from adapt.tasks import CLICK_GRAD
from adapt.tasks.losses import LossWeights, segmentation_loss
from adapt.metrics import dice_score, iou_score
from adapt.models.channels import model_pixels
from adapt.models.interactive import click_rounds
from adapt.models.hiera_prefix import encode_prefix, encode_suffix
from adapt.models.primitives import (
    Prediction,
    base_model,
    decode,
    image_embeddings,
    upsample_logits,
)
from adapt.tasks.base import BaseTask
from adapt.transforms.slices import split_nodata


def sample_keys(batch: Mapping[str, Any]) -> list[str]:
    """``case#slice`` per sample: what identifies an image for the embedding cache."""
    meta = batch.get("meta") or {}
    if "case" not in meta or "slice" not in meta:
        raise ConfigError(
            "the embedding cache needs meta.case and meta.slice in every batch; "
            "set embedding_cache.mode=off for this data"
        )
    return [f"{case}#{int(index)}" for case, index in zip(meta["case"], meta["slice"])]


class SegmentationTask(BaseTask):
    """Promptable segmentation of every object of a batch, trained with Dice + BCE/focal + IoU.

    The ``prompts`` option of ``BaseTask`` sets the correction clicks: ``iterations`` after
    the first prompt (0 = none), ``grad`` (``last``: backpropagate through the last round
    only, as SAM2 trains; ``all``: through every round) and ``seed``.
    """

    @property
    def clicks(self) -> dict[str, Any]:
        prompts = {"iterations": 0, "grad": "last", "seed": 0, **self.hparams.prompts}
        check_choice("prompts.grad", prompts["grad"], CLICK_GRAD)
        return {
            "rounds": int(prompts["iterations"]),
            "grad_all": prompts["grad"] == "all",
            "seed": int(prompts["seed"]),
        }

    def configure_losses(self) -> None:
        self.loss_weights = LossWeights(**self.hparams.loss)

    @staticmethod
    def wants_multimask(batch: Mapping[str, Any]) -> bool:
        """Three candidates only for a single point with no box: the ambiguous prompt."""
        points = batch.get("points")
        return batch.get("boxes") is None and points is not None and points.shape[-2] == 1

    def encode(self, batch: Mapping[str, Any]) -> list[torch.Tensor]:
        """Image embeddings of the batch's images (``[B, C, H, W]`` in [0, 1]).

        With an embedding cache the frozen encoder (or the frozen prefix of its Hiera blocks,
        when the adapters sit in the last blocks only) runs only for images not seen before.
        """
        image = batch["image"]
        if self.embedding_cache is None:
            return image_embeddings(self.model, model_pixels(self.model, image, self.image_size))
        start = self.prefix_start

        def compute(indices: list[int]) -> list[torch.Tensor]:
            pixels = model_pixels(self.model, image[indices], self.image_size)
            with torch.no_grad():
                if start is None:
                    return image_embeddings(self.model, pixels)
                return encode_prefix(base_model(self.model), pixels, start)

        cached = self.embedding_cache.fetch(sample_keys(batch), compute, image.device, torch.float32)
        return cached if start is None else encode_suffix(base_model(self.model), cached, start)

    def decode(self, embeddings: list[torch.Tensor], batch: Mapping[str, Any]) -> Prediction:
        """The first prediction from the batch's simulated prompts."""
        return decode(
            self.model,
            embeddings,
            multimask=self.wants_multimask(batch),
            input_boxes=batch.get("boxes"),
            input_points=batch.get("points"),
            input_labels=batch.get("point_labels"),
        )

    @staticmethod
    def upsample(pred: Prediction, size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits ``[B, N, M, h, w]`` to ``[B, N, M, *size]``."""
        return upsample_logits(pred.low_res, size)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``[B, N, M, H, W]`` at the image's resolution and IoU predictions ``[B, N, M]``."""
        pred = self.decode(self.encode(batch), batch)
        return self.upsample(pred, batch["image"].shape[-2:]), pred.iou

    def predictions(self, batch: Mapping[str, Any], stage: str) -> dict[int, Prediction]:
        """Predictions by number of correction clicks (0 = the first prompt alone).

        Training keeps the rounds that carry gradients (the first, and the last or all);
        evaluation keeps every round, for the Dice-versus-clicks curve.
        """
        embeddings = self.encode(batch)
        first = self.decode(embeddings, batch)
        rounds = int(self.clicks["rounds"])
        if rounds == 0:
            return {0: first}
        b, n = batch["label"].shape[:2]
        offset = (self.global_step if stage == "train" else 0) * b * n
        keys = [offset + i for i in range(b * n)]
        later = click_rounds(
            self.model,
            embeddings,
            first,
            batch,
            rounds,
            seed=int(self.clicks["seed"]),
            grad_all=bool(self.clicks["grad_all"]),
            keys=keys,
        )
        kept = {0: first, **{r: p for r, p in enumerate(later, start=1)}}
        if stage == "train" and not self.clicks["grad_all"]:
            kept = {0: first, rounds: later[-1]}
        return kept

    def _step(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        target, valid = split_nodata(batch["label"])  # nodata pixels: out of the loss and the scores
        if valid is not None:
            batch = {**batch, "label": target}
        truth = target > 0.5
        size = target.shape[-2:]
        objects = target.shape[0] * target.shape[1]
        log = self.log_options(stage, objects)
        losses = []
        for clicks, pred in self.predictions(batch, stage).items():
            logits = self.upsample(pred, size)
            loss, parts, best = segmentation_loss(logits, target, pred.iou, self.loss_weights, valid)
            losses.append(loss)
            # Training scores the supervised (best) mask; evaluation the one inference would pick.
            pick = best if stage == "train" else pred.iou.argmax(dim=2)
            mask = logits.gather(2, pick[:, :, None, None, None].expand(-1, -1, 1, *size)).squeeze(2) > 0
            if valid is not None:
                mask = mask & valid
            suffix = f"_click{clicks}" if clicks else ""
            self.log(
                f"{stage}/dice{suffix}", dice_score(mask, truth).mean(), prog_bar=not clicks and stage != "train", **log
            )
            self.log(f"{stage}/iou{suffix}", iou_score(mask, truth).mean(), **log)
            if not clicks:
                for name, value in parts.items():
                    self.log(f"{stage}/loss_{name}", value, **log)
        loss = torch.stack(losses).mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        return loss
