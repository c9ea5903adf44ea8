"""Names of the model layer that the config schema checks against, importable without torch.

``adapt.schema`` validates a command line before torch and transformers are imported (the
door answers in about a second), so the choices it reads live here, and ``adapt.models.sam2``
and ``adapt.models.tracking`` import them from here (``adapt.adapters`` imports torch and peft on
import, so the LoRA target presets, names of SAM2's modules, live here too).
"""

from __future__ import annotations

from adapt.models.backbones import BACKBONES, TINY_NAMES
from adapt.models.backbones import HUB_IDS as BACKBONE_HUB_IDS

#: Released checkpoints on the Hugging Face Hub, every backbone's (``adapt.models.backbones``),
#: and the tiny random configs (one per backbone).
HUB_IDS = dict(BACKBONE_HUB_IDS)
TINY_MODELS = tuple(TINY_NAMES)

#: ``adapter.targets`` presets: a name -> the regex of the SAM2 module names LoRA wraps
#: (``adapt.adapters.lora``). Every backbone has the same preset names over its own modules
#: (``Backbone.targets``); these are SAM2.1's.
TARGET_PRESETS = dict(BACKBONES["sam2"].targets)

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
