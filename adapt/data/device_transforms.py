"""Native planes to the model's grid on the device: ``data.device_transforms=true``.

With device transforms the loader ships each sample at its own resolution -- the image in the
cache's dtype (float16 from a memory or disk cache), one uint8 mask per object, prompts
already on the model's grid (drawn on the native, augmented label as before) and, in
training with ``data.augment=true``, nine augmentation numbers (``SplitAugment``) -- so a
1024 px model costs the loader what the plane costs, not what 1024 x 1024 float32 costs.
``collate_native`` pads a batch to its largest plane and records each sample's size;
after the batch reaches the device (``SegmentationDataModule.on_after_batch_transfer``),
``to_model_grid`` resizes every sample from its true size with the same ``resize_image`` /
``resize_label`` as the loader used to (samples of one size in one call), and applies the
image's share of the augmentation to the whole batch. The result is the batch the loader
used to build: ``image`` ``[B, C, S, S]`` float32 in [0, 1], ``label`` ``[B, N, S, S]``
float; without augmentation it is that batch exactly (on CPU; on a GPU to its rounding).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from adapt.models.primitives import resize_image
from adapt.transforms.slices import resize_label

__all__ = ["AUGMENT", "NATIVE_SIZE", "augment_pixels", "collate_native", "model_sample", "to_model_grid"]

#: Batch key of each sample's true ``(height, width)`` (a list: it stays on the host).
NATIVE_SIZE = "native_size"
#: Batch key of the per-sample augmentation parameters ``[B, 9]`` (``adapt.transforms.augment.SplitAugment``).
AUGMENT = "augment"
PADDED = ("image", "label")


def pad_stack(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[..., H_i, W_i]`` tensors stacked into ``[B, ..., H, W]`` at the largest sides, zero-padded
    at the bottom and right."""
    height = max(p.shape[-2] for p in planes)
    width = max(p.shape[-1] for p in planes)
    if all(tuple(p.shape[-2:]) == (height, width) for p in planes):
        return torch.stack(list(planes))
    out = planes[0].new_zeros((len(planes), *planes[0].shape[:-2], height, width))
    for b, plane in enumerate(planes):
        out[b, ..., : plane.shape[-2], : plane.shape[-1]] = plane
    return out


def collate_native(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Native samples into one batch: ``image`` and ``label`` padded to the batch's largest plane,
    ``native_size`` the true ``[height, width]`` of each, the rest collated as usual."""
    batch = default_collate([{k: v for k, v in s.items() if k not in PADDED} for s in samples])
    for key in PADDED:
        batch[key] = pad_stack([s[key] for s in samples])
    batch[NATIVE_SIZE] = [[int(s["image"].shape[-2]), int(s["image"].shape[-1])] for s in samples]
    return batch


def size_groups(sizes: Sequence[Sequence[int]]) -> dict[tuple[int, int], list[int]]:
    """Sample positions by true ``(height, width)``, in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for b, (height, width) in enumerate(sizes):
        groups.setdefault((int(height), int(width)), []).append(b)
    return groups


def to_model_grid(batch: dict[str, Any], size: int) -> dict[str, Any]:
    """A native batch (``collate_native``, on any device) as the model's batch, in place.

    Each sample's image is resized from its true size to ``size`` with ``resize_image`` and its
    masks with ``resize_label``, exactly as the loader-side path does; then, if the batch
    carries augmentation parameters, ``augment_pixels`` applies them. ``native_size`` and
    ``augment`` are removed; a batch without ``native_size`` is returned unchanged.
    """
    if NATIVE_SIZE not in batch:
        return batch
    sizes = batch.pop(NATIVE_SIZE)
    image, label = batch["image"], batch["label"]
    groups = size_groups(sizes)
    if len(groups) == 1:  # one plane size (a volume's slices): no gather, no scatter
        (height, width), _ = next(iter(groups.items()))
        pixels = resize_image(image[..., :height, :width], size)
        masks = resize_label(label[..., :height, :width], size).float()
    else:
        pixels = image.new_empty((image.shape[0], image.shape[1], size, size), dtype=torch.float32)
        masks = label.new_empty((label.shape[0], label.shape[1], size, size), dtype=torch.float32)
        for (height, width), members in groups.items():
            index = torch.tensor(members, device=image.device)
            pixels[index] = resize_image(image[index, :, :height, :width], size)
            masks[index] = resize_label(label[index, :, :height, :width], size).float()
    params = batch.pop(AUGMENT, None)
    batch["image"] = augment_pixels(pixels, params) if params is not None else pixels
    batch["label"] = masks
    return batch


def model_sample(sample: dict[str, Any], size: int) -> dict[str, Any]:
    """One native sample (``dataset[i]``) as the model receives it, without the batch axis: what
    ``to_model_grid`` makes of a batch of it. A sample already on the model's grid is returned as is."""
    if sample["label"].is_floating_point():  # native labels are uint8 masks
        return sample
    batch = to_model_grid(collate_native([sample]), size)
    out = {k: v for k, v in sample.items() if k != AUGMENT}
    out["image"], out["label"] = batch["image"][0], batch["label"][0]
    return out


def augment_pixels(image: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The image's share of ``SplitAugment`` on a batch ``[B, C, S, S]``: per sample an affine warp
    (``F.affine_grid`` theta, bilinear, zeros outside; only samples whose theta is not the
    identity are warped), then ``image * gain + offset`` clamped to [0, 1], then ``** gamma``.

    Args:
        image: ``[B, C, S, S]`` float in [0, 1] on the model's grid.
        params: ``[B, 9]``: theta (2 x 3 row-major), gain, offset, gamma.
    """
    params = params.to(device=image.device, dtype=torch.float32)
    theta = params[:, :6].view(-1, 2, 3)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=image.device)
    moved = (theta != identity).flatten(1).any(1).nonzero().flatten()
    out = image
    if len(moved):
        out = image.clone()
        grid = F.affine_grid(theta[moved], [len(moved), *image.shape[1:]], align_corners=False)
        out[moved] = F.grid_sample(image[moved], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain, offset, gamma = (params[:, k].view(-1, 1, 1, 1) for k in (6, 7, 8))
    out = (out * gain + offset).clamp_(0.0, 1.0)
    if bool((gamma != 1).any()):
        out = out.pow(gamma)
    return out
