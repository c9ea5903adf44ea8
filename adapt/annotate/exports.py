"""Pre-annotations in the formats annotation tools import, each with its reader for the round trip.

* ``nifti/<stem>.nii.gz``: label ids (not the card's file encoding) on the image's stored voxel grid
  and affine, for 3D Slicer (Segment Editor: import labelmap) and ITK-SNAP (Segmentation > Open);
  a 2D image becomes a one-slice volume with unit pixels. DICOM-SEG writers (highdicom, Slicer's
  export) take this label map with the source series.
* ``coco.json``: 2D images' masks as COCO run-length encodings (``pycocotools``: column-major
  counts, as CVAT and Label Studio import them), one annotation per label id present.
* ``geojson/<stem>.geojson``: a GeoTIFF's masks as polygons in the tile's own CRS and map units
  (``rasterio.features.shapes``: pixel-edge polygons, holes kept), for QGIS; the CRS is named in
  the legacy ``crs`` member, which QGIS and GDAL read.

``pycocotools`` and ``rasterio`` are the ``annotate`` extra (``pip install "sam2-adapt[annotate]"``);
``require`` names what is missing before any model is loaded.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adapt.data.formats import write_labels
from adapt.data.formats.nifti import empty_header
from adapt.errors import ConfigError
from adapt.storage import write_atomically

#: Export -> the package it needs.
NEEDS = {"coco": "pycocotools", "geojson": "rasterio"}


def require(kinds: set[str]) -> None:
    """Refuse exports whose package is not installed.

    Raises:
        ConfigError: names the export, the package and the install command.
    """
    missing = sorted(NEEDS[k] for k in kinds if k in NEEDS and importlib.util.find_spec(NEEDS[k]) is None)
    if missing:
        raise ConfigError(
            f'the annotation-tool exports need {missing}: pip install "sam2-adapt[annotate]" '
            "(or leave those inputs out)"
        )


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(text.encode()), "out", "free space in out=")
    return path


# --------------------------------------------------------------------------- NIfTI


def write_nifti(labels: np.ndarray, affine: np.ndarray | None, path: Path) -> Path:
    """Label ids ``[X, Y, Z]`` (or a 2D ``[H, W]`` image's, stored as ``[W, H, 1]``) as a NIfTI label map."""
    volume = labels if labels.ndim == 3 else np.asarray(labels).T[:, :, None]
    header = empty_header(volume.shape, np.eye(4) if affine is None else affine)
    return write_labels(np.ascontiguousarray(volume), "nifti", header, path)


def read_nifti(path: Path) -> np.ndarray:
    """The label map of ``write_nifti`` (a one-slice map back as ``[H, W]``)."""
    import nibabel as nib

    data = np.asarray(nib.load(path).dataobj)
    return data[:, :, 0].T if data.shape[2:] == (1,) else data


# --------------------------------------------------------------------------- COCO RLE


def coco_annotations(labels: np.ndarray, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """One COCO annotation (RLE, area, bbox xywh) per label id present in a 2D map ``[H, W]``."""
    from pycocotools import mask as rle

    out = []
    for value in (int(v) for v in np.unique(labels) if v != 0):
        encoded = rle.encode(np.asfortranarray(labels == value, dtype=np.uint8))
        out.append(
            {
                "id": first_id + len(out),
                "image_id": image_id,
                "category_id": value,
                "iscrowd": 0,
                "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")},
                "area": int(rle.area(encoded)),
                "bbox": [float(v) for v in rle.toBbox(encoded)],
            }
        )
    return out


def coco_document(images: list[tuple[str, np.ndarray]], label_map: Mapping[str, int]) -> dict[str, Any]:
    """A COCO document of ``(file name, label ids [H, W])`` images and the card's labels as categories."""
    document: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": int(v), "name": k} for k, v in label_map.items() if int(v) != 0],
    }
    for n, (name, labels) in enumerate(images, start=1):
        document["images"].append(
            {"id": n, "file_name": name, "height": int(labels.shape[0]), "width": int(labels.shape[1])}
        )
        document["annotations"] += coco_annotations(labels, n, len(document["annotations"]) + 1)
    return document


def read_coco(document: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """File name -> label ids ``[H, W]`` decoded from a COCO RLE document (later annotations drawn over)."""
    from pycocotools import mask as rle

    out = {}
    for image in document["images"]:
        labels = np.zeros((image["height"], image["width"]), np.int64)
        for annotation in (a for a in document["annotations"] if a["image_id"] == image["id"]):
            segmentation = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
            labels[rle.decode(segmentation).astype(bool)] = annotation["category_id"]
        out[image["file_name"]] = labels
    return out


# --------------------------------------------------------------------------- GeoJSON


def geojson_document(values: np.ndarray, like: Path, label_map: Mapping[str, int]) -> dict[str, Any]:
    """The polygons of label ids ``[H, W]`` on the grid of the GeoTIFF ``like``, in its CRS and map units."""
    import rasterio
    from rasterio import features

    names = {int(v): k for k, v in label_map.items()}
    with rasterio.open(like) as source:
        transform, crs = source.transform, source.crs
    values = np.asarray(values, dtype=np.int32)
    found = [
        {
            "type": "Feature",
            "geometry": geometry,
            "properties": {"value": int(value), "label": names.get(int(value), str(int(value)))},
        }
        for geometry, value in features.shapes(values, mask=values != 0, transform=transform)
    ]
    document: dict[str, Any] = {"type": "FeatureCollection", "features": found}
    if crs is not None:
        document["crs"] = {
            "type": "name",
            "properties": {"name": f"urn:ogc:def:crs:{crs.to_string().replace(':', '::')}"},
        }
    return document


def read_geojson(document: Mapping[str, Any], like: Path) -> np.ndarray:
    """Rasterise a GeoJSON document's polygons onto the grid of the GeoTIFF ``like`` (values as ``value``)."""
    import rasterio
    from rasterio import features

    with rasterio.open(like) as source:
        shape, transform = (source.height, source.width), source.transform
    shapes = [(f["geometry"], f["properties"]["value"]) for f in document["features"]]
    if not shapes:
        return np.zeros(shape, np.int64)
    return features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32").astype(np.int64)


def dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=1)
