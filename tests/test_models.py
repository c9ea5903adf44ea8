import time

import pytest
import torch

from adapt.errors import ModelNotFoundError
from adapt.models import sam2 as sam2_module
from adapt.models.primitives import IMAGENET_MEAN, IMAGENET_STD, preprocess
from adapt.models.sam2 import count_parameters, load_sam2, random_config


def test_tiny_model_is_reproducible_and_runs():
    a, info = load_sam2("tiny")
    b, _ = load_sam2("tiny")
    assert info.image_size == 128 and not info.pretrained and info.name == "tiny"
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    out = a(
        pixel_values=torch.zeros(1, 3, 128, 128), input_boxes=torch.tensor([[[8.0, 8, 64, 64]]]), multimask_output=False
    )
    assert out.pred_masks.shape == (1, 1, 1, 32, 32)


@pytest.mark.parametrize(
    "preset, published_millions",
    # SAM2.1 parameter counts from Meta's model table (image + memory modules).
    [("sam2.1_hiera_tiny", 38.9), ("sam2.1_hiera_small", 46.0), ("sam2.1_hiera_base_plus", 80.8)],
)
def test_random_architectures_match_published_sizes(preset, published_millions):
    model, info = load_sam2(f"random:{preset}", video=True)
    assert info.name.startswith("facebook/sam2.1-hiera-") and not info.pretrained
    assert abs(count_parameters(model)[1] / 1e6 - published_millions) < 0.1


def test_image_size_is_configurable_for_pretrained_layouts():
    config = random_config("sam2.1_hiera_tiny", image_size=512)
    assert config.prompt_encoder_config.image_size == 512
    assert config.vision_config.backbone_feature_sizes == [[128, 128], [64, 64], [32, 32]]


def test_unreachable_hub_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setattr(sam2_module, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        load_sam2("sam2.1_hiera_small", revision="v1")
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert "facebook/sam2.1-hiera-small" in message
    assert "hf download facebook/sam2.1-hiera-small --revision v1 --local-dir DIR" in message
    assert "model.name=DIR" in message and "model=tiny" in message


def test_offline_fallback_random_builds_the_architecture(monkeypatch, caplog):
    monkeypatch.setattr(sam2_module, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(sam2_module, "_NOTICES", set())  # a notice is given once per process
    model, info = load_sam2("sam2.1_hiera_tiny", image_size=256, offline_fallback="random")
    assert not info.pretrained and info.image_size == 256
    assert caplog.text.count("RANDOM weights") == 1
    # evaluate's further loads of that base (the video model, the zero-shot comparison): no second notice
    load_sam2("sam2.1_hiera_tiny", image_size=256, offline_fallback="random", video=True)
    from adapt.adapters.loading import load_base

    load_base({"base_model": {"name": info.name}, "model": {"pretrained": False, "image_size": 256}})
    assert caplog.text.count("RANDOM weights") == 1


@pytest.mark.parametrize("video", [False, True])
def test_meta_checkpoint_of_a_preset_loads_offline(tmp_path, monkeypatch, caplog, video):
    """``model.checkpoint=file.pt`` holds every weight: the preset's architecture is built here,
    the Hub is never asked, nothing is random, and every tensor comes from the file."""
    from adapt.models.meta_checkpoint import to_meta_state_dict

    monkeypatch.setattr(sam2_module, "hub_reachable", lambda timeout=3.0: pytest.fail("the Hub was asked"))
    source, _ = load_sam2("random:sam2.1_hiera_tiny", image_size=256, video=video)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tensor in source.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        source.shared_image_embedding.positional_embedding.copy_(
            source.prompt_encoder.shared_embedding.positional_embedding
        )
    torch.save({"model": to_meta_state_dict(source.state_dict())}, tmp_path / "medsam2.pt")
    model, info = load_sam2("sam2.1_hiera_tiny", image_size=256, video=video, checkpoint=str(tmp_path / "medsam2.pt"))
    assert info.pretrained and info.checkpoint.endswith("medsam2.pt") and info.name == "facebook/sam2.1-hiera-tiny"
    assert "RANDOM" not in caplog.text and "cannot be downloaded" not in caplog.text
    loaded = model.state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def test_local_directory_round_trip(tmp_path):
    model, _ = load_sam2("tiny")
    model.save_pretrained(tmp_path)
    loaded, info = load_sam2(str(tmp_path))
    assert info.pretrained and info.image_size == 128
    for (name, x), y in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(x, y), name


def test_hub_reachable_respects_offline_mode(monkeypatch):
    monkeypatch.setattr(sam2_module.hub_constants, "HF_HUB_OFFLINE", True)
    assert sam2_module.hub_reachable() is False


def test_preprocess_channels_and_normalisation():
    grey = torch.full((1, 1, 4, 4), 0.5)
    out = preprocess(grey)
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.shape == (1, 3, 4, 4)
    assert torch.allclose(out[0, :, 0, 0], expected)
    two = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None]
    raw = preprocess(two) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.5]), atol=1e-6)
    six = torch.arange(6.0).view(1, 6, 1, 1).expand(1, 6, 2, 2) / 10
    raw = preprocess(six) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[0, :, 0, 0], torch.tensor([0.05, 0.25, 0.45]), atol=1e-6)
    assert preprocess(torch.rand(2, 3, 64, 64), image_size=128).shape == (2, 3, 128, 128)


@pytest.mark.parametrize("kind", ["lora", "bottleneck"])
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    from adapt.adapters import apply_adapter
    from adapt.models.sam2 import enable_gradient_checkpointing

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model, _ = load_sam2("tiny")
        if checkpointing:
            assert enable_gradient_checkpointing(model) == 12  # every Hiera block of the tiny trunk
        spec = {"kind": "lora", "rank": 4, "targets": ["encoder_attn"]} if kind == "lora" else {"kind": kind}
        torch.manual_seed(0)
        model = apply_adapter(model, spec).train()
        for name, param in model.named_parameters():
            if "lora_B" in name or ".up." in name:  # zero-initialised halves: make the gradient path non-trivial
                torch.nn.init.normal_(param, std=0.1)
        pixels = preprocess(torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(1)))
        out = model(pixel_values=pixels, input_boxes=torch.tensor([[[10.0, 10, 60, 60]]] * 2), multimask_output=False)
        weights = torch.randn(out.pred_masks.shape, generator=torch.Generator().manual_seed(2))
        (out.pred_masks * weights).sum().backward()  # a linear loss: gradients of order one
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    scale = max(g.abs().max() for g in plain.values())
    assert scale > 0
    for name in plain:
        assert (plain[name] - checkpointed[name]).abs().max() <= 1e-4 * scale, name
