"""The backbones SAM2-style models come in, one row each, importable without torch.

SAM2.1 (Hiera trunk), the SAM 3 tracker (a ViT trunk with windowed and global attention,
patch size 14) and EdgeTAM (a convolutional RepViT trunk from ``timm``, for edge devices)
share SAM2's prompt encoder, mask decoder and memory design, and ``transformers`` gives all
three the same forward arguments. What differs is a row of ``BACKBONES``: the Hub ids, the
transformers classes, the image sides the trunk can take, the pixel statistics its reference
normalises with, the module names LoRA and the bottleneck adapter go to, what
``adapter.blocks`` and the frozen-prefix cache mean on it, and its memory modules.

The config schema reads these rows before torch is imported (``adapt.schema``, the door), so
this module imports nothing heavy; ``adapt.models.sam2`` builds the models from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The decoder-side presets, the same modules in every backbone (SAM2's mask decoder and memory).
DECODER_ATTN = r"mask_decoder\.transformer\.(layers\.\d+\.)?\w+\.(q_proj|k_proj|v_proj|o_proj)"
MEMORY = (
    r"memory_attention\.layers\.\d+\.(self_attn|cross_attn_image)\.(q_proj|k_proj|v_proj|o_proj)"
    r"|memory_encoder\.memory_fuser\.layers\.\d+\.(pointwise_conv1|pointwise_conv2)"
)


def _presets(encoder_attn: str, encoder_qkv: str, encoder_mlp: str) -> dict[str, str]:
    presets = {
        "encoder_attn": encoder_attn,
        "encoder_qkv": encoder_qkv,
        "encoder_mlp": encoder_mlp,
        "decoder_attn": DECODER_ATTN,
        "memory": MEMORY,
    }
    presets["all"] = "|".join(presets[k] for k in ("encoder_attn", "encoder_mlp", "decoder_attn", "memory"))
    return presets


@dataclass(frozen=True)
class Backbone:
    """One backbone family.

    Attributes:
        key: the name recorded in ``sam2_adapt.json`` (``backbone``) and the run summary.
        title: in words, for messages and the model card.
        hub_ids: preset name (``model=<preset>``) -> Hub id of a released checkpoint.
        tiny: the name of its tiny random config (tests, offline smoke runs).
        model_types: ``config.json`` ``model_type`` values of its image and video models.
        classes: transformers' image and video model classes.
        native_size: the side its released checkpoints were trained at.
        tiny_size: the side of its tiny config.
        size_multiple: every side it takes is a multiple of this (its trunk's total stride).
        patch: pixels per cell of the decoder's image-embedding grid (16; the SAM 3 ViT's patch, 14).
        mean: per-channel mean its reference normalises with (after scaling to [0, 1]).
        std: per-channel standard deviation, likewise.
        targets: ``adapter.targets`` presets -> regex over its module names (peft).
        block_prefix: regex of the names of its trunk's blocks (``adapter.blocks`` counts these), or
            ``None`` where blocks cannot be chosen.
        bottleneck: ``(attention site, MLP site, channels last)``: the submodules of a block the
            bottleneck adapter hooks (in series after the first, in parallel to the second) and
            whether features are ``[..., C]`` (else ``[B, C, H, W]``).
        prefix_cache: whether the frozen prefix of its trunk can be cached (``adapt.models.hiera_prefix``).
        memory_modules: its video model's memory modules (attention over memory, memory encoder, ...).
        extra: the package extra it needs beyond the core install (``pip install sam2-adapt[extra]``).
        packages: the import names that extra brings, looked for when a training is composed.
        trunk: the trunk in words, with what LoRA and the bottleneck adapter take in it.
        fill_hole_area: holes (background regions of at most this many low-res pixels) its reference
            video predictor fills in propagated masks: SAM2's and EdgeTAM's 8, the SAM 3 tracker's 0
            (Meta's ``build_tracker``); ``fill_hole_area=null`` (the commands' default) takes it.
    """

    key: str
    title: str
    hub_ids: Mapping[str, str]
    tiny: str
    model_types: tuple[str, str]
    classes: tuple[str, str]
    native_size: int
    tiny_size: int
    size_multiple: int
    targets: Mapping[str, str]
    block_prefix: str | None
    bottleneck: tuple[str, str, bool]
    prefix_cache: bool
    memory_modules: tuple[str, ...]
    trunk: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: str | None = None
    packages: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    patch: int = 16
    fill_hole_area: int = 8

    def low_res_side(self, size: int) -> int:
        """The side of the mask decoder's low-resolution logits at input side ``size`` (4 x the grid)."""
        return 4 * (size // self.patch)

    def fit_size(self, size: int) -> int:
        """The side nearest to ``size`` that this trunk takes (ties go up), at least one multiple."""
        step = self.size_multiple
        return max(step, ((2 * size + step) // (2 * step)) * step)


SAM2_MEMORY = (
    "memory_attention",
    "memory_encoder",
    "mask_downsample",
    "object_pointer_proj",
    "temporal_positional_encoding_projection_layer",
)

BACKBONES: dict[str, Backbone] = {
    "sam2": Backbone(
        key="sam2",
        title="SAM2.1 (Hiera)",
        hub_ids={
            "sam2.1_hiera_tiny": "facebook/sam2.1-hiera-tiny",
            "sam2.1_hiera_small": "facebook/sam2.1-hiera-small",
            "sam2.1_hiera_base_plus": "facebook/sam2.1-hiera-base-plus",
            "sam2.1_hiera_large": "facebook/sam2.1-hiera-large",
        },
        tiny="tiny",
        model_types=("sam2", "sam2_video"),
        classes=("Sam2Model", "Sam2VideoModel"),
        native_size=1024,
        tiny_size=128,
        size_multiple=64,
        targets=_presets(
            r"vision_encoder\.backbone\.blocks\.\d+\.attn\.(qkv|proj)",
            r"vision_encoder\.backbone\.blocks\.\d+\.attn\.qkv",
            r"vision_encoder\.backbone\.blocks\.\d+\.mlp\.(proj_in|proj_out)",
        ),
        block_prefix=r"vision_encoder\.backbone\.blocks\.",
        bottleneck=("attn", "mlp", True),
        prefix_cache=True,
        memory_modules=SAM2_MEMORY,
        trunk="Hiera (multi-scale windowed attention); LoRA takes the fused qkv and output projections of "
        "every block, the bottleneck adapter sits after each block's attention and beside its MLP",
    ),
    "sam3_tracker": Backbone(
        key="sam3_tracker",
        title="SAM 3 tracker (ViT, patch 14)",
        hub_ids={"sam3_tracker": "facebook/sam3"},
        tiny="tiny_sam3_tracker",
        model_types=("sam3_tracker", "sam3_tracker_video"),
        classes=("Sam3TrackerModel", "Sam3TrackerVideoModel"),
        native_size=1008,
        tiny_size=112,
        size_multiple=14,
        patch=14,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        targets=_presets(
            r"vision_encoder\.backbone\.layers\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)",
            r"vision_encoder\.backbone\.layers\.\d+\.attention\.(q_proj|k_proj|v_proj)",
            r"vision_encoder\.backbone\.layers\.\d+\.mlp\.(fc1|fc2)",
        ),
        block_prefix=r"vision_encoder\.backbone\.layers\.",
        bottleneck=("attention", "mlp", True),
        prefix_cache=False,
        memory_modules=SAM2_MEMORY,
        fill_hole_area=0,
        trunk="a plain ViT (windowed and global attention, rotary positions, patch 14); LoRA takes the query, "
        "key, value and output projections of every layer, the bottleneck adapter sits after each "
        "layer's attention and beside its MLP",
        notes=(
            "the side must be a multiple of the patch size 14: another is mapped to the nearest one",
            "the ViT's fourth FPN level (scale 0.5) is not used by the tracker, as in Meta's SAM 3",
        ),
    ),
    "edgetam": Backbone(
        key="edgetam",
        title="EdgeTAM (RepViT)",
        hub_ids={"edgetam": "yonigozlan/EdgeTAM-hf"},
        tiny="tiny_edgetam",
        model_types=("edgetam", "edgetam_video"),
        classes=("EdgeTamModel", "EdgeTamVideoModel"),
        native_size=1024,
        tiny_size=128,
        size_multiple=64,
        targets=_presets(
            r"vision_encoder\.backbone\.timm_model\.stages_\d+\.blocks\.\d+\.se\.(fc1|fc2)",
            r"vision_encoder\.backbone\.timm_model\.stages_\d+\.blocks\.\d+\.se\.fc1",
            r"vision_encoder\.backbone\.timm_model\.stages_\d+\.blocks\.\d+\.channel_mixer\.conv[12]\.c",
        ),
        block_prefix=None,
        bottleneck=("token_mixer", "channel_mixer", False),
        prefix_cache=False,
        memory_modules=SAM2_MEMORY + ("spatial_perceiver",),
        extra="edgetam",
        packages=("timm",),
        trunk="RepViT (convolutional, from timm; no attention): LoRA's encoder_attn takes the 1x1 convolutions "
        "of each block's squeeze-excitation (the channel attention), encoder_mlp the 1x1 convolutions of "
        "its channel mixer; the bottleneck adapter (1x1 down/up over channels) sits after each block's "
        "depthwise token mixer and beside its channel mixer. adapter.blocks and the frozen-prefix cache "
        "are not offered: the trunk is four stages of unevenly sized blocks",
    ),
}

#: Every preset name -> its Hub id, over all backbones (``model=<preset>``).
HUB_IDS: dict[str, str] = {preset: hub for row in BACKBONES.values() for preset, hub in row.hub_ids.items()}
#: The tiny random configs, one per backbone.
TINY_NAMES: dict[str, str] = {row.tiny: row.key for row in BACKBONES.values()}


def backbone_of(name: str) -> Backbone:
    """The backbone a ``model.name`` names: a tiny config, a preset, a Hub id, ``random:<...>`` or a local folder.

    A local folder is read by its ``config.json`` ``model_type``; any other Hub id is taken for SAM2
    (the default family), as before backbones had rows.
    """
    text = str(name).removeprefix("random:")
    if text in TINY_NAMES:
        return BACKBONES[TINY_NAMES[text]]
    text = HUB_IDS.get(text, text)
    for row in BACKBONES.values():
        if text in row.hub_ids.values():
            return row
    config = Path(text).expanduser() / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (OSError, ValueError):
            model_type = None
        for row in BACKBONES.values():
            if model_type in row.model_types:
                return row
    return BACKBONES["sam2"]


def backbone_of_type(model_type: str) -> Backbone:
    """The backbone of a built model, by its config's ``model_type`` (SAM2 for anything else)."""
    for row in BACKBONES.values():
        if model_type in row.model_types:
            return row
    return BACKBONES["sam2"]


def holes_filled(value: int | None, backbone: str) -> int:
    """The hole area propagated masks get: ``value``, or where it is ``None`` (the commands' default,
    ``fill_hole_area=null``) the area ``backbone``'s reference video predictor fills."""
    return int(BACKBONES[backbone].fill_hole_area if value is None else value)
