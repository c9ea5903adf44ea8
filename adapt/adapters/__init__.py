"""Adapter kinds and the one entry point that applies them to a frozen SAM2.

Kinds: ``lora`` and ``dora`` (peft), ``bottleneck`` (ours, Medical-SAM-Adapter style),
``decoder`` (mask decoder trained, encoder frozen) and ``full`` (everything trained).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from adapt.adapters.bottleneck import BottleneckConfig, apply_bottleneck
from adapt.adapters.lora import TARGET_PRESETS, apply_lora
from adapt.adapters.partial import apply_partial
from adapt.errors import ConfigError
from adapt.models.sam2 import freeze

ADAPTER_KINDS = ("lora", "dora", "bottleneck", "decoder", "full")

__all__ = ["ADAPTER_KINDS", "TARGET_PRESETS", "apply_adapter", "adapter_options", "plain_name",
           "trainable_parameters"]


def adapter_options(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split an adapter spec (the Hydra ``adapter`` node) into its kind and its options."""
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind not in ADAPTER_KINDS:
        raise ConfigError(f"adapter.kind {kind!r} is not one of {ADAPTER_KINDS}")
    return kind, options


def apply_adapter(model: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
    """Freeze ``model`` and add the adapter described by ``spec``; return the model to train.

    Args:
        model: a SAM2 model.
        spec: ``{"kind": ..., **options}``; options per kind:
            lora/dora: ``rank``, ``alpha``, ``dropout``, ``targets``, ``modules_to_save``, ``blocks``;
            bottleneck: ``reduction``, ``placement``, ``blocks``, ``mlp_scale``;
            decoder: ``modules`` (default ``["mask_decoder"]``); full: none.
            ``blocks`` (lora, dora, bottleneck) places the encoder adapters in some Hiera
            blocks only: ``None`` = all, an int ``N`` = the last ``N``, a list = those indices.
            Every kind also takes ``task_modules``: modules a task added to SAM2 (e.g. the
            semantic head's class prompts) that train in full whatever the adapter.
    """
    kind, options = adapter_options(spec)
    task_modules = list(options.pop("task_modules", None) or [])
    if kind in ("decoder", "full") and options.get("blocks") not in (None, [], ()):
        raise ConfigError(f"adapter.blocks is an option of lora, dora and bottleneck; adapter={kind} adds no "
                          "layers to the Hiera blocks (drop adapter.blocks)")
    freeze(model)
    try:
        if kind in ("lora", "dora"):
            saved = list(options.pop("modules_to_save", None) or []) + task_modules
            return apply_lora(model, use_dora=kind == "dora", modules_to_save=saved or None, **options)
        if kind == "bottleneck":
            model = apply_bottleneck(model, BottleneckConfig(**options))
        elif kind == "decoder":
            model = apply_partial(model, options.get("modules", ["mask_decoder"]))
        else:
            model = apply_partial(model, ["*"])
    except TypeError as err:
        raise ConfigError(f"adapter={kind}: unknown option ({err})") from None
    return apply_partial(model, task_modules) if task_modules else model


#: Module names that FSDP and activation checkpointing insert around wrapped blocks.
WRAPPER_NAMES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def plain_name(name: str) -> str:
    """``name`` without the wrapper modules' segments.

    Under FSDP the wrapped blocks add ``_fsdp_wrapped_module.`` to the names of their
    parameters, while full state dicts (checkpoints, the gathered weights the adapter is
    saved from) use the plain names.
    """
    for wrapper in WRAPPER_NAMES:
        name = name.replace(wrapper, "")
    return name


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable parameters of ``module`` under their plain names."""
    return {plain_name(n): p for n, p in module.named_parameters() if p.requires_grad}
