"""What each adapter kind is and supports, declared in one table that loads without torch.

The config schema checks ``adapter=<kind>`` before torch and peft are imported (the door), and
the embedding cache, the model card, ``hub push merge=true``, the export and the label-efficiency
sweep each need to know something about a kind (is it peft's, can it be merged into a plain
``Sam2Model``, does it leave the image encoder frozen). They ask this table instead of naming
kinds, so a new kind is its module plus one row here (``docs/adding_an_adapter.md``);
``adapt.adapters.registry`` builds the appliers from the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

#: ``layout`` of kinds that peft itself saves and loads (``PeftModel``).
PEFT_LAYOUT = "peft"
#: ``adapter.placement`` of the bottleneck kind: in series after attention, in parallel to the MLP.
PLACEMENTS = ("attn", "mlp")
#: LoRA target presets that leave the image encoder untouched (``adapt.models.names.TARGET_PRESETS``).
DECODER_ONLY_TARGETS = {"decoder_attn", "memory"}


def _never(spec: Mapping[str, Any]) -> bool:
    return False


def _decoder_side_targets(spec: Mapping[str, Any]) -> bool:
    targets = spec.get("targets", [])
    targets = [targets] if isinstance(targets, str) else list(targets)
    return bool(targets) and set(targets) <= DECODER_ONLY_TARGETS


def _outside_encoder(spec: Mapping[str, Any]) -> bool:
    return all(not m.startswith("vision_encoder") for m in spec.get("modules", ["mask_decoder"]))


@dataclass(frozen=True)
class Kind:
    """One adapter kind, as the rest of sam2-adapt sees it.

    Attributes:
        name: the value of ``adapter.kind`` (and of ``adapter=<name>``, ``configs/adapter/<name>.yaml``).
        apply: ``"module:function"``, the function ``(frozen model, options, task_modules) -> model
            to train``, imported on use (``adapt.adapters.registry.apply_adapter``).
        layout: ``PEFT_LAYOUT``, or the ``peft_type`` our own ``adapter_config.json`` records.
        options: the schema section of its options (``adapt.schema.ADAPTER_SECTIONS``).
        in_blocks: it adds layers to the Hiera blocks, so it takes ``adapter.blocks`` (and a frozen
            prefix can be cached).
        merges: its weights fold into a plain transformers ``Sam2Model`` (``hub push merge=true``,
            ``export format=safetensors``); layers of its own cannot.
        encoder_frozen: ``spec -> bool``: the spec trains nothing in the image encoder, so the
            encoder's output can be cached (``adapt.models.embedding_cache``).
    """

    name: str
    apply: str
    layout: str
    options: str
    in_blocks: bool
    merges: bool = True
    encoder_frozen: Callable[[Mapping[str, Any]], bool] = _never

    @property
    def peft(self) -> bool:
        """peft saves and loads it, so plain ``transformers`` + ``peft`` read the shared folder."""
        return self.layout == PEFT_LAYOUT


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "lora",
            "adapt.adapters.lora:apply_kind",
            PEFT_LAYOUT,
            "lora",
            in_blocks=True,
            encoder_frozen=_decoder_side_targets,
        ),
        Kind(
            "dora",
            "adapt.adapters.lora:apply_dora_kind",
            PEFT_LAYOUT,
            "lora",
            in_blocks=True,
            encoder_frozen=_decoder_side_targets,
        ),
        Kind(
            "bottleneck",
            "adapt.adapters.bottleneck:apply_kind",
            "BOTTLENECK",
            "bottleneck",
            in_blocks=True,
            merges=False,
        ),
        Kind(
            "decoder",
            "adapt.adapters.partial:apply_decoder_kind",
            "PARTIAL",
            "partial",
            in_blocks=False,
            encoder_frozen=_outside_encoder,
        ),
        Kind("full", "adapt.adapters.partial:apply_full_kind", "PARTIAL", "partial", in_blocks=False),
    )
}
ADAPTER_KINDS = tuple(KINDS)
#: ``peft_type`` values of the kinds we save ourselves.
OUR_LAYOUTS = {kind.layout for kind in KINDS.values()} - {PEFT_LAYOUT}


def kind_of(spec: Mapping[str, Any] | None) -> Kind | None:
    """The declared kind of an adapter spec (``sam2_adapt.json``'s ``adapter``), ``None`` if unknown."""
    return KINDS.get(str((spec or {}).get("kind")))


def named(kinds: list[Kind] | tuple[Kind, ...] | Any, joint: str = "and") -> str:
    """``lora, dora and bottleneck``: kinds named in a message."""
    names = [kind.name for kind in kinds]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {joint} {names[-1]}"


def with_options(options: str) -> tuple[str, ...]:
    """The kinds whose options are the schema section ``options``."""
    return tuple(name for name, kind in KINDS.items() if kind.options == options)


def in_blocks() -> tuple[Kind, ...]:
    """The kinds that take ``adapter.blocks``."""
    return tuple(kind for kind in KINDS.values() if kind.in_blocks)
