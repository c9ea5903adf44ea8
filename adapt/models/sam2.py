"""Load SAM2 (or another backbone of ``adapt.models.backbones``) from the Hub, a local directory or a tiny random config; freeze.

SAM2 comes from ``transformers`` (``Sam2Model`` for images, ``Sam2VideoModel`` when the
memory is needed); the SAM 3 tracker and EdgeTAM come from their transformers classes of the
same design (``adapt.models.families`` builds their configs). An image side the backbone's
trunk cannot take is mapped to the nearest one it can, said in a warning and in ``ModelInfo``. Both share the image model's parameter names, so an adapter trained on
one loads onto the other. Loading never hangs on an unreachable Hub: a model that is not in
the local cache is checked against the Hub endpoint with a short timeout first, and a
missing model stops the run with a ``ModelNotFoundError`` that says how to supply it.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from torch.utils.checkpoint import checkpoint
from transformers import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2Model,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VisionConfig,
)
from transformers.modeling_layers import GradientCheckpointingLayer

from adapt.errors import ConfigError, ModelNotFoundError
from adapt.models.backbones import Backbone, backbone_of, backbone_of_type
from adapt.models import families
from adapt.models.names import HUB_IDS
from adapt.models.sam2_patches import patch_sam2
from adapt.models.tiny import tiny_config
from adapt.models.tiny import tiny_video_config
from adapt.models.meta_checkpoint import load_meta_checkpoint

log = logging.getLogger(__name__)


#: Hiera trunk of each release (Meta's sam2.1 configs), to build the same architecture with
#: random weights when the checkpoint cannot be downloaded (offline demos, benchmarks).
HIERA_ARCHITECTURES = {
    "facebook/sam2.1-hiera-tiny": dict(
        hidden_size=96,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 7, 2],
        global_attention_blocks=[5, 7, 9],
        window_positional_embedding_background_size=[7, 7],
    ),
    "facebook/sam2.1-hiera-small": dict(
        hidden_size=96,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 11, 2],
        global_attention_blocks=[7, 10, 13],
        window_positional_embedding_background_size=[7, 7],
    ),
    "facebook/sam2.1-hiera-base-plus": dict(
        hidden_size=112,
        num_attention_heads=2,
        blocks_per_stage=[2, 3, 16, 3],
        global_attention_blocks=[12, 16, 20],
        window_positional_embedding_background_size=[14, 14],
    ),
    "facebook/sam2.1-hiera-large": dict(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7],
        window_size_per_stage=[8, 4, 16, 8],
    ),
}

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the run summary and the adapter's metadata."""

    name: str
    revision: str | None
    pretrained: bool
    image_size: int
    video: bool
    checkpoint: str | None = None
    backbone: str = "sam2"
    requested_image_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def random_config(name: str, image_size: int | None = None) -> Sam2Config:
    """The architecture of a released checkpoint (or a tiny config) with no weights attached.

    ``image_size`` defaults to the backbone's own (its tiny config's for a tiny one).
    """
    row = backbone_of(name)
    tiny = name == row.tiny
    image_size = image_size or (row.tiny_size if tiny else row.native_size)
    if name == "tiny":
        return tiny_config(image_size)
    hub_id = HUB_IDS.get(name, name)
    if row.key != "sam2" and (tiny or hub_id in row.hub_ids.values()):
        config = families.tiny_image_config(row) if tiny else families.released_image_config(row)
        return families.set_image_size(config, image_size)
    if hub_id not in HIERA_ARCHITECTURES:
        raise ConfigError(
            f"no known architecture for {name!r}; random weights are available for "
            f"the tiny configs and {sorted(HUB_IDS)}"
        )
    arch = dict(HIERA_ARCHITECTURES[hub_id])
    hidden, heads = arch.pop("hidden_size"), arch.pop("num_attention_heads")
    dims = [hidden * 2**i for i in range(4)]
    backbone = Sam2HieraDetConfig(
        hidden_size=hidden,
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[heads * 2**i for i in range(4)],
        **arch,
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1])
    config = Sam2Config(vision_config=vision)
    return set_image_size(config, image_size)


def set_image_size(config: Sam2Config | Sam2VideoConfig, image_size: int) -> Sam2Config:
    """Change the input side of a SAM2 config in place (e.g. 512 as MedSAM2 trains).

    Hiera's positional embedding is interpolated to the feature grid, so pretrained weights
    load unchanged at any multiple of 64 (SAM2's total stride in the trunk and decoder). Other
    backbones' configs are changed by ``adapt.models.families.set_image_size``.
    """
    if backbone_of_type(config.model_type).key != "sam2":
        return families.set_image_size(config, image_size)
    if image_size % 64:
        raise ConfigError(f"model.image_size must be a multiple of 64, got {image_size}")
    stride = config.vision_config.backbone_config.patch_stride
    stride = stride[0] if isinstance(stride, (list, tuple)) else stride
    config.vision_config.backbone_config.image_size = [image_size, image_size]
    config.vision_config.backbone_feature_sizes = [[image_size // (stride * 2**i)] * 2 for i in range(3)]
    config.prompt_encoder_config.image_size = image_size
    if isinstance(config, Sam2VideoConfig):
        config.image_size = image_size
        config.memory_attention_rope_feat_sizes = [image_size // 16] * 2
    return config


def config_image_size(config: Sam2Config | Sam2VideoConfig) -> int:
    """The square input side a SAM2 config expects."""
    return int(config.prompt_encoder_config.image_size)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint answers a TCP connect within ``timeout`` (no retries)."""
    if hub_constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(hub_constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _is_cached(repo_id: str, revision: str | None) -> bool:
    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(path, str)


#: Notices already given in this process (a command that loads one base twice -- image and
#: video model, adapter and zero-shot comparison -- says so once).
_NOTICES: set[str] = set()


def warn_once(message: str, key: str | None = None) -> None:
    """Log ``message`` as a warning the first time its ``key`` (default: the message) comes up in this
    process: the random-weights notices, keyed by the architecture, are given once per command."""
    key = key or message
    if key not in _NOTICES:
        _NOTICES.add(key)
        log.warning("%s", message)


def load_sam2(
    name: str,
    revision: str | None = None,
    checkpoint: str | None = None,
    image_size: int | None = None,
    video: bool = False,
    offline_fallback: str = "error",
) -> tuple[Sam2Model | Sam2VideoModel, ModelInfo]:
    """Load SAM2 weights and return the model with a description of what was loaded.

    Args:
        name: ``tiny`` / ``tiny_sam3_tracker`` / ``tiny_edgetam`` (random toy configs), ``random:<preset or hub id>`` (architecture with
            random weights), a preset key of ``HUB_IDS``, a Hub id, or a local directory
            holding ``config.json`` + weights saved by ``save_pretrained``.
        revision: Hub branch, tag or commit to pin.
        checkpoint: a Meta-format ``.pt`` file (MedSAM2, Medical-SAM2, ...) loaded over the
            architecture of ``name`` through our key converter. For the released presets the
            architecture is built locally, so such a file loads offline.
        image_size: input side; ``None`` keeps the checkpoint's (1024 for SAM2.1, 1008 for the SAM 3
            tracker). A side the trunk cannot take is mapped to the nearest one (warned, and
            ``ModelInfo.requested_image_size`` keeps the side asked for).
        video: build ``Sam2VideoModel`` (memory attention and encoder) instead of ``Sam2Model``.
        offline_fallback: ``error`` (default) stops when the weights cannot be had;
            ``random`` builds the same architecture with random weights and says so.

    Raises:
        ModelNotFoundError: weights are neither local nor downloadable, with the fix.
    """
    row = backbone_of(name)
    image_cls, video_cls = (Sam2Model, Sam2VideoModel) if row.key == "sam2" else families.model_classes(row)
    model_cls = video_cls if video else image_cls
    config_cls = model_cls.config_class
    requested, image_size = image_size, fit_image_size(row, image_size)
    source = HUB_IDS.get(name, name)
    random_name = None
    if source.startswith("random:"):
        source = random_name = HUB_IDS.get(source.removeprefix("random:"), source.removeprefix("random:"))
    elif source == row.tiny:
        random_name = source

    if random_name is None and checkpoint and source in HIERA_ARCHITECTURES:
        # A Meta .pt holds every weight and the preset names the architecture: no Hub needed.
        random_name = source
    if random_name is None and not Path(source).is_dir():
        if not _is_cached(source, revision) and not hub_reachable():
            if offline_fallback != "random":
                raise ModelNotFoundError(_missing_model_message(source, revision))
            warn_once(f"{source} cannot be downloaded: using RANDOM weights of its architecture", f"random:{source}")
            random_name = source

    if random_name is not None:
        image_config = random_config(random_name, image_size)
        config = _as_video_config(image_config, tiny=random_name == row.tiny) if video else image_config
        # A fixed seed makes "random weights" one reproducible base: an adapter trained on
        # it can be re-applied to a fresh instance, as with a downloaded checkpoint.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = model_cls(config)
            if video:  # the image model's weights under the same seed: one base for image and video adapters
                torch.manual_seed(RANDOM_INIT_SEED)
                model.load_state_dict(image_cls(image_config).state_dict(), strict=False)
        pretrained = False
    else:
        local = Path(source).is_dir()
        try:
            config = config_cls.from_pretrained(source, revision=revision, local_files_only=local)
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(
                f"cannot read a {row.title} config from {source!r}: {err}\n" + _missing_model_message(source, revision)
            ) from None
        if image_size:
            set_image_size(config, image_size)
        model = model_cls.from_pretrained(source, config=config, revision=revision)
        pretrained = True

    if checkpoint:
        load_meta_checkpoint(model, checkpoint)  # strict: every weight of the model comes from the file
        pretrained = True
    if row.key == "sam2":
        patch_sam2(model)  # per-size constants computed once (adapt.models.sam2_patches); outputs unchanged
    families.finish(model)
    size = config_image_size(model.config)
    info = ModelInfo(
        name=source,
        revision=revision,
        pretrained=pretrained,
        image_size=size,
        video=video,
        checkpoint=str(checkpoint) if checkpoint else None,
        backbone=row.key,
        requested_image_size=requested if requested and requested != size else None,
    )
    return model, info


def fit_image_size(row: Backbone, image_size: int | None) -> int | None:
    """``image_size`` mapped to the nearest side the backbone's trunk takes, with a warning when it moves."""
    if not image_size:
        return image_size
    fitted = row.fit_size(int(image_size))
    if fitted != image_size:
        warn_once(
            f"model.image_size={image_size} is not a side the {row.title} trunk takes (a multiple of "
            f"{row.size_multiple}): using {fitted}",
            f"size:{row.key}:{image_size}",
        )
    return fitted


def _as_video_config(config: Sam2Config, tiny: bool = False) -> Sam2VideoConfig:
    """The memory-enabled config around an image config (same sub-configs)."""
    if backbone_of_type(config.model_type).key != "sam2":
        return families.video_config(config, tiny)
    if config.vision_config.fpn_hidden_size != 256:  # the tiny model: small memory too
        return tiny_video_config(config_image_size(config))
    video = Sam2VideoConfig(
        vision_config=config.vision_config.to_dict(),
        prompt_encoder_config=config.prompt_encoder_config.to_dict(),
        mask_decoder_config=config.mask_decoder_config.to_dict(),
    )
    return set_image_size(video, config_image_size(config))


def _missing_model_message(source: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"SAM2 weights {source!r} are not in the local Hugging Face cache and the Hub "
        f"({hub_constants.ENDPOINT}) cannot be reached.\n"
        "Fix one of:\n"
        f"  - go online once (the weights are cached for later offline runs), or\n"
        f"  - download them elsewhere: `hf download {source}{rev} --local-dir DIR`, copy DIR "
        "here and pass `model.name=DIR`, or\n"
        "  - run an offline smoke test with `model=tiny` (random weights), or allow random "
        "weights of the same architecture with `model.offline_fallback=random`."
    )


def hiera_blocks(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    """The blocks of a model's image trunk (Hiera blocks, SAM 3's ViT layers, EdgeTAM's RepViT blocks)."""
    return families.trunk_blocks(model)


def enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Recompute the trunk blocks' activations in the backward pass instead of storing them.

    ``Sam2Model`` does not declare checkpointing support to ``transformers``, but its Hiera
    blocks (and the SAM 3 tracker's ViT layers) are checkpointable layers; we switch them on
    directly (non-reentrant, so frozen inputs and adapter hooks inside the blocks work).
    Returns how many blocks were switched.

    Raises:
        ConfigError: the trunk has no checkpointable layers (EdgeTAM's timm RepViT).
    """
    switched = 0
    for module in hiera_blocks(model):
        if isinstance(module, GradientCheckpointingLayer):
            module.gradient_checkpointing = True
            module._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            switched += 1
    if not switched:
        raise ConfigError(
            f"model.gradient_checkpointing is not offered on {families.backbone_of_model(model).title}: "
            "its trunk has no checkpointable layers; drop the option"
        )
    return switched


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Make every parameter of ``model`` non-trainable; adapters then unfreeze their own."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
