"""Shared fixtures. Tests never touch the network: the Hub is switched off before imports."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    """Generated datasets (and base-weight digests) go to a per-session temp dir, never to the user's cache."""
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))
    monkeypatch.setenv("SAM2_ADAPT_CACHE", str(tmp_path_factory.getbasetemp() / "sam2-adapt-cache"))


@pytest.fixture
def decode_calls(monkeypatch):
    """Every mask decoding through ``adapt.models.interactive.decode``, as ``(prompts, prediction)``.

    Callers that imported ``decode`` by name before the test keep the original (unrecorded).
    """
    from adapt.models import interactive

    calls = []
    real = interactive.decode

    def recording(model, embeddings, multimask, **prompts):
        prediction = real(model, embeddings, multimask, **prompts)
        calls.append((prompts, prediction))
        return prediction

    monkeypatch.setattr(interactive, "decode", recording)
    return calls


@pytest.fixture
def box_batch():
    """Two 128 px images with one square object each, box prompts in pixel coordinates."""
    torch.manual_seed(0)
    image = torch.rand(2, 1, 128, 128) * 0.2
    label = torch.zeros(2, 1, 128, 128)
    label[0, 0, 30:70, 40:90] = 1
    label[1, 0, 60:100, 20:60] = 1
    image = image + 0.6 * label
    boxes = torch.tensor([[[40.0, 30.0, 89.0, 69.0]], [[20.0, 60.0, 59.0, 99.0]]])
    return {"image": image, "label": label, "boxes": boxes}


def load_fake_data():
    """``tests/data/generate.py`` as a module: fake datasets in every shipped card's layout.

    Loaded from its path because ``tests/`` is not a package; test modules that need it at
    import time call this (``from conftest import load_fake_data``), tests use ``fake_data``.
    """
    import importlib.util

    path = Path(__file__).parent / "data" / "generate.py"
    spec = importlib.util.spec_from_file_location("fake_data_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake_data():
    """The fake-data generator module (see ``load_fake_data``)."""
    return load_fake_data()


@pytest.fixture(scope="session")
def meta_sam2():
    """Meta's SAM2 (``sam2==1.1.0``, its PyPI source distribution, cached) importable as ``sam2``.

    See ``tests/meta_reference.py``: no torchvision, no Hydra initialisation on import. The
    first run downloads the sdist; without network a test that needs it fails (never skips).
    """
    import meta_reference

    with meta_reference.meta_package() as meta:
        yield meta


# --- shared helpers: test modules import these from here, never from each other -------------------

#: Small non-square phantoms (x != y: a transposed plane cannot go unnoticed).
PHANTOM_SHAPE = (40, 48, 8)

#: Overrides that shrink any recipe to two training steps of the tiny model at 64 px, offline.
TWO_STEPS = [
    "model=tiny", "model.image_size=64", "trainer.max_steps=2", "trainer.max_epochs=-1",
    "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1000",
    "trainer.limit_val_batches=1", "validate_before=false", "data.batch_size=1", "data.val_batch_size=2",
    "optim.warmup_steps=1", "embedding_cache.mode=off", "logger=csv", "data.num_workers=0",
]


def compose_cfg(out_dir, *overrides: str):
    """The training config as ``python -m adapt.train <overrides>`` composes it, writing to ``out_dir``."""
    from hydra import compose, initialize_config_dir

    from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers

    register_resolvers()
    register_recipes()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"out_dir={out_dir}"], return_hydra_config=False)


def tiny_task_args(adapter=None, **changes):
    """Keyword arguments of a task on the tiny model (128 px), for tests that build a task directly."""
    args = dict(
        model={"name": "tiny", "image_size": 128},
        adapter=adapter or {"kind": "lora", "rank": 4, "targets": ["decoder_attn"]},
        optim={"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1, "min_lr_ratio": 0.1},
        loss={"dice": 1.0, "pixel_term": 1.0, "iou": 1.0, "pixel": "bce"},
    )
    return {**args, **changes}


def train_tiny(run_dir, data_root, *extra: str):
    """A tiny LoRA run trained for two steps on the phantoms at ``data_root``."""
    from adapt.train import train

    overrides = ["recipe=demo", "model=tiny", "model.image_size=128", "trainer.max_steps=2", "data.batch_size=2",
                 "data.val_batch_size=4", "optim.warmup_steps=1", "validate_before=false",
                 "data.val_max_slices_per_case=2", f"data.root={data_root}", *extra]
    train(compose_cfg(run_dir, *overrides))
    return run_dir


@contextlib.contextmanager
def phantom_data(base):
    """Three small non-square phantoms under ``base/phantoms``, the data cache under ``base/cache``."""
    from adapt.data.synthetic import write_ct_phantoms

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAM2_ADAPT_DATA", str(base / "cache"))
        data = base / "phantoms"
        write_ct_phantoms(data, num_cases=3, shape=PHANTOM_SHAPE)
        yield data


class LocalHub:
    """An ``HfApi`` stand-in whose repos are folders ``root/<user>/<name>/<revision>``."""

    def __init__(self, root: Path):
        self.root = root
        self.repos: dict[str, dict] = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kw):
        if repo_id in self.repos and not exist_ok:
            raise RuntimeError("exists")
        self.repos.setdefault(repo_id, {"private": private, "branches": {"main"}})

    def create_branch(self, repo_id, branch, exist_ok=False, **kw):
        self.repos[repo_id]["branches"].add(branch)

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, **kw):
        assert (revision or "main") in self.repos[repo_id]["branches"], "upload to a branch that was not created"
        target = self.root / repo_id / (revision or "main")
        shutil.copytree(folder_path, target, dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"local://{repo_id}@{revision or 'main'}", message=commit_message)

    def snapshot_download(self, repo_id, revision=None, local_dir=None, **kw):
        path = self.root / repo_id / (revision or "main")
        if not path.exists():
            raise FileNotFoundError(f"{repo_id}@{revision} not on the local hub")
        if local_dir:
            shutil.copytree(path, local_dir, dirs_exist_ok=True)
            return str(local_dir)
        return str(path)


# --- notebooks: run one top to bottom in a kernel, as Jupyter would ------------------------------


def execute(name: str, env: dict[str, str], monkeypatch):
    """``notebooks/<name>`` executed with ``env`` set (inline figures); the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    from adapt.conf import REPO_ROOT

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
    NotebookClient(book, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    return book


def figures(book) -> int:
    """How many figures the executed notebook shows."""
    return sum("image/png" in out.get("data", {}) for cell in book.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def errors(book) -> list[str]:
    """The exception names of the executed notebook's failed cells."""
    return [out.get("ename", "") for cell in book.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]
