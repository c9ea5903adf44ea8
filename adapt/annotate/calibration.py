"""Predicted IoU -> expected Dice: an isotonic fit on the adapter's validation split.

SAM2's IoU head predicts how well each mask overlaps its object, but an adapter on a new domain
(or random base weights) makes that number optimistic or meaningless. ``fit`` learns a monotone
map from it to the Dice measured against ground truth (pool-adjacent-violators, the algorithm of
isotonic regression; scikit-learn is not a dependency), so "accept" means "expected Dice above the
threshold" on data like the validation cases. ``report`` measures it honestly: every case's
calibrated value comes from a fit on the other folds (cross-fitting), and states the expected
calibration error (ECE, 10 equal-width bins) before and after, and the share of masks flagged
"accept" whose measured Dice really is at or above the threshold.

Without a calibration file the worklist uses ``DEFAULT_RULE``: accept when the IoU head and the
agreement under prompt jitter are both at or above the threshold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adapt.annotate import CALIBRATION_FILE
from adapt.errors import ConfigError
from adapt.storage import write_atomically

BINS = 10
FOLDS = 5
DEFAULT_RULE = "accept when predicted IoU >= accept_dice and jitter agreement >= accept_dice (no calibration.json)"


@dataclass
class Calibration:
    """A monotone step map: ``x`` (increasing predicted IoU, block means) -> ``y`` (mean measured Dice)."""

    x: list[float]
    y: list[float]

    def __call__(self, values: np.ndarray | Sequence[float]) -> np.ndarray:
        """Expected Dice of each predicted IoU (linear between block means, constant beyond)."""
        return np.interp(np.asarray(values, dtype=float), self.x, self.y)


def fit(predicted: Sequence[float], measured: Sequence[float]) -> Calibration:
    """Isotonic (non-decreasing) least-squares fit of ``measured`` on ``predicted`` (pool adjacent violators).

    Raises:
        ConfigError: fewer than two masks, or arrays of different lengths.
    """
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if x.shape != y.shape or x.size < 2:
        raise ConfigError(
            f"calibration needs at least two masks with a predicted IoU and a measured Dice; got {x.size}"
        )
    order = np.argsort(x, kind="stable")
    blocks: list[list[float]] = []  # [sum y, count, sum x]
    for xi, yi in zip(x[order], y[order]):
        blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count, xs = blocks.pop()
            blocks[-1] = [blocks[-1][0] + total, blocks[-1][1] + count, blocks[-1][2] + xs]
    return Calibration([b[2] / b[1] for b in blocks], [b[0] / b[1] for b in blocks])


def expected_calibration_error(predicted: np.ndarray, measured: np.ndarray, bins: int = BINS) -> float:
    """Mean |mean predicted - mean measured| over equal-width bins of ``predicted`` in [0, 1], weighted by count."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    index = np.clip((predicted * bins).astype(int), 0, bins - 1)
    error = 0.0
    for b in np.unique(index):
        chosen = index == b
        error += chosen.mean() * abs(predicted[chosen].mean() - measured[chosen].mean())
    return float(error)


def cross_fitted(predicted: np.ndarray, measured: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each mask's calibrated value from a fit on the other folds (the whole fit when too few masks)."""
    count = len(predicted)
    folds = min(folds, count // 2)
    if folds < 2:
        return fit(predicted, measured)(predicted)
    assignment = np.random.default_rng(seed).permutation(count) % folds
    out = np.empty(count)
    for f in range(folds):
        held = assignment == f
        out[held] = fit(predicted[~held], measured[~held])(predicted[held])
    return out


def report(predicted: Sequence[float], measured: Sequence[float], threshold: float) -> dict[str, Any]:
    """The fit on every mask, and how well it is calibrated (cross-fitted; see the module doc)."""
    x, y = np.asarray(predicted, float), np.asarray(measured, float)
    calibrated = cross_fitted(x, y)
    accepted = calibrated >= threshold
    raw_accepted = x >= threshold
    share = lambda flags: float((y[flags] >= threshold).mean()) if flags.any() else None  # noqa: E731
    return {
        "calibration": asdict(fit(x, y)),
        "masks": int(x.size),
        "threshold": float(threshold),
        "ece_raw": expected_calibration_error(x, y),
        "ece_calibrated": expected_calibration_error(calibrated, y),
        "accepted": int(accepted.sum()),
        "accept_precision": share(accepted),
        "accepted_raw": int(raw_accepted.sum()),
        "accept_precision_raw": share(raw_accepted),
        "mean_dice": float(y.mean()),
        "mean_predicted_iou": float(x.mean()),
    }


def write(folder: Path, content: dict[str, Any]) -> Path:
    """``calibration.json`` in the adapter folder, written whole or not at all."""
    path = Path(folder) / CALIBRATION_FILE
    text = json.dumps(content, indent=2).encode()
    write_atomically(path, lambda f: f.write(text), "adapter", "free space in the adapter's folder")
    return path


def read(folder: Path | None) -> Calibration | None:
    """The adapter's calibration, or ``None`` when it has none (zero-shot: never)."""
    path = Path(folder) / CALIBRATION_FILE if folder else None
    if path is None or not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())["calibration"]
        return Calibration([float(v) for v in content["x"]], [float(v) for v in content["y"]])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{path}: not a calibration written by python -m adapt.annotate calibrate ({err}); "
            "run calibrate again, or delete the file"
        ) from None
