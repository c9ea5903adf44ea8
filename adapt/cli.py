"""What every command line shares: its Hydra config, and how it reports a user's mistake.

A user error (``adapt.errors.AdaptError``: a missing file, a bad option, no network for a
Hub model) is printed as one message — what is wrong, where, how to fix it — and the command
exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
``Preflight`` checks a training config before Hydra creates or writes the run directory, so
a refused run leaves an existing run directory exactly as it was.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from adapt.conf import CONFIG_DIR
from adapt.errors import AdaptError
from adapt.storage import disk_full, is_disk_full

USER_ERROR_STATUS = 2


def format_error(err: AdaptError) -> str:
    """``sam2-adapt: <kind>: <message>``, the one line a command prints for a user error."""
    return f"sam2-adapt: {type(err).__name__}: {err}"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error from the block on stderr and exit with status 2.

    A full disk met by a write that has no setting of its own to name (an adapter, a mask, a
    summary) is a user error too: the message names the file and the folder's free space.
    """
    try:
        yield
    except AdaptError as err:
        print(f"\n{format_error(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    except Exception as err:
        if not is_disk_full(err):
            raise
        print(f"\n{format_error(disk_full(err))}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)


def register_cli_config(name: str) -> str:
    """Store ``configs/<name>.yaml`` in the ConfigStore and return its name for ``@hydra.main``.

    The command-line tools take ``adapter=<path>``, but ``configs/`` also holds the training
    group ``adapter/``; read from there, Hydra would take ``adapter=`` as a group choice. From
    the ConfigStore (``config_path=None``) no group is in reach and every key is a plain value.
    """
    ConfigStore.instance().store(name=name, node=OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    return name


class Preflight(Callback):
    """Hydra callback of ``adapt.train``: the config schema, the run directory and the checkpoint
    to resume from, checked before Hydra creates the run directory or writes ``.hydra/`` into it.

    Registered in ``configs/train.yaml`` (``hydra.callbacks``); ``adapt.train.train`` repeats the
    same checks for in-process calls.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from adapt.schema import validate
        from adapt.train import check_run_dir, resolve_checkpoint
        from adapt.training.checkpoints import read_checkpoint

        with user_errors():
            validate(config, "train")
            run_dir = check_run_dir(Path(str(config.hydra.run.dir)), bool(config.overwrite), config.ckpt_path)
            checkpoint = resolve_checkpoint(config.ckpt_path, run_dir)
            if checkpoint:
                read_checkpoint(checkpoint)
