"""The acquisition shifts of the robustness evaluation, one row each, importable without numpy or torch.

``python -m adapt.evaluate shift=...`` is checked at the door against these names, before the
heavy libraries load; ``adapt.transforms.shifts`` implements each row's function and reads its
severity scales here, and ``docs/evaluation.md`` prints the rows (``what_table``,
``adapt.transforms.shifts.scale_table``; a test compares). A new shift is its function plus one
row (``docs/adding_a_shift.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = (0, 1, 2, 3, 4, 5)
#: Severity families (``adapt.transforms.shifts.family``): CT, MR, aerial tiles, everything else.
FAMILIES = ("ct", "mr", "aerial", "other")


def _same(*values: float) -> dict[str, tuple[float, ...]]:
    return {f: tuple(values) for f in FAMILIES}


@dataclass(frozen=True)
class ShiftSpec:
    """One shift.

    Attributes:
        name: the value of ``shift=``.
        function: the name of its function in ``adapt.transforms.shifts``:
            ``(images [Z, C, H, W] in [0, 1], parameter, shift) -> images`` (clipped by the caller).
        unit: what the parameter measures.
        scales: family -> the parameter at severities 1..5.
        what: the corruption in words (the documentation's table).
        implementation: the transform that does it (MONAI's, or ours and why).
    """

    name: str
    function: str
    unit: str
    scales: dict[str, tuple[float, ...]]
    what: str
    implementation: str


TABLE: dict[str, ShiftSpec] = {
    spec.name: spec
    for spec in (
        ShiftSpec(
            "noise",
            "_noise",
            "sigma (CT: HU; else the [0, 1] input range)",
            {
                "ct": (10, 25, 50, 75, 100),
                "mr": (0.02, 0.04, 0.06, 0.08, 0.10),
                "aerial": (0.02, 0.04, 0.06, 0.08, 0.10),
                "other": (0.02, 0.04, 0.06, 0.08, 0.10),
            },
            "additive Gaussian noise",
            "MONAI `RandGaussianNoise` (fixed std)",
        ),
        ShiftSpec(
            "blur",
            "_blur",
            "sigma, pixels",
            _same(0.5, 1.0, 1.5, 2.0, 3.0),
            "in-plane Gaussian blur",
            "MONAI `GaussianSmooth`, per slice",
        ),
        ShiftSpec(
            "contrast",
            "_contrast",
            "contrast kept (aerial: haze share a)",
            {
                "ct": (0.85, 0.7, 0.55, 0.4, 0.25),
                "mr": (0.85, 0.7, 0.55, 0.4, 0.25),
                "aerial": (0.1, 0.2, 0.3, 0.4, 0.5),
                "other": (0.85, 0.7, 0.55, 0.4, 0.25),
            },
            "intensities pulled towards the image mean by a factor; aerial tiles: haze, `(1 - a) x + a * 0.9` "
            "(airlight)",
            "ours (no MONAI transform scales contrast about the mean)",
        ),
        ShiftSpec(
            "gamma",
            "_gamma",
            "gamma",
            _same(1.25, 1.5, 2.0, 2.5, 3.0),
            "`x ** gamma` within the stack's range (brightness; > 1 darkens)",
            "MONAI `AdjustContrast`",
        ),
        ShiftSpec(
            "bias_field",
            "_bias_field",
            "max coefficient",
            {
                "ct": (0.1, 0.2, 0.3, 0.4, 0.5),
                "mr": (0.2, 0.4, 0.6, 0.8, 1.0),
                "aerial": (0.1, 0.2, 0.3, 0.4, 0.5),
                "other": (0.1, 0.2, 0.3, 0.4, 0.5),
            },
            "a smooth multiplicative field of degree 3, over the whole volume (MR coil inhomogeneity; an "
            "illumination gradient elsewhere)",
            "MONAI `RandBiasField`",
        ),
        ShiftSpec(
            "resolution",
            "_resolution",
            "pixel size factor",
            _same(1.5, 2.0, 3.0, 4.0, 6.0),
            "pixel size × f in-plane: down-sampled (area), up-sampled back (bilinear)",
            "MONAI `Resize` twice",
        ),
        ShiftSpec(
            "motion",
            "_motion",
            "ghost intensity",
            _same(0.2, 0.35, 0.5, 0.65, 0.8),
            "k-space ghosting along the rows: every 4th phase-encoding line attenuated (rigid motion in MR)",
            "ours, FFT (MONAI has no motion transform; as TorchIO's `RandomGhosting`)",
        ),
    )
}
#: ``shift=`` values, in table order (the order also keys each random shift's seed: append new ones).
SHIFTS = tuple(TABLE)


def what_table() -> str:
    """The shifts in words as a markdown table (``docs/evaluation.md`` holds a copy)."""
    lines = ["| shift | what | implementation |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.what} | {s.implementation} |" for s in TABLE.values()]
    return "\n".join(lines)
