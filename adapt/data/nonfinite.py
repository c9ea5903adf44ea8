"""Input files refused for NaN or infinities before a model is loaded (``evaluate``, ``predict``).

``adapt.guards.finite_stack`` refuses a scan's non-finite pixels when the runner reads it, which
may be hours into a folder of inputs. These checks run first, over every input, and read only
the files whose header says they can hold such values (``adapt.data.readers.can_hold_nonfinite``:
a float NIfTI or TIFF, a DICOM series with non-finite rescaling), so an ordinary folder of
integer volumes or photos costs a header read per file. They live with the readers, not in
``adapt.guards``, which knows numbers and no file format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from adapt.data.encoding import nonfinite_label
from adapt.data.readers import can_hold_nonfinite, read_raster
from adapt.guards import finite_pixels, nonfinite_policy


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
