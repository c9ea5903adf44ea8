"""The input adapter: a learned projection from a card's C channels to the backbone's 3.

SAM2 (and every backbone ``load_sam2`` returns) takes RGB. A grey CT slice, a 4-band GeoTIFF
or a three-sequence MRI reaches it through ``channel_mapping``, a fixed map that is linear
in the channels: 1 is repeated, 3 are kept, 2 become ``(c0, c1, mean)``, more than 3 are
averaged in three contiguous groups. It is what every model without an input adapter
sees, and what ``preprocess`` applies between resizing and ImageNet normalisation.

``ChannelProjection`` learns that map instead. It is the fixed map plus a trainable
correction ``delta [3, C]`` and ``bias [3]``, both zero at first:
``out = channel_mapping(x) + delta . x + bias``. Parametrised this way the projection at its
initial value computes today's tensors bit for bit (a zero term added to the same
operations), where a plain 1x1 convolution initialised to the map's matrix would round the
group means differently; the effective matrix (``weight``) is still ``mapping_matrix + delta``,
and its gradient is the same. It sits in front of whatever backbone is loaded, as a module
of the model (``input_projection``), so it trains as one of the task modules every adapter
kind trains in full, is saved in the adapter's weights, and is traced into the ONNX encoder.

``adapter.input_channels`` decides whether a run has one (``INPUT_CHANNEL_MODES``): ``auto``
when the card gives other than 1 or 3 channels, ``project`` always, ``fixed`` never.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from adapt.errors import ConfigError
from adapt.models.names import INPUT_CHANNEL_MODES
from adapt.models.primitives import base_model, channel_mapping, pixel_stats, preprocess

#: The model attribute the projection lives under (a task module: trained in full, saved by name).
ATTRIBUTE = "input_projection"
#: ``sam2_adapt.json`` key recording the projection: ``{"count", "source", "names"}``.
METADATA_KEY = "input_channels"


def mapping_matrix(channels: int) -> torch.Tensor:
    """``[3, C]``: the matrix of ``channel_mapping`` for ``channels`` inputs (its columns' weights)."""
    return channel_mapping(torch.eye(channels)[None, :, :, None])[0, :, :, 0].contiguous()  # column j: unit input j


class ChannelProjection(nn.Module):
    """C channels in [0, 1] -> 3: the fixed ``channel_mapping`` plus a learned correction (zero at first).

    Args:
        channels: the number of input channels C (the card's ``intensity.channels``).
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels < 1:
            raise ValueError(f"an input projection needs at least one channel, got {channels}")
        self.channels = int(channels)
        self.delta = nn.Parameter(torch.zeros(3, self.channels))
        self.bias = nn.Parameter(torch.zeros(3))

    @property
    def weight(self) -> torch.Tensor:
        """The effective ``[3, C]`` matrix: ``mapping_matrix(C) + delta``."""
        return mapping_matrix(self.channels).to(self.delta) + self.delta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[1] != self.channels:
            raise ConfigError(
                f"the adapter's input projection takes {self.channels} channels, the image has "
                f"{image.shape[1]}: use a data card (intensity.channels) that selects {self.channels} "
                "channels, as in training, or train an adapter on this card"
            )
        learned = torch.einsum("oc,bchw->bohw", self.delta.to(image.dtype), image)
        return channel_mapping(image) + learned + self.bias.to(image.dtype).view(1, 3, 1, 1)


def add_input_projection(model: nn.Module, channels: int) -> ChannelProjection:
    """Attach a ``ChannelProjection`` of ``channels`` inputs to ``model`` (before an adapter wraps it)."""
    projection = ChannelProjection(channels)
    setattr(base_model(model), ATTRIBUTE, projection)
    return projection


def input_projection(model: Any) -> nn.Module | None:
    """The model's input projection (under a peft wrapper: peft's trained copy), or ``None``."""
    if model is None or not isinstance(model, nn.Module):
        return None
    return getattr(base_model(model), ATTRIBUTE, None)


def model_pixels(model: Any, image: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """``model``'s input from images ``[B, C, H, W]`` in [0, 1] (``preprocess``): resized, to 3 channels
    through its input projection or the fixed map, normalised with its backbone's mean/std."""
    return preprocess(image, image_size, input_projection(model), **pixel_stats(model))


def wants_projection(mode: str, channels: int) -> bool:
    """Whether a run with ``adapter.input_channels=mode`` on ``channels``-channel images learns a projection.

    Raises:
        ConfigError: an unknown mode.
    """
    if mode not in INPUT_CHANNEL_MODES:
        raise ConfigError(f"adapter.input_channels={mode!r} is not one of {list(INPUT_CHANNEL_MODES)}")
    return mode == "project" or (mode == "auto" and channels not in (1, 3))


def channel_record(intensity: Mapping[str, Any], channels: int) -> dict[str, Any]:
    """What ``sam2_adapt.json`` records of a projection: its input count, and the card's selection and names."""
    return {
        "count": int(channels),
        "source": list(intensity.get("channels") or []) or None,
        "names": list(intensity.get("channel_names") or []) or None,
    }


def taken_channels(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The channels an adapter takes, read from its ``sam2_adapt.json``, or ``None`` where it records none.

    Returns:
        ``count`` (channels per image), ``names`` (the card's ``channel_names``, or ``None``), ``source``
        (which channels of each file, or ``None`` for all) and ``learned``: whether they reach the
        model's 3 through a learned input projection (``METADATA_KEY``) or the fixed channel map.
    """
    record = metadata.get(METADATA_KEY)
    if record:
        return {
            "count": int(record["count"]),
            "names": record.get("names"),
            "source": record.get("source"),
            "learned": True,
        }
    preprocessing = metadata.get("preprocessing") or {}
    intensity = preprocessing.get("intensity") or {}
    if not preprocessing.get("channels"):
        return None
    return {
        "count": int(preprocessing["channels"]),
        "names": intensity.get("channel_names"),
        "source": preprocessing.get("bands") or intensity.get("channels"),
        "learned": False,
    }


def mapping_text(count: int, names: list[str] | None = None) -> str:
    """The fixed channel map in words, from its matrix: each of the model's 3 inputs from which channels."""
    names = [str(n) for n in names] if names and len(names) == count else [f"channel {c}" for c in range(count)]
    inputs = []
    for i, row in enumerate(mapping_matrix(count).tolist(), 1):
        used = [names[c] for c, weight in enumerate(row) if weight]
        inputs.append(f"{i} = {used[0] if len(used) == 1 else 'mean(' + ', '.join(used) + ')'}")
    return "model input " + ", ".join(inputs)


def check_channels(metadata: Mapping[str, Any], channels: int | None, where: str) -> None:
    """Refuse images of another channel count than the adapter's input projection was trained on.

    Args:
        metadata: the adapter's ``sam2_adapt.json``.
        channels: the channels the data gives (``None``: unknown, nothing to check).
        where: the card or file that gives them, for the message.

    Raises:
        ConfigError: naming both counts and the fix.
    """
    record = metadata.get(METADATA_KEY) or {}
    if not record or channels is None or int(record["count"]) == int(channels):
        return
    names = f" ({', '.join(map(str, record['names']))})" if record.get("names") else ""
    source = f"intensity.channels={record['source']}" if record.get("source") else "all of its channels"
    raise ConfigError(
        f"{where} gives {channels} channels, but the adapter's input projection was trained on "
        f"{record['count']}{names}, {source} of its card: select those {record['count']} channels in "
        f"the data card (intensity.channels), or train an adapter on this card"
    )
