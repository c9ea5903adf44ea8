"""Adapter kinds applied to a frozen SAM2: the one entry point, ``apply_adapter``.

Each kind is a row of ``adapt.adapters.kinds.KINDS`` (light, read by the config schema);
``apply_adapter`` imports the row's ``apply`` function on use. Also the names of trainable
parameters under FSDP's and activation checkpointing's wrappers.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from torch import nn

from adapt.adapters.kinds import ADAPTER_KINDS, KINDS, OUR_LAYOUTS, PEFT_LAYOUT, Kind, in_blocks, named
from adapt.errors import ConfigError, check_choice
from adapt.models.names import TARGET_PRESETS
from adapt.models.sam2 import freeze

__all__ = [
    "ADAPTER_KINDS",
    "KINDS",
    "OUR_LAYOUTS",
    "PEFT_LAYOUT",
    "TARGET_PRESETS",
    "Kind",
    "apply_adapter",
    "adapter_options",
    "plain_name",
    "trainable_parameters",
]


def applier(kind: Kind) -> Callable[[nn.Module, dict[str, Any], list[str]], nn.Module]:
    """The function that applies ``kind`` (its row's ``"module:function"``)."""
    module, function = kind.apply.split(":")
    return getattr(importlib.import_module(module), function)


def adapter_options(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split an adapter spec (the Hydra ``adapter`` node) into its kind and its options."""
    options = dict(spec)
    kind = options.pop("kind", None)
    check_choice("adapter.kind", kind, ADAPTER_KINDS)
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
            semantic head's class prompts, the input projection) that train in full whatever the
            adapter, and ``input_channels`` (``adapt.models.channels``; the task acts on it).
    """
    kind, options = adapter_options(spec)
    task_modules = list(options.pop("task_modules", None) or [])
    options.pop("input_channels", None)  # the input projection is a task module, added before (adapt.models.channels)
    blocks = options.pop("blocks", None)
    if not KINDS[kind].in_blocks and blocks not in (None, [], ()):
        raise ConfigError(
            f"adapter.blocks is an option of {named(in_blocks())}; adapter={kind} adds no "
            "layers to the Hiera blocks (drop adapter.blocks)"
        )
    if KINDS[kind].in_blocks:
        options["blocks"] = blocks
    freeze(model)
    try:
        return applier(KINDS[kind])(model, options, task_modules)
    except TypeError as err:
        raise ConfigError(f"adapter={kind}: unknown option ({err})") from None


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
