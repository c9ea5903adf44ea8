"""Runs of ``python -m adapt.train`` that record what each rank trained on (shared by the scaling tests).

``run_probed`` starts the command (optionally under torchrun, optionally killed mid-run) with a
callback that writes every rank's sample ids and losses, so tests compare runs step by step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

# Deterministic inputs: box prompts without jitter, no augmentation, no dropout, so the
# only differences between runs are the ones a test is about.
TINY = [
    "model=tiny",
    "model.image_size=128",
    "data.augment=false",
    "data.prompt.jitter=0.0",
    "optim.warmup_steps=1",
    "validate_before=false",
    "trainer.num_sanity_val_steps=0",
]
LORA = ["adapter=lora", "adapter.dropout=0.0"]

PROBE = '''
"""Runs adapt.train with a callback that records each rank's samples and losses (tests only)."""
import json, os, signal
from lightning.pytorch.callbacks import Callback
import adapt.train

OUT = os.environ["PROBE_DIR"]
KILL_AT_EPOCH, KILL_AT_STEP = int(os.environ.get("KILL_AT_EPOCH", "-1")), int(os.environ.get("KILL_AT_STEP", "-1"))


class Probe(Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == KILL_AT_EPOCH:  # a hard kill, as a preempted job gets
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == KILL_AT_STEP:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        meta = batch["meta"]
        ids = [f"{c}#{int(s)}#{t}" for c, s, t in zip(meta["case"], meta["slice"], meta["target"])]
        row = {"rank": trainer.global_rank, "step": trainer.global_step - 1, "ids": ids, "loss": float(outputs["loss"])}
        with open(os.path.join(OUT, f"rank{trainer.global_rank}.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\\n")


import adapt.training.callbacks  # adapt.training.trainer imports build_callbacks from here when it builds the trainer
build = adapt.training.callbacks.build_callbacks
adapt.training.callbacks.build_callbacks = lambda *args, **kwargs: build(*args, **kwargs) + [Probe()]
adapt.train.main()
'''


def run_probed(
    tmp_path: Path,
    name: str,
    *overrides: str,
    kill_at_epoch: int = -1,
    kill_at_step: int = -1,
    timeout: int = 240,
    launcher: tuple[str, ...] = (),
    run_dir: Path | None = None,
):
    """``python -m adapt.train`` (through the probe) into ``run_dir`` (default ``tmp_path/name``);
    returns (result, run_dir, rows).

    ``kill_at_epoch`` / ``kill_at_step``: SIGKILL at the start of that epoch / before that
    global step's batch. ``launcher``: arguments of ``python -m torch.distributed.run`` to
    start the ranks with torchrun.
    """
    script, probe_dir, run_dir = tmp_path / "probe.py", tmp_path / f"{name}-probe", run_dir or tmp_path / name
    script.write_text(PROBE)
    probe_dir.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
        "PROBE_DIR": str(probe_dir),
        "KILL_AT_EPOCH": str(kill_at_epoch),
        "KILL_AT_STEP": str(kill_at_step),
        "OMP_NUM_THREADS": "1",
    }
    start = [sys.executable, "-m", "torch.distributed.run", *launcher] if launcher else [sys.executable]
    result = subprocess.run(
        [*start, str(script), *overrides, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    rows = {
        int(p.stem.removeprefix("rank")): [json.loads(line) for line in p.read_text().splitlines()]
        for p in probe_dir.glob("rank*.jsonl")
    }
    return result, run_dir, rows


def read_train_losses(run_dir: Path) -> list[float]:
    logged = pd.read_csv(run_dir / "logs" / "metrics.csv").dropna(subset=["train/loss_step"])
    return logged.sort_values("step")["train/loss_step"].tolist()
