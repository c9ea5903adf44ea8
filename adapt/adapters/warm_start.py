"""Warm start: a new run whose adapter weights start from an earlier adapter's (``train init_adapter=``).

The annotation loop retrains after each round of saved labels. Starting from the current adapter
rather than from scratch keeps what it learnt, but it is a new run -- its own run folder, step 0,
a fresh optimizer and schedule -- not a resume (``ckpt_path=`` continues a checkpoint, its step and
its optimizer). The source is found as every adapter is (``adapt.adapters.loading.resolve``: a run,
an adapter folder or a Hub id) and checked against the run's config before any data or model is
loaded: its backbone and base model, its task, and the adapter options that shape its weights
(kind, rank, targets, blocks, ...) must be the run's, otherwise the weights would not fit or would
mean something else. Once the task has built its adapted model, the source's trainable weights are
copied into it; every trainable weight must be there with its shape (none left at its initial
value without a word). The run records where it started (``initialised_from`` in
``sam2_adapt.json`` and ``metrics.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from adapt.adapters.io import WEIGHTS_FILE, read_metadata, trainable_state_dict
from adapt.adapters.loading import resolve
from adapt.errors import ConfigError
from adapt.models.backbones import BACKBONES, backbone_of
from adapt.models.channels import taken_channels, wants_projection
from adapt.models.names import HUB_IDS
from adapt.models.provenance import base_fingerprint, check_fingerprint

#: Adapter options not compared: ``dropout`` changes how a run trains, not its weights; ``task_modules`` and
#: ``input_channels`` show in the weights themselves (a head or an input projection, present or not), which
#: ``load_init_weights`` compares, and an adapter written before ``input_channels`` existed does not record it.
NOT_COMPARED = frozenset({"dropout", "task_modules", "input_channels"})


@dataclass
class InitAdapter:
    """The adapter a run starts from: as given, its local folder and its ``sam2_adapt.json``."""

    source: str
    path: Path
    metadata: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What the new run records of it (``initialised_from``): a local source as an absolute path, which a
        shared copy of the adapter reduces to its folder's name (``adapt.data.card_copy.public_metadata``)."""
        meta = self.metadata
        local = Path(self.source).expanduser().exists()
        return {
            "source": str(Path(self.source).expanduser().resolve()) if local else self.source,
            "path": str(self.path.resolve()),
            "recipe": meta.get("recipe"),
            "data_card": meta.get("data_card"),
            "metrics": meta.get("metrics"),
        }


def _base_id(name: Any) -> str:
    text = str(name or "").removeprefix("random:")
    return HUB_IDS.get(text, text)


def mismatches(
    metadata: Mapping[str, Any], model: str, adapter: Mapping[str, Any], task: str, image_size: int | None = None
) -> list[str]:
    """What differs between an adapter's record and a run's config, each as ``key: source's vs run's``.

    ``image_size`` (the run's ``model.image_size``; ``None``: not compared) is compared as the trunk takes it
    (``Backbone.fit_size``). No weight's shape depends on it (the trunk's position embeddings are interpolated
    to the grid), so the weights would load; but what an adapter learnt is tied to the scale objects had in
    its tokens: at another side each object spans another number of them, and a warm start would begin from
    an adapter tuned for features it no longer sees. The loop retrains with the adapter's own settings
    (``adapt.app.retrain`` repeats ``model.image_size``), so another side is a forgotten override: refused.
    """
    found = []
    recorded = BACKBONES.get(str((metadata.get("model") or {}).get("backbone") or "sam2"), BACKBONES["sam2"])
    given = backbone_of(model)
    if recorded.key != given.key:
        found.append(f"backbone: {recorded.title} vs {given.title}")
    side = (metadata.get("model") or {}).get("image_size")
    if side and image_size and recorded.key == given.key and int(side) != given.fit_size(int(image_size)):
        found.append(f"model.image_size: {side} vs {image_size}")
    base = (metadata.get("base_model") or {}).get("name")
    local = Path(str(model)).is_dir() or Path(str(base)).is_dir()
    if base and not local and _base_id(base) != _base_id(model):
        found.append(f"model.name: {base} vs {model}")
    if str(metadata.get("task") or "segmentation") != str(task):
        found.append(f"task: {metadata.get('task') or 'segmentation'} vs {task}")
    source = dict(metadata.get("adapter") or {})
    for key in sorted(set(source) | set(adapter)):
        if key in NOT_COMPARED or (key not in source and adapter.get(key) is None):
            continue
        if source.get(key) != adapter.get(key):
            found.append(f"adapter.{key}: {source.get(key)} vs {adapter.get(key)}")
    return found


def resolve_init(
    source: str, model: str, adapter: Mapping[str, Any], task: str, image_size: int | None = None
) -> InitAdapter:
    """The adapter ``init_adapter=`` names, checked against the run's ``model.name``, ``adapter``, ``task`` and
    ``model.image_size`` (``mismatches``).

    Raises:
        ConfigError: not an adapter (a checkpoint file is pointed to ``ckpt_path=``), or it differs from the
            run: both values named, and the fix.
        ModelNotFoundError: a Hub id that cannot be had.
    """
    try:
        path = resolve(source)
    except ConfigError as err:
        resume = " (a checkpoint continues its own run: ckpt_path=)" if Path(source).is_file() else ""
        raise ConfigError(
            f"init_adapter={source}: {err} init_adapter= takes an adapter to start a new run from{resume}"
        ) from None
    metadata = read_metadata(path)
    if not metadata:
        raise ConfigError(f"init_adapter={source}: {path} has no sam2_adapt.json; give a run or adapter of sam2-adapt")
    found = mismatches(metadata, model, adapter, task, image_size)
    if found:
        raise ConfigError(
            f"init_adapter={source} does not fit this run ({'; '.join(found)}: the adapter's vs the run's): "
            "its weights only start a run of the same backbone, base, image size, task and adapter options. Train with the "
            f"adapter's settings (those of its run: {path / 'sam2_adapt.json'}), or drop init_adapter= to "
            "start from scratch"
        )
    return InitAdapter(str(source), path, metadata)


def check_channels(init: InitAdapter, adapter: Mapping[str, Any], channels: int | None) -> None:
    """Refuse, before the model loads, a source whose input (channels per image, and a learned projection
    or none) is not the run's: the card's channels decide that (``adapt.models.channels``), so an adapter
    of 1-channel CT cannot start a run on 4-band tiles, nor the reverse.

    Raises:
        ConfigError: both channel counts named, and the fix.
    """
    taken = taken_channels(init.metadata)
    if taken is None or not channels:
        return
    learned = wants_projection(str(adapter.get("input_channels", "auto")), int(channels))
    if (taken["count"], taken["learned"]) == (int(channels), learned):
        return
    described = lambda count, projected: f"{count} channel(s){' through a learned projection' if projected else ''}"  # noqa: E731
    raise ConfigError(
        f"init_adapter={init.source} does not fit this run (input: {described(taken['count'], taken['learned'])} "
        f"vs {described(channels, learned)}: the adapter's vs the run's data card): its weights start a run on "
        f"images of its own channels. Give data.card= a card of those images, or drop init_adapter= to start "
        "from scratch"
    )


def load_init_weights(model: nn.Module, init: InitAdapter, model_info: Any = None) -> int:
    """Copy ``init``'s weights into ``model`` (the task's adapted model, built from the same spec); returns
    how many tensors were set. The base weights must be those the source was trained on.

    Raises:
        ConfigError: other base weights, or a trainable weight the file lacks or holds with another shape.
    """
    if model_info is not None:
        check_fingerprint(init.metadata.get("base_fingerprint"), base_fingerprint(model_info), init.path)
    weights = load_file(init.path / WEIGHTS_FILE)
    where = f"init_adapter={init.source} ({init.path / WEIGHTS_FILE})"
    try:
        if isinstance(model, PeftModel):
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            result = set_peft_model_state_dict(model, weights)
            missing = sorted(trainable & set(result.missing_keys))
            unknown = sorted(result.unexpected_keys)
        else:
            expected = trainable_state_dict(model)
            missing, unknown = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
            if not missing and not unknown:
                model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a shape that differs
        raise ConfigError(f"{where} does not fit this run's adapter: {err}") from None
    except KeyError as err:  # peft: a weight of the run's adapter the file lacks
        raise ConfigError(
            f"{where} does not fit this run's adapter: it lacks {err}; train with the adapter's settings"
        ) from None
    if missing or unknown:
        raise ConfigError(
            f"{where} does not fit this run's adapter: {len(missing)} trainable weight(s) missing "
            f"(e.g. {missing[:2]}), {len(unknown)} unknown (e.g. {unknown[:2]}); train with the adapter's settings"
        )
    return len(weights)
