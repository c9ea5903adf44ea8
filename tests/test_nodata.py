"""A GeoTIFF's nodata value (GDAL_NODATA, tag 42113): read, kept out of the intensity statistics,
never stretched into the image, and out of the loss, the metrics and the masks written.

The tiles are made the way a scene's edge tile looks: a 4-band uint16 tile whose left columns (or
a NaN float band's top rows) hold the nodata value, georeferenced like the rest of the scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adapt.data.cards import load_card
from adapt.data.formats import read_raster
from adapt.data.statistics import case_stats
from adapt.data.synthetic import make_aerial_tile, write_geotiff
from adapt.tasks.losses import LossWeights, segmentation_loss
from adapt.transforms.intensity import scale_intensity
from adapt.transforms.slices import NODATA_LABEL, NODATA_MASK, split_nodata

BORDER = 12  # columns of nodata at the left of every tile
NODATA = 0


def edge_tile(path: Path, seed: int = 0, nodata: float | None = NODATA) -> tuple[np.ndarray, np.ndarray]:
    """A 4-band tile with ``BORDER`` nodata columns (value ``NODATA``) and its label tile beside it."""
    image, label = make_aerial_tile(seed, (48, 64))
    image[:, :, :BORDER] = NODATA
    label[:, :BORDER] = 0
    label[20:30, BORDER - 4 : BORDER + 8] = 1  # a building cut by the scene's edge: drawn into the nodata too
    origin = (500000.0 + seed * 32.0, 5200000.0)
    write_geotiff(path, image, origin, nodata=nodata)
    write_geotiff(path.parent.parent / "labels" / path.name, label, origin)
    return image, label


@pytest.fixture
def tiles(tmp_path):
    """Three edge tiles and a 2D multispectral card over them."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(3):
        edge_tile(tmp_path / "images" / f"t{i}.tif", seed=i)
    card = {
        "name": "edge_tiles",
        "title": "edge tiles",
        "modality": "multispectral",
        "dims": 2,
        "license": "CC0-1.0",
        "citation": "generated",
        "source": {"kind": "folder", "root": str(tmp_path), "images": "images/*.tif", "labels": "labels/{stem}.tif"},
        "labels": {"background": 0, "building": 1},
        "targets": ["building"],
        "intensity": {"channels": [0, 1, 2], "percentiles": [2, 98]},
        "split": {"val": 0.34, "seed": 0},
    }
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return tmp_path


@pytest.mark.parametrize(
    "dtype, nodata, expected_valid",
    [
        ("uint16", 0, 48 * (64 - BORDER)),
        ("float32", float("nan"), 48 * (64 - BORDER)),
        ("uint16", None, 48 * 64),  # no tag: every pixel holds data, 0 included
        ("uint8", -9999, 48 * 64),  # a value the pixels cannot hold: none is missing
    ],
)
def test_the_reader_marks_the_nodata_pixels(tmp_path, dtype, nodata, expected_valid):
    image, _ = make_aerial_tile(0, (48, 64))
    image = image.astype(dtype)
    image[:, :, :BORDER] = 0 if nodata is None or nodata == -9999 else nodata
    path = tmp_path / "t.tif"
    write_geotiff(path, image, (0.0, 0.0), nodata=nodata)
    raster = read_raster(path, as_image=True)
    valid = raster.valid()
    assert (valid is None and expected_valid == image[0].size) or int(valid.sum()) == expected_valid
    assert np.isfinite(raster.data_pixels()).all()
    assert read_raster(path).nodata is None  # read as a label map: no nodata (0 is its background)


def test_nodata_is_out_of_the_statistics_that_init_proposes_from(tmp_path):
    for name in ("images", "labels"):
        (tmp_path / name).mkdir()
    image, _ = edge_tile(tmp_path / "images" / "t.tif")
    stats = case_stats(tmp_path / "images" / "t.tif", tmp_path / "labels" / "t.tif")
    assert stats.error is None and stats.nodata == NODATA and stats.nodata_pixels == 48 * BORDER
    assert stats.sample.min() > 0  # uint16 reflectances: only the nodata pixels are 0
    inner = image[:, :, BORDER:].astype(np.float32)
    assert stats.sample.min() >= inner.min() and stats.sample.shape[1] <= inner[0].size


def test_nodata_is_never_stretched_into_the_image_and_its_label_is_marked(tiles):
    from adapt.data.sources import list_cases
    from adapt.data.volumes import load_volume

    card = load_card(tiles / "card.yaml")
    case = list_cases(card, tiles)[0]
    volume = load_volume(card, case)
    raw = read_raster(case.image, as_image=True).array[:3].astype(np.float32)
    assert np.all(volume.image[:, :, :BORDER] == 0)
    expected = np.stack([scale_intensity(band[:, BORDER:], {"percentiles": [2, 98]}) for band in raw])
    np.testing.assert_allclose(volume.image[:, :, BORDER:], expected, atol=1e-6)  # percentiles of the data alone
    assert np.all(volume.label[:, :BORDER] == NODATA_LABEL) and volume.label.dtype == np.uint16
    assert set(np.unique(volume.label[:, BORDER:])) <= {0, 1}


@pytest.mark.parametrize("device_transforms", [True, False])
def test_training_samples_carry_nodata_to_the_loss_and_nowhere_else(tiles, device_transforms):
    from adapt.data.datamodule import build_datamodule
    from adapt.data.device_transforms import collate_native, to_model_grid

    data = {
        "card": str(tiles / "card.yaml"),
        "batch_size": 2,
        "val_batch_size": 2,
        "cache": "memory",
        "augment": False,
        "device_transforms": device_transforms,
        "num_workers": 0,
    }
    module = build_datamodule(data, image_size=64, seed=0)
    sample = module.train_set[0]
    batch = (
        to_model_grid(collate_native([sample]), 64)
        if device_transforms
        else {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor)}
    )
    target, valid = split_nodata(batch["label"])
    assert valid is not None and not valid[..., :BORDER].any() and valid[..., BORDER + 1 :].all()
    assert set(torch.unique(target).tolist()) <= {0.0, 1.0}  # the nodata marker is gone from the target
    box = sample["boxes"][0]  # drawn on the building's data pixels: inside the tile's data
    assert float(box[0]) >= BORDER - 1


@pytest.mark.parametrize("pixel", ["bce", "focal"])
def test_the_loss_ignores_nodata_pixels(pixel):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 3, 16, 16, generator=generator, requires_grad=True)
    target = (torch.rand(1, 1, 16, 16, generator=generator) > 0.5).float()
    target[..., :4] = NODATA_MASK
    clean, valid = split_nodata(target)
    iou = torch.rand(1, 1, 3, generator=generator)
    loss, _, _ = segmentation_loss(logits, clean, iou, LossWeights(pixel=pixel), valid)
    loss.backward()
    assert logits.grad[..., :4].abs().max() == 0 and logits.grad[..., 4:].abs().max() > 0
    other = logits.detach().clone()
    other[..., :4] = 50.0  # whatever the model says where there is no data
    again, _, _ = segmentation_loss(other, clean, iou, LossWeights(pixel=pixel), valid)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)
    cropped, _, _ = segmentation_loss(logits.detach()[..., 4:], clean[..., 4:], iou, LossWeights(pixel=pixel))
    assert cropped.item() == pytest.approx(loss.item(), rel=1e-5)  # as if the nodata columns were not there


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from tiny_adapters import make_adapter

    return make_adapter(tmp_path_factory.mktemp("nodata") / "adapter", 128)


def test_predict_and_evaluate_leave_nodata_out(adapter, tiles, tmp_path):
    """A box over the whole tile: nothing is predicted where the tile holds no data (the same tile
    without the tag gets a mask there), and evaluate scores the data pixels only."""
    import csv

    import tifffile
    from omegaconf import OmegaConf

    from adapt.conf import CONFIG_DIR
    from adapt.evaluation import evaluate
    from adapt.predict import run

    untagged = tmp_path / "plain.tif"
    write_geotiff(untagged, tifffile.imread(tiles / "images" / "t0.tif"), (500000.0, 5200000.0))
    masks = {}
    for name, source in (("tagged", tiles / "images" / "t0.tif"), ("untagged", untagged)):
        cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
        cfg.merge_with(
            {
                "adapter": str(adapter),
                "input": str(source),
                "output": str(tmp_path / f"{name}.tif"),
                "prompt": "box 0,0,63,47",
                "device": "cpu",
            }
        )
        run(cfg)
        masks[name] = tifffile.imread(tmp_path / f"{name}.tif")
    assert masks["untagged"][:, :BORDER].any() and not masks["tagged"][:, :BORDER].any()
    assert masks["tagged"][:, BORDER:].any()

    card = yaml.safe_load((tiles / "card.yaml").read_text())
    card.update(labels={"background": 0, "liver": 1}, targets=["liver"])  # the adapter's target, by name
    (tiles / "liver.yaml").write_text(yaml.safe_dump(card))
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with(
        {
            "adapter": str(adapter),
            "data": {"card": str(tiles / "liver.yaml")},
            "out": str(tmp_path / "ev"),
            "split": "all",
            "clicks": "off",
            "device": "cpu",
            "save_masks": 0,
        }
    )
    evaluate(cfg)
    with (tmp_path / "ev" / "cases.csv").open() as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    for case, row in rows.items():
        label = tifffile.imread(tiles / "labels" / f"{case}.tif")
        assert label[:, :BORDER].any()  # the building drawn into the nodata columns ...
        assert int(row["gt_voxels"]) == int((label[:, BORDER:] == 1).sum())  # ... is not ground truth
