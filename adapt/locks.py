"""One writer per output: a lock that names its holder, and that a killed holder does not keep.

Two commands writing one run folder (``ckpt_path=last hydra.run.dir=<run>`` started twice) or
one ``out=`` at once interleave their checkpoints, logs and results into a folder that neither
run describes. Every command therefore locks what it writes before it writes anything: a file
``.<name>.lock`` beside the output (never inside it, so an output's own "is it empty?" checks
and its clean-up are unchanged) that holds the holder's pid, host, command and start time,
and an exclusive ``flock`` on it held for the life of the process.

The kernel drops a ``flock`` when its process ends, however it ends, so a lock file left by a
killed run holds no lock: the next command takes it over and says whose it was. A second
command while the first runs is refused at once, naming the holder; nothing of the first is
touched. Only rank 0 of a multi-process run locks (the other ranks write nothing of their own).
"""

from __future__ import annotations

import atexit
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from adapt.errors import ConfigError

log = logging.getLogger(__name__)

#: Environment variables that give a process's rank in a multi-process run (torchrun, SLURM, Lightning).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


class BusyError(ConfigError):
    """The output is being written by another command now."""


def lock_path(target: Path) -> Path:
    """Where the lock of ``target`` lives: ``<parent>/.<name>.lock``."""
    target = Path(target).expanduser().absolute()
    return target.with_name(f".{target.name}.lock")


def is_secondary_rank() -> bool:
    """Whether this process is a rank other than 0 of a multi-process run."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0")
        if value.strip() not in ("", "0"):
            return True
    return False


def describe(holder: dict) -> str:
    """``pid 123 on host h since 2026-12-06 15:20:01 UTC (python -m adapt.train ...)``."""
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')} "
        f"({holder.get('command', '?')})"
    )


def _read_holder(handle) -> dict:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


@dataclass
class Lock:
    """A held lock on ``target`` (``acquire`` returns it); ``release`` removes its file."""

    target: Path
    path: Path
    handle: object
    setting: str

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self.handle is None:
            return
        try:
            if self.path.exists() and os.path.samestat(os.fstat(self.handle.fileno()), os.stat(self.path)):
                self.path.unlink()
        except OSError:
            pass
        self.handle.close()
        self.handle = None
        _HELD.pop(self.path, None)


#: Locks this process holds, by lock file: a second ``acquire`` of the same target is the same lock.
_HELD: dict[Path, Lock] = {}


def acquire(target: str | Path, setting: str) -> Lock:
    """Lock ``target`` for this process, or refuse while another process holds it.

    Args:
        target: the output folder or file (it need not exist; its parent is created for the lock).
        setting: the key that chose it (``hydra.run.dir``, ``out``), named in the refusal.

    Raises:
        BusyError: another live process holds the lock: its pid, host, command and start time.
    """
    path = lock_path(Path(target))
    if path in _HELD:
        return _HELD[path]
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 -- held open for the life of the lock
        except OSError as error:
            raise ConfigError(
                f"{setting}={target}: cannot write in {path.parent} ({error.strerror or error}); choose "
                f"a folder you can write, e.g. {setting}=<a folder in your home or project>"
            ) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise BusyError(
                f"{setting}={target} is being written by another command: {describe(holder)}. "
                f"Wait for it to end, or choose another {setting}= (lock file {path}; it is released, "
                "or taken over, as soon as that process ends)"
            ) from None
        try:  # the file may have been removed by its releasing holder between open and flock
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        handle.close()
    stale = _read_holder(handle)
    if stale:
        print(
            f"sam2-adapt: note: {setting}={target} was locked by {describe(stale)}, which has ended without "
            "releasing it (killed?); taking the lock over",
            file=sys.stderr,
        )
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(" ".join(getattr(sys, "orig_argv", sys.argv)).split()),
                "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
        )
    )
    handle.flush()
    lock = _HELD[path] = Lock(Path(target), path, handle, setting)
    return lock


def release_all() -> None:
    """Release every lock this process holds (also run at exit)."""
    for lock in list(_HELD.values()):
        lock.release()


atexit.register(release_all)
