"""End to end: `python -m adapt.train` on generated phantoms with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_cfg
import torch

from adapt.adapters import apply_adapter
from adapt.adapters.io import load_adapter_weights, read_metadata
from adapt.conf import recipe_names, register_recipes, register_resolvers
from adapt.models.primitives import preprocess
from adapt.models.sam2 import load_sam2

register_resolvers()
register_recipes()

FAST = ["model=tiny", "model.image_size=128", "trainer.max_steps=3", "data.batch_size=2", "data.val_batch_size=4", "optim.warmup_steps=1"]


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "adapt.train", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_composes(recipe, tmp_path):
    cfg = compose_cfg(tmp_path, f"recipe={recipe}")
    assert cfg.name == recipe and cfg.adapter.kind and cfg.data.card and cfg.model.name


@pytest.mark.parametrize("group", ["recipe", "adapter", "model", "logger"])
def test_unknown_choice_lists_the_valid_ones(group, tmp_path):
    with pytest.raises(Exception) as err:
        compose_cfg(tmp_path, f"{group}=nonexistent")
    assert f"Could not find '{group}/nonexistent'" in str(err.value)
    assert "Available options" in str(err.value)


def test_train_in_process_writes_an_adapter_that_reproduces_the_model(tmp_path):
    from adapt.train import train

    cfg = compose_cfg(tmp_path, "recipe=demo", *FAST)
    metrics, objects = train(cfg)
    assert metrics["steps"] == 3
    assert {"val/dice", "val/iou"} <= metrics["before"].keys() and {"val/dice", "val/iou"} <= metrics["after"].keys()
    assert 0.0 <= metrics["after"]["val/dice"] <= 1.0
    assert metrics["params"]["trainable"] < metrics["params"]["total"]
    for name in ("config.yaml", "metrics.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (tmp_path / name).exists(), name
    meta = read_metadata(tmp_path / "adapter")
    assert meta["base_model"]["name"] == "tiny" and meta["data_card"] == "ct_phantom"
    assert meta["label_map"] and meta["preprocessing"]

    trained = objects["task"].model.eval()
    loaded = load_adapter_weights(load_sam2("tiny")[0], tmp_path / "adapter")
    batch = next(iter(objects["datamodule"].val_dataloader()))
    pixels = preprocess(batch["image"], 128)
    with torch.no_grad():
        a = trained(pixel_values=pixels, input_boxes=batch["boxes"], multimask_output=False).pred_masks
        b = loaded(pixel_values=pixels, input_boxes=batch["boxes"], multimask_output=False).pred_masks
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    # checkpoints hold the trainable weights only
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    trainable = {f"model.{n}" for n, p in trained.named_parameters() if n and "lora_" in n}
    assert set(ckpt["state_dict"]) == trainable


@pytest.mark.slow
def test_cli_demo_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("recipe=demo", *FAST, "adapter=bottleneck", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "NOT PRETRAINED" in out and "val/dice before → after" in out and str(run_dir) in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["adapter"]["kind"] == "bottleneck" and metrics["model"]["pretrained"] is False

    # The adapter on a fresh base equals the model rebuilt from the last checkpoint.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    from_ckpt = apply_adapter(load_sam2("tiny")[0], metrics["adapter"])
    missing = from_ckpt.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}, strict=False)
    assert not missing.unexpected_keys
    loaded = load_adapter_weights(load_sam2("tiny")[0], run_dir / "adapter")
    pixels = preprocess(torch.rand(2, 1, 128, 128))
    boxes = torch.tensor([[[20.0, 20, 90, 90]], [[10.0, 40, 60, 100]]])
    with torch.no_grad():
        a = from_ckpt.eval()(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks
        b = loaded(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # A second run into the same directory is refused without a change: tests/test_faults.py's CLI
    # row "train: finished run dir, .hydra kept".


@pytest.mark.slow
def test_real_recipe_without_data_stops_at_once_with_the_fix(tmp_path):
    result = run_cli("recipe=ct_liver", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "data.root=" in result.stderr and "python -m adapt.data download card=msd_liver" in result.stderr


@pytest.mark.slow
def test_real_recipe_offline_names_the_model_and_how_to_supply_it(tmp_path):
    result = run_cli("recipe=ct_liver", "data.card=ct_phantom", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "facebook/sam2.1-hiera-tiny" in result.stderr and "model.name=DIR" in result.stderr


@pytest.mark.slow
def test_wandb_logger_runs_offline_without_a_key(tmp_path):
    run_dir = tmp_path / "run"
    env_key = os.environ.pop("WANDB_API_KEY", None)
    try:
        result = run_cli("recipe=demo", *FAST, "trainer.max_steps=1", "validate_before=false", "logger=wandb",
                         f"hydra.run.dir={run_dir}", cwd=tmp_path)
    finally:
        if env_key:
            os.environ["WANDB_API_KEY"] = env_key
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline wandb run written"
