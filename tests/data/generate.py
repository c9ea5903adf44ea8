"""Small fake datasets in the exact layout of every shipped data card (torchgeo style).

``write_dataset(stem, root)`` writes a handful of cases under ``root`` so that
``load_card(stem)`` with ``data.root=root`` lists, reads and trains on them: MSD task folders
(``dataset.json`` + NIfTI with a non-identity affine and anisotropic spacing; 4D two-channel
volumes for Task05 Prostate), BTCV's ``Training/img`` + ``Training/label``, Kvasir-SEG JPEG
pairs, ISIC 2018 JPEG + PNG masks, LoveDA PNG tiles, and the synthetic cards' own generators
(4-band GeoTIFF with a CRS for ``aerial_phantom``). DICOM series are written by
``user_folders.write_dicom_series`` (beside this file), the one DICOM writer of the tests.

From a test::

    generate = load_generator()            # see tests/test_data_formats.py
    generate.write_dataset("msd_spleen", tmp_path / "spleen")

From a shell (all cards, or some)::

    python tests/data/generate.py /tmp/fake-data [msd_spleen kvasir_seg ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
from PIL import Image

from adapt.data import synthetic
from adapt.data.cards import load_card, shipped_cards

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/data is no package: user_folders.py is beside
from user_folders import write_dicom_series, write_nnunet_folder  # noqa: E402

AFFINE_SPACING = (0.8, 0.8, 2.5)
VOLUME_SHAPE = (40, 36, 12)
IMAGE_SHAPE = (48, 56)  # rows, columns: not square, so a transpose bug shows


def blob_volume(
    ids: Sequence[int], seed: int, shape: tuple[int, int, int] = VOLUME_SHAPE, channels: int = 1, hu: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A volume with one ellipsoid per label id (each a distinct intensity) and its label map.

    Returns:
        ``(image, label)``: ``int16`` HU (``hu``) or ``float32`` MR-like values, shaped
        ``(X, Y, Z)`` or ``(X, Y, Z, channels)``; ``uint8`` labels.
    """
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    label = np.zeros(shape, np.uint8)
    image = np.full(shape, -100.0 if hu else 50.0, np.float32)
    grid = int(np.ceil(np.sqrt(len(ids))))
    cell = (shape[0] / grid, shape[1] / grid)
    for n, value in enumerate(ids):
        cx = (n % grid + 0.5) * cell[0] + rng.uniform(-1, 1)
        cy = (n // grid + 0.5) * cell[1] + rng.uniform(-1, 1)
        rx, ry, rz = max(cell[0] * 0.35, 1.5), max(cell[1] * 0.35, 1.5), shape[2] * rng.uniform(0.25, 0.35)
        inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - shape[2] / 2) / rz) ** 2 <= 1
        label[inside] = value
        image[inside] = (40.0 + 15 * n) if hu else (200.0 + 40 * n)
    image += rng.normal(0, 5, shape).astype(np.float32)
    if channels > 1:  # a second contrast: inverted, on another scale (ADC-like)
        image = np.stack([image] + [2000.0 - 3 * image + 10 * c for c in range(1, channels)], axis=-1)
    return (image.astype(np.int16) if hu else image.astype(np.float32)), label


def save_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] = AFFINE_SPACING) -> None:
    """A NIfTI file with the CT-like non-identity affine (flipped x/y, offset origin)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, synthetic.phantom_affine(tuple(spacing)))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def write_msd(stem: str, root: Path, num_cases: int = 4, channels: int = 1, hu: bool = True) -> None:
    """An MSD task folder for card ``stem``: ``imagesTr``/``labelsTr`` + ``dataset.json``."""
    card = load_card(stem)
    ids = list(card.target_ids().values())
    extra = [v for v in card.labels.values() if v and v not in ids]  # non-target labels appear too
    volumes = [blob_volume(ids + extra, seed=i, channels=channels, hu=hu) for i in range(num_cases)]
    prefix = card.source.get("task", stem).split("_")[-1].lower()
    synthetic.write_msd_volumes(
        root,
        prefix,
        volumes,
        synthetic.phantom_affine(AFFINE_SPACING),
        card.title,
        {str(c): f"channel{c}" for c in range(channels)},
        dict(card.labels),
    )


def write_btcv(root: Path, num_cases: int = 4) -> None:
    """BTCV ``RawData`` layout: ``Training/img/img0001.nii.gz``, ``Training/label/label0001.nii.gz``."""
    ids = list(load_card("btcv").target_ids().values())
    for i in range(1, num_cases + 1):
        image, label = blob_volume(ids, seed=i, shape=(48, 48, 10))
        save_nifti(root / "Training" / "img" / f"img{i:04d}.nii.gz", image)
        save_nifti(root / "Training" / "label" / f"label{i:04d}.nii.gz", label)


def photo_pair(seed: int, shape: tuple[int, int] = IMAGE_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An RGB photograph-like ``(H, W, 3)`` uint8 image with one bright elliptical object, and its 0/1 mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.35, 0.65) * shape[0], rng.uniform(0.35, 0.65) * shape[1]
    mask = (((rows - cy) / (shape[0] * 0.22)) ** 2 + ((cols - cx) / (shape[1] * 0.2)) ** 2 <= 1).astype(np.uint8)
    image = np.stack([np.full(shape, v, np.float32) for v in (90, 40, 50)], axis=-1)
    image[mask > 0] = (220, 150, 120)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _save(path: Path, array: np.ndarray, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)


def write_kvasir(root: Path, num_cases: int = 5) -> None:
    """Kvasir-SEG: ``Kvasir-SEG/images/<id>.jpg`` and ``Kvasir-SEG/masks/<id>.jpg`` (0/255 JPEG)."""
    for i in range(num_cases):
        image, mask = photo_pair(i)
        name = f"cju{i:04d}polyp.jpg"
        _save(root / "Kvasir-SEG" / "images" / name, image, quality=90)
        _save(root / "Kvasir-SEG" / "masks" / name, np.stack([mask * 255] * 3, axis=-1), quality=90)


def write_isic(root: Path, num_cases: int = 5) -> None:
    """ISIC 2018 Task 1: ``ISIC_<id>.jpg`` inputs and ``ISIC_<id>_segmentation.png`` 0/255 masks."""
    for i in range(num_cases):
        image, mask = photo_pair(100 + i)
        _save(root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg", image, quality=92)
        _save(root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", mask * 255)


def write_loveda(root: Path, num_cases: int = 6) -> None:
    """LoveDA: ``{Train,Val}/{Urban,Rural}/images_png/<id>.png`` RGB and ``masks_png/<id>.png`` ids 0-7."""
    for i in range(num_cases):
        image, mask = photo_pair(200 + i)
        label = np.where(mask > 0, 2, 1 + (np.arange(mask.shape[1]) // 8 % 7 == 3) * 5).astype(np.uint8)
        label[:2] = 0  # a no-data border row
        folder = root / ("Train" if i % 3 else "Val") / ("Urban" if i % 2 else "Rural")
        _save(folder / "images_png" / f"{i + 1000}.png", image)
        _save(folder / "masks_png" / f"{i + 1000}.png", label)


def write_synthetic(stem: str, root: Path) -> None:
    """A synthetic card's own generator with its settings, few cases."""
    card = load_card(stem)
    writer: Callable[..., object] = getattr(synthetic, synthetic.GENERATORS[card.source.get("generator", "ct")])
    writer(root, num_cases=min(int(card.source.get("num_cases", 4)), 4), seed=int(card.source.get("seed", 0)))


WRITERS: dict[str, Callable[[Path], None]] = {
    "msd_liver": lambda root: write_msd("msd_liver", root),
    "msd_spleen": lambda root: write_msd("msd_spleen", root),
    "msd_hippocampus": lambda root: write_msd("msd_hippocampus", root, hu=False),
    "msd_prostate": lambda root: write_msd("msd_prostate", root, channels=2, hu=False),
    "btcv": write_btcv,
    "kvasir_seg": write_kvasir,
    "isic2018": write_isic,
    "loveda": write_loveda,
    "ct_phantom": lambda root: write_synthetic("ct_phantom", root),
    "mr_phantom": lambda root: write_synthetic("mr_phantom", root),
    "aerial_phantom": lambda root: write_synthetic("aerial_phantom", root),
    "aerial_phantom_bands": lambda root: write_synthetic("aerial_phantom_bands", root),
}


def write_dataset(stem: str, root: str | Path) -> Path:
    """Fake files for card ``stem`` under ``root`` (train on them with ``data.root=root``)."""
    if stem not in WRITERS:
        raise KeyError(f"no fake-data writer for card {stem!r}; shipped cards: {shipped_cards()}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    WRITERS[stem](root)
    return root


def write_msd_folder(root: Path, num_cases: int = 4) -> Path:
    """An MSD task folder of CT volumes (``dataset.json`` names modality CT and labels liver, tumour)."""
    labels = {"background": 0, "liver": 1, "tumour": 2}
    volumes = [blob_volume([1, 2], seed=i) for i in range(num_cases)]
    synthetic.write_msd_volumes(
        root, "liver", volumes, synthetic.phantom_affine(AFFINE_SPACING), "Liver CT", {"0": "CT"}, labels
    )
    return root


def write_dicom_tree(root: Path, num_cases: int = 4) -> Path:
    """A DICOM tree: ``patients/<id>/image/`` (a CT series) and ``patients/<id>/label.nii.gz`` on its grid."""
    from adapt.data.formats import read_raster

    for i in range(num_cases):
        image, label = blob_volume([1], seed=10 + i, shape=(36, 40, 8))  # (rows, columns, slices)
        folder = root / "patients" / f"p{i:02d}"
        series = write_dicom_series(folder / "image", image.astype(np.int32) + 1024)
        affine = read_raster(series).affine  # voxel (column, row, slice) -> RAS, as the reader builds it
        nib.save(nib.Nifti1Image(np.ascontiguousarray(label.transpose(1, 0, 2)), affine), folder / "label.nii.gz")
    return root


def write_geotiff_tiles(root: Path, num_cases: int = 5) -> Path:
    """GeoTIFF tiles without a manifest: ``tiles/<id>.tif`` (4 bands, uint16) + ``masks/<id>.tif`` (labels)."""
    for name in ("tiles", "masks"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases):
        image, label = synthetic.make_aerial_tile(300 + i, (64, 64))
        origin = (500000.0 + i * 32.0, 5200000.0)
        synthetic.write_geotiff(root / "tiles" / f"area{i:02d}.tif", image, origin)
        synthetic.write_geotiff(root / "masks" / f"area{i:02d}.tif", label, origin)
    return root


#: Folders in the layouts ``python -m adapt.data init`` recognises (``tests/test_data_init.py``).
LAYOUTS: dict[str, Callable[[Path], Path]] = {
    "msd": write_msd_folder,
    "kvasir": lambda root: (write_kvasir(root), root / "Kvasir-SEG")[1],
    "dicom": write_dicom_tree,
    "geotiff": write_geotiff_tiles,
    "nnunet": lambda root: write_nnunet_folder(root / "Dataset001_Liver", num_cases=4),
}


def write_layout(layout: str, root: str | Path) -> Path:
    """A dataset in ``layout`` (one of ``LAYOUTS``) under ``root``; returns the folder to give ``init``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return LAYOUTS[layout](root)


def main(argv: list[str]) -> None:
    """``generate.py OUT [stem ...]``: fake data for the given (default: every) card under OUT/<stem>."""
    out = Path(argv[0])
    for stem in argv[1:] or list(WRITERS):
        print(write_dataset(stem, out / stem))
    (out / "README.json").write_text(json.dumps({"written_by": "tests/data/generate.py"}))


if __name__ == "__main__":
    main(sys.argv[1:] or ["tests/data/generated"])
