"""Video object segmentation metrics as the DAVIS benchmark defines them: J, F and J&F.

J is the IoU of each frame. F is a boundary F-measure: a predicted boundary pixel counts
as correct (precision) if a ground-truth boundary pixel lies within a disk of radius
``bound_pix`` around it, and vice versa (recall). The defaults reproduce the official
davis2017-evaluation code (``db_eval_iou``, ``f_measure``), so J&F can be compared with
published numbers:

* boundaries by DAVIS's ``seg2bmap`` rule (``boundary="davis"``): a pixel, inside or
  outside the object, is a boundary pixel if it differs from its right, lower or
  lower-right neighbour. In the last row only the right neighbour is compared, in the
  last column only the lower one, and the bottom-right pixel is never a boundary, so an
  object touching the image border has no boundary along it;
* tolerance ``bound_pix = ceil(bound_th * sqrt(H² + W²))`` for ``bound_th < 1`` (0.008 by
  default: 8 px at 854x480) and ``bound_th`` pixels for ``bound_th >= 1``;
* dilation by ``skimage.morphology.disk(bound_pix)``: the offsets with
  ``dy² + dx² <= bound_pix²``, zero outside the image (OpenCV's ``dilate``).

``boundary="inner"`` (the mask minus its erosion by a 3x3 cross, MONAI's edge rule, with
the image border counted as a boundary) was this module's default before; it is kept
for continuity with older runs and must be labelled where it is reported. The rules agree
to about 0.02 in a frame's F on objects inside the frame, not on objects along the image
border, whose border pixels "inner" counts as boundary on both sides and so as matched:
a 10x10 square in the corner of a 20x20 frame shifted by 2 px has F 11/24 (DAVIS) against
5/9 ("inner") at 1 px, and a band along the top whose lower edge is 5 px off has 0 against
40/61 (tests/test_metrics.py).

A non-integer pixel tolerance such as ``bound_th=2.5`` is refused: DAVIS passes it to
``disk(2.5)``, which is a 6x6 array holding a 4x4 square, and OpenCV anchors an even
kernel off centre, so the "disk" is a square shifted by half a pixel; no paper's number
means that. An integer-valued float (``2.0``) is the same as the integer.

Empty conventions (DAVIS's): J is 1 when both masks are empty, 0 when one is. For F,
precision is 1 when the prediction has no boundary and recall is 1 when the ground
truth has none, so both empty gives F = 1 and exactly one empty gives F = 0. Scores are
float32 (DAVIS computes in float64: values agree to about 1e-7).

DAVIS semi-supervised evaluation leaves out the first frame (given as the prompt) and
the last; slice ``[..., 1:-1, :, :]`` before calling :func:`j_and_f` to follow it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from adapt.metrics.overlap import ArrayLike, as_mask, check_same_shape, iou_score, safe_divide

#: DAVIS's boundary tolerance as a fraction of the image diagonal.
BOUND_TH = 0.008

Boundary = Literal["inner", "davis"]


def boundary_pixels(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """The match radius in pixels, as DAVIS's ``f_measure`` computes ``bound_pix``.

    Args:
        height: frame height in pixels.
        width: frame width in pixels.
        bound_th: a fraction of the image diagonal if < 1 (``ceil(bound_th * sqrt(H² + W²))``),
            else a whole number of pixels.

    Raises:
        ValueError: ``bound_th`` is negative, not finite, or >= 1 and not a whole number
            (DAVIS's ``disk(2.5)`` is an off-centre 4x4 square, see the module docstring).
    """
    if not math.isfinite(bound_th) or bound_th < 0:
        raise ValueError(f"bound_th must be a fraction of the diagonal (< 1) or whole pixels, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(
                f"bound_th={bound_th}: a pixel tolerance >= 1 must be a whole number of pixels. DAVIS's code "
                f"passes it to skimage's disk({bound_th}), an even-sized square footprint that OpenCV anchors off "
                f"centre, not a disk; use {math.floor(bound_th)} or {math.ceil(bound_th)} pixels, or a fraction "
                "of the diagonal below 1"
            )
        return int(bound_th)
    # sqrt of the exact integer sum, as numpy's norm of the shape: no rounding apart at integer products
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def _inner_boundary(mask: torch.Tensor) -> torch.Tensor:
    """Object pixels with a 4-neighbour outside the object or the image (mask minus its erosion)."""
    padded = F.pad(mask, (1, 1, 1, 1), value=False)
    eroded = (
        padded[..., 1:-1, 1:-1]
        & padded[..., :-2, 1:-1]
        & padded[..., 2:, 1:-1]
        & padded[..., 1:-1, :-2]
        & padded[..., 1:-1, 2:]
    )
    return mask & ~eroded


def _davis_boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels (inside or out) differing from their right, lower or lower-right neighbour, as ``seg2bmap``.

    Neighbours beyond the image repeat the edge pixel. That gives ``seg2bmap``'s border rule
    exactly: in the last row the lower and lower-right neighbours equal the pixel and its right
    neighbour, so only the right one can differ; in the last column only the lower one; the
    bottom-right pixel has no differing neighbour. The image border itself is no boundary.
    """
    padded = torch.cat([mask, mask[..., -1:, :]], dim=-2)
    padded = torch.cat([padded, padded[..., :, -1:]], dim=-1)
    east, south, south_east = padded[..., :-1, 1:], padded[..., 1:, :-1], padded[..., 1:, 1:]
    return (mask ^ east) | (mask ^ south) | (mask ^ south_east)


_BOUNDARIES = {"inner": _inner_boundary, "davis": _davis_boundary}


def boundary_map(mask: ArrayLike, boundary: Boundary = "davis") -> torch.Tensor:
    """One-pixel-wide boundaries of masks ``[..., H, W]``.

    Args:
        mask: masks; nonzero is foreground.
        boundary: ``"davis"`` (default), the DAVIS toolkit's ``seg2bmap`` rule, half a pixel
            towards the origin, the image border not a boundary; ``"inner"``, the mask minus
            its 4-connected erosion (MONAI's edges), the image border a boundary.

    Raises:
        ValueError: an unknown ``boundary``.
    """
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {sorted(_BOUNDARIES)}, got {boundary!r}")
    return _BOUNDARIES[boundary](as_mask(mask))


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    """A ``[1, 1, 2r+1, 2r+1]`` kernel of the offsets with ``dy² + dx² <= r²``: ``skimage.morphology.disk(r)``."""
    offsets = torch.arange(-radius, radius + 1, device=device)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()[None, None]


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``[..., H, W]`` masks by a disk, as one convolution over all frames.

    Zero padding: nothing outside the image matches, as with OpenCV's ``dilate`` in DAVIS.
    """
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    grown = F.conv2d(flat, _disk(radius, mask.device), padding=radius) > 0.5
    return grown.reshape(mask.shape)


def _without_void(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks with void (unlabelled) pixels removed from both, as DAVIS does."""
    pred_t = as_mask(pred)
    gt_t = as_mask(gt).to(pred_t.device)
    check_same_shape(pred_t, gt_t)
    if void is None:
        return pred_t, gt_t
    keep = ~as_mask(void).to(pred_t.device)
    return pred_t & keep, gt_t & keep


def region_similarity_j(pred: ArrayLike, gt: ArrayLike, void: ArrayLike | None = None) -> torch.Tensor:
    """DAVIS J: IoU per frame of masks ``[..., H, W]``, void pixels excluded; both empty is 1."""
    pred_t, gt_t = _without_void(pred, gt, void)
    return iou_score(pred_t, gt_t, dims=2, empty=1.0)


def boundary_precision_recall(
    pred: ArrayLike,
    gt: ArrayLike,
    bound_th: float = BOUND_TH,
    void: ArrayLike | None = None,
    boundary: Boundary = "davis",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary precision and recall per frame of masks ``[..., H, W]`` (see the module docstring).

    Arguments as :func:`contour_accuracy_f`; a side with no boundary has ratio 1 (DAVIS).
    """
    pred_t, gt_t = _without_void(pred, gt, void)
    radius = boundary_pixels(*pred_t.shape[-2:], bound_th=bound_th)
    pred_edge, gt_edge = boundary_map(pred_t, boundary), boundary_map(gt_t, boundary)
    pred_hit = (pred_edge & _dilate(gt_edge, radius)).sum((-2, -1))
    gt_hit = (gt_edge & _dilate(pred_edge, radius)).sum((-2, -1))
    # A side with no boundary has nothing wrong in it: its ratio is 1 (DAVIS).
    precision = safe_divide(pred_hit, pred_edge.sum((-2, -1)), 1.0, torch.float32)
    recall = safe_divide(gt_hit, gt_edge.sum((-2, -1)), 1.0, torch.float32)
    return precision, recall


def contour_accuracy_f(
    pred: ArrayLike,
    gt: ArrayLike,
    bound_th: float = BOUND_TH,
    void: ArrayLike | None = None,
    boundary: Boundary = "davis",
) -> torch.Tensor:
    """DAVIS F: the harmonic mean of boundary precision and recall per frame, 0 if both are 0.

    Args:
        pred: predicted masks ``[..., H, W]`` (frames, objects, ... in front); nonzero is foreground.
        gt: ground-truth masks of the same shape.
        bound_th: tolerance, a fraction of the image diagonal (< 1) or whole pixels (>= 1);
            see :func:`boundary_pixels`.
        void: optional mask of unlabelled pixels, removed from both before the boundaries.
        boundary: ``"davis"`` (default) reproduces the DAVIS toolkit's F; ``"inner"`` is the
            morphological rule of earlier versions (see :func:`boundary_map`).

    Returns:
        float32 tensor ``pred.shape[:-2]``.

    Raises:
        ValueError: a non-integer pixel tolerance ``bound_th >= 1`` or an unknown ``boundary``.
    """
    precision, recall = boundary_precision_recall(pred, gt, bound_th, void, boundary)
    total = precision + recall
    return torch.where(total > 0, 2 * precision * recall / torch.where(total > 0, total, 1.0), 0.0)


@dataclass(frozen=True)
class VideoScores:
    """Per-frame J and F of one or more objects, shape ``[..., T]``, and their DAVIS summaries.

    ``boundary`` names the rule F was computed with; report it next to any F or J&F that
    is not the DAVIS default.
    """

    j: torch.Tensor
    f: torch.Tensor
    boundary: Boundary = "davis"

    @property
    def j_mean(self) -> torch.Tensor:
        """J-Mean per object: the mean over frames."""
        return self.j.mean(-1)

    @property
    def f_mean(self) -> torch.Tensor:
        """F-Mean per object."""
        return self.f.mean(-1)

    @property
    def j_and_f(self) -> torch.Tensor:
        """J&F per object: ``(J-Mean + F-Mean) / 2``."""
        return (self.j_mean + self.f_mean) / 2


def j_and_f(
    pred: ArrayLike,
    gt: ArrayLike,
    bound_th: float = BOUND_TH,
    void: ArrayLike | None = None,
    boundary: Boundary = "davis",
) -> VideoScores:
    """J and F of every frame of masks ``[..., T, H, W]`` (e.g. ``[objects, frames, H, W]``).

    A dataset's J&F is the mean over all objects of all sequences of
    :attr:`VideoScores.j_mean`, and likewise for F, then their average, as DAVIS reports it.
    The defaults are DAVIS's protocol; arguments as :func:`contour_accuracy_f`.
    """
    return VideoScores(
        j=region_similarity_j(pred, gt, void),
        f=contour_accuracy_f(pred, gt, bound_th, void, boundary),
        boundary=boundary,
    )
