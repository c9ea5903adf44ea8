"""Generated artefact faults: adapter folders, ONNX export folders, training checkpoints, Meta ``.pt`` files.

Every file of a real adapter (LoRA and bottleneck) and of a real export folder -- listed from the
folder, so a file added to either layout later is faulted too -- is deleted, truncated at a drawn
offset, replaced by random bytes or, for JSON, by another type or an empty object. A training
checkpoint and a Meta-format ``.pt`` (``model.checkpoint=``) are truncated, replaced by random bytes,
given extra pickled objects or the weights of another architecture. Loading each through its entry
point (``load_adapter``, ``load_predictor(backend="onnx")``, ``read_checkpoint``, ``load_sam2(checkpoint=)``)
must end in exit status 2 with a message naming the file; only a model card (``*.md``) may be
damaged without a refusal.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_gen import fault_settings, run_entry
from hypothesis import given
from hypothesis import strategies as st
from tiny_adapters import BOTTLENECK, LORA, make_adapter

from adapt.cli import user_errors

SIZE = 128


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """A LoRA and a bottleneck adapter, an ONNX export of the LoRA one, a checkpoint, a Meta ``.pt``."""
    from adapt.export.build import export_adapter
    from adapt.models.meta_checkpoint import to_meta_state_dict
    from adapt.models.sam2 import load_sam2

    root = tmp_path_factory.mktemp("artefacts")
    lora, bottleneck = make_adapter(root / "lora", SIZE, LORA), make_adapter(root / "bottleneck", SIZE, BOTTLENECK)
    export = export_adapter(lora, "onnx", root / "export", check=False)
    torch.save({"state_dict": {"adapter.weight": torch.ones(2, 2)}, "global_step": 3, "loops": {}}, root / "last.ckpt")
    model, _ = load_sam2("tiny", image_size=SIZE)
    with torch.no_grad():  # Meta's layout holds one prompt positional matrix: make transformers' two copies equal
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    torch.save({"model": to_meta_state_dict(model.state_dict())}, root / "sam2.pt")
    return {
        "lora": lora,
        "bottleneck": bottleneck,
        "export": Path(export),
        "ckpt": root / "last.ckpt",
        "pt": root / "sam2.pt",
    }


def refused(action: Callable[[], Any]) -> tuple[Any, str]:
    def guarded() -> None:
        with user_errors():
            action()

    return run_entry(guarded)


def load_adapter_of(path: Path) -> Callable[[], Any]:
    from adapt.adapters.loading import load_adapter

    return lambda: load_adapter(path)


def load_export_of(path: Path) -> Callable[[], Any]:
    from adapt.inference.onnx_backend import load_predictor

    return lambda: load_predictor(path, "onnx", device="cpu")


LOADERS = {"lora": load_adapter_of, "bottleneck": load_adapter_of, "export": load_export_of}
#: Damage that is handled, not refused: an export runs from export.json (its sam2_adapt.json is a copy
#: of the adapter's metadata, for the record); a model card (``*.md``) only informs.
HANDLED = {("export", "sam2_adapt.json", "delete"), ("export", "sam2_adapt.json", "json empty")}


def damage(path: Path, how: str, data: st.DataObject) -> None:
    raw = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="keep")])
    elif how == "random bytes":
        path.write_bytes(data.draw(st.binary(min_size=1, max_size=256), label="bytes"))
    else:
        path.write_text({"json list": "[]", "json empty": "{}"}[how])


@pytest.mark.parametrize("kind", sorted(LOADERS))
@given(data=st.data())
@fault_settings(8)
def test_a_damaged_file_of_an_adapter_or_export_is_named(kind, data, artefacts, tmp_path_factory):
    folder = tmp_path_factory.mktemp(kind) / kind
    shutil.copytree(artefacts[kind], folder)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    name = data.draw(st.sampled_from(files), label="file")
    hows = ["delete", "truncate", "random bytes"] + (["json list", "json empty"] if name.suffix == ".json" else [])
    how = data.draw(st.sampled_from(hows), label="how")
    damage(folder / name, how, data)
    code, message = refused(LOADERS[kind](folder))
    assert "Traceback" not in message
    if name.suffix == ".md" and code == 0 or (kind, str(name), how) in HANDLED:
        assert code == 0, message[-2000:]
        return
    assert code == 2 and name.name in message, f"{name} {how}: exit {code}\n{message[-2000:]}"


@given(data=st.data())
@fault_settings(6)
def test_a_damaged_training_checkpoint_is_named(data, artefacts, tmp_path_factory):
    from adapt.training.checkpoints import read_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    shutil.copy(artefacts["ckpt"], path)
    how = data.draw(st.sampled_from(["truncate", "random bytes", "foreign", "nan"]), label="how")
    if how == "foreign":
        torch.save({"model": {"w": torch.ones(1)}}, path)
    elif how == "nan":
        torch.save({"state_dict": {"w": torch.tensor([float("nan")])}, "global_step": 1, "loops": {}}, path)
    else:
        damage(path, how, data)
    code, message = refused(lambda: read_checkpoint(path))
    assert code == 2 and str(path) in message and "Traceback" not in message, f"{how}: {message[-2000:]}"


class Extra:
    """A pickled object beside the weights (an optimiser's state, a config class)."""


def meta_faults(pt: Path, path: Path, how: str, data: st.DataObject) -> None:
    if how in ("truncate", "random bytes"):
        shutil.copy(pt, path)
        damage(path, how, data)
    elif how == "extra objects":
        torch.save({"model": torch.load(pt, weights_only=True)["model"], "config": Extra()}, path)
    elif how == "another architecture":
        torch.save(
            {"model": {"backbone.stem.conv.weight": torch.randn(8, 3, 3, 3), "head.fc.bias": torch.zeros(2)}}, path
        )
    elif how == "not tensors":
        torch.save({"model": {"epoch": 3}}, path)


@given(
    how=st.sampled_from(["truncate", "random bytes", "extra objects", "another architecture", "not tensors"]),
    data=st.data(),
)
@fault_settings(6)
def test_a_bad_meta_checkpoint_is_named(how, data, artefacts, tmp_path_factory):
    from adapt.models.sam2 import load_sam2

    path = tmp_path_factory.mktemp("pt") / "weights.pt"
    meta_faults(artefacts["pt"], path, how, data)
    code, message = refused(lambda: load_sam2("tiny", checkpoint=str(path), image_size=SIZE))
    assert code == 2 and str(path) in message and "Traceback" not in message, f"{how}: {message[-2000:]}"


def test_the_untouched_artefacts_load(artefacts):
    """The faults above are faults: each artefact loads whole."""
    from adapt.models.sam2 import load_sam2
    from adapt.training.checkpoints import read_checkpoint

    for kind, loader in LOADERS.items():
        code, message = refused(loader(artefacts[kind]))
        assert code == 0, (kind, message[-2000:])
    assert read_checkpoint(artefacts["ckpt"])["global_step"] == 3
    assert load_sam2("tiny", checkpoint=str(artefacts["pt"]), image_size=SIZE)[0] is not None
    assert json.loads((artefacts["export"] / "export.json").read_text())
