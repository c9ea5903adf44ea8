"""Numbers that must be finite: input pixels, training losses and adapter weights.

One NaN in a volume spreads through the loss to every trained weight, and a NaN adapter
scores Dice 0 without a word. Each stage therefore refuses non-finite numbers where they
enter: pixels when a case is read (or, when the data card asks, replaces them; the files of
``evaluate`` and ``predict`` before a model loads, ``adapt.data.headers``), the loss
before it is back-propagated (``adapt.training.callbacks.FiniteLoss``), and adapter weights
before they are written and when they are loaded.

A file given as a PyTorch checkpoint is checked the same way before anything unpickles it
(``torch_file_problem``): a file of random bytes or of another format is "not a checkpoint",
rather than a pickle traceback about ``weights_only``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adapt.errors import ArtefactError, ConfigError, DataError

#: The first bytes of a file written by ``torch.save``: a zip archive (since PyTorch 1.6) or the
#: legacy format's pickled magic number.
TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19")

#: ``intensity.nonfinite`` of a data card: refuse the file, or replace NaN/Inf by 0 or by the
#: smallest finite value of the channel (the background of most scans).
NONFINITE_POLICIES = ("error", "zero", "min")


def finite_pixels(array: np.ndarray, path: str | Path, policy: str = "error", channel_axis: int = 0) -> np.ndarray:
    """``array`` with non-finite values refused or replaced as ``policy`` says (``min``: per channel,
    along ``channel_axis``).

    Raises:
        DataError: non-finite values under ``policy=error``, or a channel with no finite value.
        ConfigError: an unknown policy.
    """
    if policy not in NONFINITE_POLICIES:
        raise ConfigError(f"intensity.nonfinite={policy!r} is not one of {NONFINITE_POLICIES}")
    if not np.issubdtype(array.dtype, np.floating):
        return array
    bad = ~np.isfinite(array)
    if not bad.any():
        return array
    count, where = int(bad.sum()), tuple(int(i) for i in np.argwhere(bad)[0])
    if policy == "error":
        raise DataError(
            f"{path}: {count} of {array.size} values are NaN or infinite (first at index {list(where)}); "
            "fix or re-export the file, or set intensity: {nonfinite: zero} (or min) in the data card "
            "to replace them"
        )
    out = np.moveaxis(np.array(array, copy=True), channel_axis, 0)  # a view: filled in place
    for channel in range(out.shape[0]):
        values = out[channel]
        finite = np.isfinite(values)
        if not finite.any():
            raise DataError(f"{path}: channel {channel} holds no finite value at all; fix or re-export the file")
        values[~finite] = 0 if policy == "zero" else values[finite].min()
    return np.moveaxis(out, 0, channel_axis)


def nonfinite_policy(preprocessing: Mapping[str, Any] | None) -> str:
    """The ``intensity.nonfinite`` an adapter was trained with (recorded in its preprocessing)."""
    return ((preprocessing or {}).get("intensity") or {}).get("nonfinite", "error")


def finite_stack(pixels: np.ndarray, path: str | Path, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """A scan's ``[Z, C, H, W]`` pixels for ``predict``/``evaluate``, non-finite values handled as the
    adapter was trained (its data card's ``intensity.nonfinite``, recorded in its preprocessing)."""
    return finite_pixels(pixels, path, nonfinite_policy(preprocessing), channel_axis=1)


def nonfinite_weights(weights: Mapping[str, Any]) -> list[str]:
    """Names of the tensors in ``weights`` that hold a NaN or an infinity."""
    import torch

    return [
        name
        for name, value in weights.items()
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def check_weights(weights: Mapping[str, Any], where: str | Path, fix: str) -> None:
    """Refuse weights holding NaN or infinities.

    Raises:
        ArtefactError: names the file (or run), how many tensors are poisoned, and ``fix``.
    """
    bad = nonfinite_weights(weights)
    if bad:
        raise ArtefactError(
            f"{where}: {len(bad)} of {len(weights)} weight tensors hold NaN or infinite values (e.g. {bad[:3]}); {fix}"
        )


def torch_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, from its first bytes and (for a zip) its listing;
    ``None`` when it looks like one (its content is checked when it is read)."""
    import zipfile

    path = Path(path).expanduser()
    try:
        with path.open("rb") as file:
            head = file.read(len(TORCH_MAGIC[1]))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not head:
        return "is empty"
    if not head.startswith(TORCH_MAGIC):
        return f"is not a checkpoint: it is neither a zip archive nor a pickle as torch.save writes (it starts with {head[:4]!r})"
    if head.startswith(TORCH_MAGIC[0]):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            return f"is not a checkpoint: a broken or truncated zip archive ({err})"
        if not any(name.endswith("data.pkl") for name in names):
            return f"is not a checkpoint: a zip archive without torch.save's data.pkl (it holds {names[:3]})"
    return None
