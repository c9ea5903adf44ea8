"""SAM2's forward primitives, as SAM2 itself defines them: pixels in, prompts mapped, logits out.

Every path that feeds the model -- training, evaluation, prediction, propagation, export --
goes through these functions, so an image reaches SAM2 one way only:

* ``resize_image``: a plane to the model's square side with antialiased bilinear
  interpolation (pixel centres aligned), what SAM2's image transforms do to a float image
  (torchvision's ``Resize`` on tensors). Upsampling is plain bilinear either way.
  ``resize_bilinear`` is the same filter for any value range (mask prompts, memory masks).
* ``preprocess``: resize, then 3 channels (``channel_mapping`` or the model's learned input
  projection), then the backbone's mean/std (``pixel_stats``).
* ``to_model_coords``: prompt coordinates of an ``H x W`` plane on the model's grid as SAM2
  maps them, ``x * S / W`` and ``y * S / H`` (SAM2 was trained with boxes and clicks in
  that frame; a half-pixel-centre mapping lands prompts half a model pixel off).
* ``image_embeddings`` / ``decode``: the image encoder with autograd (``Sam2Model``'s own
  ``get_image_embeddings`` runs under ``no_grad``) and the prompt encoder + mask decoder.
* ``upsample_logits``: low-resolution logits back to a plane's size (bilinear), the only
  place where logits are resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel

from adapt.models.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_of_type


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (adapter layers stay live inside it)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def resize_bilinear(values: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Float maps ``[..., H, W]`` to ``size``: bilinear, antialiased, pixel centres aligned (as SAM2
    resizes images and mask prompts); any value range, every leading index resized on its own."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(values.shape[-2:]) == size:
        return values.float()
    lead = values.shape[:-2]
    flat = values.reshape(-1, 1, *values.shape[-2:]).float()
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized.reshape(*lead, *size)


def resize_image(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Pixels ``[..., H, W]`` in [0, 1] to ``size`` (``resize_bilinear``), clamped to [0, 1]: the
    filter's rounding can step a hair (1e-7) past the ends."""
    resized = resize_bilinear(image, size)
    return resized if resized.shape[-2:] == image.shape[-2:] else resized.clamp_(0.0, 1.0)


def resize_video_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """8-bit RGB video frames ``[T, 3, H, W]`` to ``[T, 3, S, S]`` in [0, 1] as SAM2's video predictor
    reads them: each frame resized as an 8-bit image with Pillow's bicubic filter, then / 255.

    SAM2 resizes video frames this way (not like still images), so a video meets the memory
    model with the pixels it was trained on.
    """
    from PIL import Image

    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(
            f"resize_video_frames expects uint8 RGB frames [T, 3, H, W], got {frames.dtype} {tuple(frames.shape)}"
        )
    resized = [
        np.asarray(Image.fromarray(frame.permute(1, 2, 0).cpu().numpy()).resize((size, size), Image.BICUBIC))
        for frame in frames
    ]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0


def channel_mapping(image: torch.Tensor) -> torch.Tensor:
    """Channels ``[B, C, H, W]`` to 3, the fixed parameter-free map: 1 is repeated to RGB (grey CT/MR);
    3 are kept; 2 become ``(c0, c1, mean)``; more than 3 are averaged in three contiguous groups.
    A learned input projection (``adapt.models.channels``) starts from exactly this map."""
    channels = image.shape[1]
    if channels == 1:
        return image.repeat(1, 3, 1, 1)
    if channels == 2:
        return torch.cat([image, image.mean(1, keepdim=True)], dim=1)
    if channels > 3:
        groups = torch.tensor_split(image, 3, dim=1)
        return torch.cat([g.mean(1, keepdim=True) for g in groups], dim=1)
    return image


def normalise(
    image: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """RGB ``[B, 3, H, W]`` in [0, 1] to the backbone's input: its mean/std (``pixel_stats``; ImageNet's by default)."""
    return (image - image.new_tensor(mean).view(1, 3, 1, 1)) / image.new_tensor(std).view(1, 3, 1, 1)


def pixel_stats(model: torch.nn.Module) -> dict[str, tuple[float, float, float]]:
    """``mean`` and ``std`` the model's backbone normalises with (``preprocess``'s keyword arguments):
    ImageNet's for SAM2.1 and EdgeTAM, 0.5 for the SAM 3 tracker, as their references do."""
    row = backbone_of_type(str(getattr(base_model(model).config, "model_type", "")))
    return {"mean": row.mean, "std": row.std}


def preprocess(
    image: torch.Tensor,
    image_size: int | None = None,
    projection: torch.nn.Module | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Images in [0, 1] to the backbone's input: square side, 3 channels, its mean/std (``pixel_stats``;
    ImageNet's by default).

    Resizing comes first, so a batch resized by the data loader and a plane resized here
    give the same tensor. Channels go to 3 through ``channel_mapping``, or through the
    model's learned input projection (``adapt.models.channels.input_projection``), which
    starts as that same map (choose bands in the data card to control which go in).

    Args:
        image: ``[B, C, H, W]`` float in [0, 1].
        image_size: the model's square side (``resize_image``); ``None`` keeps the size.
        projection: the model's input projection (C -> 3), or ``None`` for the fixed map.
        mean, std: the backbone's pixel statistics (``pixel_stats``).
    """
    if image.ndim != 4:
        raise ValueError(f"preprocess expects [B, C, H, W], got shape {tuple(image.shape)}")
    if image_size is not None:
        image = resize_image(image, image_size)
    return normalise(channel_mapping(image) if projection is None else projection(image), mean, std)


def to_model_coords(xy: np.ndarray | torch.Tensor, height: int, width: int, size: int) -> Any:
    """``(x, y)`` pairs (last axis: x0, y0[, x1, y1, ...]) of an ``H x W`` plane on the ``size`` grid."""
    pairs = xy.shape[-1] // 2
    if isinstance(xy, torch.Tensor):
        scale = torch.tensor([size / width, size / height] * pairs, dtype=torch.float32, device=xy.device)
        return xy.float() * scale
    scale = np.array([size / width, size / height] * pairs, dtype=np.float32)
    return np.asarray(xy, dtype=np.float32) * scale


def image_embeddings(model: torch.nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Multi-scale image embeddings ``[B, C_l, H_l, W_l]`` for the mask decoder, with autograd."""
    sam = base_model(model)
    # the levels the decoder reads: the SAM 3 tracker's ViT neck gives a fourth (scale 0.5) that
    # its tracker drops, as Meta's does (transformers' image model adds the no-memory embedding to
    # that level instead of the last one used)
    levels = len(sam.backbone_feature_sizes)
    features = list(sam.get_image_features(pixels, return_dict=True).fpn_hidden_states)[:levels]
    features[-1] = features[-1] + sam.no_memory_embedding
    batch = pixels.shape[0]
    return [f.permute(1, 2, 0).reshape(batch, -1, *size) for f, size in zip(features, sam.backbone_feature_sizes)]


@dataclass
class Prediction:
    """One round's output: low-res logits ``[B, N, M, h, w]`` and IoU predictions ``[B, N, M]``."""

    low_res: torch.Tensor
    iou: torch.Tensor

    def best(self) -> torch.Tensor:
        """The candidate with the highest predicted IoU of each object: ``[B, N, h, w]``."""
        pick = self.iou.argmax(dim=2)
        index = pick[:, :, None, None, None].expand(-1, -1, 1, *self.low_res.shape[-2:])
        return self.low_res.gather(2, index)[:, :, 0]


def decode(model: torch.nn.Module, embeddings: list[torch.Tensor], multimask: bool, **prompts: Any) -> Prediction:
    """Run prompt encoder + mask decoder on precomputed embeddings (prompts on the model's grid)."""
    out = model(image_embeddings=embeddings, multimask_output=multimask, **prompts)
    return Prediction(out.pred_masks, out.iou_scores)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits ``[..., h, w]`` to ``size`` (bilinear, pixel centres aligned), float32, as SAM2 does."""
    lead = logits.shape[:-2]
    # [B, C, h, w] as is, the layout SAM2 interpolates (another layout may round the last bit otherwise)
    flat = (logits if logits.ndim == 4 else logits.reshape(-1, 1, *logits.shape[-2:])).float()
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return flat.reshape(*lead, *size)
