"""What sampling needs of a case, from its label file and its image's header: the early start's index.

An epoch's samples are rows (case, plane, target) chosen from how many pixels of each label id
every plane holds (``adapt.data.datamodule.index_cases``), and its length is what Lightning and
the learning-rate schedule read before the first step. Preparing a case (``adapt.data.cache``)
reads its image too: decompressing, reorienting, resampling and windowing it is most of the
~1.2 CPU s a 512 x 512 x 56 CT case costs, while its label map compresses ~150x and decodes in a
fraction of that. So a run on an empty disk cache first runs this pass over every case (the label
through the same grid transforms as preparation, the image's channels from its header), lists its
samples, and lets worker processes prepare the images in the background
(``adapt.data.background``): training starts once the cases of its first batches are written.

The counts equal those preparation stores in the case's index (the same decoding, the same
``grid_transforms``, ``label_counts`` over the same planes; ``tests/test_early_start.py``). The
image's grid and channels come from its headers (``header_grid``, ``header_channels``: a NIfTI's
header, a DICOM series' slice headers with the pixel data unread). A case whose headers do not tell
them (2D pictures; a DICOM series the full read would refuse) has no summary here and is prepared
before the start, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from adapt.data.case_transforms import grid_transforms, target_pixdim
from adapt.data.cards import DataCard
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import header_channels, header_grid, read_raster
from adapt.data.geometry import check_same_grid, raster_grid
from adapt.data.load import check_label_ids, chosen_channels
from adapt.data.planes import label_counts
from adapt.data.raster import label_plane
from adapt.data.sources import Case
from adapt.data.volumes import compact_labels
from adapt.errors import DataError


def can_summarize(card: DataCard, case: Case) -> bool:
    """Whether ``label_summary`` can index ``case`` without reading its image (a volume whose image
    header tells its channels)."""
    return card.dims == 3 and header_channels(case.image) is not None


def label_summary(card: DataCard, case: Case) -> dict[str, Any]:
    """``{"counts": {id: [pixels per plane]}, "planes": n, "channels": c}`` of a volume, as its prepared
    index will hold them, from the label file and the image's header alone.

    Raises:
        DataError: what preparation would refuse of the label or the header (the file named): a label on
            another grid than the image, unknown label ids, a channel choice the image lacks.
    """
    label = read_raster(case.label)
    grid = header_grid(case.image)
    if grid is None:
        raise ValueError(f"{case.image}: label_summary takes volumes whose header reads (can_summarize)")
    if label.affine is None:
        raise DataError(f"{label.path}: a 2D image as the label of volume {case.image}; use a NIfTI label map")
    count = header_channels(case.image)
    wanted = chosen_channels(card, int(count or 0), case.image)
    plane = label_plane(label, LabelEncoding.of_card(card))
    check_same_grid(grid, raster_grid(label, plane.shape))
    check_label_ids(plane, label.path, card)
    steps = grid_transforms(("label",), ("nearest",), target_pixdim(card.spacing, card.slice_axis))
    moved = Compose(steps)(
        {"label": MetaTensor(torch.from_numpy(plane[None]), affine=torch.as_tensor(grid.affine, dtype=torch.float64))}
    )
    volume = compact_labels(np.asarray(moved["label"])[0])
    return {
        "counts": label_counts(volume, card.slice_axis),
        "planes": int(volume.shape[card.slice_axis]),
        "channels": len(wanted) if wanted is not None else int(count or 0),
    }
