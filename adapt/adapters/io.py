"""Save and load adapters in peft's file layout, whatever their kind.

An adapter directory holds ``adapter_config.json`` + ``adapter_model.safetensors`` (+ a
``README.md`` model card) exactly as peft writes them, so LoRA/DoRA adapters load with plain
``peft.PeftModel.from_pretrained``; our own kinds use the same two files with their own
``peft_type``. ``sam2_adapt.json`` beside them records what a user needs to reuse the
adapter: base model id, revision and weights fingerprint, adapter kind, recipe, data card
(its copy, ``data_card.yaml``, is written beside: ``adapt.data.card_copy``), preprocessing, label
map and the card's ``mask_values`` (how its label files store each label, so that predict, the
app and exports write masks in that encoding), and, for a model with a learned input projection,
its channels (``input_channels``: count, the card's selection and names), from which loading
re-creates the projection before its weights are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn

from adapt.adapters.registry import KINDS, OUR_LAYOUTS, apply_adapter, plain_name, trainable_parameters
from adapt.adapters.lora import quiet_peft
from adapt.errors import ArtefactError, ConfigError
from adapt.models.channels import ATTRIBUTE as CHANNELS
from adapt.models.channels import METADATA_KEY as CHANNELS_KEY
from adapt.models.channels import add_input_projection, channel_record, input_projection
from adapt.models.sam2 import freeze
from adapt.models.semantic import ATTRIBUTE, add_class_prompts
from adapt.storage import write_folder_atomically

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
METADATA_FILE = "sam2_adapt.json"


def trainable_state_dict(model: nn.Module, weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The trainable weights only, named as in the unwrapped base model.

    ``weights``: ``model``'s full state dict, to read the values from instead of the
    parameters (under FSDP a rank's parameters are shards; ``adapt.train`` gathers them).
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    trainable = trainable_parameters(base)
    values = trainable if weights is None else {n: weights[n] for n in trainable}
    return {n: v.detach().cpu().contiguous() for n, v in values.items()}


def save_peft_from_weights(model: PeftModel, weights: Mapping[str, torch.Tensor], out_dir: Path) -> None:
    """peft's adapter files, with the values taken from a full state dict under plain names.

    peft picks the adapter's entries by the names of the model's modules, which FSDP-wrapped
    blocks change (``…blocks.0._fsdp_wrapped_module.attn…``): it is given the weights under
    the model's current names, and its file is rewritten under the plain ones.
    """
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    model.save_pretrained(out_dir, state_dict={n: weights[plain_name(n)] for n in names if plain_name(n) in weights})
    if any(plain_name(n) != n for n in names):  # wrapped blocks: peft wrote their entries under wrapper names
        path = out_dir / WEIGHTS_FILE
        save_file({plain_name(k): v for k, v in load_file(path).items()}, path, metadata={"format": "pt"})


def save_adapter(
    model: nn.Module,
    spec: Mapping[str, Any],
    out_dir: str | Path,
    metadata: Mapping[str, Any],
    weights: Mapping[str, torch.Tensor] | None = None,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write the adapter of ``model`` (built by ``apply_adapter(spec)``) to ``out_dir``.

    Args:
        model: the adapted model.
        spec: the adapter spec it was built with (``{"kind": ..., **options}``).
        out_dir: target directory; created if needed. Its files are written whole or not at all
            (``adapt.storage.write_folder_atomically``): a full disk leaves an older adapter there intact.
        metadata: base model, recipe, data card, preprocessing, label map, metrics.
        weights: ``model``'s full state dict, gathered where the parameters are sharded
            (FSDP); by default the values are read from ``model`` itself.
        files: more text files to write into the folder, ``{name: content}`` (the data card's copy).
    """
    projection = input_projection(model)
    if projection is not None:
        intensity = (metadata.get("preprocessing") or {}).get("intensity") or {}
        metadata = {**metadata, CHANNELS_KEY: channel_record(intensity, int(projection.channels))}

    def write(folder: Path) -> None:
        if isinstance(model, PeftModel) and weights is None:
            model.save_pretrained(folder)
        elif isinstance(model, PeftModel):
            save_peft_from_weights(model, weights, folder)
        else:
            config = {"peft_type": KINDS[spec["kind"]].layout, **spec}
            (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
            save_file(trainable_state_dict(model, weights), folder / WEIGHTS_FILE)
        (folder / METADATA_FILE).write_text(json.dumps({"adapter": dict(spec), **metadata}, indent=2, default=str))
        for name, text in (files or {}).items():
            (folder / name).write_text(text)

    return write_folder_atomically(
        Path(out_dir),
        write,
        "the adapter folder",
        "free some space, or write the run to a larger disk (hydra.run.dir=<folder there>)",
    )


def read_metadata(adapter_dir: str | Path) -> dict[str, Any]:
    """The ``sam2_adapt.json`` of an adapter directory (empty if it was written by plain peft).

    Raises:
        ArtefactError: the file is there but not a JSON object (cut short, of another format).
    """
    path = Path(adapter_dir) / METADATA_FILE
    if not path.exists():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise ArtefactError(
            f"{path}: broken ({type(err).__name__}: {err}); copy, pull or export the folder again"
        ) from None
    if not isinstance(metadata, dict):
        raise ArtefactError(f"{path}: not a JSON object of sam2-adapt metadata; copy, pull or export the folder again")
    return metadata


def restore_task_modules(base: nn.Module, adapter_dir: str | Path) -> None:
    """Re-create modules a task added to SAM2 (the semantic head, the input projection) before weights
    are loaded."""
    metadata = read_metadata(adapter_dir)
    task_modules = metadata.get("adapter", {}).get("task_modules") or []
    if ATTRIBUTE in task_modules and not hasattr(base, ATTRIBUTE):
        add_class_prompts(base, len(metadata["classes"]) + 1)
    if CHANNELS in task_modules and not hasattr(base, CHANNELS):
        record = metadata.get(CHANNELS_KEY) or {}
        if not record.get("count"):
            raise ArtefactError(
                f"{Path(adapter_dir) / METADATA_FILE}: the adapter has an input projection but no "
                f"{CHANNELS_KEY}.count; copy, pull or export the folder again"
            )
        add_input_projection(base, int(record["count"]))


def load_adapter_weights(base: nn.Module, adapter_dir: str | Path, trainable: bool = False) -> nn.Module:
    """Apply the adapter saved in ``adapter_dir`` to a fresh base model and return it (eval mode).

    Args:
        base: a freshly loaded base model of the architecture the adapter was trained on.
        adapter_dir: directory written by ``save_adapter`` (or by peft for LoRA/DoRA).
        trainable: keep the adapter's weights trainable (to continue training); frozen otherwise.

    Raises:
        ConfigError: the directory is not an adapter, or its weights do not fit ``base``.
    """
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / CONFIG_FILE
    if not config_path.exists():
        raise ConfigError(f"{adapter_dir} is not an adapter directory: {CONFIG_FILE} is missing")
    config = json.loads(config_path.read_text())
    restore_task_modules(base, adapter_dir)
    if config.get("peft_type") not in OUR_LAYOUTS:
        with quiet_peft():
            return PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable).eval()
    spec = {k: v for k, v in config.items() if k != "peft_type"}
    model = apply_adapter(base, spec)
    weights = load_file(adapter_dir / WEIGHTS_FILE)
    expected = set(trainable_state_dict(model))
    missing, unknown = expected - set(weights), set(weights) - expected
    # A video model's adapter on the image model: weights of modules it lacks (memory) have no use there.
    unknown = {k for k in unknown if hasattr(model, k.split(".")[0])}
    if missing or unknown:
        raise ConfigError(
            f"{adapter_dir / WEIGHTS_FILE} does not fit this base model: "
            f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(unknown)} unknown "
            f"(e.g. {sorted(unknown)[:3]}). Was it trained on another SAM2 size?"
        )
    model.load_state_dict(weights, strict=False)
    if not trainable:
        freeze(model)
    return model.eval()
