"""Deterministic phantoms written as real files, for demos and tests: CT, multi-channel MR, aerial.

* ``write_ct_phantoms``: CT volumes in HU (below);
* ``write_mr_phantoms``: two-channel MR volumes (T2-like and ADC-like, 4D NIfTI ``X, Y, Z, 2``
  as MSD Task05 Prostate stores them) with a prostate-like gland of two zones;
* ``write_aerial_tiles``: 4-band (R, G, B, NIR) uint16 GeoTIFF tiles with a projected CRS
  and rectangular buildings, plus single-band label tiles.

Every writer produces the Medical Segmentation Decathlon manifest (``dataset.json`` with a
``training`` list), which is how synthetic cards are listed.

Each CT case is an abdomen-like volume in Hounsfield units: air outside a body ellipse with a
fat rim, soft tissue, a liver-like lobe that grows and shrinks along the cranio-caudal axis,
a vertebral body with cortical bone, and Gaussian noise. Files follow the Medical
Segmentation Decathlon layout (``imagesTr/``, ``labelsTr/``, ``dataset.json``) with a
non-identity affine (flipped in-plane axes, an origin offset) and anisotropic spacing, so
geometry bugs show up in tests instead of in users' data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: ``source.generator`` of a synthetic card -> the writer function in this module.
GENERATORS = {"ct": "write_ct_phantoms", "mr": "write_mr_phantoms", "aerial": "write_aerial_tiles"}
PHANTOM_LABELS = {"background": 0, "liver": 1, "spine": 2}
DEFAULT_SHAPE = (96, 96, 24)
DEFAULT_SPACING = (0.9, 0.9, 3.0)


def phantom_affine(spacing: tuple[float, float, float] = DEFAULT_SPACING) -> np.ndarray:
    """Voxel-to-RAS affine as CT scanners store it: x and y flipped, origin off-centre."""
    sx, sy, sz = spacing
    return np.array(
        [
            [-sx, 0.0, 0.0, 170.0],
            [0.0, -sy, 0.0, 190.0],
            [0.0, 0.0, sz, -420.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def make_ct_phantom(seed: int, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """One phantom volume and its label map.

    Args:
        seed: case seed; the same seed gives the same volume bit for bit.
        shape: ``(x, y, z)`` voxels; z is the slice axis.

    Returns:
        ``(image, label)``: ``int16`` HU and ``uint8`` labels (see ``PHANTOM_LABELS``).
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    body_a, body_b = rng.uniform(0.78, 0.9), rng.uniform(0.6, 0.72)
    liver_cx, liver_cy = rng.uniform(-0.45, -0.3), rng.uniform(-0.2, 0.0)
    liver_a, liver_b = rng.uniform(0.28, 0.38), rng.uniform(0.25, 0.35)
    liver_hu = rng.uniform(50, 70)
    z_centre, z_extent = rng.uniform(0.4, 0.6) * nz, rng.uniform(0.3, 0.4) * nz
    for k in range(nz):
        body = (x / body_a) ** 2 + (y / body_b) ** 2 <= 1
        fat = body & ((x / (body_a - 0.06)) ** 2 + (y / (body_b - 0.06)) ** 2 > 1)
        image[..., k][body] = 40.0
        image[..., k][fat] = -100.0
        # The lobe is largest at z_centre and vanishes past z_extent: slices without liver exist.
        scale = 1.0 - ((k - z_centre) / z_extent) ** 2
        if scale > 0:
            lobe = ((x - liver_cx) / (liver_a * np.sqrt(scale))) ** 2 + (
                (y - liver_cy) / (liver_b * np.sqrt(scale))
            ) ** 2 <= 1
            lobe &= body & ~fat
            image[..., k][lobe] = liver_hu
            label[..., k][lobe] = PHANTOM_LABELS["liver"]
        spine = (x / 0.11) ** 2 + ((y - body_b + 0.2) / 0.1) ** 2 <= 1
        cortex = spine & ((x / 0.08) ** 2 + ((y - body_b + 0.2) / 0.07) ** 2 > 1)
        image[..., k][spine] = 300.0
        image[..., k][cortex] = 900.0
        label[..., k][spine] = PHANTOM_LABELS["spine"]
    image += rng.normal(0, 12, size=shape).astype(np.float32)
    return np.clip(image, -1024, 3071).astype(np.int16), label


def write_ct_phantoms(
    root: str | Path,
    num_cases: int = 8,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Write ``num_cases`` phantoms in the MSD layout under ``root``.

    Existing files with the same names are rewritten with identical content (the
    generator is deterministic), so calling this twice is safe.

    Returns:
        The ``training`` list of ``dataset.json``: ``{"image": ..., "label": ...}`` paths
        relative to ``root``.
    """
    return write_msd_volumes(
        Path(root),
        "phantom",
        [make_ct_phantom(seed * 1000 + i, shape) for i in range(num_cases)],
        phantom_affine(spacing),
        "CT phantoms",
        {"0": "CT"},
        PHANTOM_LABELS,
    )


def write_msd_volumes(
    root: Path,
    prefix: str,
    volumes: list[tuple[np.ndarray, np.ndarray]],
    affine: np.ndarray,
    name: str,
    modality: dict[str, str],
    labels: dict[str, int],
) -> list[dict[str, str]]:
    """``(image, label)`` pairs as ``imagesTr/<prefix>_NNN.nii.gz`` + ``labelsTr/...`` + ``dataset.json``."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (image, label) in enumerate(volumes):
        file_name = f"{prefix}_{i:03d}.nii.gz"
        for folder, array in (("imagesTr", image), ("labelsTr", label)):
            img = nib.Nifti1Image(array, affine)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, root / folder / file_name)
        cases.append({"image": f"./imagesTr/{file_name}", "label": f"./labelsTr/{file_name}"})
    write_manifest(root, name, modality, labels, cases)
    return cases


def write_manifest(
    root: Path, name: str, modality: dict[str, str], labels: dict[str, int], cases: list[dict[str, str]]
) -> None:
    """``dataset.json`` in the MSD layout (``training`` list of image/label paths)."""
    manifest = {
        "name": name,
        "description": f"{name}, generated by sam2-adapt",
        "modality": modality,
        "labels": {str(v): k for k, v in labels.items()},
        "numTraining": len(cases),
        "training": cases,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=2))


MR_LABELS = {"background": 0, "peripheral_zone": 1, "transition_zone": 2}
MR_SHAPE = (64, 64, 16)
MR_SPACING = (0.6, 0.6, 3.6)


def make_mr_phantom(seed: int, shape: tuple[int, int, int] = MR_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A two-channel MR-like volume ``(X, Y, Z, 2)`` (T2-like, ADC-like, arbitrary units) and labels.

    The gland is an ellipsoid: an inner transition zone (darker on T2) inside a brighter
    peripheral rim; ADC is low inside the gland. Channels differ in contrast and range, so
    per-channel percentile scaling and channel selection are visible in tests.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y, z = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), np.linspace(-1, 1, nz), indexing="ij")
    cx, cy = rng.uniform(-0.15, 0.15, size=2)
    a, b, c = rng.uniform(0.35, 0.45), rng.uniform(0.3, 0.4), rng.uniform(0.55, 0.7)
    r = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + (z / c) ** 2
    label = np.zeros(shape, np.uint8)
    label[r <= 1] = MR_LABELS["peripheral_zone"]
    label[r <= 0.45] = MR_LABELS["transition_zone"]
    t2 = np.full(shape, 300.0) + 60 * (x + 1)  # a bias field across the field of view
    t2[label == 1] = 900.0
    t2[label == 2] = 550.0
    adc = np.full(shape, 1800.0)
    adc[label > 0] = 900.0
    image = np.stack([t2 + rng.normal(0, 25, shape), adc + rng.normal(0, 40, shape)], axis=-1)
    return np.clip(image, 0, None).astype(np.float32), label


def write_mr_phantoms(
    root: str | Path,
    num_cases: int = 6,
    shape: tuple[int, int, int] = MR_SHAPE,
    spacing: tuple[float, float, float] = MR_SPACING,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Write ``num_cases`` two-channel MR phantoms (4D NIfTI) in the MSD layout under ``root``."""
    volumes = [make_mr_phantom(seed * 1000 + i, shape) for i in range(num_cases)]
    return write_msd_volumes(
        Path(root), "mr", volumes, phantom_affine(spacing), "MR phantoms", {"0": "T2", "1": "ADC"}, MR_LABELS
    )


AERIAL_LABELS = {"background": 0, "building": 1}
AERIAL_SHAPE = (96, 96)
AERIAL_EPSG = 32633  # WGS 84 / UTM zone 33N
AERIAL_PIXEL_SIZE = 0.5  # metres


def geotiff_tags(origin: tuple[float, float], pixel_size: float, epsg: int) -> list[tuple[Any, ...]]:
    """tifffile ``extratags`` georeferencing a raster: pixel scale, tie point, projected CRS."""
    keys = [
        1,
        1,
        0,
        3,  # GeoKeyDirectory header: version 1.1.0, 3 keys
        1024,
        0,
        1,
        1,  # GTModelTypeGeoKey = projected
        1025,
        0,
        1,
        1,  # GTRasterTypeGeoKey = pixel is area
        3072,
        0,
        1,
        epsg,
    ]  # ProjectedCSTypeGeoKey = EPSG code
    return [
        (33550, "d", 3, (pixel_size, pixel_size, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), True),
        (34735, "H", len(keys), tuple(keys), True),
    ]


def write_geotiff(
    path: Path,
    array: np.ndarray,
    origin: tuple[float, float],
    pixel_size: float = AERIAL_PIXEL_SIZE,
    epsg: int = AERIAL_EPSG,
    nodata: float | None = None,
) -> None:
    """A band-first raster ``[C, H, W]`` (or ``[H, W]``) as a georeferenced GeoTIFF (``nodata``: GDAL's tag)."""
    import tifffile

    planar = "separate" if array.ndim == 3 else None
    tags = geotiff_tags(origin, pixel_size, epsg)
    if nodata is not None:
        tags.append((42113, "s", 0, f"{nodata:g}", True))
    tifffile.imwrite(path, array, photometric="minisblack", planarconfig=planar, compression="zlib", extratags=tags)


def make_aerial_tile(seed: int, shape: tuple[int, int] = AERIAL_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A 4-band tile ``[4, H, W]`` (R, G, B, NIR; uint16 reflectance-like) and its building mask.

    Vegetation is bright in NIR and dark in red; buildings (rectangles with a roof shade)
    are bright in the visible bands and moderate in NIR; a road crosses the tile.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    bands = np.empty((4, height, width), np.float32)
    for band, level in enumerate((600, 900, 500, 3500)):  # vegetation
        bands[band] = level
    row = int(rng.integers(10, height - 20))  # a road
    bands[:, row : row + 6, :] = np.array([1400, 1400, 1350, 1200], np.float32)[:, None, None]
    label = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        h, w = (int(v) for v in rng.integers(10, 24, size=2))
        y0, x0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        bands[:, y0 : y0 + h, x0 : x0 + w] = np.array([2600, 2400, 2300, 1800], np.float32)[:, None, None]
        label[y0 : y0 + h, x0 : x0 + w] = AERIAL_LABELS["building"]
    bands += rng.normal(0, 60, bands.shape).astype(np.float32)
    return np.clip(bands, 0, 65535).astype(np.uint16), label


def write_aerial_tiles(
    root: str | Path, num_cases: int = 8, shape: tuple[int, int] = AERIAL_SHAPE, seed: int = 0
) -> list[dict[str, str]]:
    """Write ``num_cases`` 4-band GeoTIFF tiles (EPSG:32633, 0.5 m) and label tiles under ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(num_cases):
        image, label = make_aerial_tile(seed * 1000 + i, shape)
        origin = (500000.0 + i * shape[1] * AERIAL_PIXEL_SIZE, 5200000.0)
        name = f"tile_{i:03d}.tif"
        write_geotiff(root / "images" / name, image, origin)
        write_geotiff(root / "labels" / name, label, origin)
        cases.append({"image": f"./images/{name}", "label": f"./labels/{name}"})
    write_manifest(root, "Aerial phantoms", {"0": "R", "1": "G", "2": "B", "3": "NIR"}, AERIAL_LABELS, cases)
    return cases
