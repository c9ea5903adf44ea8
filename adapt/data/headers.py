"""Checks from the headers, before any model is loaded: grids, shear and non-finite pixels.

``predict`` and ``evaluate`` take minutes to load a model and hours to go through a folder; a
label on another grid, a sheared volume or a NaN in the last file would be found only then. These
checks read what the headers say (``adapt.data.formats``: each format's ``header_grid`` and
``can_hold_nonfinite``) and read pixels only of files that can hold NaN or infinities (a float
NIfTI or TIFF, a DICOM series with non-finite rescaling), so an ordinary folder of integer scans
or photos costs one header read per file. They live in the data layer, beside the formats they
ask, and refuse with ``adapt.guards.finite_pixels``'s message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from adapt.data.encoding import nonfinite_label
from adapt.data.formats import can_hold_nonfinite, header_grid, read_raster
from adapt.data.geometry import check_orthogonal, check_same_grid
from adapt.guards import finite_pixels, nonfinite_policy


def check_grids(pairs: Sequence[tuple[str | Path, str | Path]], role: str = "label", fix: str | None = None) -> None:
    """``check_same_grid`` for (image, label) file pairs from their headers, before any model is loaded;
    pairs of a volume and a 2D file, and files whose headers do not tell a grid (a DICOM series the
    full read would refuse, which names the problem), are left to the full read.

    Raises:
        DataError: the first pair whose files lie on different grids.
    """
    for image_path, label_path in pairs:
        image, label = header_grid(image_path), header_grid(label_path)
        if image is None or label is None or (image.affine is None) != (label.affine is None):
            continue
        check_same_grid(image, label, role, fix)


def check_headers(paths: Sequence[str | Path]) -> None:
    """``check_orthogonal`` for volumes from their headers (a NIfTI's, a DICOM series' slices'), before any
    model is loaded.

    Raises:
        DataError: the first sheared volume.
    """
    for path in paths:
        grid = header_grid(path)
        if grid is not None:
            check_orthogonal(grid.affine, path)


def _readable_for_nonfinite(paths: Iterable[str | Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """``(path, pixels)`` of each file whose header says it can hold NaN/Inf (``can_hold_nonfinite``:
    a float NIfTI or TIFF, a DICOM series with non-finite rescaling); other files are not read."""
    for path in map(Path, paths):
        if can_hold_nonfinite(path):
            yield path, read_raster(path, as_image=True).data_pixels()  # nodata (a GeoTIFF's) is no fault


def check_inputs_finite(paths: Iterable[str | Path], preprocessing: Mapping[str, Any] | None) -> None:
    """Refuse, before any model is loaded, an input holding NaN/Inf that ``finite_stack`` would refuse
    after hours of loading and predicting the inputs before it.

    Only files that can hold a non-finite value are read (``_readable_for_nonfinite``; PNG/JPEG and
    integer files never can), so an ordinary folder of integer CT volumes or photos costs a header
    read per file. Nothing is checked when the adapter's card replaces non-finite values
    (``intensity.nonfinite: zero|min``): they are replaced when the file is read for the model.

    Raises:
        DataError: the first such file, as ``finite_pixels`` names it.
    """
    if nonfinite_policy(preprocessing) != "error":
        return
    for path, pixels in _readable_for_nonfinite(paths):
        finite_pixels(pixels, path)


def check_labels_finite(paths: Iterable[str | Path]) -> None:
    """Refuse, before any model is loaded, a label map holding NaN/Inf (``evaluate``'s ground truth,
    ``predict``'s ``from_mask`` files): labels are ids, never replaced. Read as
    ``check_inputs_finite`` reads images: only files that can hold such values.

    Raises:
        DataError: the first such file.
    """
    for path, labels in _readable_for_nonfinite(paths):
        if not np.isfinite(labels).all():
            raise nonfinite_label(path)
