"""One case, preprocessed as the card says: ``load_volume(card, case) -> Volume``.

A ``Volume`` is what every consumer of a case works on (slice datasets, clips of
consecutive slices, evaluation): pixels in [0, 1] on the canonical RAS grid (resampled to
the card's spacing when it sets one), the label map on the same grid, that grid's affine,
and the stored grid of the source file so a predicted mask can be put back where the file
says (``Volume.to_source``). 2D cards give a ``Volume`` too: ``[C, H, W]`` pixels at their
native size (the one resize to the model's side comes per sample), without affines.

``Case``, ``cache_root``, ``data_root`` and ``list_cases`` live in ``adapt.data.sources``;
they are re-exported here because callers import them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from adapt.data.cards import DataCard
from adapt.data.case_transforms import case_transforms
from adapt.data.sources import Case, cache_root, data_root, list_cases
from adapt.errors import AdaptError
from adapt.transforms.intensity import scale_intensity

__all__ = ["Case", "Volume", "cache_root", "data_root", "list_cases", "load_volume", "scale_intensity"]


@dataclass
class Volume:
    """A preprocessed case.

    Attributes:
        case: the case it came from.
        image: ``float32`` in [0, 1]: ``[C, X, Y, Z]`` (3D, RAS) or ``[C, H, W]`` (2D).
        label: integer label ids on the image's grid: ``[X, Y, Z]`` or ``[H, W]``.
        affine: voxel index -> RAS mm of ``image``'s grid (``None`` for 2D).
        source_affine: the same for the grid stored in the file (``None`` for 2D).
        source_shape: spatial shape of the stored grid.
    """

    case: Case
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray | None = None
    source_affine: np.ndarray | None = None
    source_shape: tuple[int, ...] | None = None

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Voxel size in mm along each axis of ``image``'s grid (3D only)."""
        if self.affine is None:
            return None
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def to_source(self, mask: np.ndarray) -> np.ndarray:
        """A mask (or label map) on this grid ``[X, Y, Z]`` resampled onto the file's stored grid.

        Nearest neighbour through the two affines: a voxel keeps its world position, so a
        mask written with ``source_affine`` overlays the original file. Exact for pure
        reorientation; for resampled volumes each stored voxel takes the nearest grid voxel.
        """
        if self.affine is None or self.source_affine is None or self.source_shape is None:
            raise ValueError("to_source needs a 3D volume (2D cases have no stored grid to map to)")
        mask = np.asarray(mask)
        if mask.shape != self.label.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the volume grid {self.label.shape}")
        return resample_nearest(mask, self.affine, self.source_affine, self.source_shape)


def resample_nearest(
    volume: np.ndarray,
    affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, ...],
    copy: bool = True,
) -> np.ndarray:
    """``volume`` (voxel-to-world ``affine``) onto another grid by the nearest voxel of the same world point.

    A pure reorientation (every target voxel lands on a voxel centre) is an exact permutation
    and flip of the array, done without interpolation; with ``copy=False`` it comes back as a view
    of ``volume`` (any strides, negative ones for flips), which saves a transposing copy of the
    volume (~0.1 s for a CT's label map) where the caller only reads it.
    """
    axes = reorientation(volume.shape, affine, target_affine, target_shape)
    if axes is not None:
        source_axis, flips = axes
        out = np.transpose(volume, source_axis)
        out = np.flip(out, flips) if flips else out
        return np.ascontiguousarray(out) if copy else out
    grid_from_target = np.linalg.inv(affine) @ target_affine
    matrix, offset = grid_from_target[:3, :3], grid_from_target[:3, 3]
    out = ndimage.affine_transform(
        volume, matrix, offset=offset, output_shape=tuple(target_shape), order=0, mode="grid-constant", cval=0
    )  # grid-constant: a voxel centre a rounding error outside stays inside
    return out.astype(volume.dtype)


def reorientation(
    shape: tuple[int, ...], affine: np.ndarray, target_affine: np.ndarray, target_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """How a grid of ``shape`` lands on the target grid when every target voxel sits on one of its voxel
    centres: the source axis each target axis reads and the target axes that run backwards (a transpose and
    a flip); ``None`` when the target grid needs resampling."""
    grid_from_target = np.linalg.inv(affine) @ target_affine
    matrix, offset = grid_from_target[:3, :3], grid_from_target[:3, 3]
    rounded = np.rint(matrix)
    if not (
        np.allclose(matrix, rounded, atol=1e-6)
        and np.allclose(offset, np.rint(offset), atol=1e-4)
        and (np.abs(rounded).sum(axis=0) == 1).all()
        and (np.abs(rounded).sum(axis=1) == 1).all()
    ):
        return None
    source_axis = tuple(int(a) for a in np.abs(rounded).argmax(axis=0))  # target axis t reads source axis [t]
    flips = tuple(t for t in range(3) if rounded[source_axis[t], t] < 0)
    expected = [shape[source_axis[t]] - 1 if t in flips else 0 for t in range(3)]
    if tuple(shape[a] for a in source_axis) != tuple(target_shape) or not np.allclose(
        offset[list(source_axis)], expected, atol=1e-4
    ):
        return None
    return source_axis, flips


def compact_labels(label: np.ndarray) -> np.ndarray:
    """Label ids in the smallest integer type that holds them (uint8 for most datasets, uint16 with
    nodata pixels: ``adapt.transforms.slices.NODATA_LABEL``).

    Float label maps are rounded first; integer ones are cast once, without an int64 copy of
    the volume in between (on a 512 x 512 x 64 CT that copy cost 0.1 s and 134 MB per case).
    """
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        label = np.rint(label)
    if label.size == 0 or (label.min() >= 0 and label.max() < 256):
        return label.astype(np.uint8, copy=False)
    return label.astype(np.uint16 if label.min() >= 0 and label.max() < 65536 else np.int32, copy=False)


def load_volume(card: DataCard, case: Case) -> Volume:
    """Read, validate and preprocess one case (see ``adapt.data.case_transforms``).

    Args:
        card: the data card (channels, intensity, spacing, dims).
        case: the case's files.

    Raises:
        DataError: missing/unreadable file, image/label mismatch, unknown label ids, too few
            channels or bands — the message names the file.
    """
    try:
        item = case_transforms(card)({"case": case.id, "image": case.image, "label": case.label})
    except RuntimeError as err:  # MONAI's Compose wraps each step's exception; ours name the file
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, AdaptError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    image = np.ascontiguousarray(np.asarray(item["image"], dtype=np.float32))
    label = compact_labels(np.asarray(item["label"])[0])
    if card.dims == 2:
        return Volume(case, image, label)
    return Volume(
        case,
        image,
        label,
        affine=np.asarray(item["affine"], dtype=np.float64),
        source_affine=np.asarray(item["source_affine"], dtype=np.float64),
        source_shape=tuple(item["source_shape"]),
    )
