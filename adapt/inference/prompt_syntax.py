"""The prompt syntax of ``python -m adapt.predict`` and its parser.

::

    prompt := part (";" part)*
    part   := "box" x0,y0,x1,y1 [slice=K]           one box (at most one)
            | "point" x,y [label=1|0] [slice=K]     a click: 1 = object (default), 0 = not object
            | "from_mask=" PATH [label=N]           a box per slice from a mask file (alone)

Coordinates are pixels of the input image: ``x`` is the column, ``y`` the row (for NIfTI,
``x`` = voxel index i and ``y`` = j on slice k). Boxes and points of one prompt describe one
object on one slice; a volume needs ``slice=K`` unless ``from_mask`` gives the slices.
``from_mask`` takes a mask of the same image (e.g. a coarse label); ``label=N`` keeps only
that value of it. Examples: ``box 40,30,90,70 slice=12``, ``point 64,50; point 10,10 label=0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapt.errors import ConfigError

SYNTAX = (
    'prompt="box x0,y0,x1,y1 [slice=K]" | "point x,y [label=1|0] [slice=K]" (parts joined by ";") '
    '| "from_mask=<file> [label=N]"'
)
#: CLI keys whose values may hold spaces, commas or "=" (quoted for Hydra by ``quote_argv``).
FREE_TEXT_KEYS = ("prompt", "input", "output", "adapter")
_SAFE = re.compile(r"^[\w./:@+-]*$")
_FROM_MASK = re.compile(r"^from_mask=(?P<path>.*?\S)(?:\s+label=(?P<label>-?\d+))?$")


@dataclass
class Prompt:
    """One object's prompt in image pixels."""

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    slice: int | None = None
    from_mask: Path | None = None
    mask_label: int | None = None

    def check_inside(self, width: int, height: int, path: str | Path = "the image") -> None:
        """Refuse coordinates outside a ``width x height`` image ``path`` (a typo would give an empty mask)."""
        xy = [] if self.box is None else [self.box[:2], self.box[2:]]
        xy += [] if self.points is None else list(self.points)
        for x, y in xy:
            if not (0 <= x < width and 0 <= y < height):
                raise ConfigError(
                    f"prompt point ({x:g}, {y:g}) is outside {path}, {width}x{height} "
                    "(x = column 0..W-1, y = row 0..H-1)"
                )

    def check_fits(self, path: str | Path, width: int, height: int, depth: int | None) -> None:
        """Refuse a prompt that does not fit the image ``path`` of ``width x height`` (and ``depth`` slices for a
        volume, ``None`` for a 2D image): a missing or extra ``slice=``, a slice or coordinate outside it. A volume
        of one slice (a 2D NIfTI, as CAMUS' frames) is prompted without ``slice=``: ``on_slice`` gives 0.
        ``predict``'s runner asks it of the scan it read; ``annotate`` of each image's header before a model loads.

        Raises:
            ConfigError: naming the image, the value and its range.
        """
        if depth is None:
            if self.slice not in (None, 0):
                raise ConfigError(f"{path} is a 2D image: slice={self.slice} does not apply")
        elif self.slice is None and depth != 1:  # a one-slice volume (a 2D NIfTI) needs none
            raise ConfigError(
                f"{path} is a volume of {depth} slices: add slice=K to the prompt "
                '(e.g. prompt="box 40,30,90,70 slice=12"), or use from_mask=<file>'
            )
        elif not 0 <= on_slice(self) < depth:
            raise ConfigError(f"prompt slice={self.slice} is outside {path} (slices 0..{depth - 1})")
        self.check_inside(width, height, path)


def on_slice(prompt: Prompt) -> int:
    """The slice a checked prompt addresses on a volume: its ``slice=``, else the only slice of a one-slice volume."""
    return 0 if prompt.slice is None else int(prompt.slice)


def _fail(part: str, why: str) -> ConfigError:
    return ConfigError(f"prompt part {part!r}: {why}. Syntax: {SYNTAX}")


def _numbers(part: str, tokens: list[str], count: int) -> list[float]:
    text = "".join(t for t in tokens if "=" not in t)
    try:
        values = [float(v) for v in text.split(",") if v != ""]
    except ValueError:
        raise _fail(part, f"{text!r} is not {count} comma-separated numbers") from None
    if len(values) != count or not all(np.isfinite(values)):
        raise _fail(part, f"expected {count} numbers, got {text!r}")
    return values


def _options(part: str, tokens: list[str], allowed: tuple[str, ...]) -> dict[str, int]:
    options = {}
    for token in (t for t in tokens if "=" in t):
        key, _, value = token.partition("=")
        if key not in allowed:
            raise _fail(part, f"unknown option {key!r} (allowed: {', '.join(allowed)})")
        if not value.lstrip("-").isdigit():
            raise _fail(part, f"{key}= needs an integer, got {value!r}")
        options[key] = int(value)
    return options


def parse_prompt(text: str) -> Prompt:
    """Parse a prompt string (see the module docstring).

    Raises:
        ConfigError: the text does not follow the syntax; names the part and shows the syntax.
    """
    prompt, points, labels, slices = Prompt(), [], [], set()
    parts = [p.strip() for p in str(text).split(";") if p.strip()]
    if not parts:
        raise ConfigError(f"prompt is empty. Syntax: {SYNTAX}")
    for part in parts:
        head, *tokens = part.split()
        if head.startswith("from_mask="):
            if len(parts) > 1:
                raise _fail(part, "from_mask cannot be combined with boxes or points")
            match = _FROM_MASK.match(part)
            if not match:
                raise _fail(part, "from_mask= needs a file")
            prompt.from_mask = Path(match["path"])
            prompt.mask_label = int(match["label"]) if match["label"] else None
            return prompt
        if head == "box":
            if prompt.box is not None:
                raise _fail(part, "one object takes one box")
            x0, y0, x1, y1 = _numbers(part, tokens, 4)
            if x1 < x0 or y1 < y0 or min(x0, y0) < 0:
                raise _fail(part, "needs 0 <= x0 <= x1 and 0 <= y0 <= y1")
            prompt.box = np.array([x0, y0, x1, y1], dtype=np.float32)
            options = _options(part, tokens, ("slice",))
        elif head == "point":
            points.append(_numbers(part, tokens, 2))
            options = _options(part, tokens, ("slice", "label"))
            if options.get("label", 1) not in (0, 1):
                raise _fail(part, "a point's label is 1 (object) or 0 (not the object)")
            labels.append(options.get("label", 1))
        else:
            raise _fail(part, f"{head!r} is not a prompt kind")
        if "slice" in options:
            if options["slice"] < 0:
                raise _fail(part, "slice= counts from 0")
            slices.add(options["slice"])
    if len(slices) > 1:
        raise ConfigError(f"prompt parts name different slices {sorted(slices)}; one object is prompted on one slice")
    if points:
        prompt.points, prompt.point_labels = np.array(points, np.float32), np.array(labels, np.int64)
    prompt.slice = slices.pop() if slices else None
    return prompt


def quote_argv(argv: list[str], keys: tuple[str, ...] = FREE_TEXT_KEYS) -> list[str]:
    """Quote free-text values (``prompt=box 1,2,3,4 slice=5``) of ``keys`` so Hydra reads them as strings.

    Hydra would read commas as a sweep and stop at spaces and ``=``; quoting here lets users
    write the prompt with plain shell quotes, ``prompt="box 40,30,90,70 slice=12"``.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys and not _SAFE.match(value) and value[:1] not in ("'", '"'):
            arg = f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        out.append(arg)
    return out
