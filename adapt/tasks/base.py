"""The LightningModule every task builds on: model, adapter, optimizer, lean checkpoints.

A task builds its SAM2 in ``configure_models`` (frozen base + adapter), hands only the
trainable parameters to AdamW with linear warm-up and cosine decay, and saves only the
trainable weights in its checkpoints: a LoRA checkpoint of hiera-large is megabytes, not
a gigabyte, and resuming loads them over the same frozen base.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from adapt.adapters.registry import apply_adapter, trainable_parameters
from adapt.errors import ConfigError, check_choice
from adapt.models.channels import ATTRIBUTE as CHANNELS_ATTRIBUTE
from adapt.models.channels import add_input_projection, input_projection, wants_projection
from adapt.models.embedding_cache import EmbeddingCache, frozen_prefix, namespace, prefix_cache_wanted
from adapt.models.families import backbone_of_model
from adapt.models.hiera_prefix import first_trained_block
from adapt.models.names import EMBEDDING_CACHE_MODES
from adapt.models.primitives import base_model
from adapt.models.sam2 import (
    ModelInfo,
    count_parameters,
    enable_gradient_checkpointing,
    hiera_blocks,
    load_sam2,
)
from adapt.data.streaming import build_shard_datamodule
from adapt.data.datamodule import build_datamodule

log = logging.getLogger(__name__)


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def capped_warmup(warmup: int, total: int, max_fraction: float) -> int:
    """The warm-up steps of a run of ``total`` optimizer steps: at most ``max_fraction`` of them.

    A warm-up as long as the run (the default 20 steps in a 20-step first try) trains at a tiny
    learning rate throughout and changes nothing; capped, a short run learns. One step of warm-up
    is the same schedule as none, so the cap never goes below one.
    """
    limit = max(1, int(max_fraction * total))
    if warmup > limit:
        log.warning(
            "optim.warmup_steps=%d is more than %d %% of the run's %d optimizer steps: warm-up capped at %d "
            "steps (optim.max_warmup_fraction=%g)",
            warmup,
            round(100 * max_fraction),
            total,
            limit,
            max_fraction,
        )
        return limit
    return warmup


class BaseTask(L.LightningModule):
    """Frozen SAM2 + adapter + AdamW/warm-up/cosine; subclasses define the step.

    Args:
        model: options of ``adapt.models.sam2.load_sam2`` (``name``, ``revision``,
            ``checkpoint``, ``image_size``, ``offline_fallback``) plus ``gradient_checkpointing``.
        adapter: the adapter spec (``{"kind": ..., **options}``).
        optim: ``lr``, ``weight_decay``, ``warmup_steps`` (capped at ``max_warmup_fraction`` of the run's
            steps), ``min_lr_ratio``.
        loss: loss weights (see ``adapt.tasks.losses.LossWeights``).
        prompts: how a task prompts beyond the data's simulated prompt (e.g. correction
            clicks: ``iterations``, ``grad``, ``seed``); each task reads what it uses.
        compile: ``torch.compile`` each Hiera block in place (names, and so checkpoints and
            adapters, are unchanged); the trunk is where the time goes. ``True`` compiles with
            inductor; a string names another backend (``eager``/``aot_eager`` trace the blocks
            without generating code: a quick way to find graph breaks, and the CPU tests' choice).
        embedding_cache: ``{"mode": "memory" | "disk", "directory", "namespace", "dtype"}``
            to compute image embeddings once per image; only valid with a frozen encoder, or
            with adapters in the last Hiera blocks only (then the frozen prefix is cached).
        classes: target class names, for tasks whose output depends on them.
        input_channels: the data's image channels; with ``adapter.input_channels`` they decide
            whether the model learns an input projection to 3 channels (``adapt.models.channels``).
    """

    video: bool = False

    def __init__(
        self,
        model: Mapping[str, Any],
        adapter: Mapping[str, Any],
        optim: Mapping[str, Any],
        loss: Mapping[str, Any],
        prompts: Mapping[str, Any] | None = None,
        compile: bool | str = False,
        embedding_cache: Mapping[str, Any] | None = None,
        classes: list[str] | None = None,
        input_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hparams.prompts = dict(prompts or {})
        self.strict_loading = False  # checkpoints hold the trainable weights only
        self.model_info: ModelInfo
        self.model: torch.nn.Module
        self.configure_models()
        self.configure_losses()

    def configure_models(self) -> None:
        """Load SAM2, freeze it and apply the adapter."""
        options = dict(self.hparams.model)
        checkpointing = options.pop("gradient_checkpointing", False)
        model, self.model_info = load_sam2(video=self.video, **options)
        if checkpointing:
            enable_gradient_checkpointing(model)
        task_modules = self.prepare_model(model)
        spec = dict(self.hparams.adapter)
        channels = self.hparams.get("input_channels")
        if channels and wants_projection(str(spec.get("input_channels", "auto")), int(channels)):
            add_input_projection(model, int(channels))
            task_modules = [*task_modules, CHANNELS_ATTRIBUTE]
        if task_modules:
            spec["task_modules"] = task_modules
            self.hparams.adapter = spec  # saved with the adapter, so loading rebuilds the same model
        self.model = apply_adapter(model, spec)
        self.embedding_cache = self._build_embedding_cache()
        if self.hparams.compile:
            self._compile_blocks("inductor" if self.hparams.compile is True else str(self.hparams.compile))

    def _compile_blocks(self, backend: str) -> None:
        """Compile every Hiera block in place.

        The blocks share one ``forward``, and dynamo keeps a bounded number of variants per
        code object (8 by default): stages, window/global attention, training/eval each need
        one, and past the limit the remaining blocks silently run uncompiled. The limit is
        raised to cover every block in every mode.
        """
        blocks = hiera_blocks(self.model)
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, 4 * len(blocks))
        for block in blocks:
            block.compile(backend=backend)

    def prepare_model(self, model: torch.nn.Module) -> list[str]:
        """Add task-specific modules to SAM2 before the adapter; return their names (trained in full)."""
        return []

    @staticmethod
    def build_datamodule(data_cfg: Mapping[str, Any], **options: Any) -> Any:
        """The datamodule this task trains on: per-object 2D slices, read from the card's cases or streamed
        from shards (``data.shards``); tasks override it (clips, all targets)."""
        if data_cfg.get("shards"):
            return build_shard_datamodule(data_cfg, **options)

        return build_datamodule(data_cfg, **options)

    @classmethod
    def options_from_data(cls, datamodule: Any) -> dict[str, Any]:
        """Task constructor options that come from the data (e.g. class names; every task: the
        image channels, which decide the input projection)."""
        channels = (getattr(datamodule, "preprocessing", None) or {}).get("channels")
        return {"input_channels": int(channels)} if channels else {}

    def _build_embedding_cache(self) -> EmbeddingCache | None:
        """The cache of frozen-encoder outputs, or ``None`` when off or impossible.

        With a frozen encoder the cache holds the image embeddings, and the encoder-side
        projections ``conv_s0``/``conv_s1`` (stored in the mask decoder), which produce part
        of them, are frozen while caching. With adapters in the last Hiera blocks only
        (``adapter.blocks``) it holds the frozen prefix's output, and ``self.prefix_start`` is
        the first block a step runs (``adapt.models.hiera_prefix``).
        """
        self.prefix_start: int | None = None
        spec = dict(self.hparams.embedding_cache or {})
        mode = spec.get("mode", "off")
        if mode == "off":
            return None
        resolved = tuple(m for m in EMBEDDING_CACHE_MODES if m != "auto")  # adapt.train resolves auto
        check_choice("embedding_cache.mode", mode, resolved)
        if input_projection(self.model) is not None and spec.get("auto"):
            log.info(
                "embedding cache off: this run learns an input projection of the data's %s channels, so the "
                "encoder's input changes as it trains",
                self.hparams.input_channels,
            )
            return None
        if input_projection(self.model) is not None:
            raise ConfigError(
                "embedding_cache needs the encoder's input fixed, but this run learns an input projection "
                f"of the data's {self.hparams.input_channels} channels (adapter.input_channels="
                f"{self.hparams.adapter.get('input_channels', 'auto')}); use embedding_cache.mode=off, or "
                "adapter.input_channels=fixed (the parameter-free channel map)"
            )
        sam = base_model(self.model)
        name = spec.get("namespace", "default")
        if not any(p.requires_grad for p in sam.vision_encoder.parameters()):
            for conv in (sam.mask_decoder.conv_s0, sam.mask_decoder.conv_s1):
                conv.requires_grad_(False)
        elif frozen_prefix(self.hparams.adapter):
            prefix_cache_wanted(self.hparams.adapter, mode, False, backbone_of_model(sam))  # refuses off Hiera
            self.prefix_start = first_trained_block(sam)
            name = namespace(name, "hiera_prefix", self.prefix_start)
        else:
            raise ConfigError(
                "embedding_cache needs a frozen image encoder, or adapters in the last Hiera blocks only "
                f"(adapter.blocks=N), but adapter={self.hparams.adapter['kind']} trains every block; "
                "use embedding_cache.mode=off"
            )
        directory = Path(spec["directory"]).expanduser() if mode == "disk" else None
        dtype = getattr(torch, str(spec.get("dtype", "float32")))
        return EmbeddingCache(directory, name, dtype)

    def configure_losses(self) -> None:
        """Subclasses set up their loss terms."""

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """Loss of one batch, logging ``<stage>/loss``, ``<stage>/dice``, ``<stage>/iou``."""
        raise NotImplementedError

    @staticmethod
    def log_options(stage: str, batch_size: int) -> dict[str, Any]:
        """``self.log`` options of every task: per step in training, per epoch always.

        ``sync_dist`` averages each value over the DDP ranks (weighted equally, as the
        ranks see equal shares), so the logged and returned metrics are the global ones.
        """
        return {"on_step": stage == "train", "on_epoch": True, "batch_size": batch_size, "sync_dist": True}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    @property
    def image_size(self) -> int:
        return self.model_info.image_size

    def parameter_counts(self) -> tuple[int, int]:
        """``(trainable, total)`` parameters of the adapted model."""
        return count_parameters(self.model)

    def on_fit_start(self) -> None:
        trainable, total = self.parameter_counts()
        for logger in self.loggers:
            logger.log_hyperparams({"params/trainable": trainable, "params/total": total})

    def trainable_names(self) -> set[str]:
        """Checkpoint keys of the trainable weights (plain names, also under FSDP)."""
        return {f"model.{n}" for n in trainable_parameters(self.model)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip as the trainer says; a sharded model clips its own gradients.

        Under FSDP each rank holds shards of the gradients, so the global norm is FSDP's to
        compute (``clip_grad_norm_``); Lightning's FSDP precision plugin refuses norm clipping
        and would stop ``trainer=fsdp`` at its first step with the default ``gradient_clip_val``.
        """
        model = self.trainer.strategy.model
        if (
            isinstance(model, FullyShardedDataParallel)
            and gradient_clip_val
            and gradient_clip_algorithm in (None, "norm")
        ):
            model.clip_grad_norm_(gradient_clip_val)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters only (frozen ones get no optimizer state)."""
        opt = self.hparams.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=opt["lr"], weight_decay=opt["weight_decay"])

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.hparams.optim
        optimizer = self.build_optimizer()
        total = int(self.trainer.estimated_stepping_batches)
        warmup = capped_warmup(int(opt["warmup_steps"]), total, float(opt.get("max_warmup_fraction", 0.2)))
        schedule = LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total, float(opt["min_lr_ratio"])))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
