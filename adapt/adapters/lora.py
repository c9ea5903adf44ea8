"""LoRA and DoRA from ``peft``, with target presets named after SAM2's parts.

Presets are regular expressions over module names that are the same in ``Sam2Model`` and
``Sam2VideoModel`` (and in the Hub checkpoints), so a preset means the same layers on
every model size and in image or video mode. Each backbone has the same preset names over its
own trunk (``Backbone.targets`` in ``adapt.models.backbones``: the SAM 3 tracker's ViT
attention projections and MLP, EdgeTAM's RepViT squeeze-excitation and channel-mixer 1x1
convolutions); the decoder and memory presets are the same modules everywhere.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Any, Iterator, Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from adapt.adapters.placement import block_prefix, resolve_blocks, restrict_to_blocks
from adapt.errors import ConfigError
from adapt.models.backbones import BACKBONES, Backbone
from adapt.models.families import backbone_of_model
from adapt.models.names import TARGET_PRESETS
from adapt.models.sam2 import hiera_blocks


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide the FutureWarning peft triggers by asking transformers a deprecated question."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def target_regex(targets: str | Sequence[str], backbone: Backbone = BACKBONES["sam2"]) -> str:
    """One regex matching the union of the named presets of ``backbone`` (or raw regexes containing ``\\``).

    Raises:
        ConfigError: a name is neither a preset nor a regex; lists the presets.
    """
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names:
        raise ConfigError(f"adapter.targets is empty; choose from {sorted(TARGET_PRESETS)}")
    parts = []
    for name in names:
        if name in backbone.targets:
            parts.append(backbone.targets[name])
        elif "\\" in name or "(" in name:
            parts.append(name)
        else:
            raise ConfigError(
                f"adapter.targets: unknown preset {name!r}; choose from {sorted(TARGET_PRESETS)} "
                "or give a regular expression over module names"
            )
    return "|".join(f"(?:{p})" for p in parts)


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: str | Sequence[str] = ("encoder_attn", "decoder_attn"),
    use_dora: bool = False,
    modules_to_save: Sequence[str] | None = None,
    blocks: int | Sequence[int] | None = None,
) -> PeftModel:
    """Wrap ``model`` with peft LoRA (or DoRA) on the preset layers; the rest stays frozen.

    Args:
        model: a SAM2 model (``Sam2Model`` or ``Sam2VideoModel``).
        rank: LoRA rank r.
        alpha: LoRA scaling numerator (scale = alpha / r).
        dropout: dropout on the LoRA input.
        targets: preset names from ``TARGET_PRESETS`` or regexes.
        use_dora: weight-decomposed LoRA (DoRA).
        modules_to_save: extra modules trained in full and saved with the adapter.
        blocks: Hiera blocks whose layers get LoRA: ``None`` = all, an int ``N`` = the last
            ``N``, a list = those indices (``adapt.adapters.placement``); targets outside the
            trunk (the decoder, the memory) are not affected.

    Raises:
        ConfigError: the targets match nothing, or ``blocks`` is out of range or restricts
            targets that have no layer in the Hiera blocks.
    """
    backbone = backbone_of_model(model)
    prefix = block_prefix(backbone) if blocks is not None else None
    indices = None if blocks is None else resolve_blocks(blocks, len(hiera_blocks(model)))
    regex = restrict_to_blocks(target_regex(targets, backbone), indices, prefix)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=regex,
        use_dora=use_dora,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    try:
        with quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise ConfigError(f"adapter.targets {targets!r} match no layer of this model: {err}") from None
    if indices is not None and not any(re.match(f".*{prefix}", n) for n in peft_model.base_model.targeted_module_names):
        raise ConfigError(
            f"adapter.blocks={blocks!r} places LoRA in trunk blocks, but adapter.targets {targets!r} "
            "target no layer there; add an encoder preset (encoder_attn, encoder_mlp) or drop adapter.blocks"
        )
    return peft_model


def apply_kind(model: nn.Module, options: dict[str, Any], task_modules: list[str], use_dora: bool = False) -> nn.Module:
    """``adapter=lora``: ``apply_lora`` with the options; a task's modules are saved in full (``modules_to_save``)."""
    saved = list(options.pop("modules_to_save", None) or []) + task_modules
    return apply_lora(model, use_dora=use_dora, modules_to_save=saved or None, **options)


def apply_dora_kind(model: nn.Module, options: dict[str, Any], task_modules: list[str]) -> nn.Module:
    """``adapter=dora``: LoRA with peft's weight decomposition (``use_dora=True``)."""
    return apply_kind(model, options, task_modules, use_dora=True)
