"""Cache files written whole or not at all, with a clear error when the disk is full.

The case cache and the embedding cache are reused by later runs, and runs get killed
(preempted jobs resume with ``ckpt_path=last``) or fill a disk: a file cut short under its
final name would be read back by the next run as a broken entry. Each file is therefore
written under a temporary name beside it and moved into place once complete, which also
lets several ranks write the same entry at once.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

from adapt.errors import ConfigError


def write_atomically(path: Path, write: Callable[[BinaryIO], None], setting: str, fix: str) -> None:
    """Write ``path`` through ``write(file)``; nothing is left under ``path`` unless it is complete.

    Args:
        path: the file to create or replace.
        write: writes the content to an open binary file.
        setting: the configuration that asked for this cache, named in the error.
        fix: what the user can change when the disk is full.

    Raises:
        ConfigError: the disk is full (the partial file is removed).
    """
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
        temporary.replace(path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            free = shutil.disk_usage(path.parent).free / 2**30
            raise ConfigError(f"{setting}: the disk holding {path.parent} is full ({free:.1f} GiB free) while "
                              f"writing {path.name}; {fix}") from None
        raise
