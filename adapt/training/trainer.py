"""The Lightning Trainer of a run, assembled from the ``trainer`` config group.

``trainer.*`` holds Lightning's own options (checked against ``Trainer``'s signature by the
schema, at the door); what a run needs beside them is added here, in one place, so that the
benchmarks and the scale probes train through exactly the Trainer ``adapt.train`` uses: our
logger (``adapt.training.callbacks.build_logger``, which continues a resumed run's step axis),
our callbacks (checkpoints, finite loss, progress lines), checkpoints written whole
(``AtomicCheckpointIO``), and a strategy given as a config node (FSDP with its options)
instantiated by Hydra. A precision Lightning cannot honour on the CPU is said before it silently
changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from adapt.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> L.Trainer:
    """A Lightning Trainer from the ``trainer`` group, with our logger, callbacks and atomic checkpoints."""
    import lightning as L  # lazy: start-up
    import torch  # lazy: start-up

    # Looked up on use, so that a probe may wrap build_callbacks (tests/probe_run.py).
    from adapt.training.callbacks import build_callbacks, build_logger  # lazy: start-up
    from adapt.training.checkpoints import AtomicCheckpointIO  # lazy: start-up
    from adapt.training.progress import progress_callback  # lazy: start-up

    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if str(options.get("precision")).startswith("16") and (
        options.get("accelerator") == "cpu" or not torch.cuda.is_available()
    ):
        log.warning(
            "trainer.precision=%s needs a CUDA GPU; on the CPU Lightning trains in bf16-mixed instead "
            "(pass trainer.precision=bf16-mixed or 32-true to choose explicitly)",
            options["precision"],
        )
    if isinstance(options.get("strategy"), dict):  # e.g. FSDPStrategy with its options
        try:
            options["strategy"] = hydra.utils.instantiate(options["strategy"], _convert_="all")
        except InstantiationException as error:  # hydra wraps what the strategy raised
            if isinstance(error.__cause__, ConfigError):
                raise error.__cause__ from None
            raise ConfigError(f"trainer.strategy: {error}") from None
    callbacks = build_callbacks(run_dir)
    if options.get("enable_progress_bar", True):  # lines when stdout is a file, a bar in a terminal
        callbacks.append(progress_callback(OmegaConf.to_container(cfg.progress) if "progress" in cfg else None))
    return L.Trainer(
        default_root_dir=run_dir,
        logger=build_logger(cfg.logger, run_dir, cfg.name, resume_step),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **options,
    )
