"""The image encoder in two parts: a frozen prefix of Hiera blocks, and the rest with the adapters.

With adapters in the last blocks only (``adapter.blocks``), the patch embedding and the blocks
before the first adapted one compute the same thing for an image at every epoch. Without pixel
augmentation their output can be computed once and cached (``EmbeddingCache``), and each step
runs only the adapted suffix, the FPN neck and the mask decoder. The prefix's output is the
hidden state entering the first adapted block, plus the outputs of the stages that end inside
the prefix (the FPN reads every stage's last output).

``encode_suffix(sam, encode_prefix(sam, pixels, start), start)`` computes what
``primitives.image_embeddings`` computes (``Sam2Model.get_image_features`` plus the
no-memory embedding), driving transformers' own blocks, neck and projections.
"""

from __future__ import annotations

import torch

from adapt.errors import ConfigError


def _backbone(sam: torch.nn.Module) -> torch.nn.Module:
    return sam.vision_encoder.backbone


def first_trained_block(sam: torch.nn.Module) -> int:
    """Index of the first Hiera block with a trainable parameter (the number of blocks if none has one).

    Args:
        sam: the transformers SAM2 model (unwrapped from peft).

    Raises:
        ConfigError: the patch or positional embedding trains, so no prefix is frozen.
    """
    backbone = _backbone(sam)
    if any(p.requires_grad for p in backbone.patch_embed.parameters()) or any(
        p.requires_grad for p in (backbone.pos_embed, backbone.pos_embed_window)
    ):
        raise ConfigError("the patch embedding of the image encoder trains: no frozen prefix of Hiera blocks to cache")
    for index, block in enumerate(backbone.blocks):
        if any(p.requires_grad for p in block.parameters()):
            return index
    return len(backbone.blocks)


def encode_prefix(sam: torch.nn.Module, pixels: torch.Tensor, start: int) -> list[torch.Tensor]:
    """Patch embedding and Hiera blocks ``0 .. start-1`` of preprocessed ``pixels``.

    Returns:
        ``[hidden, *stage_outputs]``: the hidden state entering block ``start``
        (``[B, H, W, C]``) and the outputs of the stages ending before it, in order.
    """
    backbone = _backbone(sam)
    hidden = backbone.patch_embed(pixels)
    hidden = hidden + backbone._get_pos_embed(hidden.shape[1:3])
    stages = []
    for index in range(start):
        hidden = backbone.blocks[index](hidden)
        if index in backbone.stage_ends:
            stages.append(hidden)
    return [hidden, *stages]


def encode_suffix(sam: torch.nn.Module, state: list[torch.Tensor], start: int) -> list[torch.Tensor]:
    """Multi-scale image embeddings ``[B, C_l, H_l, W_l]`` from a prefix's output, with autograd.

    Args:
        sam: the transformers SAM2 model (unwrapped from peft; adapter layers stay live in it).
        state: ``encode_prefix``'s output (cached or not) for the same ``start``.
        start: index of the first block to run.
    """
    backbone, vision = _backbone(sam), sam.vision_encoder
    hidden, stages = state[0], list(state[1:])
    for index in range(start, len(backbone.blocks)):
        hidden = backbone.blocks[index](hidden)
        if index in backbone.stage_ends:
            stages.append(hidden)
    features = list(vision.neck(tuple(stages))[0][-vision.num_feature_levels :][::-1])
    features[0] = sam.mask_decoder.conv_s0(features[0])
    features[1] = sam.mask_decoder.conv_s1(features[1])
    features[-1] = features[-1] + sam.no_memory_embedding.view(1, -1, 1, 1)
    return features
