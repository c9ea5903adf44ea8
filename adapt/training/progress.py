"""How a run shows its progress: a live bar in a terminal, plain lines in a log file.

Lightning's rich bar redraws one line in place; when the output goes to a file (a batch job,
``nohup``, ``| tee``) nothing is redrawn and the file stays empty until the bar stops, so a
20-minute run looked dead for 20 minutes. ``ProgressLines`` prints one line at a steady
interval instead (``progress.every_s``, and once at the end of training and of every
validation): step/total, loss, learning rate, samples per second and the time left.

A step-based run (``trainer.max_steps`` set, ``trainer.max_epochs=-1``) has no last epoch, and
Lightning's bar labelled it "Epoch 2/-2"; both displays count optimizer steps instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


def step_based(trainer: Any) -> bool:
    """Whether the run is bounded by ``max_steps`` alone (no last epoch to count towards)."""
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.max_epochs in (None, -1)


def total_steps(trainer: Any) -> int | None:
    """The optimizer steps the run will take, where known."""
    if step_based(trainer):
        return int(trainer.max_steps)
    total = trainer.estimated_stepping_batches
    return int(total) if total not in (None, float("inf")) else None


def clock(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    seconds = round(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled ``Step k/N`` in a step-based run instead of ``Epoch e/-2``."""

    def _get_train_description(self, current_epoch: int) -> str:
        if not step_based(self.trainer):
            return super()._get_train_description(current_epoch)
        return f"Step {self.trainer.global_step}/{self.trainer.max_steps}"

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if step_based(trainer) and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(
                self.train_progress_bar_id, description=self._get_train_description(trainer.current_epoch)
            )


class ProgressLines(ProgressBar):
    """One plain progress line every ``every_s`` seconds, and at the end of training and validation.

    Args:
        every_s: seconds between two lines while training or validating.
        stream: where the lines go (standard output by default).
    """

    def __init__(self, every_s: float = 30.0, stream: Any = None) -> None:
        super().__init__()
        self.every_s = float(every_s)
        self.stream = stream
        self.enabled = True
        self._start = self._last = 0.0
        self._first_step = 0
        self._samples = 0
        self._val_last = 0.0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def write(self, line: str) -> None:
        """Print ``line`` and flush it at once (a log file shows it while the run goes on)."""
        print(line, file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = self._last = time.monotonic()
        self._first_step = trainer.global_step
        self._samples = 0
        if self.enabled:
            total = total_steps(trainer)
            self.write(
                f"training: {total if total is not None else 'an unknown number of'} optimizer steps; "
                f"a progress line every {self.every_s:g} s"
            )

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += batch_size(batch)
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s:
            self._last = now
            self.write(self.train_line(trainer, now))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.enabled:
            self.write(self.train_line(trainer, time.monotonic()) + " · done")

    def train_line(self, trainer: Any, now: float) -> str:
        """``step 17/60 (28 %) · epoch 2 · loss 0.4321 · lr 8.1e-04 · 3.2 samples/s · 0:52 elapsed · ETA 2:11``."""
        step, total = trainer.global_step, total_steps(trainer)
        elapsed = now - self._start
        done = step - self._first_step
        parts = [f"step {step}/{total} ({100 * step / max(total, 1):.0f} %)" if total else f"step {step}"]
        if not step_based(trainer):
            parts.append(
                f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                if trainer.max_epochs not in (None, -1)
                else f"epoch {trainer.current_epoch + 1}"
            )
        loss = metric(trainer.callback_metrics, "train/loss_step", "train/loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.2e}")
        if elapsed > 0:
            parts.append(f"{self._samples / elapsed:.3g} samples/s")
        parts.append(f"{clock(elapsed)} elapsed")
        if total and done > 0 and step < total:
            parts.append(f"ETA {clock(elapsed / done * (total - step))}")
        return " · ".join(parts)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._val_last = time.monotonic()

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        now = time.monotonic()
        if self.enabled and not trainer.sanity_checking and now - self._val_last >= self.every_s:
            self._val_last = now
            batches = trainer.num_val_batches
            total = batches[dataloader_idx] if isinstance(batches, list) else batches
            self.write(f"validation: batch {batch_idx + 1}/{_count(total)}")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        scores = [
            f"{key} {value:.4f}"
            for key in ("val/dice", "val/iou", "val/loss")
            if (value := metric(trainer.callback_metrics, key)) is not None
        ]
        self.write(f"validation at step {trainer.global_step}: " + (" · ".join(scores) or "done"))


def _count(value: float) -> str:
    return "?" if value == float("inf") else str(int(value))


def metric(metrics: Mapping[str, Any], *keys: str) -> float | None:
    """The first of ``keys`` logged in ``metrics``, as a float; ``None`` when none was."""
    for key in keys:
        try:
            return float(metrics[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def batch_size(batch: Any) -> int:
    """The samples in a batch dict (the first dimension of its ``image``), 0 when unknown."""
    image = batch.get("image") if isinstance(batch, Mapping) else None
    shape = getattr(image, "shape", None)
    return int(shape[0]) if shape else 0


def progress_callback(spec: Mapping[str, Any] | None, stream: Any = None) -> ProgressBar:
    """The progress display of ``progress.lines`` (``auto``: lines unless standard output is a terminal)."""
    spec = spec or {}
    lines = spec.get("lines", "auto")
    if lines == "auto":
        lines = not (stream or sys.stdout).isatty()
    if lines:
        return ProgressLines(float(spec.get("every_s", 30)), stream)
    return StepRichProgressBar()
