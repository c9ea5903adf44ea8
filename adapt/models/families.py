"""The transformers side of each backbone row: configs (released, tiny, video), image sides, trunk blocks.

``adapt.models.backbones`` says what each backbone is, without torch; this module builds it.
The SAM 3 tracker's ViT and EdgeTAM's RepViT differ from SAM2's Hiera in where the feature
sizes live in the config (``backbone_feature_sizes`` follow the side: strides 4/8/16 of the
patch grid for SAM2 and EdgeTAM, 4x/2x/1x of the 14-pixel patch grid for SAM 3) and in the
trunk's module names. The tiny configs keep every code path of the released architectures at
toy size (decoder width 128 and 64 memory channels, the smallest at which SAM2's memory runs,
as ``adapt.models.tiny`` explains).

EdgeTAM's trunk is a ``timm`` model. transformers' default ``EdgeTamConfig`` names it under a
misspelt key (``archirecture``), so the wrapper falls back to its own default and silently
builds a ResNet-50; the config here sets ``architecture="repvit_m1"`` explicitly and
``check_trunk`` refuses a model whose trunk is anything else.
"""

from __future__ import annotations

import re
import types
from typing import Any

import torch
import transformers

from adapt.errors import ConfigError
from adapt.models.backbones import BACKBONES, Backbone, backbone_of_type

#: EdgeTAM's trunk in timm (EdgeTAM's release: RepViT-M1, four stages, features of every stage).
EDGETAM_TRUNK = "repvit_m1"
TINY_HIDDEN = 128


def model_classes(row: Backbone) -> tuple[type, type]:
    """The transformers image and video model classes of a backbone."""
    if row.key == "edgetam":
        require_timm()
    return getattr(transformers, row.classes[0]), getattr(transformers, row.classes[1])


def require_timm() -> None:
    """Refuse, with the fix, when EdgeTAM's trunk library cannot be imported."""
    try:
        import timm  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"EdgeTAM's RepViT trunk comes from timm, which cannot be imported ({err}). Install the "
            "extra: pip install 'sam2-adapt[edgetam]' (timm needs torchvision)"
        ) from None


def _timm_trunk(embed_dim: tuple[int, ...] | None = None, depth: tuple[int, ...] | None = None) -> Any:
    from transformers import TimmWrapperConfig

    args: dict[str, Any] = {"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}
    if embed_dim:
        args.update(embed_dim=tuple(embed_dim), depth=tuple(depth))
    return TimmWrapperConfig(architecture=EDGETAM_TRUNK, do_pooling=False, model_args=args)


def _decoder_configs(hidden: int, size: int, patch: int) -> dict[str, dict]:
    return {
        "prompt_encoder_config": dict(hidden_size=hidden, image_size=size, patch_size=patch, mask_input_channels=8),
        "mask_decoder_config": dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32),
    }


def tiny_image_config(row: Backbone) -> Any:
    """The tiny random config of a SAM 3 tracker or EdgeTAM (SAM2's is ``adapt.models.tiny``)."""
    size = row.tiny_size
    if row.key == "sam3_tracker":
        vit = dict(
            model_type="sam3_vit_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=2,
            image_size=size,
            patch_size=14,
            window_size=4,
            global_attn_indexes=[1, 3],
            pretrain_image_size=56,
        )
        vision = dict(model_type="sam3_vision_model", backbone_config=vit, fpn_hidden_size=TINY_HIDDEN)
        config = transformers.Sam3TrackerConfig(vision_config=vision, **_decoder_configs(TINY_HIDDEN, size, 14))
    elif row.key == "edgetam":
        require_timm()
        vision = transformers.EdgeTamVisionConfig(
            backbone_config=_timm_trunk((8, 16, 32, 64), (1, 1, 2, 1)),
            backbone_channel_list=[64, 32, 16, 8],
            fpn_hidden_size=TINY_HIDDEN,
        )
        config = transformers.EdgeTamConfig(vision_config=vision, **_decoder_configs(TINY_HIDDEN, size, 16))
    else:
        raise ConfigError(f"no tiny config for backbone {row.key!r} here (SAM2's is adapt.models.tiny)")
    return set_image_size(config, size)


def released_image_config(row: Backbone) -> Any:
    """The architecture of a released SAM 3 tracker or EdgeTAM, with no weights attached."""
    if row.key == "sam3_tracker":
        config = transformers.Sam3TrackerConfig()
    elif row.key == "edgetam":
        require_timm()
        config = transformers.EdgeTamConfig(
            vision_config=transformers.EdgeTamVisionConfig(backbone_config=_timm_trunk())
        )
    else:
        raise ConfigError(f"backbone {row.key!r} is built by adapt.models.sam2")
    return set_image_size(config, row.native_size)


def set_image_size(config: Any, size: int) -> Any:
    """Change the input side of a SAM 3 tracker or EdgeTAM config (image or video) in place.

    ``size`` must be one the trunk takes (``Backbone.fit_size``).
    """
    row = backbone_of_type(config.model_type)
    if size % row.size_multiple:
        raise ConfigError(f"model.image_size={size} is not a multiple of {row.size_multiple} ({row.title})")
    vision = config.vision_config
    if row.key == "sam3_tracker":
        grid = size // 14
        vision.backbone_config.image_size = size
        vision.backbone_feature_sizes = [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]
    else:
        grid = size // 16
        vision.backbone_feature_sizes = [[size // 4] * 2, [size // 8] * 2, [grid] * 2]
    config.prompt_encoder_config.image_size = size
    if "video" in config.model_type:
        config.image_size = size
        config.memory_attention_rope_feat_sizes = [grid] * 2
    return config


def video_config(image: Any, tiny: bool) -> Any:
    """The memory-enabled config around an image config of a SAM 3 tracker or EdgeTAM (same sub-configs)."""
    row = backbone_of_type(image.model_type)
    size = int(image.prompt_encoder_config.image_size)
    parts = {k: getattr(image, k).to_dict() for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    if row.key == "edgetam":
        parts["vision_config"]["backbone_config"] = image.vision_config.backbone_config
    cls = getattr(transformers, row.classes[1].replace("Model", "Config"))
    memory: dict[str, Any] = {}
    if tiny:
        memory = dict(
            memory_attention_hidden_size=TINY_HIDDEN,
            memory_attention_num_layers=2,
            memory_encoder_hidden_size=TINY_HIDDEN,
            memory_encoder_output_channels=64,
            mask_downsampler_embed_dim=TINY_HIDDEN,
            memory_fuser_embed_dim=TINY_HIDDEN,
            memory_fuser_intermediate_dim=4 * TINY_HIDDEN,
        )
        memory["memory_attention_" + ("mlp_hidden_size" if row.key == "edgetam" else "feed_forward_hidden_size")] = 64
        if row.key == "edgetam":
            memory.update(
                perceiver_resampler_num_latents=16,
                perceiver_resampler_num_latents_2d=16,
                perceiver_resampler_hidden_size=64,
                perceiver_resampler_mlp_intermediate_size=128,
                perceiver_resampler_num_attention_heads=2,
                perceiver_resampler_attention_head_dim=32,
                perceiver_resampler_num_layers=1,
                memory_attention_rope_k_sizes=[4, 4],
            )
    return set_image_size(cls(**parts, image_size=size, **memory), size)


def trunk_fields(config: Any) -> dict[str, Any]:
    """The fields of a SAM 3 tracker's or EdgeTAM's image trunk that decide whether adapter weights fit
    (``adapt.adapters.loading.architecture``): the ViT's sizes, or the timm model and its arguments.

    Raises:
        ConfigError: a backbone this function does not know yet (a new row must say what its trunk is).
    """
    row = backbone_of_type(config.model_type)
    trunk = config.vision_config.backbone_config
    if row.key == "sam3_tracker":
        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "global_attn_indexes")
        return {k: getattr(trunk, k) for k in names}
    if row.key == "edgetam":
        return {"trunk": trunk.architecture, "model_args": dict(trunk.model_args or {})}
    raise ConfigError(f"no trunk fields for backbone {row.key!r}: add them to adapt.models.families.trunk_fields")


def trunk_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks of a model's image trunk, in order: Hiera blocks, ViT layers or RepViT blocks."""
    row = backbone_of_type(_model_type(model))
    if row.block_prefix is not None:
        suffix = row.block_prefix.replace("\\.", ".").rstrip(".")
        for name, module in model.named_modules():
            if name == suffix or name.endswith("." + suffix) or name == suffix.removeprefix("vision_encoder."):
                return list(module)
    blocks = [m for n, m in model.named_modules() if re.search(r"timm_model\.stages_\d+\.blocks\.\d+$", n)]
    if blocks:
        return blocks
    raise ConfigError(f"no blocks of a {row.title} image trunk found in the model")


def backbone_of_model(model: torch.nn.Module) -> Backbone:
    """The backbone row of a built model (wrapped by peft or not)."""
    return backbone_of_type(_model_type(model))


def _model_type(model: torch.nn.Module) -> str:
    for module in model.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if model_type:
            return str(model_type)
    return ""


def finish(model: torch.nn.Module) -> torch.nn.Module:
    """Check a built model's trunk and give EdgeTAM what peft asks of it; returns ``model``.

    EdgeTAM's trunk must be the RepViT it names (the misspelt default builds a ResNet-50).
    transformers' ``EdgeTamModel`` (unlike ``Sam2Model``) does not say which module embeds its
    input, which peft asks before wrapping; it is the trunk's first convolution. The trunk's
    batch norms stay in evaluation mode (``_statistics_frozen``).
    """
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "model_type", None) == "timm_wrapper" and config.architecture != EDGETAM_TRUNK:
            raise ConfigError(
                f"EdgeTAM's trunk must be timm's {EDGETAM_TRUNK}, but the config builds "
                f"{config.architecture!r}; set vision_config.backbone_config.architecture"
            )
    if backbone_of_type(_model_type(model)).key == "edgetam":
        stem = next(m for m in model.vision_encoder.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        model.get_input_embeddings = lambda: stem
        for module in model.vision_encoder.backbone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.train = types.MethodType(_statistics_frozen, module)
                module.eval()
    return model


def _statistics_frozen(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    """``train`` of the RepViT trunk's batch norms: always evaluation mode.

    In training mode a batch norm normalises with the batch's statistics and overwrites its
    running ones, so a "frozen" trunk would change under every step (and the adapter, which does
    not hold those buffers, would not reproduce it). The release's statistics are kept instead.
    """
    return torch.nn.Module.train(self, False)


__all__ = [
    "BACKBONES",
    "backbone_of_model",
    "finish",
    "model_classes",
    "released_image_config",
    "set_image_size",
    "tiny_image_config",
    "trunk_blocks",
    "trunk_fields",
    "video_config",
]
