"""What a user does with SAM2 done on the SAM 3 tracker and EdgeTAM (their tiny configs), in process.

Each row is a backbone; SAM2's own journeys are tested elsewhere. Tasks train a step
(segmentation with a correction click, semantic with its class head, every adapter kind);
an adapter on each backbone predicts a PNG, is evaluated on phantoms, exported to ONNX (the
graphs reproduce the torch runner), served by the app's session, and pushed to / pulled from a
local Hub with the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm_reference
import torch
from conftest import LocalHub, phantom_data, tiny_task_args
from omegaconf import OmegaConf
from PIL import Image
from tiny_adapters import make_adapter

timm_reference.with_timm()

import adapt  # noqa: E402
from adapt import predict  # noqa: E402
from adapt.app.session import Session  # noqa: E402
from adapt.conf import CONFIG_DIR  # noqa: E402
from adapt.evaluation import evaluate  # noqa: E402
from adapt.export.build import export_adapter  # noqa: E402
from adapt.hub import share as hub  # noqa: E402
from adapt.inference.onnx_backend import OnnxPredictor, load_predictor  # noqa: E402
from adapt.inference.runner import Predictor  # noqa: E402
from adapt.models.backbones import BACKBONES  # noqa: E402
from adapt.models.primitives import decode  # noqa: E402

ROWS = {key: BACKBONES[key] for key in ("sam3_tracker", "edgetam")}
KINDS = {
    "lora": {"kind": "lora", "rank": 2, "targets": ["encoder_attn", "encoder_mlp", "decoder_attn"]},
    "dora": {"kind": "dora", "rank": 2, "targets": ["encoder_attn", "decoder_attn"]},
    "bottleneck": {"kind": "bottleneck", "reduction": 4},
    "decoder": {"kind": "decoder"},
    "full": {"kind": "full"},
}


def batch(size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    label = torch.zeros(2, 1, size, size)
    label[0, 0, 20:60, 30:80] = 1
    label[1, 0, 50:90, 15:50] = 1
    image = torch.rand(2, 1, size, size) * 0.2 + 0.6 * label
    boxes = torch.tensor([[[30.0, 20.0, 79.0, 59.0]], [[15.0, 50.0, 49.0, 89.0]]])
    return {"image": image, "label": label, "boxes": boxes}


def task_args(key: str, adapter: dict, **changes) -> dict:
    row = ROWS[key]
    return tiny_task_args(adapter, model={"name": row.tiny, "image_size": row.tiny_size}, **changes)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("key", list(ROWS))
def test_segmentation_trains_every_adapter_kind_with_a_correction_click(key, kind):
    from adapt.tasks.segmentation import SegmentationTask

    task = SegmentationTask(**task_args(key, dict(KINDS[kind]), prompts={"iterations": 1}))
    task.log = lambda *a, **k: None
    trained = [p for p in task.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    optimizer = task.build_optimizer()
    loss = task._step(batch(ROWS[key].tiny_size), "train")
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, trained))


@pytest.mark.parametrize("key", list(ROWS))
def test_semantic_task_learns_its_classes(key):
    from adapt.tasks.semantic import SemanticTask

    size = ROWS[key].tiny_size
    task = SemanticTask(
        **task_args(
            key,
            {"kind": "lora", "rank": 4},
            classes=["liver", "spine"],
            loss={},
            optim={"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1},
        )
    )
    task.log = lambda *a, **k: None
    data = batch(size)
    data["label"] = torch.cat([data["label"], torch.flip(data["label"], dims=[-1])], dim=1)
    assert task(data["image"]).shape == (2, 3, size, size)
    optimizer = task.build_optimizer()
    first = task._step(data, "train").item()
    for _ in range(4):
        optimizer.zero_grad()
        task._step(data, "train").backward()
        optimizer.step()
    assert task._step(data, "train").item() < first


@pytest.fixture(scope="module", params=list(ROWS))
def adapter(request, tmp_path_factory):
    row = ROWS[request.param]
    return row, make_adapter(tmp_path_factory.mktemp(row.key) / "adapter", row.tiny_size, base=row.tiny)


def test_predict_and_the_app_write_the_same_mask(adapter, tmp_path):
    row, folder = adapter
    png = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(2).random((60, 80)) * 255).astype(np.uint8)).save(png)
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {"adapter": str(folder), "input": str(png), "output": str(tmp_path / "mask.png"), "prompt": "box 10,10,60,45"}
    )
    predict.run(cfg)
    written = np.asarray(Image.open(tmp_path / "mask.png"))
    assert written.shape == (60, 80)
    session = Session(load_predictor(folder, propagation="boxes"), tmp_path / "saved")
    session.open([png])
    for x, y in ((10, 10), (60, 45)):
        session.click(x, y, "box", session.slice)
    session.segment(session.prompt)
    np.testing.assert_array_equal(np.asarray(Image.open(session.save())), written)
    assert adapt.load_adapter(folder).model_info.backbone == row.key


def test_evaluate_scores_the_adapter_on_phantoms(adapter, tmp_path):
    _, folder = adapter
    with phantom_data(tmp_path) as data:
        cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
        cfg.merge_with(
            {
                "adapter": str(folder),
                "data": {"root": str(data)},
                "out": str(tmp_path / "eval"),
                "clicks": [1],
                "batch_size": 4,
                "device": "cpu",
                "save_masks": 0,
            }
        )
        summary = evaluate(cfg)
    dice = summary["classes"]["liver"]["dice"]["mean"]
    assert 0.0 <= dice <= 1.0 and summary["protocol"]["clicks"] == [1]


def test_onnx_export_reproduces_the_torch_runner(adapter, tmp_path):
    row, folder = adapter
    export = export_adapter(folder, "onnx", tmp_path / "onnx", check=False)
    torch_side, onnx_side = Predictor(adapt.load_adapter(folder), device="cpu"), OnnxPredictor(export)
    images = np.random.default_rng(0).random((1, 1, 70, 90), dtype=np.float32)
    with torch.inference_mode():
        ours, theirs = torch_side.embed(images), onnx_side.embed(images)
        assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs)) < 1e-4
        prompts = torch_side.model_prompts(70, 90, boxes=np.array([[10, 12, 60, 50]], np.float32))
        a, b = decode(torch_side.model, ours, False, **prompts), decode(onnx_side.model, theirs, False, **prompts)
    assert a.low_res.shape[-1] == row.low_res_side(row.tiny_size)
    assert float((a.low_res - b.low_res).abs().max()) < 1e-4


def test_hub_round_trip_gives_the_same_outputs(adapter, tmp_path):
    row, folder = adapter
    local = LocalHub(tmp_path / "hub")
    hub.push(Path(folder).parent, f"me/{row.key}", api=local)
    pulled, original = adapt.load_adapter(f"me/{row.key}", api=local), adapt.load_adapter(folder)
    assert pulled.metadata["model"]["backbone"] == row.key
    images = np.random.default_rng(1).random((1, 1, 50, 50), dtype=np.float32)
    with torch.inference_mode():
        ours = Predictor(pulled, device="cpu").embed(images)
        theirs = Predictor(original, device="cpu").embed(images)
    assert all(torch.equal(x, y) for x, y in zip(ours, theirs))


@pytest.mark.slow
@pytest.mark.parametrize("key", list(ROWS))
def test_train_recipe_demo_runs_on_the_backbone(key, tmp_path):
    """``python -m adapt.train recipe=demo model=tiny_<backbone>`` in process: the recipe's 256 px is mapped
    to a side the trunk takes, the run records its backbone and writes an adapter that loads."""
    from conftest import compose_cfg

    from adapt.train import train

    row = ROWS[key]
    with phantom_data(tmp_path) as data:
        metrics, _ = train(
            compose_cfg(
                tmp_path / "run",
                "recipe=demo",
                f"model={row.tiny}",
                "trainer.max_steps=1",
                "data.batch_size=2",
                "data.val_batch_size=4",
                "optim.warmup_steps=1",
                "validate_before=false",
                "data.val_max_slices_per_case=1",
                f"data.root={data}",
            )
        )
    assert metrics["model"]["backbone"] == key and metrics["model"]["image_size"] == row.fit_size(256)
    assert metrics["model"]["requested_image_size"] == (256 if row.fit_size(256) != 256 else None)
    assert adapt.load_adapter(tmp_path / "run" / "adapter").model_info.backbone == key


def test_a_merged_model_loads_as_its_backbone(adapter, tmp_path):
    row, folder = adapter
    merged = hub.merge_adapter(adapt.load_adapter(folder), tmp_path / "merged")
    loaded, original = adapt.load_adapter(merged), adapt.load_adapter(folder)
    assert type(loaded.model).__name__ == row.classes[0] and loaded.model_info.backbone == row.key
    images = np.random.default_rng(1).random((1, 1, 50, 50), dtype=np.float32)
    with torch.inference_mode():
        ours = Predictor(loaded, device="cpu").embed(images)
        theirs = Predictor(original, device="cpu").embed(images)
    assert max(float((x - y).abs().max()) for x, y in zip(ours, theirs)) < 1e-4


def test_predict_propagates_a_volume_through_the_backbones_memory(adapter, tmp_path):
    import nibabel as nib

    from adapt.data.synthetic import write_ct_phantoms

    _, folder = adapter
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(48, 48, 4))[0]
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.merge_with(
        {
            "adapter": str(folder),
            "input": str(tmp_path / "ct" / case["image"]),
            "output": str(tmp_path / "mask.nii.gz"),
            "prompt": "box 10,12,36,40 slice=1",
            "propagation": "memory",
        }
    )
    predict.run(cfg)
    source, mask = nib.load(tmp_path / "ct" / case["image"]), nib.load(tmp_path / "mask.nii.gz")
    assert mask.shape == source.shape and np.array_equal(mask.affine, source.affine)
