"""Read SAM2 checkpoints in Meta's original ``.pt`` layout into transformers' SAM2.

Many domain models (MedSAM2, Medical-SAM2, Meta's own ``sam2.1_hiera_*.pt``) ship the
state dict of Meta's ``SAM2Base`` (``image_encoder.trunk…``, ``sam_mask_decoder…``,
``memory_attention…``). Meta's package is not a dependency (it needs torchvision and
initialises Hydra globally, see DESIGN.md), so this module maps the keys onto
``Sam2Model`` / ``Sam2VideoModel`` itself.

The mapping is one table of bidirectional rules (``_RULES``). Most rules rename one key
to one key; four shapes of structure need more than a rename:

* Meta's ``MLP`` numbers its linears ``layers.0 … layers.{n-1}``; transformers calls the
  first ``proj_in``, the last ``proj_out`` and the ones between ``layers.0 …`` (depth is
  read from the keys present).
* The memory encoder's mask down-sampler is an ``nn.Sequential`` of (conv, norm, GELU)
  triples plus a final conv in Meta, and named sub-modules in transformers.
* The prompt encoder's four point embeddings are four ``Embedding(1, C)`` in Meta and one
  ``Embedding(4, C)`` in transformers (split/concatenated along rows).
* Meta's single random-Fourier matrix ``sam_prompt_encoder.pe_layer…`` is held twice by
  transformers (prompt encoder and image-wide positional embedding).

No tensor is transposed or reshaped otherwise: fused Hiera ``qkv`` projections stay fused
in both layouts, with the same (3, heads, head_dim) ordering. Every rule names its keys
exactly (parameters are ``weight``/``bias`` only), so a key nobody recognises is reported
as unknown instead of being carried along under a plausible name.

The table reproduces the key sets and shapes of Meta's modules for all eight
sam2/sam2.1 Hiera configurations, and a model converted from Meta's modules gives their
outputs; ``tests/test_meta_checkpoint.py::test_matches_meta_reference_implementation``
re-checks this wherever a checkout of Meta's code is available (``SAM2_META_SOURCE``).
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from transformers import Sam2Model

from adapt.errors import ConfigError, ModelNotFoundError
from adapt.guards import torch_file_problem

log = logging.getLogger(__name__)

#: How many key names an error message lists per category before summarising.
SHOWN_KEYS = 10

# Placeholders of the key templates below and what each may match. Keeping them narrow
# (digits for indices, weight/bias for parameters) is what makes unknown keys unknown.
_PLACEHOLDERS = {
    "i": r"\d+",
    "n": r"\d+",
    "k": r"\d+",
    "p": r"weight|bias",
    "x": r"[qkv]",
    "slot": r"proj_in|proj_out|layers\.\d+",
    "part": r"final_conv|layers\.\d+\.(?:conv|layer_norm)",
}


class _Template:
    """A key pattern such as ``blocks.{i}.norm{n}.{p}`` that can both match and format."""

    def __init__(self, text: str):
        self.text = text
        pieces = re.split(r"\{(\w+)\}", text)
        regex = "".join(
            re.escape(piece) if index % 2 == 0 else f"(?P<{piece}>{_PLACEHOLDERS[piece]})"
            for index, piece in enumerate(pieces)
        )
        self._regex = re.compile(regex)

    def match(self, key: str) -> dict[str, str] | None:
        found = self._regex.fullmatch(key)
        return found.groupdict() if found else None

    def format(self, groups: Mapping[str, str]) -> str:
        return self.text.format(**groups)


class _Moved(NamedTuple):
    """One produced key, its tensor and the source keys it came from."""

    key: str
    value: Tensor
    sources: tuple[str, ...]


class _Rule:
    """A family of keys mapped in both directions.

    Each method receives the keys not yet claimed by earlier rules and returns what it
    produces; the caller removes every source key named in the result.
    """

    def to_hf(self, sd: Mapping[str, Tensor]) -> list[_Moved]:
        raise NotImplementedError

    def to_meta(self, sd: Mapping[str, Tensor]) -> list[_Moved]:
        raise NotImplementedError


class _Rename(_Rule):
    """One key to one key; the tensor is unchanged."""

    def __init__(self, meta: str, hf: str):
        self.meta, self.hf = _Template(meta), _Template(hf)

    @staticmethod
    def _move(sd: Mapping[str, Tensor], src: _Template, dst: _Template) -> list[_Moved]:
        moved = []
        for key, value in sd.items():
            groups = src.match(key)
            if groups is not None:
                moved.append(_Moved(dst.format(groups), value, (key,)))
        return moved

    def to_hf(self, sd):
        return self._move(sd, self.meta, self.hf)

    def to_meta(self, sd):
        return self._move(sd, self.hf, self.meta)


def _grouped(sd: Mapping[str, Tensor], template: _Template, varying: str) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """Matches of ``template`` grouped by every placeholder except ``varying`` and ``p``.

    A group is one module instance (e.g. one block's MLP), whose depth must be read from
    the keys of that instance alone.
    """
    groups: dict[tuple, list[tuple[str, dict[str, str]]]] = defaultdict(list)
    for key in sd:
        found = template.match(key)
        if found is not None:
            instance = tuple(sorted((k, v) for k, v in found.items() if k not in (varying, "p")))
            groups[instance].append((key, found))
    return iter(groups.values())


class _Mlp(_Rule):
    """Meta's ``MLP`` (``layers.0…n-1``) ↔ transformers' ``proj_in``, ``layers.*``, ``proj_out``."""

    def __init__(self, meta_prefix: str, hf_prefix: str):
        self.meta = _Template(meta_prefix + ".layers.{k}.{p}")
        self.hf = _Template(hf_prefix + ".{slot}.{p}")

    def to_hf(self, sd):
        moved = []
        for matches in _grouped(sd, self.meta, "k"):
            last = max(int(found["k"]) for _, found in matches)
            for key, found in matches:
                index = int(found["k"])
                slot = "proj_in" if index == 0 else "proj_out" if index == last else f"layers.{index - 1}"
                moved.append(_Moved(self.hf.format({**found, "slot": slot}), sd[key], (key,)))
        return moved

    def to_meta(self, sd):
        moved = []
        for matches in _grouped(sd, self.hf, "slot"):
            hidden = {found["slot"] for _, found in matches if found["slot"].startswith("layers.")}
            for key, found in matches:
                slot = found["slot"]
                if slot in ("proj_in", "proj_out"):
                    index = 0 if slot == "proj_in" else len(hidden) + 1
                else:
                    index = int(slot.removeprefix("layers.")) + 1
                moved.append(_Moved(self.meta.format({**found, "k": str(index)}), sd[key], (key,)))
        return moved


class _MaskDownsampler(_Rule):
    """Meta's ``Sequential`` of (conv, LayerNorm2d, GELU) × n + final conv ↔ named layers.

    Indices ``3i`` and ``3i+1`` are layer ``i``'s conv and norm; the final 1×1 conv sits at
    ``3n``, the only conv index that is the largest one present.
    """

    def __init__(self, meta_prefix: str, hf_prefix: str):
        self.meta = _Template(meta_prefix + ".{k}.{p}")
        self.hf = _Template(hf_prefix + ".{part}.{p}")

    def to_hf(self, sd):
        moved = []
        for matches in _grouped(sd, self.meta, "k"):
            last = max(int(found["k"]) for _, found in matches)
            for key, found in matches:
                layer, offset = divmod(int(found["k"]), 3)
                if offset == 0 and int(found["k"]) == last:
                    part = "final_conv"
                elif offset < 2:
                    part = f"layers.{layer}.{('conv', 'layer_norm')[offset]}"
                else:  # GELU slots hold no parameters: leave the key unknown
                    continue
                moved.append(_Moved(self.hf.format({**found, "part": part}), sd[key], (key,)))
        return moved

    def to_meta(self, sd):
        moved = []
        for matches in _grouped(sd, self.hf, "part"):
            layers = {found["part"].split(".")[1] for _, found in matches if found["part"] != "final_conv"}
            for key, found in matches:
                part = found["part"]
                if part == "final_conv":
                    index = 3 * len(layers)
                else:
                    _, layer, name = part.split(".")
                    index = 3 * int(layer) + (name == "layer_norm")
                moved.append(_Moved(self.meta.format({**found, "k": str(index)}), sd[key], (key,)))
        return moved


class _Stacked(_Rule):
    """Meta's ``n`` one-row embeddings ``{k}`` ↔ one ``n``-row embedding (rows in index order)."""

    def __init__(self, meta: str, hf: str):
        self.meta, self.hf = _Template(meta), hf

    def to_hf(self, sd):
        rows = {int(found["k"]): key for key in sd if (found := self.meta.match(key)) is not None}
        if not rows or sorted(rows) != list(range(len(rows))):
            return []  # absent, or a gap in the numbering: leave the keys to be reported
        sources = tuple(rows[index] for index in range(len(rows)))
        return [_Moved(self.hf, torch.cat([sd[key] for key in sources]), sources)]

    def to_meta(self, sd):
        if self.hf not in sd:
            return []
        rows = sd[self.hf].split(1)
        return [_Moved(self.meta.format({"k": str(k)}), row.clone(), (self.hf,)) for k, row in enumerate(rows)]


class _Shared(_Rule):
    """One Meta tensor that transformers keeps under several names (a copy each)."""

    def __init__(self, meta: str, *hf: str):
        self.meta, self.hf = meta, hf

    def to_hf(self, sd):
        if self.meta not in sd:
            return []
        # Separate copies: tensors sharing storage cannot be saved with safetensors.
        return [_Moved(key, sd[self.meta].clone(), (self.meta,)) for key in self.hf]

    def to_meta(self, sd):
        present = [key for key in self.hf if key in sd]
        if not present:
            return []
        first = sd[present[0]]
        differing = [key for key in present[1:] if not torch.equal(sd[key], first)]
        if differing:
            raise ValueError(
                f"Meta's layout holds one tensor ({self.meta}) where this state dict has "
                f"differing copies: {present[0]} vs {', '.join(differing)}; exporting would change "
                f"the model. Copy {present[0]} into the others first (models converted from Meta "
                "checkpoints always have them equal)."
            )
        return [_Moved(self.meta, first, tuple(present))]


def _modules(meta_prefix: str, hf_prefix: str, names: Mapping[str, str]) -> list[_Rule]:
    """Weight/bias renames of sub-modules ``{meta_name: hf_name}`` under two prefixes."""
    return [_Rename(f"{meta_prefix}.{m}.{{p}}", f"{hf_prefix}.{h}.{{p}}") for m, h in names.items()]


def _attention(meta_prefix: str, hf_prefix: str) -> list[_Rule]:
    """SAM-style attention: ``q/k/v_proj`` keep their names, ``out_proj`` becomes ``o_proj``."""
    return [
        _Rename(f"{meta_prefix}.{{x}}_proj.{{p}}", f"{hf_prefix}.{{x}}_proj.{{p}}"),
        *_modules(meta_prefix, hf_prefix, {"out_proj": "o_proj"}),
    ]


def _layer_norms(meta_prefix: str, hf_prefix: str) -> list[_Rule]:
    """Numbered norms: Meta ``norm1`` is transformers' ``layer_norm1`` and so on."""
    return [_Rename(f"{meta_prefix}.norm{{n}}.{{p}}", f"{hf_prefix}.layer_norm{{n}}.{{p}}")]


def _build_rules() -> list[_Rule]:
    trunk, backbone = "image_encoder.trunk", "vision_encoder.backbone"
    block, hf_block = f"{trunk}.blocks.{{i}}", f"{backbone}.blocks.{{i}}"
    prompt, hf_prompt = "sam_prompt_encoder", "prompt_encoder"
    decoder, hf_decoder = "sam_mask_decoder", "mask_decoder"
    layer, hf_layer = f"{decoder}.transformer.layers.{{i}}", f"{hf_decoder}.transformer.layers.{{i}}"
    memory, hf_memory = "memory_attention.layers.{i}", "memory_attention.layers.{i}"
    fuser, hf_fuser = "memory_encoder.fuser.layers.{i}", "memory_encoder.memory_fuser.layers.{i}"
    return [
        # Image encoder: Hiera trunk and FPN neck.
        _Rename(f"{trunk}.pos_embed", f"{backbone}.pos_embed"),
        _Rename(f"{trunk}.pos_embed_window", f"{backbone}.pos_embed_window"),
        *_modules(trunk, backbone, {"patch_embed.proj": "patch_embed.projection"}),
        *_layer_norms(block, hf_block),
        *_modules(block, hf_block, {"attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "proj": "proj"}),
        _Mlp(f"{block}.mlp", f"{hf_block}.mlp"),
        _Rename("image_encoder.neck.convs.{i}.conv.{p}", "vision_encoder.neck.convs.{i}.{p}"),
        # Prompt encoder.
        _Shared(
            f"{prompt}.pe_layer.positional_encoding_gaussian_matrix",
            f"{hf_prompt}.shared_embedding.positional_embedding",
            "shared_image_embedding.positional_embedding",
        ),
        _Stacked(f"{prompt}.point_embeddings.{{k}}.weight", f"{hf_prompt}.point_embed.weight"),
        _Rename(f"{prompt}.not_a_point_embed.weight", f"{hf_prompt}.not_a_point_embed.weight"),
        _Rename(f"{prompt}.no_mask_embed.weight", f"{hf_prompt}.no_mask_embed.weight"),
        *_modules(
            f"{prompt}.mask_downscaling",
            f"{hf_prompt}.mask_embed",
            {
                "0": "conv1",
                "1": "layer_norm1",
                "3": "conv2",
                "4": "layer_norm2",
                "6": "conv3",
            },
        ),
        # Mask decoder: two-way transformer, tokens, upscaling, heads.
        *_attention(f"{layer}.self_attn", f"{hf_layer}.self_attn"),
        *_attention(f"{layer}.cross_attn_token_to_image", f"{hf_layer}.cross_attn_token_to_image"),
        *_attention(f"{layer}.cross_attn_image_to_token", f"{hf_layer}.cross_attn_image_to_token"),
        *_layer_norms(layer, hf_layer),
        _Mlp(f"{layer}.mlp", f"{hf_layer}.mlp"),
        *_attention(
            f"{decoder}.transformer.final_attn_token_to_image",
            f"{hf_decoder}.transformer.final_attn_token_to_image",
        ),
        *_modules(
            f"{decoder}.transformer",
            f"{hf_decoder}.transformer",
            {
                "norm_final_attn": "layer_norm_final_attn",
            },
        ),
        *[
            _Rename(f"{decoder}.{t}.weight", f"{hf_decoder}.{t}.weight")
            for t in ("iou_token", "mask_tokens", "obj_score_token")
        ],
        *_modules(
            decoder,
            hf_decoder,
            {
                "output_upscaling.0": "upscale_conv1",
                "output_upscaling.1": "upscale_layer_norm",
                "output_upscaling.3": "upscale_conv2",
                "conv_s0": "conv_s0",
                "conv_s1": "conv_s1",
            },
        ),
        _Mlp(f"{decoder}.output_hypernetworks_mlps.{{i}}", f"{hf_decoder}.output_hypernetworks_mlps.{{i}}"),
        _Mlp(f"{decoder}.iou_prediction_head", f"{hf_decoder}.iou_prediction_head"),
        _Mlp(f"{decoder}.pred_obj_score_head", f"{hf_decoder}.pred_obj_score_head"),
        # Memory embeddings and object pointers (SAM2Base's own parameters).
        _Rename("no_mem_embed", "no_memory_embedding"),
        _Rename("no_mem_pos_enc", "no_memory_positional_encoding"),
        _Rename("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        _Rename("no_obj_ptr", "no_object_pointer"),
        _Rename("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
        _Rename("mask_downsample.{p}", "mask_downsample.{p}"),
        _Rename("obj_ptr_tpos_proj.{p}", "temporal_positional_encoding_projection_layer.{p}"),
        _Mlp("obj_ptr_proj", "object_pointer_proj"),
        # Memory attention.
        *_attention(f"{memory}.self_attn", f"{hf_memory}.self_attn"),
        *_attention(f"{memory}.cross_attn_image", f"{hf_memory}.cross_attn_image"),
        *_layer_norms(memory, hf_memory),
        *_modules(memory, hf_memory, {"linear1": "linear1", "linear2": "linear2"}),
        *_modules("memory_attention", "memory_attention", {"norm": "layer_norm"}),
        # Memory encoder.
        _MaskDownsampler("memory_encoder.mask_downsampler.encoder", "memory_encoder.mask_downsampler"),
        *_modules(
            "memory_encoder",
            "memory_encoder",
            {
                "pix_feat_proj": "feature_projection",
                "out_proj": "projection",
            },
        ),
        _Rename(f"{fuser}.gamma", f"{hf_fuser}.scale"),
        *_modules(
            fuser,
            hf_fuser,
            {
                "dwconv": "depthwise_conv",
                "norm": "layer_norm",
                "pwconv1": "pointwise_conv1",
                "pwconv2": "pointwise_conv2",
            },
        ),
    ]


_RULES: list[_Rule] = _build_rules()

#: Prefix that ``torch.nn.parallel.DistributedDataParallel`` adds to every key when a
#: training script saves the wrapped module (seen in some fine-tuned medical checkpoints).
_DDP_PREFIX = "module."


@dataclass
class ConversionResult:
    """A state dict in transformers' layout and an account of every key that did not map.

    Attributes:
        state_dict: tensors under transformers' ``Sam2Model``/``Sam2VideoModel`` names.
        unknown: Meta keys no rule recognises (not SAM2, or a variant we do not map).
        missing: target keys (when given) that the checkpoint did not provide.
        unused: Meta keys that were recognised but name weights the target model does not
            have, e.g. ``memory_attention.*`` when loading into the image-only ``Sam2Model``.
        renamed: how many Meta keys a rule mapped (a few names happen to stay the same).
    """

    state_dict: dict[str, Tensor]
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    renamed: int = 0


def _apply(sd: Mapping[str, Tensor], to_hf: bool) -> tuple[dict[str, _Moved], list[str]]:
    """Run every rule in table order on the keys earlier rules left; return output and leftovers."""
    remaining = dict(sd)
    produced: dict[str, _Moved] = {}
    for rule in _RULES:
        for moved in rule.to_hf(remaining) if to_hf else rule.to_meta(remaining):
            produced[moved.key] = moved
            for source in moved.sources:
                remaining.pop(source, None)
    return produced, sorted(remaining)


def convert_meta_state_dict(
    meta_sd: Mapping[str, Tensor], target_keys: Iterable[str] | None = None
) -> ConversionResult:
    """Map a Meta-layout SAM2 state dict onto transformers' key names.

    Args:
        meta_sd: the ``"model"`` entry of a Meta ``.pt`` file (a ``module.`` prefix on every
            key, as DDP saves it, is removed first).
        target_keys: the state-dict keys of the model to load into. With them, keys the model
            lacks are moved to ``unused`` and keys the file lacks are listed in ``missing``;
            without them, every recognised key is converted and ``missing`` stays empty.

    Returns:
        The converted state dict and the lists of keys that did not map.
    """
    if meta_sd and all(key.startswith(_DDP_PREFIX) for key in meta_sd):
        meta_sd = {key[len(_DDP_PREFIX) :]: value for key, value in meta_sd.items()}
    produced, unknown = _apply(meta_sd, to_hf=True)
    renamed = len(meta_sd) - len(unknown)
    if target_keys is None:
        return ConversionResult({k: m.value for k, m in produced.items()}, unknown, [], [], renamed)
    target = set(target_keys)
    state_dict = {key: moved.value for key, moved in produced.items() if key in target}
    unused = sorted({src for key, moved in produced.items() if key not in target for src in moved.sources})
    missing = sorted(target - state_dict.keys())
    return ConversionResult(state_dict, unknown, missing, unused, renamed)


def to_meta_state_dict(hf_sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a transformers SAM2 state dict back to Meta's key names (the inverse mapping).

    Used to export a fine-tuned model for tools built on Meta's ``sam2`` package, and by the
    tests to make Meta-layout files from random models.

    Args:
        hf_sd: ``Sam2Model.state_dict()`` or ``Sam2VideoModel.state_dict()`` (merge adapters
            into the base weights first: LoRA keys have no Meta name).

    Raises:
        ValueError: a key has no Meta name, or the two copies of the prompt positional
            matrix differ (Meta's layout can hold only one).
    """
    produced, leftover = _apply(hf_sd, to_hf=False)
    if leftover:
        raise ValueError(
            f"{len(leftover)} key(s) have no name in Meta's SAM2 layout: {_listing(leftover)}. "
            "Merge or remove adapter layers (peft: model.merge_and_unload()) before exporting."
        )
    return {key: moved.value for key, moved in produced.items()}


def read_meta_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read the state dict of a Meta-format ``.pt`` file (``{"model": sd}`` or a bare ``sd``).

    The file is opened with ``weights_only=True``: a checkpoint is data, and unpickling
    arbitrary objects from a downloaded file would run code.

    Raises:
        ModelNotFoundError: the file does not exist.
        ConfigError: the file cannot be read safely or holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"SAM2 checkpoint {path} does not exist. Set model.checkpoint to a Meta-format .pt file "
            "(e.g. MedSAM2_latest.pt or sam2.1_hiera_tiny.pt)."
        )
    problem = torch_file_problem(path)
    if problem is not None:
        raise ConfigError(
            f"{path} {problem}; give a Meta-format SAM2 .pt file saved with torch.save "
            "(e.g. MedSAM2_latest.pt or sam2.1_hiera_tiny.pt)"
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = (str(error).splitlines() or [""])[0]
        raise ConfigError(
            f"Cannot read {path} as a weights-only torch checkpoint ({type(error).__name__}: "
            f"{reason}). If it holds more than tensors "
            "(optimiser state, configs) and you trust its source, re-save only the weights: "
            "torch.save({'model': torch.load(path, weights_only=False)['model']}, 'weights.pt')."
        ) from error
    state_dict = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        found = sorted(content)[:SHOWN_KEYS] if isinstance(content, dict) else type(content).__name__
        raise ConfigError(
            f"{path} holds no SAM2 state dict: expected {{'model': {{name: tensor}}}} (Meta's "
            f"layout) or {{name: tensor}}, found {found}. Re-save it as torch.save({{'model': "
            "state_dict}}, path)."
        )
    return state_dict


def load_meta_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> ConversionResult:
    """Load a Meta-format SAM2 ``.pt`` file into a transformers ``Sam2Model``/``Sam2VideoModel``.

    Keys that do not map are never dropped silently. Loading into the image-only
    ``Sam2Model`` skips the memory weights of a video checkpoint (logged as "not used by
    the image model"); for ``Sam2VideoModel`` such keys mean the model's config differs
    from the checkpoint's and count as unknown.

    Args:
        model: the model to fill in place; it must have the checkpoint's architecture.
        path: the ``.pt`` file.
        strict: raise on unknown or missing keys; ``False`` warns with the same lists, loads
            what matches and leaves the rest of the model as it was.

    Returns:
        The conversion result (its ``state_dict`` is what was loaded).

    Raises:
        ModelNotFoundError: the file does not exist.
        ConfigError: the file is unreadable, a tensor's shape differs from the model's (always:
            the architecture is wrong), or (``strict``) keys are unknown or missing.
    """
    path = Path(path).expanduser()
    own = model.state_dict()
    result = convert_meta_state_dict(read_meta_checkpoint(path), own.keys())
    kind = type(model).__name__
    mismatched = [
        f"{key} {tuple(value.shape)} in file vs {tuple(own[key].shape)} in model"
        for key, value in result.state_dict.items()
        if value.shape != own[key].shape
    ]
    if mismatched:
        raise ConfigError(
            f"{path} does not fit this {kind}: {len(mismatched)} tensor(s) differ in shape, e.g. "
            f"{'; '.join(mismatched[:SHOWN_KEYS])}. Build the model with the checkpoint's "
            "architecture (model.name=sam2.1_hiera_tiny/small/base_plus/large and its image size)."
        )
    image_only = isinstance(model, Sam2Model)
    problems = [
        _category("have no transformers equivalent (unknown)", result.unknown),
        _category("are missing from the file", result.missing),
    ]
    if not image_only:
        what = f"are recognised but absent from this {kind} (config mismatch)"
        problems.append(_category(what, result.unused))
    problems = [line for line in problems if line]
    if problems:
        message = (
            f"Meta checkpoint {path} does not match {kind}:\n" + "\n".join(problems) + "\n"
            "Check that the file is a SAM2 checkpoint in Meta's layout (image_encoder.trunk..., "
            "sam_mask_decoder...) for this architecture; pass strict=False to load the keys "
            "that match and keep the model's own values for the rest."
        )
        if strict:
            raise ConfigError(message)
        warnings.warn(message, stacklevel=2)
    if image_only and result.unused:
        log.info("%s: %d key(s) not used by the image model: %s", path, len(result.unused), _families(result.unused))
    model.load_state_dict(result.state_dict, strict=False)
    log.info("Loaded %d tensors from Meta checkpoint %s into %s", len(result.state_dict), path, kind)
    return result


def _listing(keys: list[str]) -> str:
    """The first ``SHOWN_KEYS`` names, and how many more there are."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" ... and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _category(what: str, keys: list[str]) -> str:
    return f"  {len(keys)} key(s) {what}: {_listing(keys)}" if keys else ""


def _families(keys: list[str]) -> str:
    """Keys summarised by top-level module, e.g. ``memory_attention.* (34), no_obj_ptr``."""
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        counts[key.split(".")[0]] += 1
    return ", ".join(name if n == 1 and name in keys else f"{name}.* ({n})" for name, n in counts.items())
