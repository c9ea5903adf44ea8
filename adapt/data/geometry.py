"""Where pixels lie: grids of images and labels, compared before anything is cut, scored or written.

An image and its label (or a ``from_mask`` guide) must share one grid: the same shape, and for
volumes the same voxel-to-RAS affine, for GeoTIFFs the same CRS and pixel-to-map transform. When
they do not, reading them "as arrays" would pair each pixel with a label pixel from somewhere else
(a label exported at another resolution, a tile of the next row, a volume whose header lost its
orientation) and train or score on it without a word. So the two grids are compared wherever a
label meets its image -- when training cases are indexed (``adapt.data.load.LoadCased``), in
``python -m adapt.data check`` (``adapt.data.statistics``), for ``evaluate``'s ground truth and
``predict``'s ``from_mask`` -- and a mismatch is refused with both grids named (file, shape,
spacing, origin; CRS for GeoTIFFs). Nothing is resampled silently: a label on another grid is a
fault of the export, and resampling labels (nearest) is a choice the researcher makes, once, with
a tool that records it (``docs/faults.md``). A label file without georeferencing (a plain TIFF or
PNG mask of a GeoTIFF tile) is taken on the image's grid when the shapes agree.

A volume whose affine is sheared (axes not at right angles: a CT series with gantry tilt, a
resampled header) cannot be reoriented or resampled by the training grid's transforms without
losing the shear, and is refused by name (``check_orthogonal``), with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adapt.errors import DataError

#: Volumes: largest difference between two affines' entries (mm) still taken as one grid.
AFFINE_TOLERANCE_MM = 1e-2
#: GeoTIFFs: largest difference of origin and pixel size, as a share of one pixel.
GEO_TOLERANCE_PIXELS = 1e-3
#: Largest departure from a right angle between two voxel axes (degrees) taken as no shear.
SHEAR_TOLERANCE_DEGREES = 0.01
#: GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS = 33550, 33922, 34264, 34735


@dataclass(frozen=True)
class Grid:
    """The grid one file's pixels lie on.

    Attributes:
        path: the file (named in errors).
        shape: spatial shape as stored (``X, Y, Z`` for volumes, ``H, W`` for images).
        affine: voxel index to RAS millimetres (volumes), else ``None``.
        crs: a GeoTIFF's CRS (``EPSG:<code>``), ``None`` without one.
        transform: a GeoTIFF's pixel-to-map transform ``(x0, dx_col, dx_row, y0, dy_col, dy_row)`` (GDAL's
            order), ``None`` without georeferencing.
    """

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray | None = None
    crs: str | None = None
    transform: tuple[float, ...] | None = None

    def describe(self) -> str:
        """``<file>: shape (..), spacing (..) mm, origin (..) mm`` (volumes), ``CRS .., pixel size .., origin ..``
        (GeoTIFFs), the shape alone otherwise."""
        text = f"{self.path}: shape {tuple(self.shape)}"
        if self.affine is not None:
            spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
            text += (
                f", spacing {_round(spacing)} mm, origin {_round(self.affine[:3, 3])} mm, axes {_axcodes(self.affine)}"
            )
        elif self.transform is not None:
            x0, dxc, dxr, y0, dyc, dyr = self.transform
            text += (
                f", CRS {self.crs or 'none'}, pixel size {_round([np.hypot(dxc, dyc), np.hypot(dxr, dyr)])}, "
                f"origin {_round([x0, y0])}"
            )
        return text


def _round(values: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


def _axcodes(affine: np.ndarray) -> str:
    from nibabel.orientations import aff2axcodes

    return "".join(aff2axcodes(affine))


def raster_grid(raster: Any, shape: Sequence[int] | None = None) -> Grid:
    """The grid of an ``adapt.data.raster.Raster`` (``shape``: the label plane's, when it differs from the array's)."""
    tags = raster.header if _is_tags(raster.header) else None
    shape = tuple(int(s) for s in (shape if shape is not None else raster.array.shape[1:]))
    return Grid(Path(raster.path), shape, raster.affine, geotiff_crs(tags), geotiff_transform(tags))


def _is_tags(header: Any) -> bool:
    return isinstance(header, list) and bool(header) and isinstance(header[0], tuple)


def geokeys(tags: list[tuple[Any, ...]] | None) -> dict[int, Any]:
    """A GeoTIFF's GeoKeys (key id -> value) stored in the GeoKeyDirectory itself."""
    directory = next((t[3] for t in tags or () if t[0] == GEOKEYS), None) or ()
    return {directory[i]: directory[i + 3] for i in range(4, len(directory) - 3, 4) if directory[i + 1] == 0}


def geotiff_crs(tags: list[tuple[Any, ...]] | None) -> str | None:
    """``EPSG:<code>`` of a GeoTIFF (projected or geographic), ``None`` without one."""
    keys = geokeys(tags)
    code = keys.get(3072) or keys.get(2048)
    return f"EPSG:{code}" if code and code != 32767 else ("user-defined CRS" if keys else None)


def geotiff_transform(tags: list[tuple[Any, ...]] | None) -> tuple[float, ...] | None:
    """A GeoTIFF's pixel-to-map transform in GDAL's order, from ModelTransformation or from
    ModelTiepoint + ModelPixelScale; ``None`` without georeferencing."""
    values = {t[0]: t[3] for t in tags or ()}
    if TRANSFORMATION in values:
        m = [float(v) for v in values[TRANSFORMATION]]
        return m[3], m[0], m[1], m[7], m[4], m[5]
    if TIEPOINT in values and PIXEL_SCALE in values:
        i, j, _, x, y, _ = (float(v) for v in list(values[TIEPOINT])[:6])
        sx, sy = (float(v) for v in list(values[PIXEL_SCALE])[:2])
        return x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy
    return None


def check_same_grid(image: Grid, label: Grid, role: str = "label", fix: str | None = None) -> None:
    """Refuse a label (or guide) that does not lie on its image's grid, naming both grids.

    Args:
        image, label: the two grids.
        role: what the second file is, for the message (``label``, ``from_mask``).
        fix: what to do; default: resample the label onto the image's grid (nearest neighbour).

    Raises:
        DataError: different shapes, affines (volumes) or CRS/transforms (GeoTIFFs, when both have one).
    """
    fix = fix or (
        f"resample the {role} onto the image's grid (nearest neighbour, e.g. SimpleITK's Resample or "
        f"MONAI's ResampleToMatch; for GeoTIFFs gdalwarp with the image's CRS and extent), or pair it with "
        f"the image it was drawn on"
    )
    problem = None
    if tuple(image.shape) != tuple(label.shape):
        problem = "shapes differ"
    elif image.affine is not None and label.affine is not None:
        if not np.allclose(image.affine, label.affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
            problem = f"affines differ by more than {AFFINE_TOLERANCE_MM} mm"
    elif image.transform is not None and label.transform is not None:
        if image.crs != label.crs:
            problem = "the CRSs differ"
        else:
            pixel = max(abs(v) for v in image.transform[1:3] + image.transform[4:6]) or 1.0
            if not np.allclose(image.transform, label.transform, rtol=0, atol=GEO_TOLERANCE_PIXELS * pixel):
                problem = "the pixel-to-map transforms differ (another origin or pixel size)"
    if problem:
        raise DataError(
            f"{label.path}: the {role} does not lie on its image's grid ({problem}):\n"
            f"  image  {image.describe()}\n  {role:<6} {label.describe()}\n{fix}"
        )


def check_orthogonal(affine: np.ndarray | None, path: str | Path) -> None:
    """Refuse a volume whose voxel axes are not at right angles (a sheared affine).

    Raises:
        DataError: names the file, the angles and the fix.
    """
    if affine is None:
        return
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(axes, axis=0)
    if not np.all(norms > 0):
        raise DataError(
            f"{path}: its affine has a voxel axis of length 0 ({_round(norms)} mm); the header is broken, "
            "re-export the volume"
        )
    unit = axes / norms
    angles = {
        (a, b): float(np.degrees(np.arccos(np.clip(unit[:, a] @ unit[:, b], -1, 1))))
        for a, b in ((0, 1), (0, 2), (1, 2))
    }
    worst = max(angles, key=lambda k: abs(angles[k] - 90))
    if abs(angles[worst] - 90) > SHEAR_TOLERANCE_DEGREES:
        raise DataError(
            f"{path}: its affine is sheared: voxel axes {worst[0]} and {worst[1]} meet at "
            f"{angles[worst]:.2f} degrees, not 90 (a CT series with gantry tilt, or a resampled header); "
            "the training grid (reorientation to RAS, resampling to the card's spacing) needs right "
            "angles and would drop the shear without a word. Resample the volume and its label onto an "
            "orthogonal grid first (e.g. dcm2niix corrects gantry tilt; SimpleITK's Resample)"
        )
