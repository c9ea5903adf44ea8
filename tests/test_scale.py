"""Scaling a run: DDP on CPU (gloo), mixed precision, gradient accumulation, resume, SLURM launcher.

The DDP and resume tests run ``python -m adapt.train`` in subprocesses through a small
probe script (written to the test's temp dir) that adds one callback recording, per rank
and step, the sample ids and the loss; Lightning's DDP launcher re-runs that script for
rank 1, so both ranks are probed.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file
from conftest import compose_cfg
from probe_run import LORA, TINY, read_train_losses, run_probed

from adapt.conf import CONFIG_DIR
from adapt.errors import ConfigError

# --------------------------------------------------------------------------- DDP


def adam_moments(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW's moments in a Lightning checkpoint, by trainable weight name (checkpoints key them
    by index: into the trainable weights in one process, into all the model's under FSDP)."""
    saved = torch.load(checkpoint, weights_only=False)
    names, state = list(saved["state_dict"]), saved["optimizer_states"][0]["state"]
    return {name: state[key] for name, key in zip(names, sorted(state), strict=True)}


@pytest.mark.slow
def test_two_cpu_fsdp_ranks_shard_the_data_and_match_one_process_with_the_global_batch(tmp_path):
    """trainer=fsdp (sharded weights, gathered to rank 0 for the adapter and the checkpoints)
    against one process with the global batch. Every step's gradients are clipped (a tiny
    gradient_clip_val): the norm must be the global one, not a rank's shard's. trainer=ddp shares
    the sampler, the metric reduction and the rank-0 writes tested here; its two ranks are
    started and checked (disjoint shards, one writer) by the torchrun test below, and it is not
    run a second time here to keep the suite within its time (it passed the same assertions)."""
    common = [
        *TINY,
        *LORA,
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "validate_before=true",
        "trainer.gradient_clip_val=1e-6",
        "trainer.log_every_n_steps=1",
        "data.val_batch_size=4",
        "data.val_max_slices_per_case=2",
    ]
    ranked, ranked_dir, ranks = run_probed(
        tmp_path, "fsdp", *common, "trainer=fsdp", "trainer.devices=2", "data.batch_size=2"
    )
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    # Reference: one process, same EpochSampler order (one replica, same seed), batch 2 x 2.
    one, one_dir, single = run_probed(tmp_path, "one", *common, "trainer.devices=1", "data.batch_size=4")
    assert one.returncode == 0, one.stderr[-3000:]

    assert sorted(ranks) == [0, 1] and [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == [0, 1]
    for step in (0, 1):
        ids0, ids1 = set(ranks[0][step]["ids"]), set(ranks[1][step]["ids"])
        assert len(ids0) == len(ids1) == 2 and not ids0 & ids1, "ranks must train on disjoint shards"
        assert ids0 | ids1 == set(single[0][step]["ids"]), "together the ranks see the global batch"
        # Each rank's loss is the mean over its half, so their mean is the global batch's loss; at
        # step 1 it also shows that the reduced step-0 gradients gave the same weights.
        mean = (ranks[0][step]["loss"] + ranks[1][step]["loss"]) / 2
        assert mean == pytest.approx(single[0][step]["loss"], rel=2e-4, abs=1e-5)
    assert ranks[0][0]["loss"] != pytest.approx(ranks[1][0]["loss"], rel=1e-3), "shards this alike prove nothing"

    # Only rank 0 writes: the adapter and metrics.json are written in the same branch that prints
    # the summary, and both ranks share stdout, so one summary means one writer.
    assert ranked.stdout.count("run written to") == 1
    metrics, reference = (json.loads((d / "metrics.json").read_text()) for d in (ranked_dir, one_dir))
    # Metrics are reduced across ranks: each rank validates half of the (even) validation set,
    # and the logged value is the mean over both halves, i.e. the single process's value.
    for stage in ("before", "after"):
        assert metrics[stage]["val/loss"] == pytest.approx(reference[stage]["val/loss"], rel=1e-3), stage
    logged = pd.read_csv(ranked_dir / "logs" / "metrics.csv").dropna(subset=["train/loss_step"])
    assert logged["train/loss_step"].iloc[0] == pytest.approx(single[0][0]["loss"], rel=2e-4)

    # The adapter holds whole LoRA matrices under peft's names (not one rank's shards), the
    # weights of the single process; the checkpoint holds the same trainable weights and AdamW
    # moments (two tensors each, not one memory read twice).
    adapter, expected = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (ranked_dir, one_dir))
    assert adapter.keys() == expected.keys() and any("lora_B" in name for name in expected)
    for name, weight in expected.items():
        torch.testing.assert_close(adapter[name], weight, rtol=1e-3, atol=2e-6, msg=name)
    moments, expected = (adam_moments(d / "checkpoints" / "last.ckpt") for d in (ranked_dir, one_dir))
    assert moments.keys() == expected.keys()
    for name, state in expected.items():
        for moment in ("exp_avg", "exp_avg_sq"):
            scale = float(state[moment].abs().max())
            torch.testing.assert_close(
                moments[name][moment], state[moment], rtol=1e-3, atol=1e-3 * scale, msg=f"{name} {moment}"
            )


def test_the_fsdp_config_shards_the_hiera_blocks_and_a_bad_block_class_is_named(tmp_path):
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleBlock

    from adapt.training.strategies import FSDPStrategy
    from adapt.training.trainer import build_trainer

    fsdp = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"]
    strategy = build_trainer(compose_cfg(tmp_path, *fsdp), tmp_path).strategy
    assert isinstance(strategy, FSDPStrategy) and strategy.root_device.type == "cpu"
    policy = strategy.kwargs["auto_wrap_policy"]  # from the YAML list of import paths
    assert isinstance(policy, ModuleWrapPolicy) and set(policy._module_classes) == {Sam2MultiScaleBlock}

    wrong = "trainer.strategy.auto_wrap_policy=[transformers.models.sam2.modeling_sam2.Sam2Block]"
    with pytest.raises(
        ConfigError,
        match=r"^trainer\.strategy\.auto_wrap_policy: cannot import "
        r"'transformers\.models\.sam2\.modeling_sam2\.Sam2Block' \(module .* has "
        r"no attribute 'Sam2Block'\); .* e\.g\. .*\.Sam2MultiScaleBlock$",
    ):
        build_trainer(compose_cfg(tmp_path, *fsdp, wrong), tmp_path)


@pytest.mark.slow
def test_torchrun_starts_the_ranks_and_lightning_reads_them_from_its_environment(tmp_path):
    result, run_dir, ranks = run_probed(
        tmp_path,
        "torchrun",
        *TINY,
        *LORA,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=1",
        "data.batch_size=2",
        "trainer.limit_val_batches=1",
        "data.val_batch_size=2",
        launcher=("--standalone", "--nproc_per_node=2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(ranks) == [0, 1]
    assert not set(ranks[0][0]["ids"]) & set(ranks[1][0]["ids"])
    assert result.stdout.count("run written to") == 1 and (run_dir / "adapter" / "adapter_config.json").is_file()
    assert not (run_dir / "train_ddp_process_1.log").exists(), "torchrun started the ranks, not Lightning"


# --------------------------------------------------------------------------- SLURM launcher


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_submitit_slurm_launcher_takes_its_shape_from_the_trainer():
    import hydra
    from hydra.plugins.launcher import Launcher
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from omegaconf import OmegaConf

    cfg = compose_with_hydra(
        "hydra/launcher=submitit_slurm",
        "recipe=demo",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
    )
    launcher = cfg.hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)  # one task per GPU
    assert launcher.name == "demo" and launcher.partition == "gpu" and launcher.timeout_min == 1440
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    launcher_cls = hydra.utils.get_class(launcher._target_)
    assert issubclass(launcher_cls, Launcher) and launcher_cls.__qualname__ == SlurmLauncher.__qualname__
    # Every field is one the plugin knows, with the plugin's types.
    schema = OmegaConf.merge(OmegaConf.structured(SlurmQueueConf), OmegaConf.to_container(launcher, resolve=True))
    assert schema.gpus_per_node == 4

    unset = compose_with_hydra("hydra/launcher=submitit_slurm", "trainer=ddp")  # devices: auto
    assert unset.hydra.launcher.partition is None  # left for the user
    with pytest.raises(Exception, match="gpus_per_node"):
        _ = unset.hydra.launcher.gpus_per_node


# --------------------------------------------------------------------------- precision


def test_bf16_mixed_on_cpu_trains_and_saves_the_adapter(tmp_path):
    from adapt.train import train

    # The decoder adapter fits one fixed batch of the tiny model within a few steps; the encoder
    # is run too (no embedding cache), so both halves of SAM2 go through bf16 autocast.
    cfg = compose_cfg(
        tmp_path,
        *TINY,
        "adapter=decoder",
        "embedding_cache.mode=off",
        "trainer.accelerator=cpu",
        "trainer.precision=bf16-mixed",
        "trainer.overfit_batches=1",
        "trainer.max_steps=8",
        "trainer.log_every_n_steps=1",
        "data.batch_size=2",
        "optim.lr=3e-3",
        "trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1000",
    )  # one-batch epochs: validate only after fit
    _, objects = train(cfg)
    task, trainer = objects["task"], objects["trainer"]
    assert trainer.precision == "bf16-mixed"
    losses = read_train_losses(tmp_path)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], f"no progress on one fixed batch: {losses}"
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert {w.dtype for w in weights.values()} == {torch.float32}  # master weights stay float32

    # The trainer's precision context really computes the encoder's matmuls in bf16.
    dtypes = []
    linear = next(m for n, m in task.model.named_modules() if "vision_encoder" in n and isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    batch = next(iter(objects["datamodule"].val_dataloader()))
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        task(batch)
    assert dtypes and set(dtypes) == {torch.bfloat16}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_16_mixed_on_cpu_warns_and_trains_in_bf16(tmp_path, caplog):
    from adapt.training.trainer import build_trainer

    cfg = compose_cfg(tmp_path, "model=tiny", "trainer.accelerator=cpu", "trainer.precision=16-mixed")
    with caplog.at_level(logging.WARNING, logger="adapt.training.trainer"):
        trainer = build_trainer(cfg, tmp_path)
    assert "16-mixed needs a CUDA GPU" in caplog.text
    assert trainer.precision == "bf16-mixed"


# --------------------------------------------------------------------------- gradient accumulation


def accumulated_gradients(samples: list[dict], batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
    """Gradients Lightning hands the optimizer for its first step, with the segmentation task."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader

    from adapt.tasks.segmentation import SegmentationTask

    class Grab(Callback):
        grads: dict[str, torch.Tensor] = {}

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self.grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    task = SegmentationTask(
        model={"name": "tiny", "image_size": 128},
        adapter={"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]},
        optim={"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1},
        loss={},
    )
    grab = Grab()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        accumulate_grad_batches=accumulate,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[grab],
    )
    trainer.fit(task, DataLoader(samples, batch_size=batch_size, shuffle=False))
    return grab.grads


def test_accumulating_two_batches_of_one_gives_the_gradient_of_a_batch_of_two(box_batch):
    samples = [{k: v[i] for k, v in box_batch.items()} for i in range(2)]
    accumulated = accumulated_gradients(samples, batch_size=1, accumulate=2)
    whole = accumulated_gradients(samples, batch_size=2, accumulate=1)
    single = accumulated_gradients(samples[:1], batch_size=1, accumulate=1)
    assert accumulated.keys() == whole.keys() and len(whole) > 10
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-7)
    # ... and not the first sample's gradient alone (the check can fail).
    assert any(not torch.allclose(single[n], whole[n], rtol=1e-2, atol=1e-6) for n in whole)


# --------------------------------------------------------------------------- resume


def test_ckpt_path_last_without_a_checkpoint_stops_with_the_fix(tmp_path):
    from adapt.training.checkpoints import resolve_checkpoint

    with pytest.raises(
        ConfigError, match=r"no checkpoint at .*last\.ckpt.*hydra\.run\.dir=<that run dir> ckpt_path=last"
    ):
        resolve_checkpoint("last", tmp_path)
    with pytest.raises(ConfigError, match="ckpt_path=nowhere.ckpt: no checkpoint at nowhere.ckpt"):
        resolve_checkpoint("nowhere.ckpt", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resolve_checkpoint("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_checkpoint(None, tmp_path) is None


def test_last_checkpoint_is_the_latest_state_even_when_the_monitored_metric_gets_worse(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    from adapt.training.callbacks import build_callbacks

    class Worsening(L.LightningModule):
        """One weight; its validation Dice falls every epoch, so only the first is 'best'."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.weight - batch).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/dice", 1.0 / (1 + self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(torch.ones(2, 1), batch_size=1)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=build_callbacks(tmp_path),
    )
    trainer.fit(Worsening(), data, data)
    best = sorted(p.name for p in (tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert best == ["best-2.ckpt"]  # the first epoch's
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6 and last["epoch"] == 2
    # Lightning's own save_last=True would have left last.ckpt at step 2 here (it rewrites it
    # only with an improved best checkpoint), and ckpt_path=last would resume 4 steps back.


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the probed subprocesses: float sums then agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_killed_run_resumed_with_ckpt_path_last_ends_as_the_uninterrupted_run(tmp_path, one_thread):
    from adapt.train import train

    # Randomness the resume must restore: shuffled order, jittered prompts, augmentation, dropout.
    run = [
        *TINY,
        "adapter=lora",
        "adapter.dropout=0.1",
        "data.prompt.jitter=0.1",
        "data.augment=true",
        "data.batch_size=2",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "data.val_batch_size=2",
    ]
    killed, run_dir, _ = run_probed(tmp_path, "killed", *run, kill_at_epoch=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4 and not (run_dir / "adapter").exists()
    # Lean checkpoints (trainable weights only) still carry AdamW's moments and the schedule.
    assert len(ckpt["optimizer_states"][0]["state"]) == len(ckpt["state_dict"]) > 0
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 4

    resumed, _ = train(compose_cfg(run_dir, *run, "ckpt_path=last"))
    whole_dir = tmp_path / "whole"
    whole, _ = train(compose_cfg(whole_dir, *run))
    assert resumed["steps"] == whole["steps"] == 6
    a, b = (
        load_file(run_dir / "adapter" / "adapter_model.safetensors"),
        load_file(whole_dir / "adapter" / "adapter_model.safetensors"),
    )
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-8)
    assert resumed["after"]["val/loss"] == pytest.approx(whole["after"]["val/loss"], rel=1e-6)
    # The weights moved after the kill: the comparison is between two runs that trained on.
    final_ckpt = torch.load(whole_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final_ckpt["global_step"] == 6, "last.ckpt is the latest state, improved or not"
    final = final_ckpt["state_dict"]
    assert final.keys() == ckpt["state_dict"].keys()
    assert any(not torch.allclose(ckpt["state_dict"][n], final[n]) for n in final)


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2], ids=["one_process", "fsdp_two_ranks"])
def test_a_run_killed_mid_epoch_resumes_on_the_batches_it_had_not_trained_on(ranks, tmp_path):
    # Two epochs of 4 batches, validated (and checkpointed) every 2 batches; killed before
    # step 7, i.e. one batch after the checkpoint of step 6, in the middle of the second epoch.
    # With two FSDP ranks the checkpoint is gathered from shards and resumed into shards. The
    # checkpoint holds rank 0's random generators; the ranks are seeded alike and draw alike
    # (dropout on same-shaped batches), so those are rank 1's too and its dropout resumes exactly.
    layout = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"] if ranks == 2 else []
    run = [
        *TINY,
        "adapter=lora",
        *layout,
        "adapter.dropout=0.1",
        "data.prompt.jitter=0.1",
        "data.augment=true",
        "data.batch_size=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "data.val_batch_size=2",
    ]
    killed, run_dir, before = run_probed(tmp_path, "killed", *run, kill_at_step=7)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2, "batch_size": 2, "ranks": ranks}
    ]

    resumed, _, after = run_probed(tmp_path, "resumed", *run, "ckpt_path=last", run_dir=run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    whole, whole_dir, reference = run_probed(tmp_path, "whole", *run)
    assert whole.returncode == 0, whole.stderr[-3000:]

    assert sorted(reference) == list(range(ranks))
    for rank in range(ranks):
        assert [r["step"] for r in reference[rank]] == list(range(8))
        # The killed run trained steps 0..6; the resumed run exactly the last two batches of the
        # epoch, the same samples (shuffled order, jittered prompts, augmentation) and losses.
        assert [r["step"] for r in after[rank]] == [6, 7]
        for row, expected in zip(before[rank] + after[rank], reference[rank][:7] + reference[rank][6:]):
            assert row["ids"] == expected["ids"]
            assert row["loss"] == pytest.approx(expected["loss"], rel=1e-6), (rank, row["step"])
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (run_dir, whole_dir))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_hiera_blocks_train_as_the_eager_ones(tmp_path):
    """compile=<backend> goes through torch.compile and changes no number. The ``eager`` backend
    runs dynamo's tracing of every block but not inductor's code generation, which took 11 min for
    3 tiny steps on this 2-core CPU (``compile=true``)."""
    from torch._dynamo.utils import counters

    from adapt.train import train

    # No validation: eval mode would trace every block a second time (~45 s here) and adds no
    # check that the two training steps (forward, backward through the compiled blocks, update) miss.
    run = [
        *TINY,
        *LORA,
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.max_steps=2",
        "trainer.log_every_n_steps=1",
        "data.batch_size=2",
        "trainer.limit_val_batches=0",
    ]
    train(compose_cfg(tmp_path / "eager", *run))
    counters.clear()
    _, objects = train(compose_cfg(tmp_path / "compiled", *run, "compile=eager"))
    blocks = objects["task"].model.get_base_model().vision_encoder.backbone.blocks
    assert all(block._compiled_call_impl is not None for block in blocks)
    # Every traced frame compiled: no block fell back to eager past dynamo's recompile limit.
    assert counters["stats"]["unique_graphs"] >= 8 and counters["frames"]["ok"] == counters["frames"]["total"]
    assert not counters["unimplemented"], list(counters["unimplemented"])
    losses = read_train_losses(tmp_path / "compiled")
    assert len(losses) == 2
    np.testing.assert_allclose(losses, read_train_losses(tmp_path / "eager"), rtol=1e-5)
