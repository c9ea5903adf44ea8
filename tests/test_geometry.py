"""Geometry that cannot be honoured silently: a label (or ``from_mask``) on another grid than its image,
GeoTIFFs in different CRSs or transforms, sheared affines. Each is refused with both grids named --
when training cases are indexed, by ``data check``, and by ``evaluate``/``predict`` before any model
loads (exit status 2, no traceback, nothing written) -- and a plain mask of a GeoTIFF tile is taken
as is.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import run_user_action
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR
from adapt.data.cards import load_card
from adapt.data.sources import list_cases
from adapt.data.statistics import case_stats
from adapt.data.synthetic import make_aerial_tile, phantom_affine, write_geotiff, write_msd_volumes
from adapt.data.volumes import load_volume
from adapt.errors import DataError

SHAPE = (20, 18, 6)
AFFINE = phantom_affine((1.0, 1.0, 3.0))


def blob(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    inside = ((x - 10) / 6) ** 2 + ((y - 9) / 5) ** 2 + ((z - 3) / 2) ** 2 <= 1
    noise = np.random.default_rng(seed).normal(0, 5, SHAPE)
    return (np.where(inside, 60.0, -100.0) + noise).astype(np.float32), inside.astype(np.uint8)


def sheared(affine: np.ndarray) -> np.ndarray:
    out = affine.copy()
    out[0, 2] = 0.5  # the slice axis leans into x: a gantry tilt of about 9.5 degrees
    return out


def shifted(affine: np.ndarray) -> np.ndarray:
    out = affine.copy()
    out[:3, 3] += 5.0
    return out


def rescaled(affine: np.ndarray) -> np.ndarray:
    out = affine.copy()
    out[:3, :3] *= 2.0
    return out


@pytest.fixture
def volumes(tmp_path):
    """Three MSD-layout volumes and their card; case_000 is the one a test changes."""
    write_msd_volumes(
        tmp_path / "data",
        "case",
        [blob(i) for i in range(3)],
        AFFINE,
        "geo_ct",
        {"0": "CT"},
        {"background": 0, "liver": 1},
    )
    card = {
        "name": "geo_ct",
        "title": "geometry",
        "modality": "CT",
        "dims": 3,
        "license": "CC0-1.0",
        "citation": "generated",
        "source": {"kind": "msd", "root": str(tmp_path / "data")},
        "labels": {"background": 0, "liver": 1},
        "targets": ["liver"],
        "intensity": {"window": [-160, 240]},
        "split": {"val": 0.34, "seed": 0},
    }
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    return tmp_path


def rewrite(path: Path, affine: np.ndarray | None = None, shape: tuple[int, ...] | None = None) -> Path:
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    if shape is not None:
        data = np.zeros(shape, data.dtype)
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), path)
    return path


LABEL_GRIDS = [  # (what changes in the label file, what the message says, what it shows of the label's grid)
    ("origin", dict(affine=shifted(AFFINE)), "affines differ", "origin (175.0, 195.0, -415.0) mm"),
    ("spacing", dict(affine=rescaled(AFFINE)), "affines differ", "spacing (2.0, 2.0, 6.0)"),
    ("shape", dict(shape=(20, 18, 5)), "shapes differ", "shape (20, 18, 5)"),
]


@pytest.mark.parametrize("change, problem, shown", [r[1:] for r in LABEL_GRIDS], ids=[r[0] for r in LABEL_GRIDS])
def test_a_label_on_another_grid_is_refused_with_both_grids(volumes, change, problem, shown):
    card = load_card(volumes / "card.yaml")
    case = list_cases(card, volumes / "data")[0]
    rewrite(Path(case.label), **change)
    with pytest.raises(DataError) as err:
        load_volume(card, case)  # what indexing the training cases runs
    message = str(err.value)
    assert message.startswith(str(case.label)) and problem in message and shown in message
    assert f"image  {case.image}: shape (20, 18, 6), spacing (1.0, 1.0, 3.0) mm" in message  # both grids named
    stats = case_stats(case.image, case.label)  # data check's row for the case
    assert not stats.affine_matches or stats.shape != stats.label_shape


def test_a_sheared_volume_is_refused_when_read(volumes):
    card = load_card(volumes / "card.yaml")
    case = list_cases(card, volumes / "data")[0]
    rewrite(Path(case.image), affine=sheared(AFFINE))
    rewrite(Path(case.label), affine=sheared(AFFINE))
    with pytest.raises(
        DataError, match=r"case_000.nii.gz: its affine is sheared: voxel axes 0 and 2 meet at 99.46 degrees, not 90"
    ):
        load_volume(card, case)
    assert "sheared" in case_stats(case.image, case.label).error


def tile_pair(
    root: Path,
    label_origin: tuple[float, float] = (500000.0, 5200000.0),
    label_epsg: int = 32633,
    georeferenced: bool = True,
) -> Path:
    """One GeoTIFF tile and its label tile (placed as the arguments say); a 2D card over them."""
    import tifffile

    for name in ("images", "labels"):
        (root / name).mkdir(parents=True, exist_ok=True)
    image, label = make_aerial_tile(0, (32, 40))
    write_geotiff(root / "images" / "t.tif", image, (500000.0, 5200000.0))
    if georeferenced:
        write_geotiff(root / "labels" / "t.tif", label, label_origin, epsg=label_epsg)
    else:
        tifffile.imwrite(root / "labels" / "t.tif", label)
    card = {
        "name": "geo_tiles",
        "title": "tiles",
        "modality": "multispectral",
        "dims": 2,
        "license": "CC0-1.0",
        "citation": "generated",
        "source": {"kind": "folder", "root": str(root), "images": "images/*.tif", "labels": "labels/{stem}.tif"},
        "labels": {"background": 0, "building": 1},
        "targets": ["building"],
        "intensity": {"channels": [0, 1, 2], "percentiles": [1, 99]},
    }
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


TILES = [  # (label tile, refused with, what the message shows)
    ("another CRS", dict(label_epsg=32632), "the CRSs differ", "CRS EPSG:32632"),
    ("shifted by 10 pixels", dict(label_origin=(500005.0, 5200000.0)), "transforms differ", "origin (500005.0"),
    ("a plain TIFF mask", dict(georeferenced=False), None, None),
]


@pytest.mark.parametrize("label, problem, shown", [r[1:] for r in TILES], ids=[r[0] for r in TILES])
def test_geotiff_labels_must_lie_on_the_image_tile(tmp_path, label, problem, shown):
    card = load_card(tile_pair(tmp_path, **label))
    case = list_cases(card, tmp_path)[0]
    if problem is None:
        assert load_volume(card, case).label.shape == (32, 40)  # no georeferencing: the image's grid
        return
    with pytest.raises(DataError) as err:
        load_volume(card, case)
    message = str(err.value)
    assert problem in message and shown in message and "CRS EPSG:32633, pixel size (0.5, 0.5)" in message
    assert case_stats(case.image, case.label).grid_problem == message


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from tiny_adapters import make_adapter

    return make_adapter(tmp_path_factory.mktemp("geometry") / "adapter", 128)


def evaluate_action(adapter: Path, root: Path):
    from adapt.evaluation import evaluate

    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "data": {"card": str(root / "card.yaml")},
            "out": str(root / "eval"),
            "split": "all",
            "clicks": "off",
            "device": "cpu",
        }
    )
    return lambda: evaluate(cfg)


def predict_action(adapter: Path, root: Path, guide: Path | None = None):
    from adapt.predict import run

    image = root / "data" / "imagesTr" / "case_000.nii.gz"
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "input": str(image),
            "output": str(root / "mask.nii.gz"),
            "prompt": f"from_mask={guide}" if guide else "box 4,4,14,14 slice=3",
            "device": "cpu",
        }
    )
    return lambda: run(cfg)


COMMANDS = [  # (command, how the case is broken, the file named, what is said)
    ("evaluate: ground truth on another grid", "label", evaluate_action, "labelsTr/case_000.nii.gz", "affines differ"),
    ("evaluate: sheared image", "shear", evaluate_action, "imagesTr/case_000.nii.gz", "sheared"),
    ("predict: sheared input", "shear", predict_action, "imagesTr/case_000.nii.gz", "sheared"),
    ("predict: from_mask on another grid", "guide", None, "coarse.nii.gz", "from_mask does not lie on"),
]


@pytest.mark.parametrize("break_, action, named, said", [r[1:] for r in COMMANDS], ids=[r[0] for r in COMMANDS])
def test_commands_refuse_another_grid_before_the_model_loads(
    volumes, adapter, forbid_model, break_, action, named, said
):
    case = volumes / "data"
    if break_ == "label":
        rewrite(case / "labelsTr" / "case_000.nii.gz", affine=shifted(AFFINE))
    elif break_ == "shear":
        rewrite(case / "imagesTr" / "case_000.nii.gz", affine=sheared(AFFINE))
    else:
        guide = volumes / "coarse.nii.gz"
        nib.save(nib.Nifti1Image(blob(0)[1], shifted(AFFINE)), guide)
        action = lambda adapter, root: predict_action(adapter, root, guide)  # noqa: E731
    code, message, _ = run_user_action(action(adapter, volumes))
    assert code == 2 and "Traceback" not in message, message
    assert named in message and said in message
    assert not (volumes / "eval").exists() and not (volumes / "mask.nii.gz").exists()
