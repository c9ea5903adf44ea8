"""What a command writes: one writer at a time, and nothing left behind when it is refused.

A command is refused (exit 2) when a check finds a fault, and some checks can only run once
their output exists: Hydra creates the run folder and writes ``.hydra/`` and ``train.log``
into it before ``adapt.train`` reads the data card; the lock of ``adapt.locks`` creates the
parent folder of its lock file. A refusal used to leave those behind, and a user who fixed
the command found a trail of empty run folders. ``claimed(target, setting)`` wraps a command's
work on one output: it locks the output (``adapt.locks``), notes which of the output and its
parent folders did not exist yet and the bytes of the files named in ``restore`` that a
refusal must put back (Hydra's files in a run folder that is resumed), and when a user error
(``adapt.errors.AdaptError``) leaves the block it removes what the command created -- the
output if it is new, and the new parent folders that are left empty -- and restores the rest.
A folder that existed is never removed. Work worth keeping (a training that has started, with
its checkpoints to resume from) is kept: ``Claim.keep``. Any other error keeps everything for
the bug report.

``adapt.training.run_dir.Preflight`` claims the run folder before Hydra writes into it (and before it reads
the checkpoint to resume from, which the holder may be writing); ``train`` then enters
``claimed`` on the same folder and takes that claim over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from adapt.errors import AdaptError
from adapt.locks import Lock, acquire, is_secondary_rank
from adapt.storage import is_disk_full

#: Files Hydra writes into a run folder before the command runs (relative to the folder).
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".hydra", "train.log")
#: Files of a run folder that a refused training puts back as they were: Hydra's and the resolved config.
RUN_FILES = (*HYDRA_FILES, "config.yaml")
#: Values of an output key that mean "no output".
NO_OUTPUT = ("", "none", "null")


@dataclass
class Claim:
    """An output this command writes: the folders it creates and the files a refusal puts back."""

    target: Path
    created: list[Path]  # the target and its parents that did not exist, deepest first
    saved: dict[Path, tuple[bytes, int, int] | None] = field(default_factory=dict)  # file -> (bytes, atime,
    # mtime) before; None: it did not exist
    lock: Lock | None = None
    kept: bool = False

    def keep(self) -> None:
        """From now on a refusal leaves the output as it is (training has started)."""
        self.kept = True

    def undo(self) -> None:
        """Put the output back as it was before the command: restore saved files, remove created folders."""
        if self.kept:
            return
        if self.target in self.created:
            _remove(self.target)
        else:
            for path, content in self.saved.items():
                if content is None:
                    _remove(path)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content[0])
                    os.utime(path, ns=content[1:])
        self.release()
        for folder in self.created:
            with contextlib.suppress(OSError):
                if folder.is_dir():
                    folder.rmdir()  # only when empty: another command may have written beside ours

    def release(self) -> None:
        """Drop the lock (the output is left as it is)."""
        if self.lock is not None:
            self.lock.release()
        _CLAIMS.pop(self.target, None)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


#: Claims made and not yet released, by target: ``claimed`` on a target claimed earlier takes it over.
_CLAIMS: dict[Path, Claim] = {}


def claim(target: str | Path, setting: str, restore: Iterable[str] = ()) -> Claim:
    """Claim ``target`` before anything is written to it (see the module docstring).

    Args:
        target: the output folder or file.
        setting: its key (``hydra.run.dir``, ``out``, ``output``), named when another command holds it.
        restore: paths inside ``target`` (files, or folders that may not exist yet) that a refusal
            puts back as they were.

    Raises:
        adapt.locks.BusyError: another command is writing ``target``.
    """
    target = Path(target).expanduser().absolute()
    if target in _CLAIMS:
        return _CLAIMS[target]
    created, probe = [], target
    while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    saved: dict[Path, tuple[bytes, int, int] | None] = {}
    for name in restore:  # an existing folder among them needs nothing: its files are listed too
        path = target / name
        if path.is_file():
            stat = path.stat()
            saved[path] = (path.read_bytes(), stat.st_atime_ns, stat.st_mtime_ns)
        elif not path.exists():
            saved[path] = None
    lock = None if is_secondary_rank() else acquire(target, setting)
    result = _CLAIMS[target] = Claim(target, created, saved, lock)
    return result


def is_output(value: object) -> bool:
    """Whether an output key's value names an output (not ``None``/``none``/empty)."""
    return value is not None and str(value).strip().lower() not in NO_OUTPUT


@contextlib.contextmanager
def claimed(
    target: str | Path | None, setting: str, restore: Iterable[str] = (), hand_over: bool = False
) -> Iterator[Claim | None]:
    """``claim`` for the block: released when it ends; undone when a user error (or a full disk) ends it.

    Args:
        target: the output; ``None`` (the command writes nothing) claims nothing.
        hand_over: keep the claim after a block that ends well, for the next ``claimed`` on the
            same target (``adapt.training.run_dir.Preflight`` hands the run folder to ``adapt.train.train``).
    """
    if not is_output(target):
        yield None
        return
    held = claim(str(target), setting, restore)
    try:
        yield held
    except BaseException as error:
        if isinstance(error, AdaptError) or is_disk_full(error):
            held.undo()
        held.release()
        raise
    if not hand_over:
        held.release()
