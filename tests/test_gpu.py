"""CUDA checks: mixed precision steps, DDP and FSDP over GPUs. Skipped cleanly on machines without CUDA.

Run on a GPU machine with ``python -m pytest -q -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from conftest import compose_cfg
from probe_run import LORA, TINY, read_train_losses, run_probed

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_steps_on_cuda_train_and_save_the_adapter(precision, tmp_path):
    from adapt.train import train

    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = compose_cfg(
        tmp_path,
        *TINY,
        "adapter=decoder",
        "embedding_cache.mode=off",
        "trainer.accelerator=gpu",
        f"trainer.precision={precision}",
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
    assert trainer.precision == precision and task.device.type == "cuda"
    losses = read_train_losses(tmp_path)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], f"no progress on one fixed batch: {losses}"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    dtypes = []
    linear = next(m for n, m in task.model.named_modules() if "vision_encoder" in n and isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    batch = next(iter(objects["datamodule"].val_dataloader()))
    batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        task(batch)
    assert set(dtypes) == {torch.bfloat16 if precision.startswith("bf16") else torch.float16}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_on_two_gpus_shards_the_data_and_writes_once(tmp_path):
    result, run_dir, ranks = run_probed(
        tmp_path,
        "ddp-gpu",
        *TINY,
        *LORA,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.precision=bf16-mixed",
        "trainer.max_steps=2",
        "data.batch_size=2",
        "trainer.limit_val_batches=1",
        "data.val_batch_size=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(ranks) == [0, 1]
    for step in (0, 1):
        assert not set(ranks[0][step]["ids"]) & set(ranks[1][step]["ids"])
    assert result.stdout.count("run written to") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0.0 <= metrics["after"]["val/dice"] <= 1.0


@pytest.mark.slow
def test_fsdp_trains_and_saves_the_same_adapter_as_one_unsharded_gpu(tmp_path):
    """trainer=fsdp on GPUs (tests/test_scale.py runs it on two CPU ranks): the adapter rank 0
    writes must hold whole LoRA matrices under their peft names, as a plain run's, not shards."""
    common = [
        *TINY,
        *LORA,
        "trainer.precision=32-true",
        "trainer.max_steps=2",
        "data.batch_size=2",
        "trainer.limit_val_batches=1",
        "data.val_batch_size=2",
    ]
    devices = min(torch.cuda.device_count(), 2)
    fsdp, fsdp_dir, _ = run_probed(
        tmp_path, "fsdp", *common, "trainer=fsdp", f"trainer.devices={devices}", f"data.batch_size={2 // devices}"
    )
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    plain, plain_dir, _ = run_probed(tmp_path, "plain", *common, "trainer.accelerator=gpu", "trainer.devices=1")
    assert plain.returncode == 0, plain.stderr[-3000:]
    sharded, whole = (load_file(Path(d) / "adapter" / "adapter_model.safetensors") for d in (fsdp_dir, plain_dir))
    assert sharded.keys() == whole.keys() and sharded
    for name in whole:
        assert sharded[name].shape == whole[name].shape, name
        torch.testing.assert_close(sharded[name], whole[name], rtol=1e-3, atol=1e-5)
