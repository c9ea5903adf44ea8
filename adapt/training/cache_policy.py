"""Which cache a run trains through, decided from the config before the data module is built.

``embedding_cache.mode=auto`` caches the image embeddings in memory when the adapter trains
nothing in the image encoder (``adapter=decoder``, LoRA on decoder targets only) and the task is
prompted segmentation, or the output of a frozen prefix of the encoder's blocks
(``adapter.blocks``) when pixel augmentation is already off; otherwise it is off
(``adapt.models.embedding_cache`` decides what is frozen; ``embedding_cache.directory`` is where
``mode=disk`` writes). An explicit mode on an adapter that trains the encoder is refused: the
cached embeddings would be stale after the first step. Cached embeddings stand for the
un-augmented image, so choosing a cache switches pixel augmentation off, and the run says so.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from adapt.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_embedding_cache(cfg: DictConfig) -> dict[str, Any]:
    """Turn ``embedding_cache.mode=auto`` into a mode; caching switches pixel augmentation off.

    Cached embeddings stand for the un-augmented image, so augmenting pixels would train on
    images the cache does not hold; the run says so instead of silently diverging.
    """
    from adapt.models.backbones import backbone_of  # lazy: start-up
    from adapt.models.embedding_cache import encoder_is_frozen, prefix_cache_wanted  # lazy: start-up

    spec = OmegaConf.to_container(cfg.embedding_cache, resolve=True)
    adapter = OmegaConf.to_container(cfg.adapter, resolve=True)
    backbone = backbone_of(str(cfg.model.name))
    frozen = encoder_is_frozen(adapter) or prefix_cache_wanted(adapter, spec["mode"], cfg.data.get("augment"), backbone)
    if spec["mode"] == "auto":
        spec["mode"] = "memory" if frozen and cfg.task == "segmentation" else "off"
        spec["auto"] = True  # chosen here: the task may still turn it off (a learned input projection)
    if spec["mode"] != "off":
        if not frozen:
            raise ConfigError(
                f"embedding_cache.mode={spec['mode']} needs a frozen image encoder; adapter={adapter['kind']} trains it"
            )
        if cfg.data.get("augment"):
            log.warning("frozen encoder: image embeddings are cached (%s), so pixel augmentation is OFF", spec["mode"])
            cfg.data.augment = False
    return spec
