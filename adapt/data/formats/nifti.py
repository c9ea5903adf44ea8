"""NIfTI volumes (``.nii``, ``.nii.gz``): read with nibabel, masks written with the input's header.

A NIfTI stores ``(X, Y, Z)`` or ``(X, Y, Z, C)`` (MSD keeps modalities last) and its voxel-to-RAS
affine; a 5D file with a single time point is accepted with a warning (the time axis dropped),
several time points are refused with how to split them. A mask is written with the image's
header (qform and sform codes kept, the data type set to the mask's, no scaling) so that viewers
overlay it exactly. Only floating-point storage can hold NaN (nibabel drops a non-finite scaling).

A gzipped file's voxels are decompressed here, into one numpy buffer, with Intel's ISA-L when it is
installed (``isal``, ~2.5x zlib's speed) and zlib otherwise: nibabel's own route (``GzipFile`` into a
``bytearray``) took ~0.17 s for a 512 x 512 x 63 CT against ~0.065 s, and its chunks and buffer were
fresh memory, which on a virtual machine costs as much again the first time it is touched. The header,
the scaling and every other file stay nibabel's.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.formats import Format
from adapt.data.geometry import Grid
from adapt.data.raster import Raster
from adapt.errors import DataError

log = logging.getLogger(__name__)

try:  # ISA-L's inflate, zlib's interface
    from isal import isal_zlib as inflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib does the same, slower
    inflate = zlib

#: Compressed bytes read, and decompressed bytes made, per step. Small enough that each step's pieces come
#: from the memory the last step freed: 4 MB pieces were each fresh pages from the kernel (11,600 page faults
#: for a 46 MB CT and its label), which on a machine that backs memory lazily cost up to ~1 s per case.
STEP = 1 << 18


def read(path: Path, as_image: bool = False) -> Raster:
    """The volume ``[C, X, Y, Z]`` and its affine; ``header`` is the nibabel image (the writer's template)."""
    import nibabel as nib

    image = nib.load(path)
    if 0 in image.shape:  # from the header: nibabel's data of a zero-length axis loses its shape
        raise DataError(
            f"{path}: an empty axis (shape {tuple(image.shape)}): the file holds no pixels; "
            "every axis needs at least one: re-export the file"
        )
    data = _voxels(image, path)
    if isinstance(data, np.memmap):  # an uncompressed file that nibabel maps: into memory, in its own layout
        data = np.array(data, order="K")
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)  # (X, Y, Z, C): MSD stores modalities last
    elif data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, T=1, C): a vector image with one time point
        log.warning("%s: a 5D NIfTI %s with a time axis of 1; the time axis is dropped", path, data.shape)
        data = np.moveaxis(data[:, :, :, 0], -1, 0)
    elif data.ndim == 5:
        raise DataError(
            f"{path}: a 5D NIfTI {data.shape} with {data.shape[3]} time points; store one time point "
            "per file (e.g. nibabel: image.slicer[:, :, :, t]) as a 3D volume or 4D channels (X, Y, Z, C)"
        )
    else:
        raise DataError(f"{path}: a {data.ndim}D NIfTI; expected a 3D volume or 4D channels (X, Y, Z, C)")
    # In the file's own (Fortran) layout: a C-order copy transposed every voxel, the costliest step of
    # reading a gzipped label map; the readers downstream take any strides.
    return Raster(data, np.asarray(image.affine, dtype=np.float64), path, image)


def _voxels(image: Any, path: Path) -> np.ndarray:
    """``np.asanyarray(image.dataobj)``: the stored voxels, scaled as the header says; a gzipped file's
    decompressed by ``gunzip``."""
    from nibabel.arrayproxy import ArrayProxy
    from nibabel.volumeutils import apply_read_scaling

    proxy = image.dataobj
    if type(proxy) is not ArrayProxy or not str(path).lower().endswith(".gz"):
        return np.asanyarray(proxy)
    size = int(np.prod(proxy.shape)) * proxy.dtype.itemsize
    try:
        raw = gunzip(path, proxy.offset + size)
    except (zlib.error, inflate.error) as error:
        raise DataError(
            f"{path}: unreadable as NIfTI: the compressed data is damaged ({error}; its header reads, its voxels "
            "do not): copy or re-export the file"
        ) from error
    if len(raw) < proxy.offset + size:
        raise DataError(
            f"{path}: unreadable as NIfTI: the file ends after {max(len(raw) - proxy.offset, 0)} of the {size} bytes of "
            "voxels its header announces (an interrupted copy or download?): copy or re-export it"
        )
    voxels = np.ndarray(proxy.shape, dtype=proxy.dtype, buffer=raw, offset=proxy.offset, order=proxy.order)
    return apply_read_scaling(voxels, proxy.slope, proxy.inter)


def gunzip(path: Path, size: int) -> np.ndarray:
    """The first ``size`` bytes of gzip file ``path`` (fewer if it ends sooner), decompressed into one buffer
    (concatenated gzip members continue one another, as ``gzip`` reads them). The member holding the last
    byte is read to its end, so its checksum is verified: damaged voxels are refused, not returned.

    Raises:
        zlib.error / isal_zlib.error: the bytes are not gzip data, or fail the checksum.
    """
    out, filled = np.empty(size, dtype=np.uint8), 0
    stream, pending = inflate.decompressobj(31), b""
    with open(path, "rb") as file:
        while filled < size:
            if stream.eof:  # the next member
                stream, pending = inflate.decompressobj(31), stream.unused_data
            pending = pending or file.read(STEP)
            if not pending:
                break
            piece = stream.decompress(pending, min(size - filled, STEP))
            pending = stream.unconsumed_tail
            out[filled : filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            filled += len(piece)
        while filled == size and not stream.eof:  # on to the member's end (what follows is dropped), and its checksum
            pending = pending or file.read(STEP)
            if not pending:
                break
            stream.decompress(pending, STEP)
            pending = stream.unconsumed_tail
    return out[:filled]


def write(labels: np.ndarray, source: Any, path: Path) -> None:
    """``labels`` ``[X, Y, Z]`` with the header of ``source`` (the input's nibabel image)."""
    import nibabel as nib

    header = source.header.copy()
    header.set_data_dtype(labels.dtype)
    header.set_slope_inter(1, 0)
    out = type(source)(labels.reshape(source.shape[:3]), source.affine, header)
    out.set_qform(source.get_qform(), code=int(source.header["qform_code"]))
    out.set_sform(source.get_sform(), code=int(source.header["sform_code"]))
    nib.save(out, path)


def empty_header(shape: tuple[int, ...], affine: np.ndarray) -> Any:
    """A header for ``write`` of a volume read from another format (a DICOM series): its stored ``shape``
    and voxel -> RAS ``affine``, as qform and sform (scanner coordinates), so a viewer overlays the mask."""
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros(tuple(shape[:3]), np.uint8), np.asarray(affine, np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return image


def spacing(source: Any) -> tuple[tuple[float, ...] | None, str]:
    """The header's voxel size (mm) along the three stored axes."""
    return tuple(float(z) for z in source.header.get_zooms()[:3]), "mm"


def can_hold_nonfinite(path: Path) -> bool:
    """Floating-point storage, from the header."""
    import nibabel as nib

    try:
        return bool(np.issubdtype(nib.load(path).get_data_dtype(), np.floating))
    except Exception:  # a broken header: the full read names the problem
        return True


def header_grid(path: Path) -> Grid | None:
    """Shape and affine from the header."""
    import nibabel as nib

    try:
        image = nib.load(path)
    except Exception:  # a broken header: the full read names the problem
        return None
    return Grid(path, tuple(int(s) for s in (image.shape + (1, 1))[:3]), np.asarray(image.affine, np.float64))


def header_channels(path: Path) -> int | None:
    """Channels from the header: the 4th axis (MSD's modalities), the 5th of a single time point; ``None``
    for shapes ``read`` refuses or a broken header (the full read names the problem)."""
    import nibabel as nib

    try:
        shape = tuple(nib.load(path).shape)
    except Exception:
        return None
    if len(shape) <= 3:
        return 1
    if len(shape) == 4 or (len(shape) == 5 and shape[3] == 1):
        return int(shape[-1])
    return None


FORMAT = Format(
    "nifti",
    "NIfTI",
    (".nii", ".nii.gz"),
    read,
    volume=True,
    write=write,
    mask_suffixes=(".nii", ".nii.gz"),
    spacing=spacing,
    can_hold_nonfinite=can_hold_nonfinite,
    header_grid=header_grid,
    header_channels=header_channels,
)
