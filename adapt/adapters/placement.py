"""Which trunk blocks get adapters: ``adapter.blocks``, the same for every kind that has them.

The blocks are SAM2's Hiera blocks, or the SAM 3 tracker's ViT layers; EdgeTAM's RepViT trunk
refuses the option (``block_prefix``).

``adapter.blocks`` is ``null`` (or ``[]``) for every block, an int ``N`` for the last ``N``
blocks, or a list of block indices. Adapting only the last blocks is what makes parameter-
efficient training cheap: nothing before the first adapted block trains, so the backward pass
stops there, and with pixel augmentation off the frozen prefix's output can be cached
(``adapt.models.hiera_prefix``). Decoder-side adapters (LoRA's ``decoder_attn``) are not
affected.
"""

from __future__ import annotations

from typing import Any

from adapt.errors import ConfigError
from adapt.models.backbones import BACKBONES, Backbone

#: Module names of the image encoder's Hiera blocks, as in ``Sam2Model`` and ``Sam2VideoModel``
#: (other backbones: ``Backbone.block_prefix``; the SAM 3 tracker's ViT layers).
BLOCK_PREFIX = str(BACKBONES["sam2"].block_prefix)


def block_prefix(backbone: Backbone) -> str:
    """The regex of ``backbone``'s trunk block names that ``adapter.blocks`` counts.

    Raises:
        ConfigError: the backbone's trunk has no blocks to choose (EdgeTAM's RepViT stages).
    """
    if backbone.block_prefix is None:
        raise ConfigError(
            f"adapter.blocks is not offered on {backbone.title}: {backbone.trunk}. Drop adapter.blocks "
            "(the adapter then goes to every block)"
        )
    return backbone.block_prefix


def _range_hint(total: int) -> str:
    return (
        f"this model's image trunk has {total} blocks: give an int N in 1..{total} (the last N blocks), "
        f"a list of indices in 0..{total - 1}, or null for all"
    )


def resolve_blocks(value: Any, total: int) -> list[int] | None:
    """The sorted block indices ``adapter.blocks`` names on a trunk of ``total`` blocks; ``None`` = all.

    Raises:
        ConfigError: not an int or a list of ints, or out of range; names ``adapter.blocks`` and the valid range.
    """
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ConfigError(f"adapter.blocks={value!r}: {_range_hint(total)}")
    if isinstance(value, int):
        if not 1 <= value <= total:
            raise ConfigError(f"adapter.blocks={value} is out of range: {_range_hint(total)}")
        return list(range(total - value, total))
    indices = list(value)
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError(f"adapter.blocks={indices}: {index!r} is not a block index; {_range_hint(total)}")
        if not 0 <= index < total:
            raise ConfigError(f"adapter.blocks: index {index} out of range; {_range_hint(total)}")
    return sorted(set(indices))


def restrict_to_blocks(regex: str, indices: list[int] | None, prefix: str = BLOCK_PREFIX) -> str:
    """``regex`` (over module names, as peft's ``target_modules``) matching no Hiera block but ``indices``.

    A lookahead refuses the names of the other blocks, so every preset and every user regex is
    restricted the same way and everything outside the trunk matches as before. The result is
    what peft saves in ``adapter_config.json``, so a loaded adapter has the same placement.
    """
    if indices is None:
        return regex
    allowed = "|".join(str(i) for i in indices)
    return rf"(?!(?:.*\.)?{prefix}(?!(?:{allowed})\.)\d+\.)(?:{regex})"
