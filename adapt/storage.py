"""Files written whole or not at all, a clear error when the disk is full, outputs checked first.

The case cache, the embedding cache and the training checkpoints are reused by later runs,
and runs get killed (preempted jobs resume with ``ckpt_path=last``) or fill a disk: a file cut
short under its final name would be read back by the next run as a broken entry. Each file is
therefore written under a temporary name beside it, flushed, and moved into place once
complete, which also lets several ranks write the same entry at once; a folder of files (an
adapter) is written in a staging folder beside it and its files moved in once all are written.

A full disk reaches Python in many shapes -- ``OSError`` with ``ENOSPC`` or ``EDQUOT``, numpy's
"N requested and M written" after a short write, torch's "PytorchStreamWriter failed writing
file", "No space left on device" inside a library's own exception -- so ``is_disk_full``
looks at the whole chain of an error, and every one of them becomes one message naming the
setting that chose the place and how to free it. ``check_writable`` lets commands refuse an
output folder they cannot write before any compute starts, and ``check_apart`` one that is,
holds or lies inside their inputs (the adapter, the data), before anything there is deleted.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from adapt.errors import ConfigError

#: ``errno`` values of a full disk or an exhausted quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Messages of a full disk from libraries that do not keep the errno (numpy, torch, zip, h5).
DISK_FULL_MESSAGES = re.compile(
    r"no space left|disk quota exceeded|not enough (free )?space|\d+ requested and \d+ written"
    r"|PytorchStreamWriter failed writing|file write failed|disk full",
    re.IGNORECASE,
)


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or anything in its ``__cause__``/``__context__`` chain) is a full disk."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if DISK_FULL_MESSAGES.search(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: Path, setting: str, fix: str) -> ConfigError:
    """The error of a full disk while writing ``path``: the setting, the folder, free space and the fix."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**30:.1f} GiB free"
    except OSError:
        free = "free space unknown"
    return ConfigError(f"{setting}: the disk holding {path.parent} is full ({free}) while writing {path.name}; {fix}")


def disk_full(error: BaseException) -> ConfigError:
    """A full disk met anywhere, as a user error naming the file being written (when known)."""
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.filename):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return disk_full_error(
            Path(cause.filename),
            "the output",
            "free some space, or write to another disk "
            "(hydra.run.dir= for training, out= for evaluate, output= for predict)",
        )
    return ConfigError(
        f"the disk is full ({type(error).__name__}: {error}); free some space, or write to another "
        "disk (hydra.run.dir= for training, out= for evaluate, output= for predict)"
    )


def write_atomically(path: Path, write: Callable[[BinaryIO], None], setting: str, fix: str) -> None:
    """Write ``path`` through ``write(file)``; nothing is left under ``path`` unless it is complete.

    Args:
        path: the file to create or replace (an older version stays until the new one is whole).
        write: writes the content to an open binary file.
        setting: the configuration that chose this place, named in the error.
        fix: what the user can change when the disk is full.

    Raises:
        ConfigError: the disk is full, in any of the forms ``is_disk_full`` knows (the partial
            file is removed).
    """
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise disk_full_error(path, setting, fix) from None
        raise


def write_folder_atomically(folder: Path, write: Callable[[Path], None], setting: str, fix: str) -> Path:
    """Write the files of ``folder`` through ``write(staging)``; no file in ``folder`` is partial.

    ``write`` fills a hidden staging folder beside ``folder`` (same disk); once it returns, each
    file is moved into ``folder`` (``os.replace``: atomic per file, an older version of the same
    name is replaced only then, other files of ``folder`` stay). A failure while writing -- a
    full disk, a kill -- leaves ``folder`` as it was and removes the staging folder.

    Raises:
        ConfigError: the disk is full (as ``write_atomically``).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        write(staging)
        folder.mkdir(exist_ok=True)
        for file in sorted(staging.rglob("*")):
            target = folder / file.relative_to(staging)
            if file.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(file, target)
    except BaseException as error:
        if is_disk_full(error):
            raise disk_full_error(folder, setting, fix) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_apart(
    out: str | Path,
    setting: str,
    inputs: Mapping[str, str | Path | None],
    hosts: Mapping[str, str | Path | None] | None = None,
) -> None:
    """Refuse an output folder that is, contains or lies inside one of the command's input folders.

    A command clears its output folder (``overwrite=true``) or moves files into it; with the
    adapter or the data there, that would replace or delete the inputs themselves. Checked
    before anything is deleted or written.

    Args:
        out: the output folder; ``setting``: its key (``out``).
        inputs: what each input is (``the adapter``) -> its folder (``None``: skipped).
        hosts: inputs that ``out`` may lie inside, but neither be nor contain (the data folder of an
            evaluation: its results beside the cases delete nothing of them).

    Raises:
        ConfigError: names the setting, both folders and how they overlap.
    """
    target = Path(out).expanduser().resolve()
    for what, folder in {**inputs, **(hosts or {})}.items():
        if folder is None:
            continue
        source = Path(folder).expanduser().resolve()
        if target == source:
            relation = "is"
        elif source in target.parents:
            if what in (hosts or {}):
                continue
            relation = "lies inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise ConfigError(
            f"{setting}={out} {relation} {what} ({source}): writing there would replace or delete "
            f"its files; choose an {setting}= outside it"
        )


def check_folder_place(folder: str | Path, setting: str) -> Path:
    """Refuse a folder that is, or would lie inside, a file; its nearest existing ancestor.

    Writes nothing: a cache that is complete may be read from a read-only place, but no folder can
    exist where a file is (``NotADirectoryError`` deep inside a reader otherwise).

    Raises:
        ConfigError: names the setting, the file in the way and what to do.
    """
    folder = Path(folder).expanduser()
    probe = folder.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{setting}={folder}: {probe} is a file, not a folder; choose another {setting}")
    return probe


def check_writable(folder: str | Path, setting: str, value: str | Path | None = None) -> Path:
    """Refuse, before any compute, an output folder that cannot be created or written.

    The folder itself need not exist: its nearest existing ancestor must be a writable folder.

    Args:
        folder: the folder to write in; ``setting``: the key that chose it; ``value``: the key's value
            when the folder lies below it (a cache's own subfolder), else ``folder``.

    Raises:
        ConfigError: names the setting, the folder that blocks it and what to do.
    """
    folder = Path(folder).expanduser()
    shown = folder if value is None else value
    probe = check_folder_place(folder, setting)
    try:  # a real write: permissions, read-only mounts and root's exemptions all show
        handle, name = tempfile.mkstemp(dir=probe, prefix=".sam2-adapt-probe-")
        os.close(handle)
        os.unlink(name)
    except OSError as error:
        raise ConfigError(
            f"{setting}={shown}: cannot write in {probe} ({error.strerror or error}); "
            f"choose a folder you can write, e.g. {setting}=<a folder in your home or project>"
        ) from None
    return folder
