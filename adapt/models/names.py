"""Names of the model layer that the config schema checks against, importable without torch.

``adapt.schema`` validates a command line before torch and transformers are imported (the
door answers in about a second), so the choices it reads live here, and ``adapt.models.sam2``
and ``adapt.models.tracking`` import them from here (``adapt.adapters`` imports torch and peft on
import, so the LoRA target presets, names of SAM2's modules, live here too).
"""

from __future__ import annotations

#: Released SAM2.1 checkpoints on the Hugging Face Hub.
HUB_IDS = {
    "sam2.1_hiera_tiny": "facebook/sam2.1-hiera-tiny",
    "sam2.1_hiera_small": "facebook/sam2.1-hiera-small",
    "sam2.1_hiera_base_plus": "facebook/sam2.1-hiera-base-plus",
    "sam2.1_hiera_large": "facebook/sam2.1-hiera-large",
}

#: ``adapter.targets`` presets: a name -> the regex of the SAM2 module names LoRA wraps
#: (``adapt.adapters.lora``).
TARGET_PRESETS = {
    # Hiera trunk: fused qkv and output projection of every block (the SAMed / MedSAM2 choice).
    "encoder_attn": r"vision_encoder\.backbone\.blocks\.\d+\.attn\.(qkv|proj)",
    "encoder_qkv": r"vision_encoder\.backbone\.blocks\.\d+\.attn\.qkv",
    "encoder_mlp": r"vision_encoder\.backbone\.blocks\.\d+\.mlp\.(proj_in|proj_out)",
    # Two-way transformer of the mask decoder: self, token-to-image and image-to-token attention.
    "decoder_attn": r"mask_decoder\.transformer\.(layers\.\d+\.)?\w+\.(q_proj|k_proj|v_proj|o_proj)",
    # SAM2's memory: attention over the memory bank and the memory fuser's pointwise layers.
    "memory": (
        r"memory_attention\.layers\.\d+\.(self_attn|cross_attn_image)\.(q_proj|k_proj|v_proj|o_proj)"
        r"|memory_encoder\.memory_fuser\.layers\.\d+\.(pointwise_conv1|pointwise_conv2)"
    ),
}
TARGET_PRESETS["all"] = "|".join(
    TARGET_PRESETS[k] for k in ("encoder_attn", "encoder_mlp", "decoder_attn", "memory")
)

#: Directions of tracking through a clip from its prompted frames (``prompts.direction``).
DIRECTIONS = ("forward", "backward", "both")

#: ``model.offline_fallback``: without the Hub, stop or build a random SAM2 (``adapt.models.sam2.load_sam2``).
OFFLINE_FALLBACKS = ("error", "random")
#: ``embedding_cache.mode``: keep the frozen encoder's output (``adapt.models.embedding_cache``).
EMBEDDING_CACHE_MODES = ("auto", "off", "memory", "disk")
#: ``embedding_cache.dtype``: storage type of cached embeddings (float32 reproduces uncached training).
EMBEDDING_CACHE_DTYPES = ("float32", "bfloat16", "float16")
#: ``adapter.input_channels``: when a run learns an input projection from the card's channels to
#: the backbone's 3 (``adapt.models.channels``): ``auto`` for other than 1 or 3 channels,
#: ``project`` always, ``fixed`` never (the parameter-free map).
INPUT_CHANNEL_MODES = ("auto", "project", "fixed")
