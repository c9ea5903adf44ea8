"""No connection unless asked: every command runs under a guard that refuses and records any name
lookup or connection outside loopback (``tests/offline_guard/sitecustomize.py``), in an environment
without the opt-out variables ``import adapt`` sets (as a user's shell would be), and without
``HF_HUB_OFFLINE`` (nothing here names a Hub model, so nothing may ask the Hub).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapt import OFFLINE_DEFAULTS
from adapt.conf import REPO_ROOT

from conftest import PHANTOM_SHAPE

GUARD = Path(__file__).parent / "offline_guard"


def guarded_env(log: Path, **extra: str) -> dict[str, str]:
    """The environment of a guarded subprocess: the guard on, the opt-outs and Hub offline mode unset."""
    env = {
        k: v for k, v in os.environ.items() if k not in OFFLINE_DEFAULTS and k not in ("HF_HUB_OFFLINE", "WANDB_MODE")
    }
    env.update(PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO_ROOT)]), ADAPT_NETWORK_LOG=str(log), **extra)
    return env


def guarded(args: list[str], log: Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """``python <args>`` under the guard; fails the test, with the attempts, when one was made."""
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=guarded_env(log, **extra), capture_output=True, text=True, timeout=600
    )
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"python {' '.join(args)} tried the network:\n{attempts}"
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_guard_records_albumentations_update_check_without_adapt(tmp_path):
    """The control: the guard sees the connection albumentations makes at import when nothing stops it."""
    log = tmp_path / "network.log"
    subprocess.run(
        [sys.executable, "-c", "import albumentations"],
        env=guarded_env(log),
        capture_output=True,
        timeout=300,
        check=True,
    )
    assert "pypi.org" in log.read_text()


@pytest.mark.slow  # command lines in subprocesses
def test_import_adapt_stops_it_and_keeps_a_users_setting(tmp_path):
    log = tmp_path / "network.log"
    code = "import os, adapt, albumentations; print(os.environ['NO_ALBUMENTATIONS_UPDATE'], os.environ['GRADIO_ANALYTICS_ENABLED'])"
    assert guarded(["-c", code], log, tmp_path).stdout.split() == ["1", "False"]
    mine = guarded(["-c", code], log, tmp_path, GRADIO_ANALYTICS_ENABLED="True")
    assert mine.stdout.split() == ["1", "True"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Phantoms and a two-step tiny run trained under the guard (``adapt.train``)."""
    from adapt.data.synthetic import write_ct_phantoms

    base = tmp_path_factory.mktemp("offline")
    write_ct_phantoms(base / "phantoms", num_cases=3, shape=PHANTOM_SHAPE)
    guarded(
        [
            "-m",
            "adapt.train",
            "recipe=demo",
            "model=tiny",
            "model.image_size=64",
            "trainer.max_steps=2",
            "data.batch_size=2",
            "data.val_batch_size=2",
            "optim.warmup_steps=1",
            "validate_before=false",
            "data.val_max_slices_per_case=2",
            "data.num_workers=0",
            f"data.root={base / 'phantoms'}",
            f"hydra.run.dir={base / 'run'}",
        ],
        base / "network.log",
        base,
        SAM2_ADAPT_DATA=str(base / "cache"),
    )
    return base


APP_BUILD = (
    "import sys; from omegaconf import OmegaConf; from adapt.conf import CONFIG_DIR; "
    "from adapt.app.__main__ import build; cfg = OmegaConf.load(CONFIG_DIR / 'app.yaml'); "
    "cfg.adapter, cfg.out_dir = sys.argv[1], sys.argv[2]; build(cfg)"
)
COMMANDS = {
    "evaluate": ["-m", "adapt.evaluate", "adapter={run}", "data.root={data}", "out={out}/eval"],
    "predict": [
        "-m",
        "adapt.predict",
        "adapter={run}",
        "input={image}",
        "output={out}/mask.nii.gz",
        "prompt=box 10,10,30,30 slice=4",
    ],
    "export": ["-m", "adapt.export", "adapter={run}", "format=safetensors", "out={out}/export"],
    "app page": ["-c", APP_BUILD, "{run}", "{out}/masks"],
    "data init": ["-m", "adapt.data", "init", "{data}", "out={out}/card.yaml"],
    "data check": ["-m", "adapt.data", "check", "card=ct_phantom", "root={data}", "out={out}/check.png"],
    "hub push dry_run": [
        "-m",
        "adapt.hub",
        "push",
        "adapter={run}",
        "repo_id=me/sam2-offline",
        "dry_run=true",
        "out_dir={out}/hub",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_command_connects_nowhere(command, workspace, tmp_path):
    data = workspace / "phantoms"
    image = sorted((data / "imagesTr").glob("*.nii.gz"))[0]
    args = [a.format(run=workspace / "run", data=data, image=image, out=tmp_path) for a in COMMANDS[command]]
    guarded(args, tmp_path / "network.log", tmp_path, SAM2_ADAPT_DATA=str(workspace / "cache"), MPLBACKEND="Agg")


@pytest.mark.parametrize(("users", "expected"), [(None, "False"), ("1", "True")], ids=["default", "user-set"])
def test_commands_ask_numpy_for_ordinary_pages_unless_the_user_says_otherwise(users, expected):
    """``import adapt`` before numpy: numpy no longer advises huge pages for its arrays (a compaction stall
    per 2 MB on kernels that defragment on demand); a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if users is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = users
    code = "import adapt, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
