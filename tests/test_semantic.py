import pytest
from conftest import tiny_task_args
import torch

from adapt.adapters.io import load_adapter_weights, save_adapter
from adapt.errors import ConfigError
from adapt.models.sam2 import load_sam2
from adapt.tasks.semantic import class_map

ARGS = tiny_task_args(
    optim={"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1}, loss={}, classes=["liver", "spine"]
)


def _batch():
    label = torch.zeros(2, 2, 128, 128)
    label[:, 0, 20:60, 20:70] = 1
    label[:, 1, 80:110, 50:80] = 1
    image = 0.1 + 0.5 * label[:, :1] + 0.3 * label[:, 1:]
    return {"image": image, "label": label}


def test_class_map_puts_background_where_no_channel_is_set():
    label = torch.zeros(1, 2, 2, 2)
    label[0, 0, 0, 0] = 1
    label[0, 1, 1, 1] = 1
    assert class_map(label).tolist() == [[[1, 0], [0, 2]]]


@pytest.mark.parametrize("kind", ["lora", "bottleneck", "decoder"])
def test_semantic_head_outputs_one_channel_per_class_and_trains(kind, tmp_path):
    from adapt.tasks.semantic import SemanticTask

    torch.manual_seed(0)
    adapter = {"kind": kind, "rank": 4} if kind == "lora" else {"kind": kind}
    task = SemanticTask(**{**ARGS, "adapter": adapter})
    task.log = lambda *a, **k: None
    batch = _batch()
    assert task(batch["image"]).shape == (2, 3, 128, 128)
    trainable = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert any("class_prompts" in n for n in trainable)
    optimizer = task.build_optimizer()
    first = task._step(batch, "train").item()
    for _ in range(5):
        optimizer.zero_grad()
        task._step(batch, "train").backward()
        optimizer.step()
    assert task._step(batch, "train").item() < first

    task.model.eval()
    save_adapter(task.model, dict(task.hparams.adapter), tmp_path, {"classes": task.classes})
    loaded = load_adapter_weights(load_sam2("tiny")[0], tmp_path)
    from adapt.models.primitives import image_embeddings, preprocess
    from adapt.models.semantic import class_logits

    pixels = preprocess(batch["image"])
    with torch.no_grad():
        a = class_logits(task.model, image_embeddings(task.model, pixels))
        b = class_logits(loaded, image_embeddings(loaded, pixels))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_label_channels_must_match_the_classes():
    from adapt.tasks.semantic import SemanticTask

    task = SemanticTask(**{**ARGS, "adapter": {"kind": "decoder"}})
    batch = _batch()
    batch["label"] = batch["label"][:, :1]
    with pytest.raises(ConfigError, match="expects 2 label channels"):
        task._step(batch, "train")


@pytest.fixture
def semantic_adapter(tmp_path, monkeypatch):
    """A tiny semantic adapter with non-consecutive label ids; class 2 wins on the left half."""
    from tiny_adapters import make_semantic_adapter

    from adapt.inference import runner as inference

    make_semantic_adapter(
        tmp_path / "semantic",
        ["liver", "spine"],
        {"background": 0, "liver": 3, "spine": 7},
        {"window": [-100, 240], "slice_axis": 2},
    )

    def halves(model, embeddings):  # one image per call, as adapt.inference.runner classifies
        logits = torch.zeros(1, 3, 32, 32)
        logits[:, 2, :, :16], logits[:, 1, :, 16:] = 5.0, 5.0
        return logits

    monkeypatch.setattr(inference, "class_logits", halves)
    return tmp_path / "semantic"


def _predict(adapter, source, output):
    from omegaconf import OmegaConf

    from adapt import predict
    from adapt.conf import CONFIG_DIR

    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with({"adapter": str(adapter), "input": str(source), "output": str(output), "prompt": None})
    [out] = predict.run(cfg)
    return out


def test_semantic_label_map_as_nifti_keeps_geometry_and_card_ids(semantic_adapter, tmp_path):
    import nibabel as nib
    import numpy as np

    from adapt.data.synthetic import phantom_affine

    affine = phantom_affine((0.8, 0.8, 2.5))
    volume = np.random.default_rng(0).normal(0, 50, (40, 36, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "ct.nii.gz")
    out = nib.load(_predict(semantic_adapter, tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"))
    labels = np.asarray(out.dataobj)
    assert out.shape == volume.shape and np.allclose(out.affine, affine)
    assert set(np.unique(labels)) == {3, 7}  # the card's ids, every slice segmented, no prompt
    assert all(set(np.unique(labels[..., k])) == {3, 7} for k in range(volume.shape[2]))


def test_semantic_label_map_as_geotiff_class_raster_keeps_crs(semantic_adapter, tmp_path):
    import numpy as np
    import tifffile

    tags = [
        (33550, 12, 3, (0.5, 0.5, 0.0), True),
        (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True),
        (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
    ]
    bands = (np.random.default_rng(0).random((3, 64, 80)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "scene.tif", bands, photometric="minisblack", planarconfig="separate", extratags=tags)
    out = _predict(semantic_adapter, tmp_path / "scene.tif", tmp_path / "classes.tif")
    with tifffile.TiffFile(tmp_path / "scene.tif") as src, tifffile.TiffFile(out) as dst:
        raster = dst.pages[0].asarray()
        assert dst.pages[0].geotiff_tags == src.pages[0].geotiff_tags
    assert raster.shape == (64, 80)
    assert (raster[:, :38] == 7).all() and (raster[:, 42:] == 3).all()
