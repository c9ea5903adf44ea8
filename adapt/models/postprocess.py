"""SAM2's mask post-processing: filling small holes in low-resolution mask logits.

SAM2's video predictor (``build_sam2_video_predictor`` sets ``fill_hole_area=8``) fills
every background region (logits ``<= 0``) of at most ``fill_hole_area`` low-resolution
pixels with the logit 0.1 before the masks are upsampled to the video's size, so that
tiny specks of background inside an object do not show. Meta does this with a CUDA
extension (``sam2._C.get_connected_components``: 8-connected components and their areas)
and skips the step with a warning wherever the extension is missing, CPU included: the
same checkpoint then gives different masks on different machines. ``fill_holes`` is the
same rule in plain torch (runs on CPU and GPU, batched, deterministic):

* regions are 8-connected, as in Meta's kernel;
* a region touching the image border is a hole too when small enough (Meta's kernel
  has no border rule);
* filled pixels get exactly 0.1; every other logit is returned unchanged.

Where SAM2 applies it (for whoever wires it in): to the low-res masks a frame outputs
(``SAM2VideoPredictor._run_single_frame_inference``), after the frame's memory has been
encoded from the unfilled logits, with one exception: a prompted frame's memory is encoded
(``propagate_in_video_preflight``) from its stored, already filled, low-res logits,
upsampled bilinearly to the model's input size.

Components are labelled by iterated minimum-label propagation over each pixel's
neighbourhood with pointer jumping (a pixel's label is the flat index of a pixel of the
same component, so it may take that pixel's label); it stops when nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: SAM2's video predictor default (``build_sam2_video_predictor``): holes up to 8 low-res pixels.
FILL_HOLE_AREA = 8

#: Logit SAM2 gives a filled hole (just above the 0 threshold).
HOLE_FILL_LOGIT = 0.1


def _neighbourhood_min(labels: torch.Tensor, connectivity: int, fill: int) -> torch.Tensor:
    """Minimum of each pixel's 3x3 (8) or plus-shaped (4) neighbourhood, itself included."""
    padded = F.pad(labels, (1, 1, 1, 1), value=fill)
    rows = torch.minimum(torch.minimum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    if connectivity == 8:
        return torch.minimum(torch.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    columns = torch.minimum(torch.minimum(padded[:, :-2, 1:-1], padded[:, 1:-1, 1:-1]), padded[:, 2:, 1:-1])
    return torch.minimum(rows[:, 1:-1], columns)


def _labels(mask: torch.Tensor, connectivity: int, steps: int | None) -> torch.Tensor:
    """Min-label propagation on boolean ``[P, H, W]``: at most ``steps`` rounds (``None``: to the end).

    Pixels outside ``mask`` hold the sentinel ``H * W``; inside, every label is the flat index
    of a pixel of the same component, never above the pixel's own, and after ``k`` rounds no
    larger than the smallest index within ``k`` steps of the pixel inside its component.
    """
    planes, height, width = mask.shape
    size = height * width
    dtype = torch.int32 if size < 2**31 - 1 else torch.int64  # int32 halves the memory traffic
    index = torch.arange(size, dtype=dtype, device=mask.device).view(1, height, width)
    outside = torch.tensor(size, dtype=dtype, device=mask.device)
    labels = torch.where(mask, index, outside)
    sentinel = labels.new_full((planes, 1), size)
    done = 0
    while steps is None or done < steps:
        step = torch.where(mask, _neighbourhood_min(labels, connectivity, size), outside)
        table = torch.cat([step.reshape(planes, size), sentinel], dim=1)
        jumped = torch.gather(table, 1, table[:, :size].long()).view(planes, height, width)  # pointer jumping
        if torch.equal(jumped, labels):
            break
        labels, done = jumped, done + 1
    return labels


def _per_component(labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over each pixel's label group, at every pixel (``[P, H, W]``)."""
    planes = labels.shape[0]
    flat = labels.reshape(planes, -1).long()
    sums = torch.zeros(planes, flat.shape[1] + 1, dtype=torch.long, device=labels.device)
    sums.scatter_add_(1, flat, values.reshape(planes, -1).long())
    return torch.gather(sums, 1, flat).view_as(labels)


def _planes(mask: torch.Tensor, connectivity: int) -> torch.Tensor:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if mask.ndim < 2:
        raise ValueError(f"mask must be [..., H, W], got shape {tuple(mask.shape)}")
    return mask.reshape(-1, *mask.shape[-2:]).bool()


def connected_components(mask: torch.Tensor, connectivity: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Connected components of the ``True`` pixels of each ``[H, W]`` plane of ``mask``.

    Args:
        mask: boolean ``[..., H, W]``.
        connectivity: 8 (diagonal neighbours connect, as SAM2's kernel) or 4.

    Returns:
        ``(labels, areas)``, both int64 ``[..., H, W]``: a component's label is 1 + the
        smallest flat index (``row * W + col``) of its pixels, its area the pixel count of
        its component; both are 0 outside ``mask``.
    """
    planes = _planes(mask, connectivity)
    if planes.numel() == 0:
        return torch.zeros(mask.shape, dtype=torch.long, device=mask.device), torch.zeros(
            mask.shape, dtype=torch.long, device=mask.device
        )
    labels = _labels(planes, connectivity, None)
    areas = torch.where(planes, _per_component(labels, torch.ones_like(labels)), 0)
    return torch.where(planes, labels.long() + 1, 0).view(mask.shape), areas.view(mask.shape)


def small_components(mask: torch.Tensor, max_area: int, connectivity: int = 8) -> torch.Tensor:
    """The ``True`` pixels of ``mask`` ``[..., H, W]`` whose component has at most ``max_area`` pixels.

    Exact, and cheaper than ``connected_components`` for small ``max_area``: a component of
    at most ``max_area`` pixels is labelled completely after ``max_area - 1`` propagation
    rounds; a label group with a neighbour of another label (inside the mask) is part of a
    larger, unfinished component and is never selected.
    """
    planes = _planes(mask, connectivity)
    if max_area <= 0 or planes.numel() == 0:
        return torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)
    size = planes.shape[-1] * planes.shape[-2]
    labels = _labels(planes, connectivity, max_area - 1)
    lower = _neighbourhood_min(labels, connectivity, size) != labels
    upper = _neighbourhood_min(torch.where(planes, -labels, 1), connectivity, 1) != -labels
    unfinished = planes & (lower | upper)
    complete = _per_component(labels, unfinished) == 0
    small = _per_component(labels, torch.ones_like(labels)) <= max_area
    return (planes & complete & small).view(mask.shape)


def fill_holes(logits: torch.Tensor, max_area: int, connectivity: int = 8) -> torch.Tensor:
    """Set background regions (logits ``<= 0``) of at most ``max_area`` pixels to 0.1, as SAM2 does.

    Args:
        logits: mask logits ``[..., H, W]`` (SAM2 applies it to the 256 x 256 low-res masks).
        max_area: largest region, in pixels, that is filled; ``<= 0`` returns ``logits`` as is.
        connectivity: 8 (SAM2's) or 4.

    Returns:
        A new tensor of the same shape and dtype (``logits`` itself when ``max_area <= 0``).
    """
    if max_area <= 0 or logits.numel() == 0:
        return logits
    holes = small_components(logits <= 0, max_area, connectivity)
    return torch.where(holes, torch.tensor(HOLE_FILL_LOGIT, dtype=logits.dtype, device=logits.device), logits)
