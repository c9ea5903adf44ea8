"""The models an evaluation compares: an adapter, or zero-shot SAM2 (``adapter=none``).

Zero-shot SAM2 is wrapped as a ``LoadedAdapter`` without adapter weights, fed with the data
card's intensity settings (or, when compared with an adapter, the adapter's, so that both
see the same pixels). ``compare=none`` means the adapter's own recorded base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapt.adapters.io import read_metadata
from adapt.conf import CONFIG_DIR
from adapt.data.cards import DataCard
from adapt.errors import ConfigError
from adapt.adapters.loading import LoadedAdapter, load_adapter, load_base, resolve
from adapt.models.sam2 import load_sam2
from adapt.inference.onnx_backend import load_export

NONE = ("none", "None", "null", "")


@dataclass
class ModelSpec:
    """What to load for one run, resolved before anything heavy happens.

    Attributes:
        label: how tables and ``summary.json`` name the run.
        path: the local adapter folder, or ``None`` for zero-shot SAM2.
        metadata: the adapter's ``sam2_adapt.json`` (empty for zero-shot).
        base: for zero-shot SAM2, ``{"name", "image_size", "offline_fallback"}`` or the
            adapter metadata to rebuild the recorded base from.
        backend: ``torch``, or ``onnx`` for an export folder (``path``) run by onnxruntime.
        allow_base_mismatch: load the adapter on other base weights than its own (warned loudly).
    """

    label: str
    path: Path | None
    metadata: dict[str, Any]
    base: dict[str, Any] | None = None
    backend: str = "torch"
    allow_base_mismatch: bool = False

    @property
    def task(self) -> str:
        return str(self.metadata.get("task") or "segmentation")


def is_none(value: Any) -> bool:
    """``adapter=none`` / ``compare=none`` (and YAML null)."""
    return value is None or str(value) in NONE


def model_options(model: Any, image_size: int | None) -> dict[str, Any]:
    """``model=`` as a ``configs/model/<name>.yaml`` preset, or a model name / Hub id / directory."""
    if is_none(model):
        raise ConfigError(
            "adapter=none evaluates zero-shot SAM2: name it with model= "
            "(tiny | sam2.1_hiera_tiny | a Hub id | a local directory)"
        )
    preset = CONFIG_DIR / "model" / f"{model}.yaml"
    options = yaml.safe_load(preset.read_text()) if preset.exists() else {"name": str(model)}
    if image_size:
        options["image_size"] = int(image_size)
    return {k: options.get(k) for k in ("name", "revision", "checkpoint", "image_size", "offline_fallback")}


def resolve_spec(
    source: Any,
    revision: str | None,
    model: Any,
    image_size: int | None,
    base_of: ModelSpec | None = None,
    backend: str = "torch",
    key: str = "adapter",
) -> ModelSpec:
    """Find an adapter (no weights loaded yet), or describe zero-shot SAM2.

    Args:
        source: ``adapter=`` / ``compare=`` (``key``, named in the errors): run dir, adapter dir, Hub id, or none.
        model: for ``adapter=none``, the model preset or name.
        base_of: for ``compare=none``, the adapter whose recorded base is the zero-shot model.

    Raises:
        ConfigError / ModelNotFoundError: no such adapter (names it and the fix).
    """
    if backend == "onnx":
        return onnx_spec(source)
    if not is_none(source):
        given = {name: value for name, value in (("model", model), ("image_size", image_size)) if value is not None}
        if given and key == "adapter":  # an adapter runs on the base it records: the option would be ignored
            options = " ".join(f"{name}={value}" for name, value in given.items())
            raise ConfigError(
                f"{options}: applies to adapter=none (zero-shot SAM2); adapter={source} runs on the base model "
                f"and image size it was trained with: drop {' and '.join(f'{n}=' for n in given)}, or evaluate "
                "zero-shot with adapter=none"
            )
        path = resolve(str(source), revision, key=key)
        return ModelSpec(str(source), path, read_metadata(path))
    if base_of is not None and base_of.path is not None:
        name = (base_of.metadata.get("base_model") or {}).get("name")
        return ModelSpec(f"zero-shot {name}", None, {}, {"metadata": base_of.metadata})
    options = model_options(model, image_size)
    return ModelSpec(f"zero-shot {options['name']}", None, {}, options)


def onnx_spec(source: Any) -> ModelSpec:
    """An ONNX export folder (``backend=onnx``), labelled with its quantisation.

    Raises:
        ConfigError: ``source`` is not an ONNX export (says how to make one).
    """

    if is_none(source):
        raise ConfigError("backend=onnx evaluates an export: adapter=<folder of python -m adapt.export format=onnx>")
    loaded = load_export(Path(str(source)))
    quantize = loaded.metadata["export"].get("quantize") or "none"
    label = f"onnx{'' if quantize == 'none' else ' ' + quantize} {source}"
    return ModelSpec(label, loaded.path, dict(loaded.metadata), backend="onnx")


def card_preprocessing(card: DataCard) -> dict[str, Any]:
    """What zero-shot SAM2 is given: the card's own preprocessing, as an adapter would record it."""
    channels = card.intensity.get("channels")
    return {
        "intensity": dict(card.intensity),
        "slice_axis": card.slice_axis,
        "bands": list(channels) if channels else None,
        "dims": card.dims,
        "spacing": card.spacing,
    }


def load_model(
    spec: ModelSpec, card: DataCard, preprocessing: dict[str, Any] | None = None, video: bool = False
) -> LoadedAdapter:
    """The model of a spec, as a ``LoadedAdapter`` (zero-shot: no adapter weights; an ONNX export:
    no torch model, ``adapt.inference.onnx_backend.load_export``)."""
    if spec.backend == "onnx":
        return load_export(spec.path)
    if spec.path is not None:
        return load_adapter(spec.path, video=video, allow_base_mismatch=spec.allow_base_mismatch)
    if "metadata" in spec.base:
        model, info = load_base(spec.base["metadata"], None, None, video, spec.allow_base_mismatch)
    else:
        options = {k: v for k, v in spec.base.items() if v is not None}
        options.setdefault("offline_fallback", "error")
        model, info = load_sam2(options.pop("name"), video=video, **options)
    preprocessing = preprocessing or card_preprocessing(card)
    metadata = {"task": "segmentation", "base_model": {"name": info.name, "revision": info.revision}}
    return LoadedAdapter(model.eval(), dict(preprocessing), dict(card.labels), metadata, info, Path("none"))
