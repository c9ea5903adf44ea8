"""Prompt simulation from ground-truth masks: boxes with jitter, positive/negative points.

Every function takes an explicit ``numpy.random.Generator`` so a prompt is a pure
function of (mask, seed): the same seed gives the same prompts in training, evaluation
and across processes. Coordinates are ``(x, y)`` in pixels of the mask's own grid (the
plane's native pixels); ``adapt.models.primitives.to_model_coords`` maps them onto the
model's grid as SAM2 maps a user's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adapt.transforms.names import PROMPT_KINDS


def prompt_rng(seed: int, *key: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and an integer key (e.g. sample index, epoch)."""
    return np.random.default_rng([int(seed), *(int(k) for k in key)])


def box_from_mask(mask: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Tight box ``[x0, y0, x1, y1]`` around a 2D mask, optionally jittered outwards.

    The jitter moves each side by up to ``jitter`` times the box side, outwards only, so the
    box always contains the whole mask (SAM-style box noise that never cuts the object).
    The box is clipped to the image.

    Args:
        mask: 2D array, non-zero = object.
        jitter: largest side displacement as a fraction of the box width/height.
        rng: generator for the jitter; required when ``jitter > 0``.

    Raises:
        ValueError: the mask is empty or not 2D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"box_from_mask needs a 2D mask, got shape {mask.shape}")
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("box_from_mask: the mask is empty; an empty target has no box prompt")
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    box = np.array([x0, y0, x1, y1], dtype=np.float32)
    if jitter > 0:
        if rng is None:
            raise ValueError("box_from_mask: jitter > 0 needs an rng")
        w, h = x1 - x0 + 1, y1 - y0 + 1
        shift = rng.uniform(0, jitter, size=4) * np.array([w, h, w, h])
        box += shift * np.array([-1, -1, 1, 1])
        height, width = mask.shape
        box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)
    return box


def sample_points(
    mask: np.ndarray,
    num_positive: int = 1,
    num_negative: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample points inside (label 1) and outside (label 0) a 2D mask.

    Positive points are drawn uniformly from the object's pixels; negative points from
    the background inside the object's box grown by half its size (near misses are the
    informative ones). Points are pixel centres.

    Returns:
        ``(points, labels)``: ``float32 [k, 2]`` as ``(x, y)`` and ``int64 [k]``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    mask = np.asarray(mask) > 0
    if not mask.any():
        raise ValueError("sample_points: the mask is empty; an empty target has no point prompt")
    pos = np.argwhere(mask)
    chosen = pos[rng.choice(len(pos), size=num_positive, replace=len(pos) < num_positive)]
    points = [chosen[:, ::-1]]
    labels = [np.ones(num_positive, dtype=np.int64)]
    if num_negative:
        neg = np.argwhere(~mask & _grown_box(mask))
        if len(neg) == 0:
            neg = np.argwhere(~mask)
        if len(neg) == 0:
            raise ValueError("sample_points: the mask covers the image; no negative point exists")
        chosen = neg[rng.choice(len(neg), size=num_negative, replace=len(neg) < num_negative)]
        points.append(chosen[:, ::-1])
        labels.append(np.zeros(num_negative, dtype=np.int64))
    return np.concatenate(points).astype(np.float32), np.concatenate(labels)


def _grown_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    region = np.zeros_like(mask)
    region[
        max(ys.min() - h // 2, 0) : ys.max() + h // 2 + 1,
        max(xs.min() - w // 2, 0) : xs.max() + w // 2 + 1,
    ] = True
    return region


@dataclass(frozen=True)
class PromptSimulator:
    """Turns a binary mask into SAM2 prompts, deterministically under ``seed``.

    Attributes:
        kind: ``box``, ``point`` (one positive click), ``points`` (``num_positive`` +
            ``num_negative`` clicks) or ``box+points``.
        jitter: outward box noise as a fraction of the box side (0 = tight box).
        num_positive: positive clicks for ``points`` / ``box+points``.
        num_negative: negative clicks for ``points`` / ``box+points``.
        seed: base seed; the per-sample key is given at call time.
    """

    kind: str = "box"
    jitter: float = 0.0
    num_positive: int = 1
    num_negative: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"prompt kind {self.kind!r} is not one of {PROMPT_KINDS}")

    @property
    def num_points(self) -> int:
        """How many points each prompt carries (0 for box-only prompts)."""
        if self.kind == "box":
            return 0
        if self.kind == "point":
            return 1
        return self.num_positive + self.num_negative

    def __call__(self, mask: np.ndarray, key: Sequence[int] = ()) -> dict[str, np.ndarray]:
        """Prompts for one object mask.

        Args:
            mask: 2D binary mask of the object.
            key: integers that identify the sample (index, epoch, object); same key = same prompt.

        Returns:
            ``boxes`` ``float32 [1, 4]`` and/or ``points`` ``float32 [1, k, 2]`` with
            ``point_labels`` ``int64 [1, k]`` (one object per mask: leading dim 1).
        """
        rng = prompt_rng(self.seed, *key)
        out: dict[str, np.ndarray] = {}
        if self.kind in ("box", "box+points"):
            out["boxes"] = box_from_mask(mask, self.jitter, rng)[None]
        if self.kind != "box":
            n_pos, n_neg = (1, 0) if self.kind == "point" else (self.num_positive, self.num_negative)
            points, labels = sample_points(mask, n_pos, n_neg, rng)
            out["points"], out["point_labels"] = points[None], labels[None]
        return out
