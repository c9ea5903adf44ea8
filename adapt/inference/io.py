"""Read images for evaluation and prediction the way training reads them; write masks back.

Files are read by the data layer's format registry (``adapt.data.formats``: the same pixels,
DICOM ordering and affines as in training); ``read_scan`` arranges them as a ``Scan``: pixels as
a stack of 2D images ``[Z, C, H, W]`` (``Z = 1`` for PNG/JPEG/GeoTIFF) in raw units, plus what
its format's writer needs to put a mask into the same geometry -- the NIfTI header and affine,
the GeoTIFF georeferencing tags, the DICOM headers of every slice. Volumes (NIfTI, DICOM series)
go through the training code's grid transforms (RAS, the adapter's ``spacing``) and are cut
as training cuts them (along the card's ``slice_axis``, each plane transposed); a
``VolumeView`` maps between that stack and the voxel grid stored on disk, in which users give
prompts and in which masks are written. ``to_unit`` then scales intensities with the training
code's function. A test feeds one case through both routes and compares the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from adapt.data.case_transforms import grid_transforms, target_pixdim
from adapt.data.formats import FORMATS, check_colours, for_name, for_path, read_raster, write_labels
from adapt.data.formats.nifti import empty_header as nifti_header
from adapt.data.geometry import Grid, geotiff_crs, geotiff_transform
from adapt.data.volumes import reorientation, resample_nearest
from adapt.errors import DataError
from adapt.transforms.intensity import scale_channels

__all__ = [
    "Scan",
    "VolumeView",
    "drop_nodata",
    "read_scan",
    "scan_grid",
    "to_training_grid",
    "to_unit",
    "valid_like",
    "write_mask",
]


@dataclass
class Scan:
    """An input image and its geometry.

    Attributes:
        pixels: ``[Z, C, H, W]`` in the file's own units (HU for CT): float32, or a volume's own type where
            nothing was resampled and torch can flip it (``KEPT_TYPES``: an int16 CT); a label file's integer
            ids in their own type.
        kind: its format's name in ``adapt.data.formats.FORMATS`` (``nifti``, ``dicom``, ``pillow``, ``tiff``).
        geometry: format-specific header kept for the writer.
        path: where it was read from.
        view: for volumes, how the stack relates to the stored voxel grid.
        dtype: the file's pixel type (``uint8`` files map to [0, 1] by /255, as in training).
        valid: ``[Z, H, W]`` pixels that hold data, for a GeoTIFF with nodata pixels (``None``: all do);
            the others take no part in the intensity scaling, are never predicted and never scored.
        stored: a label volume's array as its file stores it (channel-first ``[C, X, Y, Z]``, the file's
            type and layout), kept so that scoring reads the file's own voxels without reading it twice
            (``None`` for images and 2D files).
    """

    pixels: np.ndarray
    kind: str
    geometry: Any
    path: Path
    view: VolumeView | None = None
    dtype: str = "float32"
    valid: np.ndarray | None = None
    stored: np.ndarray | None = None

    @property
    def is_volume(self) -> bool:
        return self.view is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, H, W)``: the shape a mask for this scan has."""
        z, _, h, w = self.pixels.shape
        return z, h, w


class VolumeView:
    """The stored voxel grid ``(i, j, k)`` <-> the model's stack of planes ``[Z, H, W]``.

    The stack is the training grid (``adapt.data.case_transforms.grid_transforms``: RAS, resampled
    to the adapter's spacing when it has one) cut along ``slice_axis`` into transposed planes, as
    ``adapt.transforms.slices.take_plane`` cuts training slices. Masks go back to the stored grid
    by the nearest grid voxel of each stored voxel's world position (exact for reorientation).

    Args:
        source_affine, source_shape: the file's stored grid.
        grid_affine, grid_shape: the training grid.
        slice_axis: the grid axis slices are taken along (the data card's).
    """

    def __init__(
        self,
        source_affine: np.ndarray,
        source_shape: tuple[int, ...],
        grid_affine: np.ndarray,
        grid_shape: tuple[int, ...],
        slice_axis: int = 2,
    ):
        from nibabel.orientations import io_orientation

        self.source_affine, self.source_shape = np.asarray(source_affine, np.float64), tuple(source_shape[:3])
        self.grid_affine, self.grid_shape = np.asarray(grid_affine, np.float64), tuple(grid_shape[:3])
        self.slice_axis = slice_axis
        ornt = io_orientation(self.source_affine)  # stored axis a -> canonical axis ornt[a, 0]
        # The stored axis closest to the slice axis, and the two in-plane stored axes (x, y).
        self.stored_slice_axis = int(np.flatnonzero(ornt[:, 0] == slice_axis)[0])
        self.stored_plane_axes = tuple(a for a in range(3) if a != self.stored_slice_axis)

    def to_stack(self, grid: np.ndarray) -> np.ndarray:
        """A volume on the training grid ``[X, Y, Z]`` as the stack of 2D planes the model sees."""
        # Plane z is ``np.take(grid, z, axis).T``; one strided copy of the whole volume (``np.take`` made the
        # volume C-contiguous first, on every call: a full copy per plane for a volume in a file's layout).
        return np.ascontiguousarray(np.moveaxis(grid, self.slice_axis, 0).transpose(0, 2, 1))

    def to_volume(self, stack: np.ndarray) -> np.ndarray:
        """Planes ``[Z, H, W]`` back onto the stored voxel grid (nearest grid voxel).

        A pure reorientation comes back as a view of ``stack`` (no copy; any strides): for a file
        stored as RAS, the stack's C order is the file's own Fortran order, so the view and the file's
        label map are compared, counted and written walking memory in step.
        """
        grid = np.moveaxis(np.swapaxes(stack, 1, 2), 0, self.slice_axis)  # a view: plane z is ``stack[z].T``
        return resample_nearest(grid, self.grid_affine, self.source_affine, self.source_shape, copy=False)

    def stack_axis(self) -> tuple[int, bool] | None:
        """The stored axis the stack's planes run along, and whether plane ``z`` is stored index ``n - 1 - z``
        (the stack runs backwards); ``None`` when the stack is resampled, its planes then not the stored
        grid's."""
        axes = reorientation(self.grid_shape, self.grid_affine, self.source_affine, self.source_shape)
        if axes is None:
            return None
        source_axis, flips = axes
        stored_axis = source_axis.index(self.slice_axis)
        return stored_axis, stored_axis in flips

    def extent(self) -> tuple[int, int, int]:
        """``(width, height, slices)`` of the stored grid as prompts address it (x, y, slice=)."""
        return tuple(self.source_shape[a] for a in (*self.stored_plane_axes, self.stored_slice_axis))  # type: ignore[return-value]

    def to_view(self, x: float, y: float, k: int) -> tuple[float, float, int]:
        """A stored-grid prompt coordinate ``(x, y)`` on slice ``k`` to ``(x, y, z)`` in the stack."""
        stored = np.ones(4)
        stored[[*self.stored_plane_axes, self.stored_slice_axis]] = (x, y, k)
        grid = np.round((np.linalg.inv(self.grid_affine) @ self.source_affine @ stored)[:3], 6)  # no float noise
        plane = [a for a in range(3) if a != self.slice_axis]
        return float(grid[plane[0]]), float(grid[plane[1]]), int(round(grid[self.slice_axis]))


def scan_grid(scan: Scan) -> Grid:
    """The stored grid of a scan (``adapt.data.geometry``): a volume's shape and affine, a GeoTIFF's
    CRS and transform, an image's size."""
    if scan.view is not None:
        return Grid(scan.path, scan.view.source_shape, scan.view.source_affine)
    tags = scan.geometry if scan.kind == "tiff" else None
    return Grid(scan.path, scan.shape[1:], None, geotiff_crs(tags), geotiff_transform(tags))


def read_scan(
    path: str | Path, slice_axis: int = 2, spacing: Sequence[float | None] | None = None, label: bool = False
) -> Scan:
    """Read any supported input into a ``Scan`` (pixels ``[Z, C, H, W]`` in the file's units; a label
    file's integer ids as stored).

    Volumes are put on the training grid by the training code's own transforms
    (``grid_transforms``: RAS, then the adapter's ``spacing`` -- bilinear for images, nearest
    for label maps) and cut into planes along ``slice_axis``.

    Raises:
        DataError: missing, unsupported or unreadable file (names it).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    kind = for_path(path, writable=True).name
    # A label file is read as training reads it (``adapt.data.load.LoadCased``): a palette PNG keeps its
    # indices (as an image it would become RGB), and nodata is the image's to mark, not the label's.
    raster = read_raster(path, as_image=not label)
    pixels, dtype = raster.array if label else raster.data_pixels(), str(raster.array.dtype)
    if not FORMATS[kind].volume:
        # Label ids stay integers (a CT's label map as float32 was 4x its bytes, and rounded back to ids).
        pixels = pixels if label and np.issubdtype(pixels.dtype, np.integer) else pixels.astype(np.float32)
        valid = None if label else raster.valid()
        return Scan(
            pixels[None],
            kind,
            raster.header,
            path,
            dtype=dtype,
            valid=None if valid is None or valid.all() else valid[None],
        )
    stack, view = to_training_grid(pixels, raster.affine, slice_axis, spacing, label)
    return Scan(stack, kind, raster.header, path, view, dtype=dtype, stored=raster.array if label else None)


#: Image types kept as stored when nothing is resampled: reorienting and stacking move values (exact in any
#: type), and an int16 CT is half its float32 bytes (``to_unit`` makes the float32 model input in one pass).
#: Others (uint16, big-endian) are not tensors torch can flip, and resampling takes float32.
KEPT_TYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.float32))


def to_training_grid(
    pixels: np.ndarray,
    affine: np.ndarray,
    slice_axis: int = 2,
    spacing: Sequence[float | None] | None = None,
    label: bool = False,
) -> tuple[np.ndarray, VolumeView]:
    """A stored volume ``[C, X, Y, Z]`` as the stack ``[Z', C, H, W]`` training cuts, and the view back.

    The volume goes through training's own ``grid_transforms`` (RAS, then ``spacing``: bilinear
    for images, nearest for label maps).
    """
    pixdim = target_pixdim(spacing, slice_axis)
    if label:  # label ids stay integers (a CT's label map as float32 was 4x its bytes, and rounded back to ids)
        pixels = pixels if np.issubdtype(pixels.dtype, np.integer) else pixels.astype(np.float32)
    elif pixdim is not None or np.dtype(pixels.dtype) not in KEPT_TYPES:
        pixels = pixels.astype(np.float32)
    steps = grid_transforms(("image",), ("nearest" if label else "bilinear",), pixdim)
    item = {
        "image": MetaTensor(torch.from_numpy(np.asarray(pixels)), affine=torch.as_tensor(affine, dtype=torch.float64))
    }
    grid = Compose(steps)(item)["image"]
    view = VolumeView(affine, pixels.shape[1:], np.asarray(grid.affine, np.float64), grid.shape[1:], slice_axis)
    return np.stack([view.to_stack(channel) for channel in grid.as_tensor().numpy()], axis=1), view


def to_unit(scan: Scan, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Pixels ``[Z, C, H, W]`` in [0, 1] as the adapter saw them in training.

    The training path's own function does the mapping (``adapt.transforms.intensity.
    scale_channels``) with the recorded ``intensity`` settings -- a ``window`` in raw units
    (a CT window in HU), or ``percentiles`` per channel over the whole scan -- after keeping
    the recorded ``bands``. Without settings: /255 for 8-bit files, else 0.5-99.5 percentiles
    per channel, as in training.
    """
    spec = {**preprocessing, **(preprocessing.get("intensity") or {})}
    check_channel_count(scan.path, scan.pixels.shape[1], preprocessing)
    bands = preprocessing.get("bands")
    pixels = scan.pixels if bands is None else scan.pixels[:, list(bands)]
    intensity = {k: spec[k] for k in ("window", "percentiles") if spec.get(k) is not None}
    channels_first = np.moveaxis(pixels, 1, 0)  # each channel scaled over the whole scan
    return np.ascontiguousarray(np.moveaxis(scale_channels(channels_first, intensity, scan.dtype, scan.valid), 0, 1))


def check_channel_count(path: Path, found: int, preprocessing: Mapping[str, Any]) -> None:
    """Refuse a file of ``found`` channels that the adapter (its ``preprocessing``) cannot take: fewer than its
    ``bands`` need, or, after them, another count than its training images had (``channels``). The fixed
    channel map takes any count, so a 4D cine (its frames read as channels) or a 4-band tile would reach a
    grey-trained model as a blend it never saw. Grey and RGB pass either way (a grey picture is what an RGB
    one of equal channels is; an RGB input to a grey adapter is a change of domain, not of layout).
    ``to_unit`` checks the pixels read; ``predict`` the headers' count, before the model loads.

    Raises:
        DataError: naming the file, both counts, the adapter's field and the fix.
    """
    bands, trained = preprocessing.get("bands"), preprocessing.get("channels")
    if bands and max(bands) >= found:
        raise DataError(
            f"{path}: {found} channel(s), but the adapter takes bands {list(bands)} of each file (its "
            "preprocessing.bands); give a file of those bands, or use an adapter trained on such files"
        )
    channels = len(bands) if bands else found
    if not trained or channels == int(trained) or {channels, int(trained)} == {1, 3}:
        return
    raise DataError(
        f"{path}: {channels} channel(s), but the adapter was trained on images of {trained} (its "
        "preprocessing.channels); give a file of that many channels (a volume's 4th axis -- time frames, "
        "echoes, sequences -- is read as channels: pass one 3D volume), or use an adapter trained on such files"
    )


def valid_like(scan: Scan, masks: np.ndarray) -> np.ndarray | None:
    """``scan.valid`` laid out as ``masks`` (the ``[Z, H, W]`` stack or a 2D scan's ``[H, W]`` plane);
    ``None`` when every pixel holds data."""
    if scan.valid is None or scan.valid.size != np.size(masks):
        return None
    return scan.valid.reshape(np.shape(masks))


def drop_nodata(masks: np.ndarray, scan: Scan) -> np.ndarray:
    """``masks`` (laid out as ``valid_like`` takes) with 0 wherever ``scan`` holds no data (a GeoTIFF's nodata)."""
    valid = valid_like(scan, masks)
    return masks if valid is None else np.where(valid, masks, 0).astype(np.asarray(masks).dtype)


def write_mask(mask: np.ndarray, scan: Scan, path: str | Path) -> Path:
    """Write ``mask`` ``[Z, H, W]`` (integer label values, stacked as ``scan.pixels``; ``[Z, H, W, 3]``: the
    RGB mask of a colour card, ``LabelEncoding.encode``) in ``scan``'s format and geometry to ``path``
    (``adapt.data.formats.write_labels``; name it with ``adapt.data.formats.mask_name``). A volume's mask
    named ``*.nii.gz``/``*.nii`` is written as NIfTI on the volume's stored grid whatever the volume's own
    format: the label maps of DICOM series are NIfTI files (segmentation tools save them so, and a dataset
    card names them so).

    Raises:
        ValueError: the mask is not of the scan's shape.
        DataError: ``path`` is not named as a mask of the scan's format must be, or colours for a volume.
    """
    colours = mask.shape == (*scan.shape, 3)
    if mask.shape != scan.shape and not colours:
        raise ValueError(f"mask shape {mask.shape} differs from the scan's {scan.shape}")
    kind, header = scan.kind, scan.geometry
    if scan.view is not None and kind != "nifti" and for_name(Path(path).name) is FORMATS["nifti"]:
        kind, header = "nifti", nifti_header(scan.view.source_shape, scan.view.source_affine)
    if colours and scan.view is not None:  # a volume's label file holds one value per voxel
        check_colours(kind, path)
    stored = scan.view.to_volume(mask) if scan.view is not None else mask[0]
    return write_labels(stored, kind, header, path, colours)
