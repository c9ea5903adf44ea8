"""Intensity to [0, 1] as the data card says: a fixed window, or percentiles per channel.

* ``window: [low, high]`` — fixed raw units (a CT window in HU, ``[0, 255]`` for 8-bit
  photographs): the same mapping for every case, so it is also what inference repeats.
* ``percentiles: [lo, hi]`` — per case and per channel (MR, multispectral bands): each
  channel is stretched between its own percentiles, so a bright NIR band does not squash a
  dark blue one.
* neither — 8-bit files are divided by 255; anything else gets ``[0.5, 99.5]`` percentiles.

Pixels without data (a GeoTIFF's nodata value, ``valid``) take no part in the percentiles and
become 0, whatever their stored value.

Channel/band selection (``intensity.channels``) happens when the file is read
(``adapt.data.load.LoadCased``), before this step.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

DEFAULT_PERCENTILES = (0.5, 99.5)


def scale_intensity(volume: np.ndarray, intensity: Mapping[str, Any], valid: np.ndarray | None = None) -> np.ndarray:
    """Map raw intensities to [0, 1] with one ``window`` or ``percentiles`` over the whole array.

    Args:
        volume: any array of raw values.
        intensity: ``{"window": [low, high]}`` or ``{"percentiles": [lo, hi]}`` (default 0.5-99.5).
        valid: pixels that hold data (broadcast against ``volume``): the percentiles are theirs
            alone, and the others become 0 (nodata is never stretched into the image).

    Returns:
        ``float32`` array of the same shape, clipped to [0, 1].
    """
    if intensity.get("window") is not None:
        low, high = (float(v) for v in intensity["window"])
    else:
        volume = np.asarray(volume, dtype=np.float32)
        sample = volume if valid is None else volume[np.broadcast_to(valid, volume.shape)]
        low, high = (
            np.percentile(sample, intensity.get("percentiles") or DEFAULT_PERCENTILES) if sample.size else (0, 1)
        )
    # One new array, then in place (a CT volume is ~60 MB per pass): an int16 CT goes to float32 in the
    # subtraction itself, the values of ``float32(volume) - low``; float64 with percentiles.
    out = np.subtract(volume, low, dtype=np.result_type(np.float32, low))
    out /= max(high - low, 1e-6)
    out = np.clip(out, 0, 1, out=out).astype(np.float32, copy=False)
    return out if valid is None else np.where(valid, out, np.float32(0))


def scale_channels(
    image: np.ndarray, intensity: Mapping[str, Any], source_dtype: str = "float32", valid: np.ndarray | None = None
) -> np.ndarray:
    """Channel-first pixels ``[C, ...]`` to [0, 1] as the card's ``intensity`` says (see module doc).

    Args:
        image: raw pixels, channel first.
        intensity: the card's ``intensity`` section.
        source_dtype: dtype of the file the pixels came from (``uint8`` selects /255 by default).
        valid: ``[...]`` pixels that hold data (a GeoTIFF's nodata is not): see ``scale_intensity``.
    """
    if intensity.get("window") is not None:
        return scale_intensity(image, intensity, valid)
    if intensity.get("percentiles") is None and source_dtype == "uint8":
        return scale_intensity(image, {"window": [0, 255]}, valid)
    return np.stack([scale_intensity(channel, intensity, valid) for channel in np.asarray(image)])


class ScaleIntensityCardd(MapTransform):
    """MONAI dictionary transform applying ``scale_channels`` to ``image``.

    The output is a plain float32 tensor; a volume's voxel-to-RAS affine (from its
    ``MetaTensor``) moves to the ``affine`` key, which is all later steps need of its metadata.

    Args:
        intensity: the card's ``intensity`` section.
    """

    def __init__(self, intensity: Mapping[str, Any]) -> None:
        super().__init__(keys=("image",))
        self.intensity = dict(intensity)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        image = item["image"]
        if getattr(image, "affine", None) is not None:
            item["affine"] = np.asarray(image.affine, dtype=np.float64)
        pixels = image.as_tensor().numpy() if hasattr(image, "as_tensor") else np.asarray(image)
        item["image"] = torch.from_numpy(
            scale_channels(pixels, self.intensity, str(item.get("source_dtype", "")), item.pop("valid", None))
        )
        return item
