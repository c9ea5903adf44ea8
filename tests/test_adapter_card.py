"""The adapter carries its data card and its base's fingerprint: evaluation without ``data.card=`` after
the card file has moved, a moved data root named by its key, a Hub upload with no local path, a pulled
adapter that still has its labels and preprocessing, and base weights checked at load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import LocalHub, phantom_data, train_tiny
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

import adapt
from adapt.adapters.io import read_metadata
from adapt.conf import CARD_DIR, CONFIG_DIR
from adapt.data.card_copy import CARD_FILE, RECORD_KEY
from adapt.errors import ConfigError
from adapt.evaluation import evaluate
from adapt.hub import share as hub
from adapt.hub.model_card import render_card
from adapt.models import provenance
from adapt.models.sam2 import load_sam2

CITATION = "Doe J. et al. Phantoms of the abdomen. Journal of Tests 12 (2026)."


def user_card(folder: Path, data: Path) -> Path:
    """``ct_phantom``'s facts as a user's own card file in ``folder``, its data root relative to it."""
    card = yaml.safe_load((CARD_DIR / "ct_phantom.yaml").read_text())
    card.update(
        name="my_phantoms",
        citation=CITATION,
        license="CC-BY-4.0",
        source={"kind": "msd", "root": str(Path("..") / data.name)},
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my_phantoms.yaml"
    path.write_text("# my own card\n" + yaml.safe_dump(card, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory, monkeypatch_module):
    """A tiny run trained on a card FILE (folder A) whose data root is relative to it; the card file
    is then moved to folder B, the data stays."""
    base = tmp_path_factory.mktemp("card")
    with phantom_data(base) as data:
        card = user_card(base / "A", data)
        run = train_tiny(base / "run", "null", f"data.card={card}")
        moved = base / "B" / card.name
        moved.parent.mkdir()
        shutil.move(card, moved)
        yield SimpleNamespace(base=base, data=data, run=run, card=moved)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def config(out: Path, **values):
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with({"out": str(out), "clicks": "off", "batch_size": 4, "device": "cpu", **values})
    return cfg


@pytest.mark.slow  # a tiny run trained once for the module, then evaluated
def test_the_adapter_folder_holds_the_card_as_written_its_root_and_case_fingerprint(env):
    adapter = env.run / "adapter"
    assert (adapter / CARD_FILE).read_text() == env.card.read_text()  # comments and every field kept
    record = read_metadata(adapter)[RECORD_KEY]
    assert record["name"] == "my_phantoms" and record["shipped"] is False
    assert record["root"] == str(env.data.absolute()) and record["cases"]["count"] == 3
    assert len(record["cases"]["sha256"]) == 64
    assert read_metadata(adapter)["base_fingerprint"] == {"kind": "random", "architecture": "tiny", "seed": 0}


@pytest.mark.slow  # a tiny run trained once for the module, then evaluated
def test_evaluate_uses_the_carried_card_after_the_card_file_moved(env, tmp_path):
    result = evaluate(config(tmp_path / "eval", adapter=str(env.run), split="all", shift="noise", severity=1))
    assert result["data_card"] == "my_phantoms" and result["cases"] == 3
    assert result["domain"]["kind"] == "in-domain"
    assert [(c["shift"], c["severity"]) for c in result["robustness"]["conditions"]][-1] == ("noise", 1)


@pytest.mark.slow  # a tiny run trained once for the module, then evaluated
def test_a_moved_data_root_names_data_root_before_any_model_loads(env, tmp_path, monkeypatch):
    moved = env.base / "elsewhere"
    shutil.move(env.data, moved)
    try:
        monkeypatch.setattr("adapt.evaluation.runner.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
        with pytest.raises(ConfigError, match=r"my_phantoms.*not there any more; set data\.root="):
            evaluate(config(tmp_path / "eval", adapter=str(env.run)))
        cli = subprocess.run(
            [sys.executable, "-m", "adapt.evaluate", f"adapter={env.run}", f"out={tmp_path / 'cli'}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 2 and "data.root=" in cli.stderr + cli.stdout and "Traceback" not in cli.stderr
        monkeypatch.undo()
        result = evaluate(
            config(tmp_path / "again", adapter=str(env.run), split="all", **{"data": {"root": str(moved)}})
        )
        assert result["cases"] == 3
    finally:
        shutil.move(moved, env.data)


@pytest.mark.slow  # a tiny run trained once for the module, then evaluated
def test_hub_upload_names_no_local_path_and_a_pulled_adapter_keeps_labels_and_preprocessing(env, tmp_path):
    staged = hub.stage(env.run, "me/phantoms", tmp_path / "staged")
    for path in staged.rglob("*"):
        if path.is_file() and path.suffix != ".safetensors":
            text = path.read_text()
            for local in (str(env.base), str(Path.home()), "/tmp/"):
                assert local not in text, f"{path.name} names the local path {local}"
    assert "root" not in yaml.safe_load((staged / CARD_FILE).read_text())["source"]
    card = ModelCard.load(staged / "README.md")
    assert CITATION in card.text and "CC-BY-4.0" in card.text
    assert 'input=case.nii.gz output=mask.nii.gz prompt="box 40,30,90,70 slice=12"' in card.text

    local_hub = LocalHub(tmp_path / "hub")
    hub.push(env.run, "me/phantoms", api=local_hub)
    loaded, _ = hub.pull("me/phantoms", out_dir=tmp_path / "pulled", api=local_hub)
    own = adapt.load_adapter(env.run)
    assert loaded.label_map == own.label_map and loaded.preprocessing == own.preprocessing
    assert (tmp_path / "pulled" / CARD_FILE).is_file()
    # the pulled adapter's card is there, its data root not: evaluation asks for data.root=
    with pytest.raises(ConfigError, match=r"not recorded \(a shared adapter\); set data\.root="):
        evaluate(config(tmp_path / "eval", adapter=str(tmp_path / "pulled")))
    result = evaluate(
        config(tmp_path / "eval2", adapter=str(tmp_path / "pulled"), split="all", **{"data": {"root": str(env.data)}})
    )
    assert result["data_card"] == "my_phantoms"


@pytest.mark.slow  # a tiny run trained once for the module, then evaluated
def test_an_export_carries_the_card(env, tmp_path):
    from adapt.export.build import export_adapter
    from adapt.inference.record import read_record

    out = export_adapter(env.run, out=tmp_path / "onnx", check=False)
    assert (out / CARD_FILE).read_text() == env.card.read_text()
    assert read_record(out)["data_card"]["name"] == "my_phantoms"
    result = evaluate(config(tmp_path / "eval", adapter=str(out), backend="onnx", split="all", compare="null"))
    assert result["data_card"] == "my_phantoms" and result["backend"] == "onnx"


# --- provenance of the base --------------------------------------------------------------------------


def meta_pt(path: Path, shift: float) -> Path:
    """A Meta-format .pt of the tiny architecture: the tiny base's weights moved by ``shift``."""
    from adapt.models.meta_checkpoint import to_meta_state_dict

    model, _ = load_sam2("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
        # one tensor in Meta's layout: the two copies of the transformers model are equal in a file
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    torch.save({"model": to_meta_state_dict(model.state_dict())}, path)
    return path


def test_file_digests_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM2_ADAPT_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"abc")
    first = provenance.file_sha256(weights)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cache = json.loads(provenance.cache_file().read_text())
    assert list(cache.values()) == [first]
    monkeypatch.setattr(provenance.hashlib, "sha256", lambda *a: pytest.fail("hashed again"))
    assert provenance.file_sha256(weights) == first


def test_an_adapter_on_a_meta_pt_names_it_and_refuses_other_weights(tmp_path, monkeypatch, caplog):
    from tiny_adapters import make_adapter

    monkeypatch.setenv("SAM2_ADAPT_CACHE", str(tmp_path / "cache"))
    trained_on = meta_pt(tmp_path / "medsam2_tiny.pt", 0.01)
    adapter = make_adapter(tmp_path / "adapter", 128)
    metadata = read_metadata(adapter)
    _, info = load_sam2("tiny", checkpoint=str(trained_on))
    fingerprint = provenance.base_fingerprint(info)
    assert fingerprint["kind"] == "checkpoint" and fingerprint["file"] == "medsam2_tiny.pt"
    metadata.update(
        base_fingerprint=fingerprint, model={**metadata["model"], "checkpoint": str(trained_on), "pretrained": True}
    )
    (adapter / "sam2_adapt.json").write_text(json.dumps(metadata))
    # under a Hub id (the architecture it was loaded into), the card still does not claim that Hub model
    shown = {**metadata, "base_model": {"name": "facebook/sam2.1-hiera-tiny", "revision": None}}
    card = ModelCard(str(render_card(shown, "me/x")))
    assert card.data.base_model is None and "facebook/sam2.1-hiera-tiny" not in str(card.data.to_dict())
    assert "Meta checkpoint medsam2_tiny.pt" in card.text and "PeftModel" not in card.text

    other = meta_pt(tmp_path / "other.pt", 0.02)
    with pytest.raises(
        ConfigError,
        match=r"trained on Meta checkpoint medsam2_tiny\.pt.*Meta checkpoint other\.pt.*"
        r"allow_base_mismatch=true",
    ):
        adapt.load_adapter(adapter, checkpoint=str(other))
    loaded = adapt.load_adapter(adapter, checkpoint=str(other), allow_base_mismatch=True)
    assert loaded.model is not None and "!!!" in caplog.text
    assert adapt.load_adapter(adapter).model_info.checkpoint == str(trained_on)


def test_a_base_recorded_as_another_hub_commit_is_refused():
    recorded = {"kind": "hub", "id": "facebook/sam2.1-hiera-tiny", "revision": "aaa"}
    loaded = {"kind": "hub", "id": "facebook/sam2.1-hiera-tiny", "revision": "bbb"}
    with pytest.raises(ConfigError, match="Hub model facebook/sam2.1-hiera-tiny @ aaa.*@ bbb"):
        provenance.check_fingerprint(recorded, loaded, "x")
    provenance.check_fingerprint({**recorded, "revision": None}, loaded, "x")  # an unrecorded commit matches
    provenance.check_fingerprint(None, loaded, "x")  # older adapters: no fingerprint, no check


@pytest.mark.parametrize(
    "dims,images,line",
    [
        (2, None, 'adapt.predict adapter=me/x input=image.png output=mask.png prompt="box 40,30,90,70"\n'),
        (2, "photos/*.jpg", 'input=image.jpg output=mask.png prompt="box 40,30,90,70"\n'),
        (2, "tiles/*.tif", 'input=image.tif output=mask.tif prompt="box 40,30,90,70"\n'),
        (3, None, 'adapter=me/x input=case.nii.gz output=mask.nii.gz prompt="box 40,30,90,70 slice=12"\n'),
        (3, "volumes/*.nii", 'input=case.nii output=mask.nii prompt="box 40,30,90,70 slice=12"\n'),
        # a folder per case in a volume card: DICOM series, whose mask predict writes as a series (a folder)
        (3, "dicom/*", 'input=series_folder output=mask_folder prompt="box 40,30,90,70 slice=12"\n'),
    ],
)
def test_model_card_usage_fits_the_adapter_and_cites_its_dataset(dims, images, line):
    metadata = {
        "adapter": {"kind": "lora"},
        "base_model": {"name": "tiny"},
        "model": {"pretrained": False},
        "task": "segmentation",
        "data_card": "busi",
        "label_map": {"background": 0, "lesion": 1},
        "preprocessing": {"dims": dims, "intensity": {"percentiles": [0.5, 99.5]}, "slice_axis": 2},
    }
    data_card = {
        "name": "busi",
        "title": "Breast ultrasound images",
        "modality": "US",
        "dims": dims,
        "license": "CC-BY-4.0",
        "citation": CITATION,
        **({"source": {"kind": "folder", "images": images, "labels": "masks/{stem}.png"}} if images else {}),
    }
    text = render_card(metadata, "me/x", data_card=data_card).text
    assert line in text
    assert "## Training data" in text and "Breast ultrasound images" in text and CITATION in text
    assert "Data licence: `CC-BY-4.0`" in text


def test_cases_that_changed_since_training_are_warned_about(tmp_path, caplog):
    from adapt.data.card_copy import case_fingerprint, check_cases

    case = lambda name: SimpleNamespace(image=tmp_path / "images" / name, label=tmp_path / "masks" / name)  # noqa: E731
    trained = [case("a.png"), case("b.png")]
    metadata = {RECORD_KEY: {"name": "busi", "cases": case_fingerprint(trained, tmp_path)}}
    card = SimpleNamespace(name="busi")
    check_cases(metadata, card, list(reversed(trained)), tmp_path)  # the same cases, in another order
    assert "not those the adapter was trained on" not in caplog.text
    check_cases(metadata, card, [*trained, case("c.png")], tmp_path)
    assert "(3) are not those the adapter was trained on (2)" in caplog.text
