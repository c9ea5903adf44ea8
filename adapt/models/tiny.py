"""A tiny random SAM2 configuration for tests and offline smoke runs.

The Hiera trunk follows transformers' own SAM2 test configuration (hidden size 12, image
128), so every code path of the real architecture runs in well under a second on a CPU.
The prompt/decoder width is 128 with 64 memory channels: transformers fixes the memory
cross-attention's key width at 64 and splits each object pointer into hidden/64 tokens,
so these are the smallest sizes at which SAM2's memory runs (256/64 in the releases).
"""

from __future__ import annotations

from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2PromptEncoderConfig,
    Sam2VideoConfig,
    Sam2VisionConfig,
)

TINY_IMAGE_SIZE = 128
TINY_HIDDEN = 128


def tiny_config(image_size: int = TINY_IMAGE_SIZE) -> Sam2Config:
    """Return a SAM2 config with the real architecture at toy size.

    Args:
        image_size: input side in pixels; must be a multiple of 64 (the Hiera stride chain).
    """
    if image_size % 64:
        raise ValueError(f"tiny model image_size must be a multiple of 64, got {image_size}")
    stride = 4
    sizes = [[image_size // (stride * 2**i)] * 2 for i in range(3)]
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        image_size=image_size,
        blocks_per_stage=[1, 2, 7, 2],
        embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 2, 4, 8],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=sizes,
        fpn_hidden_size=TINY_HIDDEN,
    )
    prompt = Sam2PromptEncoderConfig(
        hidden_size=TINY_HIDDEN, image_size=image_size, patch_size=16, mask_input_channels=8
    )
    decoder = Sam2MaskDecoderConfig(hidden_size=TINY_HIDDEN, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32)
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_video_config(image_size: int = TINY_IMAGE_SIZE) -> Sam2VideoConfig:
    """The tiny model with SAM2's memory (memory attention, memory encoder, object pointers).

    Its image-model weights carry the same names as ``tiny_config``'s, so an adapter trained
    on the image model applies to the video model unchanged, as with the real checkpoints.
    """
    image = tiny_config(image_size)
    hidden = image.vision_config.fpn_hidden_size
    return Sam2VideoConfig(
        vision_config=image.vision_config.to_dict(),
        prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(),
        image_size=image_size,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=2,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[image_size // 16] * 2,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=4 * hidden,
    )
