"""Acquisition shifts at five severities, for robustness evaluation (``python -m adapt.evaluate shift=...``).

A shift acts on the model's input pixels: the ``[Z, C, H, W]`` stack in [0, 1] that
``adapt.inference.io.to_unit`` makes of a case (after reading, windowing and channel selection,
before the model), and gives a stack of the same shape, clipped to [0, 1]. Severity 0 returns
the input itself, unchanged; 1-5 scale the corruption as ``SCALES`` says, per modality family
(``family``: CT, MR, aerial = RGB/multispectral/SAR tiles, other = US, XR, PET, photos).
Random shifts (noise, bias field) draw from a seed, so one seed gives one corruption.

The shifts, their severity scales and what each does are the rows of
``adapt.transforms.shift_table`` (printed in ``docs/evaluation.md``); MONAI does the work where
it has the transform, and the functions here apply them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adapt.transforms.shift_table import FAMILIES, SEVERITIES, SHIFTS, TABLE

#: shift -> family -> the parameter at severities 1..5 (units in ``UNITS``).
SCALES: dict[str, dict[str, tuple[float, ...]]] = {name: spec.scales for name, spec in TABLE.items()}
UNITS = {name: spec.unit for name, spec in TABLE.items()}
HAZE_AIRLIGHT = 0.9
GHOST_LINES = 4


def family(modality: str | None) -> str:
    """The severity family of a card modality."""
    if modality == "CT":
        return "ct"
    if modality == "MR":
        return "mr"
    return "aerial" if modality in ("RGB", "multispectral", "SAR") else "other"


@dataclass(frozen=True)
class Shift:
    """One corruption of the model input.

    Attributes:
        name: one of ``SHIFTS``.
        severity: 0 (none) to 5.
        family: severity scale (``family(modality)``).
        seed: seed of the random draw (noise, bias field); the caller varies it per case.
        window: the intensity window's ``[low, high]`` in raw units, when the input was windowed
            (CT noise is given in HU and divided by its width); ``None`` otherwise.
    """

    name: str
    severity: int
    family: str = "other"
    seed: int = 0
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.name not in SHIFTS:
            raise ValueError(f"shift {self.name!r} is not one of {SHIFTS}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")

    @property
    def parameter(self) -> float | None:
        """The corruption's parameter at this severity (``None`` at severity 0)."""
        return SCALES[self.name][self.family][self.severity - 1] if self.severity else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The shifted ``[Z, C, H, W]`` stack in [0, 1] (severity 0: ``images`` itself)."""
        if not self.severity:
            return images
        out = APPLY[self.name](np.asarray(images, dtype=np.float32), float(self.parameter), self)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _planes(images: np.ndarray, transform: Any) -> np.ndarray:
    """``transform`` on each ``[C, H, W]`` plane."""
    return np.stack([np.asarray(transform(torch.from_numpy(np.ascontiguousarray(plane)))) for plane in images])


def _noise(images: np.ndarray, sigma: float, shift: Shift) -> np.ndarray:
    from monai.transforms import RandGaussianNoise

    if shift.family == "ct":
        width = (shift.window[1] - shift.window[0]) if shift.window else 400.0  # HU: an abdominal window by default
        sigma = sigma / width
    noise = RandGaussianNoise(prob=1.0, std=sigma, sample_std=False)
    noise.set_random_state(seed=shift.seed)
    return np.asarray(noise(images, randomize=True))  # one draw over the whole stack


def _blur(images: np.ndarray, sigma: float, shift: Shift) -> np.ndarray:
    from monai.transforms import GaussianSmooth

    return _planes(images, GaussianSmooth(sigma=sigma))


def _contrast(images: np.ndarray, factor: float, shift: Shift) -> np.ndarray:
    if shift.family == "aerial":  # haze: a share of the airlight replaces the scene
        return (1 - factor) * images + factor * HAZE_AIRLIGHT
    mean = images.mean(axis=(0, 2, 3), keepdims=True)
    return mean + factor * (images - mean)


def _gamma(images: np.ndarray, gamma: float, shift: Shift) -> np.ndarray:
    from monai.transforms import AdjustContrast

    return np.asarray(AdjustContrast(gamma)(images))  # within the stack's own range, as MONAI defines it


def _bias_field(images: np.ndarray, coefficient: float, shift: Shift) -> np.ndarray:
    from monai.transforms import RandBiasField

    field = RandBiasField(degree=3, coeff_range=(-coefficient, coefficient), prob=1.0)
    field.set_random_state(seed=shift.seed)
    ones = np.ones(
        (1, *images.shape[2:], images.shape[0]) if images.shape[0] > 1 else (1, *images.shape[2:]), np.float32
    )
    gain = np.asarray(field(ones, randomize=True))[0]  # the field itself: one smooth gain over the volume
    gain = np.moveaxis(gain, -1, 0) if images.shape[0] > 1 else gain[None]
    return images * gain[:, None]


def _resolution(images: np.ndarray, factor: float, shift: Shift) -> np.ndarray:
    from monai.transforms import Resize

    height, width = images.shape[2:]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    down, up = Resize(small, mode="area"), Resize((height, width), mode="bilinear", align_corners=False)
    return _planes(images, lambda plane: up(down(plane)))


def _motion(images: np.ndarray, intensity: float, shift: Shift) -> np.ndarray:
    spectrum = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))
    centre = images.shape[2] // 2
    lines = np.arange(images.shape[2])
    ghosted = (lines % GHOST_LINES == 0) & (lines != centre)  # the k-space centre keeps the image's mean
    spectrum[:, :, ghosted, :] *= 1 - intensity
    return np.real(np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))))


#: shift -> its function (``ShiftSpec.function``).
APPLY = {name: globals()[spec.function] for name, spec in TABLE.items()}


def scale_table() -> str:
    """The severity scales as a markdown table (``docs/evaluation.md`` holds a copy)."""
    lines = ["| shift | parameter | CT | MR | aerial tiles | other |", "|---|---|---|---|---|---|"]
    for name in SHIFTS:
        cells = [", ".join(f"{v:g}" for v in SCALES[name][f]) for f in FAMILIES]
        lines.append(f"| {name} | {UNITS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
