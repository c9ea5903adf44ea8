"""Checkpoints written whole or not at all, and checked before a run resumes from one.

Lightning writes a checkpoint straight under its final name, so a full disk or a kill in
the middle leaves a truncated ``best-*.ckpt`` or ``last.ckpt`` that the next
``ckpt_path=last`` fails on with torch's own message. ``AtomicCheckpointIO`` (Lightning's
``CheckpointIO`` plugin) writes each one through ``adapt.storage.write_atomically``: under a
temporary name, flushed, then moved into place, and a full disk becomes one message naming the
run directory. Before a resume, ``resolve_checkpoint`` finds the file ``ckpt_path`` names
(``last``: the run folder's ``last.ckpt``), ``read_checkpoint`` makes sure the file is a readable training
checkpoint of this project with finite weights, and ``check_fits`` that it holds the weights
of the model about to be trained (Lightning loads them non-strictly: a checkpoint of another
adapter would otherwise be ignored without a word).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from adapt.errors import ArtefactError, ConfigError
from adapt.guards import check_weights
from adapt.storage import write_atomically

RESUME_FIX = (
    "resume from another checkpoint of that run (ckpt_path=<run dir>/checkpoints/best-<step>.ckpt), "
    "or start afresh without ckpt_path in a new run directory"
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose files are complete or absent, with a clear full-disk error."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(
            path,
            lambda file: torch.save(checkpoint, file),
            f"hydra.run.dir (checkpoints in {path.parent})",
            "free some space, or write the run to a larger disk: hydra.run.dir=<folder there>",
        )

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except Exception as error:  # torch's pickle and zip errors name neither the file nor the fix
            raise ArtefactError(
                f"{path}: cannot be read as a checkpoint ({_first_line(error)}); {RESUME_FIX}"
            ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ``last`` is ``<run_dir>/checkpoints/last.ckpt``.

    Lightning itself treats a missing ``last`` as "start from scratch" with a warning; a
    resume that silently restarts would waste the run, so both cases stop with the fix.
    """
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if str(ckpt_path) == "last" else Path(str(ckpt_path))
    if not path.is_file():
        where = f"ckpt_path={ckpt_path}: no checkpoint at {path}"
        if str(ckpt_path) == "last":
            raise ConfigError(
                f"{where}; resume inside the interrupted run's directory: "
                "hydra.run.dir=<that run dir> ckpt_path=last (checkpoints are written at each validation)"
            )
        raise ConfigError(f"{where}; give the path of an existing .ckpt file or ckpt_path=last")
    return str(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint of ``adapt.train``, read on the CPU and checked.

    Raises:
        ArtefactError: unreadable (truncated, not a torch file), foreign (no Lightning
            training state: e.g. a Meta SAM2 ``.pt``, which belongs in ``model.checkpoint``),
            or holding non-finite weights.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(path))
    except Exception as error:
        raise ArtefactError(
            f"ckpt_path: {path} cannot be read as a checkpoint, it is truncated or not a torch file "
            f"({_first_line(error)}); {RESUME_FIX}"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "global_step", "loops"} <= set(checkpoint):
        raise ArtefactError(
            f"ckpt_path: {path} is a torch file but not a training checkpoint written by "
            "`python -m adapt.train` (no state_dict, global_step and loop state); a Meta-format SAM2 "
            f"checkpoint is loaded with model.checkpoint=<file> instead. Otherwise {RESUME_FIX}"
        )
    check_weights(
        checkpoint["state_dict"], f"ckpt_path: {path}", f"the run had diverged before it was saved; {RESUME_FIX}"
    )
    return checkpoint


def check_fits(checkpoint: dict[str, Any], path: str | Path, expected: set[str]) -> None:
    """Refuse a checkpoint whose weights are not the trainable weights ``expected`` of this run.

    Raises:
        ArtefactError: names how many are missing or foreign and what to do.
    """
    names = set(checkpoint["state_dict"])
    missing, unknown = sorted(expected - names), sorted(names - expected)
    if missing or unknown:
        raise ArtefactError(
            f"ckpt_path: {path} holds the weights of another model or adapter: {len(missing)} of this run's "
            f"{len(expected)} trainable weights are missing (e.g. {missing[:2]}) and {len(unknown)} are unknown "
            f"(e.g. {unknown[:2]}). Resume with the config the run was started with (see its .hydra/overrides.yaml "
            "or config.yaml), or start afresh without ckpt_path"
        )
