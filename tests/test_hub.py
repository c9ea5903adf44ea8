"""Hub sharing without the network: local round trips, the model card, push/pull through a local Hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from conftest import LocalHub
from omegaconf import OmegaConf

import adapt
from adapt.adapters import apply_adapter
from adapt.adapters.io import save_adapter
from adapt.conf import CONFIG_DIR
from adapt.errors import ConfigError, ModelNotFoundError
from adapt.hub import action_argv
from adapt.hub import share as hub
from adapt.hub.model_card import render_card
from adapt.models.primitives import preprocess
from adapt.models.sam2 import load_sam2
from adapt.models.tiny import tiny_config

SPECS = {
    "lora": {"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["encoder_attn", "decoder_attn"]},
    "bottleneck": {"kind": "bottleneck", "reduction": 4, "placement": ["attn", "mlp"], "blocks": [], "mlp_scale": 0.5},
    "decoder": {"kind": "decoder", "modules": ["mask_decoder"]},
}
METADATA = {
    "task": "segmentation",
    "recipe": "demo",
    "data_card": "ct_phantom",
    "license": "CC-BY-SA-4.0",
    "preprocessing": {"intensity": {"window": [-100, 240]}, "slice_axis": 2},
    "label_map": {"background": 0, "liver": 1},
    "prompt": {"kind": "box", "jitter": 0.1},
    "metrics": {"val/dice": 0.8123, "val/iou": 0.7001},
}


def make_adapter(kind: str, run_dir: Path) -> torch.nn.Module:
    """A tiny adapted model with non-trivial adapter weights, saved as a run directory."""
    base, info = load_sam2("tiny")
    model = apply_adapter(base, SPECS[kind])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    metadata = {"base_model": {"name": info.name, "revision": info.revision}, "model": info.to_dict(), **METADATA}
    save_adapter(model, SPECS[kind], run_dir / "adapter", metadata)
    return model.eval()


def masks(model: torch.nn.Module) -> torch.Tensor:
    image = torch.rand(1, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(
            pixel_values=preprocess(image, 128),
            input_boxes=torch.tensor([[[20.0, 30.0, 90.0, 100.0]]]),
            multimask_output=False,
        )
    return out.pred_masks


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    model = make_adapter("lora", run)
    return run, masks(model)


@pytest.mark.parametrize("kind", SPECS)
def test_local_round_trip_gives_identical_outputs(kind, tmp_path):
    expected = masks(make_adapter(kind, tmp_path))
    loaded = adapt.load_adapter(tmp_path)  # a run directory means its adapter/ folder
    assert loaded.path == tmp_path / "adapter"
    assert not loaded.model.training
    assert torch.equal(masks(loaded.model), expected)
    assert loaded.preprocessing == {"intensity": {"window": [-100, 240]}, "slice_axis": 2}
    assert loaded.label_map == {"background": 0, "liver": 1}
    assert loaded.prompt == {"kind": "box", "jitter": 0.1}
    assert (loaded.model_info.name, loaded.model_info.image_size) == ("tiny", 128)
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_model_card_header_and_body():
    metadata = {
        "adapter": SPECS["lora"],
        "base_model": {"name": "facebook/sam2.1-hiera-tiny", "revision": "abc123"},
        "model": {"name": "facebook/sam2.1-hiera-tiny", "pretrained": True, "image_size": 512},
        **METADATA,
    }
    card = ModelCard(str(render_card(metadata, "me/sam2-ct-liver")))  # reparsed as the Hub would
    data = card.data.to_dict()
    assert data["library_name"] == "peft"
    assert data["base_model"] == "facebook/sam2.1-hiera-tiny"
    assert data["license"] == "cc-by-sa-4.0"
    assert data["datasets"] == ["ct_phantom"]
    assert data["pipeline_tag"] == "mask-generation"
    assert {"sam2", "lora", "segmentation"} <= set(data["tags"])
    assert data["metrics"] == ["dice", "mean_iou"]
    results = data["model-index"][0]["results"]
    scores = [(m["type"], m["value"]) for r in results for m in r["metrics"]]
    assert scores == [("dice", 0.8123), ("mean_iou", 0.7001)]
    body = card.text
    assert "| liver | 1 |" in body and "| val/dice | 0.8123 |" in body
    assert 'adapt.load_adapter("me/sam2-ct-liver")' in body
    assert (
        'adapt.predict adapter=me/sam2-ct-liver input=case.nii.gz output=mask.nii.gz prompt="box 40,30,90,70 slice=12"'
        in body
    )
    assert 'PeftModel.from_pretrained(base, "me/sam2-ct-liver")' in body
    assert 'Sam2Config.from_pretrained("facebook/sam2.1-hiera-tiny", revision="abc123")' in body  # trained at 512
    assert 'Sam2Model.from_pretrained("facebook/sam2.1-hiera-tiny", revision="abc123", config=config)' in body
    assert "config.vision_config.backbone_feature_sizes = [[128, 128], [64, 64], [32, 32]]" in body
    at_1024 = render_card({**metadata, "model": {**metadata["model"], "image_size": 1024}}, "me/x").text
    assert 'base = Sam2Model.from_pretrained("facebook/sam2.1-hiera-tiny", revision="abc123")' in at_1024
    assert "Sam2Config" not in at_1024
    assert "`facebook/sam2.1-hiera-tiny` @ `abc123`" in body and "| image size | 512 |" in body
    assert "RANDOM" not in body


def card_code(card_text: str, after: str) -> str:
    """The first Python block of a model card after the line containing ``after``."""
    rest = card_text[card_text.index(after) :]
    start = rest.index("```python\n") + len("```python\n")
    return rest[start : rest.index("```", start)]


@pytest.mark.parametrize("kind,size", [("lora", 128), ("dora", 192)])
def test_card_plain_peft_snippet_loads_the_adapter(kind, size, tmp_path):
    """The card's transformers + peft code, run as written (base id -> a saved copy of the base), gives
    the model adapt.load_adapter gives; at 192 px the snippet's config edits are exercised."""
    spec = {**SPECS["lora"], "kind": kind}
    base, info = load_sam2("tiny", image_size=size)
    model = apply_adapter(base, spec)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    metadata = {"base_model": {"name": info.name, "revision": None}, "model": info.to_dict(), **METADATA}
    adapter = save_adapter(model, spec, tmp_path / "adapter", metadata)
    load_sam2("tiny")[0].save_pretrained(tmp_path / "base")  # stands in for the Hub's facebook/sam2.1-hiera-*
    shown = {
        **metadata,
        "adapter": spec,
        "base_model": {"name": str(tmp_path / "base")},
        "model": {**info.to_dict(), "pretrained": True},
    }
    card = render_card(shown, str(adapter))
    assert ModelCard(str(card)).data.base_model == str(tmp_path / "base")
    code = card_code(card.text, "Plain `transformers` + `peft`")
    assert "import adapt" not in code and "PeftModel.from_pretrained" in code
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the card's own snippet
    plain = scope["model"]
    assert type(plain).__name__ == "PeftModel" and type(plain.get_base_model()).__name__ == "Sam2Model"
    ours = adapt.load_adapter(adapter).model
    image = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    prompts = dict(input_boxes=torch.tensor([[[20.0, 30.0, 90.0, 100.0]]]), multimask_output=False)
    with torch.no_grad():
        got = plain(pixel_values=preprocess(image, size), **prompts).pred_masks
        want = ours(pixel_values=preprocess(image, size), **prompts).pred_masks
    assert got.shape[-1] == size // 4
    # from_pretrained picks SDPA attention where a constructed model runs eager: close, not bitwise.
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_card_of_unknown_licence_and_random_base():
    metadata = {
        "adapter": SPECS["bottleneck"],
        "base_model": {"name": "tiny"},
        "model": {"pretrained": False},
        "license": "Custom research licence",
    }
    card = ModelCard(str(render_card(metadata, "me/x")))
    assert card.data.license == "other" and card.data.license_name == "custom-research-licence"
    assert card.data.library_name == "sam2-adapt" and card.data.base_model is None
    assert "RANDOM base weights" in card.text
    assert "input=image.png output=mask.png prompt=" in card.text  # a 2D adapter gets a 2D example


def test_push_then_pull_through_local_hub(lora_run, tmp_path):
    run, expected = lora_run
    local = LocalHub(tmp_path / "hub")
    before = {p.name: p.stat().st_mtime_ns for p in (run / "adapter").iterdir()}
    info = hub.push(run, "me/sam2-demo", private=True, revision="v1", api=local)
    assert info.commit_url == "local://me/sam2-demo@v1"
    assert local.repos["me/sam2-demo"]["private"] is True
    files = sorted(p.name for p in (tmp_path / "hub/me/sam2-demo/v1").iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "sam2_adapt.json"]
    card = ModelCard.load(tmp_path / "hub/me/sam2-demo/v1/README.md")
    assert card.data.library_name == "peft" and "me/sam2-demo" in card.text
    assert {p.name: p.stat().st_mtime_ns for p in (run / "adapter").iterdir()} == before, "push must not touch the run"

    loaded = adapt.load_adapter("me/sam2-demo", revision="v1", api=local)
    assert torch.equal(masks(loaded.model), expected)
    assert loaded.label_map == METADATA["label_map"]
    with pytest.raises(ModelNotFoundError, match="revision v2"):
        adapt.load_adapter("me/sam2-demo", revision="v2", api=local)

    copy, merged = hub.pull("me/sam2-demo", revision="v1", out_dir=tmp_path / "copy", api=local)
    assert merged is None and (tmp_path / "copy/adapter_model.safetensors").exists()


def test_merge_folds_lora_into_a_plain_model(lora_run, tmp_path):
    run, expected = lora_run
    out = hub.merge_adapter(adapt.load_adapter(run), tmp_path / "merged")
    assert {"config.json", "model.safetensors", "sam2_adapt.json", "README.md"} <= {p.name for p in out.iterdir()}
    model, info = load_sam2(str(out))
    assert type(model).__name__ == "Sam2Model" and info.image_size == 128
    torch.testing.assert_close(masks(model.eval()), expected, atol=1e-4, rtol=1e-4)
    again = adapt.load_adapter(out)  # a merged folder loads as is, with its metadata
    assert again.metadata["merged"] is True and again.label_map == METADATA["label_map"]
    assert ModelCard.load(out / "README.md").data.library_name == "transformers"
    with pytest.raises(ConfigError, match="not empty"):
        hub.merge_adapter(adapt.load_adapter(run), out)


def test_merge_refuses_bottleneck(tmp_path):
    make_adapter("bottleneck", tmp_path)
    with pytest.raises(ConfigError, match="adds bottleneck layers"):
        hub.merge_adapter(adapt.load_adapter(tmp_path), tmp_path / "merged")


def test_base_mismatch_is_refused(lora_run):
    run, expected = lora_run
    with pytest.raises(ConfigError, match="does not match the adapter's base model 'tiny'"):
        adapt.load_adapter(run, base="facebook/sam2.1-hiera-small")
    other = tiny_config()
    other.vision_config.backbone_config.global_attention_blocks = [1, 3, 5]
    with pytest.raises(ConfigError, match="global_attention_blocks"):
        adapt.load_adapter(run, base=type(load_sam2("tiny")[0])(other))
    same = adapt.load_adapter(run, base=load_sam2("tiny")[0])
    assert torch.equal(masks(same.model), expected)


def test_base_from_a_local_directory_is_checked_by_architecture(lora_run, tmp_path):
    run, expected = lora_run
    load_sam2("tiny")[0].save_pretrained(tmp_path / "tiny-copy")  # e.g. `hf download` output offline
    loaded = adapt.load_adapter(run, base=str(tmp_path / "tiny-copy"))
    # from_pretrained picks SDPA attention where a constructed model runs eager: close, not bitwise.
    torch.testing.assert_close(masks(loaded.model), expected, atol=1e-4, rtol=1e-4)
    other = tiny_config()
    other.mask_decoder_config.hidden_size = 16
    type(load_sam2("tiny")[0])(other).save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigError, match="mask_decoder_hidden_size"):
        adapt.load_adapter(run, base=str(tmp_path / "other"))


def test_missing_repo_offline_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hf download nobody/missing"):
        adapt.load_adapter("nobody/missing")
    with pytest.raises(ConfigError, match="no such directory"):
        adapt.load_adapter("not/a/dir/anywhere")


def test_push_refuses_offline_and_bad_repo_id(lora_run, monkeypatch):
    run, _ = lora_run
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        hub.push(run, "me/x")
    with pytest.raises(ConfigError, match="user/name"):
        hub.push(run, "no-slash", api=LocalHub(Path("/nonexistent")))


@pytest.mark.slow  # command lines in subprocesses
def test_cli_dry_run_writes_upload_folder(lora_run, tmp_path):
    run, _ = lora_run
    out = tmp_path / "upload"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "adapt.hub",
        "push",
        f"adapter={run}",
        "repo_id=me/demo",
        "dry_run=true",
        f"out_dir={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "would upload" in done.stdout
    assert ModelCard.load(out / "README.md").data.model_name == "demo"
    assert not list(tmp_path.glob("outputs")), "the hub CLI must not create Hydra output folders"


def test_cli_config_names_what_is_missing():
    cfg = OmegaConf.load(CONFIG_DIR / "hub.yaml")
    with pytest.raises(ConfigError, match="push adapter=DIR"):
        hub.run(cfg)
    cfg.action = "push"
    with pytest.raises(ConfigError, match="repo_id=<user/name>"):
        hub.run(cfg)
    cfg.action, cfg.adapter, cfg.repo_id, cfg.dry_run = "push", "x", "me/x", True
    with pytest.raises(ConfigError, match="out_dir=DIR"):
        hub.run(cfg)
    assert action_argv(["hub", "pull", "repo_id=a/b"]) == ["hub", "action=pull", "repo_id=a/b"]


@pytest.mark.parametrize(
    "argv, names",
    [
        (
            ["publish", "adapter=x"],
            ["action='publish'", "['push', 'pull']"],
        ),  # a mistyped action, named with the choices
        (["puhs", "adapter=x", "repo_id=me/x"], ["action='puhs'", "['push', 'pull']"]),
    ],
)
def test_a_mistyped_action_is_refused_by_name_before_the_command_runs(argv, names, monkeypatch):
    from conftest import run_user_action

    from adapt.cli import command_line, register_cli_config

    register_cli_config("hub")
    ran = []
    monkeypatch.setattr(sys, "argv", action_argv(["adapt.hub", *argv]))
    code, message, _ = run_user_action(lambda: command_line(lambda: ran.append(True), "hub"))
    assert code == 2 and not ran, message
    assert all(name in message for name in names), message
    assert action_argv(["hub", "--help"]) == ["hub", "--help"]  # a flag stays a flag


#: What ``sam2_adapt.json`` records of the channels -> the model card's two lines (``None``: no section).
CHANNEL_CARDS = {
    "learned, four named bands": (
        {
            "input_channels": {"count": 4, "source": [0, 1, 2, 3], "names": ["R", "G", "B", "NIR"]},
            "preprocessing": {"channels": 4, "bands": [0, 1, 2, 3]},
        },
        "| channels per image | 4 (R, G, B, NIR), channels 0, 1, 2, 3 of each file (`intensity.channels`) |",
        "| to the model's 3 | a **learned** input projection 4 → 3, trained and saved with the adapter (it started "
        "as the fixed map: model input 1 = mean(R, G), 2 = B, 3 = NIR) |",
    ),
    "learned, every channel of the file, unnamed": (
        {"input_channels": {"count": 2, "source": None, "names": None}},
        "| channels per image | 2 |",
        "| to the model's 3 | a **learned** input projection 2 → 3, trained and saved with the adapter (it started "
        "as the fixed map: model input 1 = channel 0, 2 = channel 1, 3 = mean(channel 0, channel 1)) |",
    ),
    "fixed, grey CT": (
        {"preprocessing": {"channels": 1, "bands": None, "intensity": {"window": [-100, 240]}}},
        "| channels per image | 1 |",
        "| to the model's 3 | the **fixed** channel map, nothing learned: model input 1 = channel 0, 2 = channel 0, "
        "3 = channel 0 |",
    ),
    "fixed, three named MR sequences": (
        {
            "preprocessing": {
                "channels": 3,
                "bands": [0, 1, 2],
                "intensity": {"channels": [0, 1, 2], "channel_names": ["T2", "ADC", "DWI"]},
            }
        },
        "| channels per image | 3 (T2, ADC, DWI), channels 0, 1, 2 of each file (`intensity.channels`) |",
        "| to the model's 3 | the **fixed** channel map, nothing learned: model input 1 = T2, 2 = ADC, 3 = DWI |",
    ),
    "an adapter from before channels were recorded": ({}, None, None),
}


@pytest.mark.parametrize("recorded, count, mapping", CHANNEL_CARDS.values(), ids=list(CHANNEL_CARDS))
def test_model_card_names_the_input_channels_and_how_they_reach_the_model(recorded, count, mapping):
    text = render_card({**METADATA, "adapter": SPECS["lora"], **recorded}, "me/x").text
    if count is None:
        assert "## Input channels" not in text
        return
    section = text[text.index("## Input channels") :].split("\n## ")[0]
    assert section.splitlines()[2:] == ["| | |", "|---|---|", count, mapping]
