"""What every command line shares: its Hydra config, and how it reports a user's mistake.

A user error (``adapt.errors.AdaptError``: a missing file, a bad option, no network for a
Hub model) is printed as one message — what is wrong, where, how to fix it — and the command
exits with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR
from adapt.errors import AdaptError

USER_ERROR_STATUS = 2


def format_error(err: AdaptError) -> str:
    """``sam2-adapt: <kind>: <message>``, the one line a command prints for a user error."""
    return f"sam2-adapt: {type(err).__name__}: {err}"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error from the block on stderr and exit with status 2."""
    try:
        yield
    except AdaptError as err:
        print(f"\n{format_error(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)


def register_cli_config(name: str) -> str:
    """Store ``configs/<name>.yaml`` in the ConfigStore and return its name for ``@hydra.main``.

    The command-line tools take ``adapter=<path>``, but ``configs/`` also holds the training
    group ``adapter/``; read from there, Hydra would take ``adapter=`` as a group choice. From
    the ConfigStore (``config_path=None``) no group is in reach and every key is a plain value.
    """
    ConfigStore.instance().store(name=name, node=OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    return name
