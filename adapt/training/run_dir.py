"""The run folder of ``adapt.train``: refused when it holds a finished run, claimed before anything
is written into it, and checked before Hydra creates it.

Hydra creates the run folder and writes ``.hydra/`` and ``train.log`` into it before the command
runs, so a config mistake found later would leave a trail of empty run folders, and a finished
run could be overwritten by a second training in the same folder. ``Preflight`` (a Hydra
callback, ``configs/train.yaml``) runs first: the schema, the run folder (``check_run_dir``) and
the checkpoint to resume from (``adapt.training.checkpoints.resolve_checkpoint``), with the folder
claimed (``claimed_run_dir``: one writer, nothing left by a refusal, see ``adapt.outputs``) and
handed over to ``adapt.train.train``, which repeats the same checks for in-process calls.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from adapt.errors import ConfigError
from adapt.exits import user_errors
from adapt.outputs import RUN_FILES, claimed
from adapt.schema import validate
from adapt.storage import check_writable


def check_run_dir(run_dir: Path, overwrite: bool, ckpt_path: str | None) -> Path:
    """Refuse, without touching it, a run directory that holds a finished run or the checkpoints of
    an interrupted one (unless ``overwrite=true`` or resuming: a new run would replace them); returns it.
    Asked with the folder's lock held (``claimed``): a running training's checkpoints are its lock's to
    refuse, naming the holder, not an interrupted run's. Whether it can be written is asked before the
    lock is taken (``check_writable``, by both callers)."""
    if not overwrite and ckpt_path is None:
        held = (
            "a trained adapter"
            if (run_dir / "adapter").exists()
            else "the checkpoints of an interrupted run"
            if any((run_dir / "checkpoints").glob("*.ckpt"))
            else None
        )
        if held:
            raise ConfigError(
                f"{run_dir} already holds {held}; choose another hydra.run.dir, "
                "resume with ckpt_path=last, or pass overwrite=true"
            )
    return run_dir


#: ``out_dir`` of ``configs/train.yaml``: the run folder is Hydra's.
HYDRA_OUT_DIR = "${hydra:runtime.output_dir}"


def check_out_dir(config: DictConfig) -> None:
    """Refuse ``out_dir=`` on the command line: the run would be written there, but Hydra's log, the run
    folder checks and ``ckpt_path=last`` go by ``hydra.run.dir``."""
    value = OmegaConf.select(config, "out_dir", throw_on_resolution_failure=False)
    raw = config._get_node("out_dir")._value() if "out_dir" in config else HYDRA_OUT_DIR
    if raw != HYDRA_OUT_DIR:
        raise ConfigError(
            f"out_dir={value}: the run folder of adapt.train is hydra.run.dir (its log, the checks of the "
            f"folder and ckpt_path=last go by it); write hydra.run.dir={value} instead"
        )


def claimed_run_dir(run_dir: Path) -> contextlib.AbstractContextManager:
    """The run folder locked before Hydra creates it or writes ``.hydra/`` into it, and handed over to
    ``adapt.train.train``, whose refusal removes what Hydra created (``adapt.outputs``)."""
    return claimed(run_dir, "hydra.run.dir", RUN_FILES, hand_over=True)


class Preflight(Callback):
    """Hydra callback of ``adapt.train``: the config schema, the run directory and the checkpoint
    to resume from, checked before Hydra creates the run directory or writes ``.hydra/`` into it;
    the run directory is claimed first (one writer, nothing left by a refusal: ``claimed_run_dir``).

    Registered in ``configs/train.yaml`` (``hydra.callbacks``); ``adapt.train.train`` repeats the
    same checks for in-process calls.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from adapt.training.checkpoints import read_checkpoint, resolve_checkpoint  # lazy: start-up (torch)

        with user_errors():
            validate(config, "train")
            check_out_dir(config)
            run_dir = check_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")
            with claimed_run_dir(run_dir):  # the lock first: checkpoints there may be another run's, still writing
                check_run_dir(run_dir, bool(config.overwrite), config.ckpt_path)
                checkpoint = resolve_checkpoint(config.ckpt_path, run_dir)
                if checkpoint:
                    read_checkpoint(checkpoint)
