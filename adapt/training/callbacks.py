"""Loggers and callbacks of a run, built from the ``logger`` and ``trainer`` config groups.

The CSV log survives a resume (rows up to the resumed step are kept), and a non-finite loss
stops the run before it poisons the weights (``FiniteLoss``).
"""

from __future__ import annotations

import csv
import io
import netrc
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from adapt.errors import TrainingError, check_choice
from adapt.storage import write_atomically
from adapt.tasks import MONITOR
from adapt.training.names import LOGGERS


def wandb_has_credentials() -> bool:
    """An API key in the environment or a ``wandb login`` entry in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


class _ResumedCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, which keeps the rows of the run up to the resumed step.

    Lightning's own writer deletes ``metrics.csv`` when it finds one, so a resumed run would
    lose the history of everything before the kill. Rows logged after the checkpoint (work
    the resume repeats) are dropped; new rows are appended under the merged header.
    """

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self.resume_step is None or not path.is_file():
            return super()._check_log_dir_exists()
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if _step(row) <= self.resume_step]
            keys = list(reader.fieldnames or [])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(
            path,
            lambda file: file.write(buffer.getvalue().encode()),
            f"logger (CSV in {path.parent})",
            "free some space, or write the run to a larger disk: hydra.run.dir=<folder there>",
        )
        self.metrics_keys = sorted(keys)


def _step(row: Mapping[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` under ``<run>/logs`` that appends to the run's ``metrics.csv`` when resuming."""

    def __init__(self, save_dir: Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=save_dir, name="logs", version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumedCSVWriter(self.log_dir, self.resume_step)
        return self._experiment


def build_logger(spec: Mapping[str, Any], run_dir: Path, run_name: str, resume_step: int | None = None) -> Logger:
    """CSV (default) or Weights & Biases, which runs offline when there are no credentials.

    ``resume_step``: the step of the checkpoint a run resumes from; the CSV log keeps its rows up to it.
    """
    kind = spec.get("kind", "csv")
    check_choice("logger.kind", kind, LOGGERS)
    if kind == "csv":
        return ResumableCSVLogger(run_dir, resume_step)
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


class FiniteLoss(Callback):
    """Stops the run at the first NaN or infinite loss, before it reaches a weight.

    A non-finite loss back-propagated once makes every trained weight NaN, and the run would
    go on to write a NaN adapter that scores Dice 0. The error names the step, the cases of the
    batch and what to try.
    """

    def __init__(self) -> None:
        self.cases: list[str] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        meta = batch.get("meta") if isinstance(batch, Mapping) else None
        cases = meta.get("case") if isinstance(meta, Mapping) else None
        self.cases = sorted({str(c) for c in cases}) if isinstance(cases, (list, tuple)) else []

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        raise TrainingError(
            f"training diverged: the loss is {loss.detach().float().item()} at step {trainer.global_step} "
            f"(batch of cases {self.cases or 'unknown'}); the step was not applied and no adapter was written. "
            f"Check those cases' files, lower optim.lr (now {lr:.3g}), or train in full precision "
            "(trainer.precision=32-true); resume from the last good state with ckpt_path=last"
        )


def build_callbacks(run_dir: Path) -> list[Callback]:
    """Best and last checkpoints (trainable weights only, with the generators' states), the
    learning-rate log and the non-finite loss guard."""
    checkpoints = run_dir / "checkpoints"
    return [
        FiniteLoss(),
        RandomState(),
        ModelCheckpoint(
            dirpath=checkpoints, filename="best-{step}", monitor=MONITOR, mode="max", auto_insert_metric_name=False
        ),
        LastCheckpoint(checkpoints),
        LearningRateMonitor(logging_interval="step"),
    ]
