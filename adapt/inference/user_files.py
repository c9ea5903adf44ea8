"""A user's file read for an adapter, and the values its mask is written with.

``python -m adapt.predict`` and the app (``adapt.app.session``) read a file and write its mask
the same way, so a mask saved in the app equals ``predict``'s for the same prompt: the file is
read on the grid the adapter was trained on (its slice axis and spacing, ``read_scan``), with
non-finite pixels refused or replaced as its card says (``adapt.guards.finite_stack``) and a file of
other channels than the adapter's refused (``adapt.inference.io.check_channel_count``: ``predict`` asks it
of the headers before the model loads, ``to_unit`` of the pixels); each
mask index is written as a label value of the adapter's label map -- the object's value for a
prompted object, every class's value for a semantic adapter -- in the encoding of the card's
label files (``mask_values``: a 0/255 card gets 0/255 masks) unless the label ids are asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapt.adapters.loading import LoadedAdapter
from adapt.data.encoding import LabelEncoding, label_names
from adapt.errors import ConfigError
from adapt.guards import finite_stack
from adapt.data.formats import header_grid
from adapt.inference.io import Scan, VolumeView, read_scan
from adapt.inference.prompt_syntax import Prompt


def read_input(path: Path, loaded: LoadedAdapter, label: bool = False) -> Scan:
    """A file on the grid ``loaded`` was trained on; ``label``: a mask (no intensity checks)."""
    scan = read_scan(path, slice_axis_of(loaded.preprocessing), loaded.preprocessing.get("spacing"), label=label)
    if not label:
        scan.pixels = finite_stack(scan.pixels, path, loaded.preprocessing)
    return scan


def slice_axis_of(preprocessing: dict, default: int = 2) -> int:
    """The axis an adapter's volumes are cut along; ``default`` where its record has none (null in a 2D adapter's
    record, where any axis reads a picture)."""
    axis = preprocessing.get("slice_axis")
    return default if axis is None else int(axis)


def check_prompt_fits(prompt: Prompt, image: Path, slice_axis: int) -> None:
    """``Prompt.check_fits`` on what the image's header says (a volume's extent as the runner addresses it:
    ``VolumeView.extent``, slices along ``slice_axis``), so a slice or a box outside it is named before minutes
    of model loading (``predict`` and ``annotate`` ask it of each input). A ``from_mask`` prompt, or a file
    whose header tells no grid, is left to the runner.

    Raises:
        ConfigError: the prompt does not fit the image.
    """
    grid = None if prompt.from_mask is not None else header_grid(image)
    if grid is None:
        return
    if grid.affine is None or len(grid.shape) < 3:
        height, width = grid.shape[:2]
        prompt.check_fits(image, width, height, None)
    else:
        shape = tuple(grid.shape[:3])
        prompt.check_fits(image, *VolumeView(grid.affine, shape, grid.affine, shape, slice_axis).extent())


def foreground_value(loaded: LoadedAdapter, label: int | str | None) -> int:
    """The value written for the object: ``label`` (a name or a number), else the label of the
    adapter's (first) target, else its only foreground label, else 1.

    Raises:
        ConfigError: ``label`` is no label (name or id) of the adapter's label map: a mask of a value the
            card does not list could not be read back as a label.
    """
    names = label_names(loaded.label_map)
    if label is not None:
        if str(label).lstrip("-").isdigit() and (not names or int(label) in names.values()):
            return int(label)
        if str(label) not in names:
            raise ConfigError(
                f"label={label!r} is not in the adapter's label map {names}; give one of its names or ids"
            )
        return names[str(label)]
    targets = [t for t in loaded.metadata.get("targets") or [] if t in names]
    if targets:
        return names[targets[0]]
    foreground = [v for v in names.values() if v != 0]
    return foreground[0] if len(foreground) == 1 else 1


def class_values(loaded: LoadedAdapter) -> np.ndarray:
    """Label values of a semantic adapter's class indices (0 = background, then its classes)."""
    names = label_names(loaded.label_map)
    classes = loaded.metadata.get("classes") or []
    return np.array([0] + [names.get(c, i) for i, c in enumerate(classes, start=1)], dtype=np.uint16)


def mask_values(
    loaded: LoadedAdapter, prompt: Prompt | None, label: int | str | None = None, encoding: str = "card"
) -> np.ndarray:
    """The value written for each mask index: class values without a prompt, else ``[0, object value]``,
    stored as the adapter's card stores labels (its ``mask_values``) unless ``encoding="ids"``."""
    ids = class_values(loaded) if prompt is None else np.array([0, foreground_value(loaded, label)], np.int64)
    return LabelEncoding.of_adapter(loaded.metadata, encoding).encode(ids)
