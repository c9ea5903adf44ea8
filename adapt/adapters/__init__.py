"""Adapter kinds and the one entry point that applies them to a frozen SAM2.

Kinds: ``lora`` and ``dora`` (peft), ``bottleneck`` (ours, Medical-SAM-Adapter style),
``decoder`` (mask decoder trained, encoder frozen) and ``full`` (everything trained). Each is
one row of ``KINDS``: how it is applied, the file layout it saves in, and whether it places
layers in the Hiera blocks (and so takes ``adapter.blocks``). A new kind is a new row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from adapt.adapters.bottleneck import PEFT_TYPE as BOTTLENECK
from adapt.adapters.bottleneck import BottleneckConfig, apply_bottleneck
from adapt.adapters.lora import TARGET_PRESETS, apply_lora
from adapt.adapters.partial import PEFT_TYPE as PARTIAL
from adapt.adapters.partial import apply_partial
from adapt.errors import ConfigError
from adapt.models.sam2 import freeze

#: ``layout`` of kinds that peft itself saves and loads (``PeftModel``).
PEFT_LAYOUT = "peft"


@dataclass(frozen=True)
class AdapterKind:
    """How one kind of adapter is built and stored.

    Attributes:
        apply: ``(frozen model, options, task_modules) -> model to train``; ``task_modules``
            (modules a task added, e.g. the semantic head) must train in full.
        layout: ``PEFT_LAYOUT``, or the ``peft_type`` our own ``adapter_config.json`` records
            (the kind is then rebuilt from that file and its weights loaded by name).
        in_blocks: the kind adds layers to the Hiera blocks, so ``adapter.blocks`` applies.
    """

    apply: Callable[[nn.Module, dict[str, Any], list[str]], nn.Module]
    layout: str
    in_blocks: bool


def _peft(dora: bool) -> Callable[[nn.Module, dict[str, Any], list[str]], nn.Module]:
    def apply(model: nn.Module, options: dict[str, Any], task_modules: list[str]) -> nn.Module:
        saved = list(options.pop("modules_to_save", None) or []) + task_modules
        return apply_lora(model, use_dora=dora, modules_to_save=saved or None, **options)
    return apply


def _ours(build: Callable[[nn.Module, dict[str, Any]], nn.Module]) -> Callable[[nn.Module, dict[str, Any], list[str]], nn.Module]:
    def apply(model: nn.Module, options: dict[str, Any], task_modules: list[str]) -> nn.Module:
        model = build(model, options)
        return apply_partial(model, task_modules) if task_modules else model
    return apply


def _decoder(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    return apply_partial(model, options.pop("modules", ["mask_decoder"]), **options)


KINDS: dict[str, AdapterKind] = {
    "lora": AdapterKind(_peft(dora=False), PEFT_LAYOUT, in_blocks=True),
    "dora": AdapterKind(_peft(dora=True), PEFT_LAYOUT, in_blocks=True),
    "bottleneck": AdapterKind(_ours(lambda m, o: apply_bottleneck(m, BottleneckConfig(**o))), BOTTLENECK, in_blocks=True),
    "decoder": AdapterKind(_ours(_decoder), PARTIAL, in_blocks=False),
    "full": AdapterKind(_ours(lambda m, o: apply_partial(m, ["*"], **o)), PARTIAL, in_blocks=False),
}
ADAPTER_KINDS = tuple(KINDS)
#: ``peft_type`` values of the kinds we save ourselves.
OUR_LAYOUTS = {kind.layout for kind in KINDS.values()} - {PEFT_LAYOUT}

__all__ = ["ADAPTER_KINDS", "KINDS", "OUR_LAYOUTS", "TARGET_PRESETS", "AdapterKind", "apply_adapter",
           "adapter_options", "plain_name", "trainable_parameters"]


def adapter_options(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split an adapter spec (the Hydra ``adapter`` node) into its kind and its options."""
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind not in KINDS:
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
            semantic head's class prompts, the input projection) that train in full whatever the
            adapter, and ``input_channels`` (``adapt.models.channels``; the task acts on it).
    """
    kind, options = adapter_options(spec)
    task_modules = list(options.pop("task_modules", None) or [])
    options.pop("input_channels", None)  # the input projection is a task module, added before (adapt.models.channels)
    blocks = options.pop("blocks", None)
    if not KINDS[kind].in_blocks and blocks not in (None, [], ()):
        raise ConfigError(f"adapter.blocks is an option of lora, dora and bottleneck; adapter={kind} adds no "
                          "layers to the Hiera blocks (drop adapter.blocks)")
    if KINDS[kind].in_blocks:
        options["blocks"] = blocks
    freeze(model)
    try:
        return KINDS[kind].apply(model, options, task_modules)
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
