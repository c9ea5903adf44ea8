"""Loggers and callbacks of a run, built from the ``logger`` and ``trainer`` config groups."""

from __future__ import annotations

import netrc
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
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


class RandomState(Callback):
    """Saves the random generators' states in every checkpoint and restores them on resume.

    Lightning restores weights, optimizer, scheduler and loop counters, and the training
    loader's place in the epoch (``adapt.data.sampling``: the data order and per-sample
    prompts and augmentation follow from the seed and the epoch alone), but not the global
    generators that drive dropout and anything else drawn during a step. With all of them
    restored, a run resumed from a checkpoint, at the end of an epoch or in its middle,
    continues exactly as the uninterrupted run (see ``tests/test_scale.py``). Under DDP rank
    0 writes the checkpoint, so every rank resumes from rank 0's states.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        numpy_state = (name, keys.tolist(), int(position), int(has_gauss), float(gauss))  # loadable with weights_only
        state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the latest state, rewritten at every validation (or epoch end) and at the end.

    Lightning's ``save_last=True`` rewrites ``last.ckpt`` only when the monitored checkpoint
    improves, so ``ckpt_path=last`` would resume from an older state than the run reached.
    This unmonitored checkpoint keeps one file and replaces it at every save.
    """

    def __init__(self, dirpath: Path) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Save the final state too (e.g. ``max_steps`` reached between two validations)."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def build_callbacks(run_dir: Path) -> list[Callback]:
    """Best and last checkpoints (trainable weights only, with the generators' states) and the learning-rate log."""
    checkpoints = run_dir / "checkpoints"
    return [
        RandomState(),
        ModelCheckpoint(dirpath=checkpoints, filename="best-{step}", monitor=MONITOR, mode="max",
                        auto_insert_metric_name=False),
        LastCheckpoint(checkpoints),
        LearningRateMonitor(logging_interval="step"),
    ]
