"""TIFF and GeoTIFF rasters, read with tifffile; masks written as GeoTIFFs with the input's georeferencing.

A raster is ``(H, W)``, ``(bands, H, W)`` or interleaved ``(H, W, bands)``, read channel first. The
georeferencing tags (CRS, pixel scale, tie point or transformation: ``GEO_TAGS``) travel to the
mask unchanged, so it lies on the tile in a GIS. GDAL's nodata value is kept for an image only: a
label's would mark its background as missing. Spacing is the pixel scale in the CRS's unit
(``unit``); ``data init`` learns the CRS and the pixel size. Floating-point storage can hold NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.formats import Format
from adapt.data.geometry import GEOKEYS, PIXEL_SCALE, TIEPOINT, TRANSFORMATION, Grid, geokeys, geotiff_crs
from adapt.data.geometry import geotiff_transform
from adapt.data.raster import Raster
from adapt.errors import DataError

SUFFIXES = (".tif", ".tiff")
#: GeoTIFF tags that carry the CRS and the pixel-to-map transform (GDAL nodata is not kept:
#: an image's nodata value would mark a mask's background as missing).
GEO_TAGS = (PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS, 34736, 34737)
#: GDAL's nodata tag: the pixel value (as text) that marks "no data" in every band.
GDAL_NODATA = 42113
#: EPSG unit codes of GeoTIFF's ProjLinearUnitsGeoKey.
LINEAR_UNITS = {9001: "m", 9002: "ft", 9003: "US survey ft"}


def geo_tags(page: Any, codes: tuple[int, ...] = GEO_TAGS) -> list[tuple[Any, ...]]:
    """A tifffile page's georeferencing tags as ``extratags`` (code, dtype, count, value, True)."""
    return [(t.code, t.dtype, t.count, t.value, True) for t in page.tags.values() if t.code in codes]


def read(path: Path, as_image: bool = False) -> Raster:
    """Bands first; ``header`` holds the georeferencing tags; an image keeps its GDAL nodata value."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        tags = geo_tags(tif.pages[0])
        nodata = tif.pages[0].tags.get(GDAL_NODATA)
    nodata = _nodata_value(path, nodata.value) if nodata is not None and as_image else None
    bands = _band_axis(array.shape, axes)
    if bands is None:
        raise DataError(f"{path}: expected one 2D raster with bands, got axes {axes} and shape {array.shape}")
    array = array[None] if array.ndim == 2 else np.moveaxis(array, bands, 0)
    return Raster(np.ascontiguousarray(array), None, path, tags, nodata)


def _band_axis(shape: tuple[int, ...], axes: str) -> int | None:
    """The axis of the bands in a series of ``shape`` and ``axes`` (0 for a single band, -1 interleaved);
    ``None`` for anything but one 2D raster."""
    if len(shape) == 2:
        return 0
    if len(shape) == 3:
        return -1 if axes[-1] in "SC" else 0
    return None


def header_channels(path: Path) -> int | None:
    """The bands of the first series, from its tags."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape, axes = tuple(tif.series[0].shape), tif.series[0].axes
    except Exception:  # a broken header: the full read names the problem
        return None
    axis = _band_axis(shape, axes)
    return None if axis is None else (1 if len(shape) == 2 else int(shape[axis]))


def _nodata_value(path: Path, text: Any) -> float:
    """GDAL_NODATA's text (``"-9999"``, ``"nan"``, ``"0"``) as a number."""
    try:
        return float(str(text).strip().strip("\x00"))
    except ValueError:
        raise DataError(
            f"{path}: its GDAL_NODATA tag {text!r} is not a number; fix the tag (gdal_edit.py -a_nodata "
            "<value>) or remove it (gdal_edit.py -unsetnodata)"
        ) from None


def write(labels: np.ndarray, tags: Any, path: Path) -> None:
    """``labels`` ``[H, W]`` (or a colour mask ``[H, W, 3]``, as RGB) as a zlib-compressed TIFF carrying the
    input's georeferencing tags."""
    import tifffile

    photometric = "rgb" if labels.ndim == 3 else "minisblack"
    tifffile.imwrite(path, labels, photometric=photometric, compression="zlib", extratags=tags or [])


def unit(tags: list[tuple[Any, ...]]) -> str:
    """The unit of a GeoTIFF's pixel scale, from its GeoKey directory.

    ``deg`` for a geographic CRS; for a projected one the ProjLinearUnitsGeoKey, or ``m`` for UTM
    zones (EPSG 326xx/327xx) and Web Mercator (3857), which set it implicitly; else ``map units``.
    """
    keys = geokeys(tags)
    if keys.get(1024) == 2:  # GTModelTypeGeoKey: geographic
        return "deg"
    if 3076 in keys:
        return LINEAR_UNITS.get(keys[3076], "map units")
    epsg = keys.get(3072, 0)  # ProjectedCSTypeGeoKey
    return "m" if 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760 or epsg == 3857 else "map units"


def pixel_size(tags: Any) -> tuple[float, float] | None:
    """Pixel height and width in the CRS's unit (ModelPixelScale), ``None`` without one."""
    scale = next((t[3] for t in tags or () if t[0] == PIXEL_SCALE), None)
    return (abs(float(scale[1])), abs(float(scale[0]))) if scale else None


def spacing(tags: Any) -> tuple[tuple[float, ...] | None, str]:
    """The pixel size in the CRS's unit, metres for a geographic CRS; ``(None, "px")`` without a pixel scale.

    A geographic CRS (EPSG:4326, as SpaceNet's tiles) scales pixels in degrees, and a distance in degrees
    is no length (a degree of longitude shrinks with latitude) nor of the scale of an NSD tolerance: 2 "deg"
    would cover the tile and ask a search of 10^5 pixels either way. Its pixel size becomes metres at the
    tile's top latitude (``degree_lengths``): across a tile of a few kilometres the length of a degree
    changes by far less than 0.1 %.
    """
    size, found = pixel_size(tags), unit(tags)
    if not size:
        return None, "px"
    if found != "deg":
        return size, found
    transform = geotiff_transform(tags)
    latitude = transform[3] if transform else None
    if latitude is None or not -90 <= latitude <= 90:
        return None, "px"  # not degrees of the Earth after all: distances in pixels
    per_latitude, per_longitude = degree_lengths(latitude)
    return (size[0] * per_latitude, size[1] * per_longitude), "m"


def degree_lengths(latitude: float) -> tuple[float, float]:
    """Metres in a degree of latitude and of longitude at ``latitude`` on the WGS84 ellipsoid (the series
    expansions of the meridian and parallel arcs, exact to ~1 cm)."""
    phi = np.radians(latitude)
    per_latitude = 111132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi) - 0.0023 * np.cos(6 * phi)
    per_longitude = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    return float(per_latitude), float(per_longitude)


def can_hold_nonfinite(path: Path) -> bool:
    """Floating-point storage, from the first series' header."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(np.issubdtype(tif.series[0].dtype, np.floating))
    except Exception:  # a broken header: the full read names the problem
        return True


def header_grid(path: Path) -> Grid | None:
    """Size, CRS and pixel-to-map transform from the first page's tags."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tags = geo_tags(page, (PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS))
            return Grid(
                path, (int(page.imagelength), int(page.imagewidth)), None, geotiff_crs(tags), geotiff_transform(tags)
            )
    except Exception:  # a broken header: the full read names the problem
        return None


def learn(raster: Raster) -> dict[str, Any]:
    """The CRS (``EPSG:<code>``) and, for a georeferenced tile, the pixel size as its spacing."""
    crs = geotiff_crs(raster.header)
    return {"crs": crs, "spacing": pixel_size(raster.header) if crs else None}


FORMAT = Format(
    "tiff",
    "(Geo)TIFF",
    SUFFIXES,
    read,
    write=write,
    mask_suffixes=(".tif", ".tiff"),
    spacing=spacing,
    can_hold_nonfinite=can_hold_nonfinite,
    header_grid=header_grid,
    header_channels=header_channels,
    learn=learn,
    colours=True,
)
