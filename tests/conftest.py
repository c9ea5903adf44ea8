"""Shared fixtures. Tests never touch the network: the Hub is switched off before imports."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    """Generated datasets go to a per-session temp dir, never to the user's cache."""
    monkeypatch.setenv("SAM2_ADAPT_DATA", str(tmp_path_factory.getbasetemp() / "data-cache"))


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
    from pathlib import Path

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
