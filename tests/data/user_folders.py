"""Folders of data the way a user's own looks, for the README journeys (``tests/test_journeys.py``).

Unlike ``generate.py`` (every shipped card's exact layout), these follow no card: they are what
a researcher has on disk before sam2-adapt has seen it, and ``python -m adapt.data init``
writes their card.

* ``write_ultrasound_folder``: grey 8-bit PNG scans with speckle and a dark lesion, ``images/`` +
  ``masks/`` whose masks are named like their images (``masks/scan_00.png``) and store the lesion
  as 255 (BUSI, Kvasir-SEG and most exported annotation tools do).
* ``write_msd_style_folder``: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` of CT-like NIfTI
  volumes on an oblique (rotated) grid with anisotropic voxels, as a scanner writes them.
* ``write_nnunet_folder``: an nnU-Net v2 raw dataset (``dataset.json`` with ``channel_names``,
  ``labels`` as name -> id and ``file_ending``; ``imagesTr/{case}_0000{ending}``, ``labelsTr/{case}{ending}``,
  ``imagesTs/``): CT-like NIfTI volumes on the oblique grid with a liver and a tumour in it, or grey
  PNG scans (``file_ending: .png``) whose labels store ids (0/1) as nnU-Net's 2D datasets do.
* ``write_geotiff_folder``: 4-band GeoTIFF tiles with a projected CRS and label tiles of the same
  names and georeferencing in a folder beside them.
* ``write_dicom_folder``: a hospital export, one CT series per patient (``dicom/patient_NN/``, slice
  files without a suffix, numbered in another order than their positions, on the oblique grid of the
  NIfTI volumes) and the segmentation tool's NIfTI label of each (``segmentations/patient_NN.nii.gz``).
  Its series are written by ``write_dicom_series``, the tests' one DICOM writer.

Each takes ``unlabelled=k``: k more images without a label (cases to annotate; the hidden truth of
each is written under ``root/../<root name>_truth/`` for tests that score pre-annotations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from adapt.data import synthetic

#: The value a binary PNG mask stores for the object.
MASK_ON = 255
#: Voxel sizes (mm) of the volumes: thick slices, as most clinical CT.
VOXEL_MM = (0.9, 0.75, 3.0)
#: EPSG code of the tiles' CRS (WGS 84 / UTM zone 32N, not the project's synthetic default).
TILE_EPSG = 32632
TILE_PIXEL_M = 0.3
#: DICOM positions are LPS, NIfTI's RAS: x and y change sign (the matrix is its own inverse).
LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ultrasound_pair(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A speckled grey scan (``uint8``) with one dark, slightly bright-rimmed elliptical lesion, and its
    0/255 mask."""
    rng = np.random.default_rng(seed)
    rows, columns = shape
    y, x = np.mgrid[:rows, :columns]
    depth = 1.0 - 0.5 * y / rows  # gain falls with depth
    tissue = 120 * depth * rng.gamma(4.0, 0.25, shape)  # speckle
    cy, cx = rng.uniform(0.35, 0.65) * rows, rng.uniform(0.35, 0.65) * columns
    ry, rx = rng.uniform(0.12, 0.22) * rows, rng.uniform(0.12, 0.22) * columns
    radius = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    lesion = radius <= 1
    tissue[lesion] *= 0.25
    tissue[(radius > 1) & (radius <= 1.4)] *= 1.5
    return np.clip(tissue, 0, 255).astype(np.uint8), np.where(lesion, MASK_ON, 0).astype(np.uint8)


def truth_folder(root: Path) -> Path:
    """Where the hidden labels of a folder's unlabelled images are written (beside the folder, not in it)."""
    return root.parent / f"{root.name}_truth"


def write_ultrasound_folder(
    root: Path, num_cases: int = 8, shape: tuple[int, int] = (72, 88), unlabelled: int = 0
) -> Path:
    """``root/images/scan_NN.png`` (grey) and ``root/masks/scan_NN.png`` (0/255); returns ``root``."""
    for name in ("images", "masks"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases + unlabelled):
        image, mask = ultrasound_pair(i, shape)
        Image.fromarray(image, mode="L").save(root / "images" / f"scan_{i:02d}.png")
        masks = root / "masks" if i < num_cases else truth_folder(root)
        masks.mkdir(exist_ok=True)
        Image.fromarray(mask, mode="L").save(masks / f"scan_{i:02d}.png")
    return root


def oblique_affine(spacing: tuple[float, float, float] = VOXEL_MM, degrees: float = 12.0) -> np.ndarray:
    """Voxel -> RAS mm: anisotropic voxels on axes rotated about the slice axis and tilted (a gantry tilt)."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = about_x @ about_z @ np.diag(spacing)
    affine[:3, 3] = (-40.0, -30.0, 12.5)
    return affine


def ct_volume(seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume (``int16`` HU: air, soft tissue, an organ) and its label map (organ = 1)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    body = ((x - shape[0] / 2) / (0.45 * shape[0])) ** 2 + ((y - shape[1] / 2) / (0.42 * shape[1])) ** 2 <= 1
    cx, cy = rng.uniform(0.4, 0.6) * shape[0], rng.uniform(0.4, 0.6) * shape[1]
    organ = (
        ((x - cx) / (0.22 * shape[0])) ** 2
        + ((y - cy) / (0.18 * shape[1])) ** 2
        + ((z - shape[2] / 2) / (0.38 * shape[2])) ** 2
    ) <= 1
    image = np.where(body, 40.0, -1000.0) + np.where(organ, 80.0, 0.0) + rng.normal(0, 12, shape)
    return image.astype(np.int16), organ.astype(np.uint8)


def write_msd_style_folder(
    root: Path, num_cases: int = 4, shape: tuple[int, int, int] = (44, 40, 10), unlabelled: int = 0
) -> Path:
    """``root/dataset.json``, ``imagesTr/organ_NNN.nii.gz``, ``labelsTr/organ_NNN.nii.gz`` on an oblique,
    anisotropic grid (the unlabelled ones: ``imagesTs/``, the manifest's ``test`` list); returns ``root``."""
    affine = oblique_affine()
    for name in ("imagesTr", "labelsTr", *(("imagesTs",) if unlabelled else ())):
        (root / name).mkdir(parents=True, exist_ok=True)
    training, test = [], []
    for i in range(num_cases + unlabelled):
        image, label = ct_volume(i, shape)
        name = f"organ_{i:03d}.nii.gz"
        images, labels = ("imagesTr", root / "labelsTr") if i < num_cases else ("imagesTs", truth_folder(root))
        labels.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(image, affine), root / images / name)
        nib.save(nib.Nifti1Image(label, affine), labels / name)
        if i < num_cases:
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    manifest = {
        "name": "Organ",
        "description": "CT volumes of one organ",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "organ"},
        "numTraining": num_cases,
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return root


def write_nnunet_folder(
    root: Path,
    num_cases: int = 6,
    shape: tuple[int, ...] = (40, 36, 10),
    unlabelled: int = 0,
    file_ending: str = ".nii.gz",
    num_training: int | None = None,
) -> Path:
    """``root/dataset.json``, ``imagesTr/liver_NNN_0000{ending}``, ``labelsTr/liver_NNN{ending}`` (the unlabelled
    ones: ``imagesTs/``, their truth beside the folder); ``numTraining`` is ``num_training`` when given (a stale
    count), else the cases written. Volumes (``.nii.gz``): liver 1 and a tumour 2 inside it; PNGs: lesion 1."""
    volumes = file_ending == ".nii.gz"
    for name in ("imagesTr", "labelsTr", *(("imagesTs",) if unlabelled else ())):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases + unlabelled):
        images, labels = ("imagesTr", root / "labelsTr") if i < num_cases else ("imagesTs", truth_folder(root))
        labels.mkdir(exist_ok=True)
        case = f"liver_{i:03d}"
        if volumes:
            image, label = ct_volume(i, shape)
            tumour = np.argwhere(label == 1).mean(axis=0).round().astype(int)  # the organ's centre, inside it
            low, high = np.maximum(tumour - 2, 0), tumour + 3
            label[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = 2
            image[label == 2] -= 60
            nib.save(nib.Nifti1Image(image, oblique_affine()), root / images / f"{case}_0000.nii.gz")
            nib.save(nib.Nifti1Image(label, oblique_affine()), labels / f"{case}.nii.gz")
        else:
            image, mask = ultrasound_pair(i, shape)
            Image.fromarray(image, mode="L").save(root / images / f"{case}_0000{file_ending}")
            Image.fromarray((mask > 0).astype(np.uint8), mode="L").save(labels / f"{case}{file_ending}")
    manifest = {
        "channel_names": {"0": "CT" if volumes else "ultrasound"},
        "labels": {"background": 0, "liver": 1, "tumor": 2} if volumes else {"background": 0, "lesion": 1},
        "numTraining": num_cases if num_training is None else num_training,
        "file_ending": file_ending,
        "name": "Liver" if volumes else "Lesions",
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return root


def write_geotiff_folder(
    root: Path, num_cases: int = 6, shape: tuple[int, int] = (64, 64), unlabelled: int = 0
) -> Path:
    """``root/tiles/field_NN.tif`` (4 bands, uint16, EPSG:32632) and ``root/labels/field_NN.tif`` (building = 1)
    with the same georeferencing; returns ``root``."""
    for name in ("tiles", "labels"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases + unlabelled):
        image, label = synthetic.make_aerial_tile(700 + i, shape)
        origin = (420000.0 + i * shape[1] * TILE_PIXEL_M, 5300000.0)
        labels = root / "labels" if i < num_cases else truth_folder(root)
        labels.mkdir(exist_ok=True)
        for folder, array in ((root / "tiles", image), (labels, label)):
            synthetic.write_geotiff(folder / f"field_{i:02d}.tif", array, origin, TILE_PIXEL_M, TILE_EPSG)
    return root


def unique_uid() -> str:
    """A random DICOM UID of a fixed length (the ``2.25`` root of UUID-derived UIDs, 38 digits without a
    leading zero): pydicom's ``generate_uid`` varies in length, and so would a series' file sizes between
    two writes of the same volume (the generated file-fault tests cut files at drawn byte offsets)."""
    import secrets

    return f"2.25.{10**37 + secrets.randbelow(9 * 10**37)}"


def write_dicom_series(
    folder: str | Path,
    volume: np.ndarray,
    spacing: Sequence[float] = (0.7, 0.7, 2.0),
    origin: Sequence[float] = (-120.0, -100.0, 50.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    affine: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    signed: bool = False,
) -> Path:
    """A single-frame CT DICOM series of ``volume`` ``(rows, columns, slices)`` (stored values, as int16 with
    ``signed``: PixelRepresentation 1, else uint16); returns ``folder``.

    The grid is ``affine`` (voxel ``(column, row, slice)`` -> RAS mm, as a NIfTI label of the series
    stores it), else axial: ImageOrientationPatient ``1,0,0,0,1,0`` (rows run along patient +x (L),
    columns down +y (P), in LPS), ``spacing`` (row, column, slice) and the first slice at ``origin``
    (LPS), stepping along +z. Slice ``k`` is the file ``names[k]`` (``slice{k:03d}.dcm`` by default);
    the files are written in reverse order, so a reader must sort them by position.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    if affine is None:
        axial = np.diag([float(spacing[1]), float(spacing[0]), float(spacing[2]), 1.0])
        axial[:3, 3] = [float(v) for v in origin]
        affine = LPS_RAS @ axial
    lps = LPS_RAS @ affine
    column_spacing, row_spacing, thickness = np.linalg.norm(lps[:3, :3], axis=0)
    orientation = [*(lps[:3, 0] / column_spacing), *(lps[:3, 1] / row_spacing)]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series, study = unique_uid(), unique_uid()
    rows, columns, slices = volume.shape
    names = names or [f"slice{k:03d}.dcm" for k in range(slices)]
    for k in reversed(range(slices)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = unique_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / names[k]), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series, study
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = [float(row_spacing), float(column_spacing)]
        ds.SliceThickness = float(thickness)
        ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
        ds.ImagePositionPatient = [round(float(v), 6) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].astype(np.int16 if signed else np.uint16)).tobytes()
        pydicom.dcmwrite(folder / names[k], ds, enforce_file_format=True)
    return folder


def write_dicom_folder(
    root: Path, num_cases: int = 4, shape: tuple[int, int, int] = (48, 44, 12), unlabelled: int = 0
) -> Path:
    """``root/dicom/patient_NN/IM_*`` (one CT series each, HU stored with intercept -1024, the files numbered
    in a shuffled order) and ``root/segmentations/patient_NN.nii.gz`` (organ = 1) on the series' oblique,
    anisotropic grid ``shape`` = (columns, rows, slices); returns ``root``."""
    affine = oblique_affine()
    for i in range(num_cases + unlabelled):
        image, label = ct_volume(i, shape)
        labels = root / "segmentations" if i < num_cases else truth_folder(root)
        labels.mkdir(parents=True, exist_ok=True)
        order = np.random.default_rng(100 + i).permutation(shape[2]) + 1
        stored = np.clip(image.astype(np.int32) + 1024, 0, None).transpose(1, 0, 2)  # (rows, columns, slices)
        names = [f"IM_{n:04d}" for n in order]
        write_dicom_series(root / "dicom" / f"patient_{i:02d}", stored, affine=affine, names=names)
        nib.save(nib.Nifti1Image(label, affine), labels / f"patient_{i:02d}.nii.gz")
    return root
