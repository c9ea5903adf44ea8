"""``python -m adapt.train ... init_adapter=<adapter>``: a new run whose adapter starts from another's weights.

At zero steps the task's trainable weights are the source's, exactly, for a peft kind and one of ours; a run
trained at a vanishing learning rate saves them unchanged and records where it started; a source whose
backbone, base, task or adapter shape differs from the config is refused before data or model load.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_cfg, tiny_task_args
from omegaconf import OmegaConf
from peft import get_peft_model_state_dict
from safetensors.torch import load_file
from tiny_adapters import BOTTLENECK, LORA, make_adapter

from adapt.adapters.io import WEIGHTS_FILE, read_metadata, trainable_state_dict
from adapt.adapters.warm_start import load_init_weights, resolve_init
from adapt.data.card_copy import public_metadata
from adapt.errors import ConfigError

#: kind -> (its spec, the task model's weights as the adapter file names them)
KINDS = {
    "lora (peft's layout)": (LORA, get_peft_model_state_dict),
    "bottleneck (our layout)": (BOTTLENECK, trainable_state_dict),
}


@pytest.mark.parametrize("kind", KINDS)
def test_at_zero_steps_the_weights_are_the_source_adapters(kind, tmp_path):
    from adapt.tasks.segmentation import SegmentationTask

    spec, named = KINDS[kind]
    source = make_adapter(tmp_path / "source", 128, spec)
    task = SegmentationTask(**tiny_task_args(adapter=json.loads(json.dumps(spec))))
    fresh = {k: v.clone() for k, v in named(task.model).items()}
    init = resolve_init(str(source), "tiny", spec, "segmentation")
    load_init_weights(task.model, init, task.model_info)
    stored, started = load_file(source / WEIGHTS_FILE), named(task.model)
    assert set(started) == set(stored)
    for name, value in stored.items():
        torch.testing.assert_close(started[name], value, rtol=0, atol=0, msg=name)
    assert sum(not torch.equal(fresh[n], stored[n]) for n in stored) > len(stored) // 2  # not the fresh values


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny adapter recorded as the default LoRA of ``model=tiny`` (the run's own settings)."""
    cfg = compose_cfg(tmp_path_factory.mktemp("cfg"), "model=tiny")
    spec = OmegaConf.to_container(cfg.adapter, resolve=True)
    return make_adapter(tmp_path_factory.mktemp("warm") / "adapter", 128, spec)


def test_a_warm_started_run_is_a_new_run_that_records_where_it_started(source, tmp_path):
    from adapt.train import train

    run = tmp_path / "run"
    overrides = [
        "recipe=demo",
        "model=tiny",
        "model.image_size=128",
        "trainer.max_steps=1",
        "data.batch_size=2",
        "data.val_max_slices_per_case=1",
    ]
    metrics, _ = train(
        compose_cfg(run, *overrides, "optim.lr=1e-30", "validate_before=false", f"init_adapter={source}")
    )
    assert metrics["steps"] == 1 and metrics["initialised_from"]["source"] == str(source.resolve())
    recorded = read_metadata(run / "adapter")
    assert recorded["initialised_from"]["path"] == str(source.resolve())
    assert public_metadata(recorded)["initialised_from"]["path"] == source.name  # no local path on the Hub
    assert json.loads((run / "metrics.json").read_text())["initialised_from"]["source"] == str(source)
    saved, stored = load_file(run / "adapter" / WEIGHTS_FILE), load_file(source / WEIGHTS_FILE)
    assert set(saved) == set(stored)
    for name, value in stored.items():  # one step at lr=1e-30 moves no float32 weight
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0, msg=name)


#: what differs -> (the override, the refusal names the source's and the run's value)
MISMATCHES = {
    "adapter rank": ("adapter.rank=2", "adapter.rank: 8 vs 2"),
    "adapter targets": ("adapter.targets=[decoder_attn]", "adapter.targets: ['encoder_attn', 'decoder_attn'] vs"),
    "adapter kind": ("adapter=bottleneck", "adapter.kind: lora vs bottleneck"),
    "task": ("task=semantic", "task: segmentation vs semantic"),
    "backbone": ("model=tiny_sam3_tracker", "backbone: SAM2.1 (Hiera) vs SAM 3"),
    "image size": ("model.image_size=256", "model.image_size: 128 vs 256"),
}


@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_a_source_that_does_not_fit_is_refused_before_data_and_model_load(source, tmp_path, mismatch, forbid_model):
    from adapt.train import train

    override, message = MISMATCHES[mismatch]
    cfg = compose_cfg(tmp_path / "run", "model=tiny", override, f"init_adapter={source}")
    with pytest.raises(ConfigError, match="does not fit this run") as refused:
        train(cfg)
    assert message in str(refused.value) and "drop init_adapter=" in str(refused.value)
    assert not (tmp_path / "run").exists()


#: what init_adapter= names instead of an adapter -> what the refusal adds
NOT_ADAPTERS = {
    "an empty folder": (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "takes an adapter to start a new run"),
    "a checkpoint file": (lambda tmp: (tmp / "last.ckpt").write_bytes(b"x") and tmp / "last.ckpt", "ckpt_path="),
}


@pytest.mark.parametrize("given", NOT_ADAPTERS)
def test_init_adapter_naming_no_adapter_is_refused_naming_the_key(tmp_path, given, forbid_model):
    from adapt.train import train

    make, fix = NOT_ADAPTERS[given]
    path = make(tmp_path)
    with pytest.raises(ConfigError) as refused:
        train(compose_cfg(tmp_path / "run", "model=tiny", f"init_adapter={path}"))
    assert str(refused.value).startswith(f"init_adapter={path}: ") and fix in str(refused.value)
    assert "is not an adapter" in str(refused.value) and not (tmp_path / "run").exists()
