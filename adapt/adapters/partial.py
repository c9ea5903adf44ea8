"""Partial fine-tuning without new layers: train named submodules (the mask decoder) or all.

``decoder`` is MedSAM-style decoder tuning with the image encoder frozen; ``full`` trains
every weight and exists as the reference the parameter-efficient kinds are compared with.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from adapt.adapters.kinds import KINDS
from adapt.errors import ConfigError

PEFT_TYPE = KINDS["decoder"].layout


def apply_partial(model: nn.Module, modules: Sequence[str]) -> nn.Module:
    """Unfreeze the parameters under each named submodule (``["*"]`` = all) and return the model.

    Raises:
        ConfigError: a name matches no submodule; lists the top-level ones.
    """
    if list(modules) == ["*"]:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    children = dict(model.named_modules())
    for name in modules:
        if name not in children:
            top = sorted(n for n in children if n and "." not in n)
            raise ConfigError(f"adapter.modules: {name!r} is not a submodule; top-level ones are {top}")
        for param in children[name].parameters():
            param.requires_grad_(True)
    return model


def with_task_modules(model: nn.Module, task_modules: Sequence[str]) -> nn.Module:
    """``model`` with the modules a task added (e.g. the semantic head) trained in full too."""
    return apply_partial(model, task_modules) if task_modules else model


def apply_decoder_kind(model: nn.Module, options: dict[str, Any], task_modules: list[str]) -> nn.Module:
    """``adapter=decoder``: the named modules (default the mask decoder) trained, the rest frozen."""
    model = apply_partial(model, options.pop("modules", ["mask_decoder"]), **options)
    return with_task_modules(model, task_modules)


def apply_full_kind(model: nn.Module, options: dict[str, Any], task_modules: list[str]) -> nn.Module:
    """``adapter=full``: every weight trained."""
    return with_task_modules(apply_partial(model, ["*"], **options), task_modules)
