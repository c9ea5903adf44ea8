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

FAST = [
    "model=tiny",
    "model.image_size=128",
    "trainer.max_steps=3",
    "data.batch_size=2",
    "data.val_batch_size=4",
    "optim.warmup_steps=1",
]


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "adapt.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
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


def test_a_short_run_caps_its_warm_up_and_prints_progress_lines(tmp_path, capsys, caplog):
    """A 4-step run with the default 20 warm-up steps learns at full rate from its first step, says
    so, and -- its output not a terminal -- prints progress lines counted in steps."""
    import csv

    from adapt.train import train

    cfg = compose_cfg(
        tmp_path,
        "recipe=demo",
        *FAST,
        "trainer.max_steps=4",
        "optim.warmup_steps=20",
        "validate_before=false",
        "progress.every_s=0.000001",
        "trainer.log_every_n_steps=1",
    )
    with caplog.at_level("WARNING"):
        train(cfg)
    assert "optim.warmup_steps=20 is more than 20 % of the run's 4 optimizer steps: warm-up capped at 1" in caplog.text
    with open(tmp_path / "logs" / "metrics.csv") as file:
        rates = [float(row[key]) for row in csv.DictReader(file) for key in row if key.startswith("lr-") and row[key]]
    assert rates[0] == pytest.approx(cfg.optim.lr)  # uncapped: 1/3 of it (warm-up over 3 of the 4 steps)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 1/4 (25 %)") and lines[-1].startswith("step 4/4 (100 %)") and "done" in lines[-1]
    for part in ("loss ", "lr ", "samples/s", "elapsed", "ETA "):
        assert part in lines[1], (part, lines[1])
    assert "training: 4 optimizer steps" in out and "validation at step 4: val/dice" in out
    assert "Epoch" not in out and "/-2" not in out


def test_the_live_bar_counts_steps_in_a_step_based_run():
    from types import SimpleNamespace

    from adapt.training.progress import StepRichProgressBar, progress_callback

    bar = StepRichProgressBar()
    bar._trainer = SimpleNamespace(max_steps=60, max_epochs=-1, global_step=17)
    assert bar._get_train_description(2) == "Step 17/60"
    bar._trainer = SimpleNamespace(max_steps=-1, max_epochs=20, global_step=17)
    assert bar._get_train_description(2).strip() == "Epoch 2/19"
    tty = SimpleNamespace(isatty=lambda: True)
    assert type(progress_callback({"lines": "auto"}, tty)).__name__ == "StepRichProgressBar"
    assert type(progress_callback({"lines": "auto"}, SimpleNamespace(isatty=lambda: False))).__name__ == "ProgressLines"
    assert type(progress_callback({"lines": True, "every_s": 5}, tty)).__name__ == "ProgressLines"


TRAINER = {
    "devices": 1,
    "num_nodes": 1,
    "val_check_interval": 1.0,
    "check_val_every_n_epoch": 1,
    "accumulate_grad_batches": 1,
    "limit_train_batches": None,
    "limit_val_batches": None,
    "overfit_batches": 0.0,
    "max_steps": -1,
    "max_epochs": 20,
}
CONSTRAINTS = [  # (trainer changes, train samples, val samples, what the refusal names; None: accepted)
    (
        {"val_check_interval": 30},
        16,
        4,
        ["trainer.val_check_interval=30", "8 training batches", "at most 8", "check_val_every_n_epoch=null"],
    ),
    ({"val_check_interval": 8}, 16, 4, None),
    ({"val_check_interval": 30, "check_val_every_n_epoch": None}, 16, 4, None),  # counted across epochs
    (
        {"val_check_interval": 5, "devices": 2},
        16,
        4,
        ["trainer.val_check_interval=5", "4 training batches per process"],
    ),
    (
        {"val_check_interval": 0.5, "check_val_every_n_epoch": None},
        16,
        4,
        ["val_check_interval=0.5", "number of steps"],
    ),
    ({"limit_train_batches": 0.1}, 16, 4, ["trainer.limit_train_batches=0.1", "no training batch of the 8", "0.125"]),
    ({"overfit_batches": 0.05}, 16, 4, ["trainer.overfit_batches=0.05"]),
    ({"limit_val_batches": 0.2}, 16, 4, ["trainer.limit_val_batches=0.2", "no validation batch of 2"]),
    ({"limit_val_batches": 0.0}, 16, 4, None),  # no validation: a choice
    ({"accumulate_grad_batches": 9}, 16, 4, ["trainer.accumulate_grad_batches=9", "8 training batches", "at most 8"]),
    ({"accumulate_grad_batches": 8}, 16, 4, None),
    ({"val_check_interval": 30, "accumulate_grad_batches": 9}, 16, 4, ["2 trainer settings"]),
]


@pytest.mark.parametrize(
    "changes, train_samples, val_samples, names", CONSTRAINTS, ids=[str(row[0]) for row in CONSTRAINTS]
)
def test_trainer_settings_are_checked_against_the_indexed_data(changes, train_samples, val_samples, names):
    from adapt.errors import ConfigError
    from adapt.training.constraints import check_against_data

    def check():
        check_against_data({**TRAINER, **changes}, train_samples, val_samples, batch_size=2, val_batch_size=2)

    if names is None:
        check()
        return
    with pytest.raises(ConfigError) as refused:
        check()
    for name in names:
        assert name in str(refused.value), (name, str(refused.value))


def test_a_run_that_max_epochs_ends_early_says_so(caplog):
    from adapt.training.constraints import check_against_data

    with caplog.at_level("WARNING"):
        check_against_data({**TRAINER, "max_steps": 100, "max_epochs": 2}, 16, 4, batch_size=2, val_batch_size=2)
    assert (
        "trainer.max_epochs=2 ends the run after about 16 optimizer steps, before trainer.max_steps=100" in caplog.text
    )


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
    missing = from_ckpt.load_state_dict(
        {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}, strict=False
    )
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
    result = run_cli(
        "recipe=ct_liver",
        f"data.root={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "data.root=" in result.stderr and "python -m adapt.data download card=msd_liver" in result.stderr


@pytest.mark.slow
def test_real_recipe_offline_names_the_model_and_how_to_supply_it(tmp_path):
    result = run_cli(
        "recipe=ct_liver", "data.card=ct_phantom", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "facebook/sam2.1-hiera-tiny" in result.stderr and "model.name=DIR" in result.stderr


@pytest.mark.slow
def test_wandb_logger_runs_offline_without_a_key(tmp_path):
    run_dir = tmp_path / "run"
    env_key = os.environ.pop("WANDB_API_KEY", None)
    try:
        result = run_cli(
            "recipe=demo",
            *FAST,
            "trainer.max_steps=1",
            "validate_before=false",
            "logger=wandb",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        )
    finally:
        if env_key:
            os.environ["WANDB_API_KEY"] = env_key
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline wandb run written"
