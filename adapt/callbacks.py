"""Loggers and callbacks of a run, built from the ``logger`` and ``trainer`` config groups."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from adapt.errors import ConfigError
from adapt.tasks.base import MONITOR


def wandb_has_credentials() -> bool:
    """An API key in the environment or a ``wandb login`` entry in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def build_logger(spec: Mapping[str, Any], run_dir: Path, run_name: str) -> Logger:
    """CSV (default) or Weights & Biases, which runs offline when there are no credentials."""
    kind = spec.get("kind", "csv")
    if kind == "csv":
        return CSVLogger(save_dir=run_dir, name="logs", version="")
    if kind == "wandb":
        offline = spec.get("offline")
        offline = not wandb_has_credentials() if offline is None else bool(offline)
        return WandbLogger(
            project=spec.get("project", "sam2-adapt"),
            entity=spec.get("entity"),
            name=run_name,
            save_dir=str(run_dir),
            offline=offline,
            tags=list(spec.get("tags", [])),
        )
    raise ConfigError(f"logger.kind {kind!r} is not one of ['csv', 'wandb']")


def build_callbacks(run_dir: Path) -> list[Callback]:
    """Best and last checkpoints (trainable weights only) and the learning-rate log."""
    return [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best-{step}",
            monitor=MONITOR,
            mode="max",
            save_last=True,
            auto_insert_metric_name=False,
        ),
        LearningRateMonitor(logging_interval="step"),
    ]
