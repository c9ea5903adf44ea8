"""What the framework benchmarks share: a task and a Lightning Trainer built as ``adapt.train`` builds them.

``overhead.py`` and ``cache_speedup.py`` time the real training path (the Hydra config, our
callbacks and logger, ``SegmentationTask``) on in-memory batches, so what they measure is the
framework, not file reading.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from train_step import clock

from adapt.conf import CONFIG_DIR, register_resolvers
from adapt.tasks.segmentation import SegmentationTask
from adapt.training.trainer import build_trainer

register_resolvers()
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # tables only, no Trainer banners
warnings.filterwarnings("ignore")


class StepClock(Callback):
    """``(wall, CPU)`` seconds between consecutive training-step ends (data fetch, step, hooks
    and logging included), and of whole epochs."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float]] = []
        self.epochs: list[tuple[float, float]] = []
        self._last = self._epoch_start = (0.0, 0.0)

    @staticmethod
    def _since(
        module: L.LightningModule, start: tuple[float, float]
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        now = clock(module.device)
        return now, (now[0] - start[0], now[1] - start[1])

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = self._last = clock(module.device)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._last, elapsed = self._since(module, self._last)
        self.steps.append(elapsed)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epochs.append(self._since(module, self._epoch_start)[1])


def make_task(model: str, size: int, adapter: dict[str, Any], cache: str = "off") -> SegmentationTask:
    """A segmentation task on random weights of ``model`` (``tiny`` or a preset), seeded."""
    torch.manual_seed(0)
    return SegmentationTask(
        model={"name": model if model == "tiny" else f"random:{model}", "image_size": size},
        adapter=adapter,
        optim={"lr": 1e-4, "weight_decay": 0.01, "warmup_steps": 1, "min_lr_ratio": 0.01},
        loss={},
        embedding_cache={"mode": cache, "namespace": "benchmark"} if cache != "off" else None,
    )


def trainer_for(device: str, precision: str, **options: Any) -> L.Trainer:
    """``adapt.training.trainer.build_trainer`` on the default config with ``options`` as ``trainer.*`` overrides."""
    overrides = {
        "accelerator": "gpu" if device.startswith("cuda") else "cpu",
        "precision": precision,
        "limit_val_batches": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **options,
    }
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"++trainer.{k}={v}" for k, v in overrides.items()] + ["out_dir=unused"])
    run_dir = Path(tempfile.mkdtemp(prefix="sam2-adapt-bench-"))
    return build_trainer(cfg, run_dir)


def loader(samples: list[dict[str, Any]], batch: int) -> DataLoader:
    """Batches in a fixed order, collated as the data layer collates them."""
    return DataLoader(samples, batch_size=batch, shuffle=False)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
