"""Every backbone row (SAM2.1, SAM 3 tracker, EdgeTAM) on its tiny random config: what the row says is what is built.

Rows differ only in data, so the tests are tables over ``adapt.models.backbones.BACKBONES``:
architecture and trunk built, image sides mapped, pixel statistics, LoRA presets and the
bottleneck adapter on each trunk, ``adapter.blocks`` / frozen-prefix cache / gradient
checkpointing where offered (refused by name where not), the memory loop on each video model,
and the backbone recorded with an adapter and checked when it is loaded. EdgeTAM's timm
trunk is imported behind ``timm_reference`` (no torchvision here).
"""

from __future__ import annotations

import io
import re

import pytest
import timm_reference
import torch
from rich.console import Console

timm_reference.with_timm()

from adapt.adapters import apply_adapter  # noqa: E402
from adapt.adapters.io import save_adapter  # noqa: E402
from adapt.errors import ConfigError  # noqa: E402
from adapt.adapters.loading import load_adapter  # noqa: E402
from adapt.models.backbones import BACKBONES, backbone_of  # noqa: E402
from adapt.models.embedding_cache import prefix_cache_wanted  # noqa: E402
from adapt.models.families import finish, released_image_config  # noqa: E402
from adapt.models.primitives import decode, image_embeddings, pixel_stats, preprocess  # noqa: E402
from adapt.models.sam2 import enable_gradient_checkpointing, hiera_blocks, load_sam2  # noqa: E402
from adapt.models.tracking import track_clip  # noqa: E402
from adapt.training.summary import print_summary  # noqa: E402

TINY = {row.key: row.tiny for row in BACKBONES.values()}
NEW = ("sam3_tracker", "edgetam")
#: blocks of each tiny trunk: Hiera 1+2+7+2, ViT layers, RepViT blocks (depths 1, 1, 2, 1)
BLOCKS = {"sam2": 12, "sam3_tracker": 4, "edgetam": 5}
BOX = torch.tensor([[[10.0, 12.0, 60.0, 70.0]]])


def model_of(key: str, video: bool = False, **options):
    return load_sam2(TINY[key], video=video, **options)


def run_decoder(model, key: str) -> torch.Tensor:
    size = BACKBONES[key].tiny_size
    image = torch.rand(1, 1, 90, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeddings = image_embeddings(model, preprocess(image, size, **pixel_stats(model)))
        return decode(model, embeddings, multimask=False, input_boxes=BOX).low_res


@pytest.mark.parametrize("key", list(BACKBONES))
def test_tiny_config_builds_the_rows_classes_and_trunk(key):
    row = BACKBONES[key]
    for video, cls in ((False, row.classes[0]), (True, row.classes[1])):
        model, info = model_of(key, video=video)
        assert type(model).__name__ == cls and info.backbone == key and not info.pretrained
        assert info.image_size == row.tiny_size and len(hiera_blocks(model)) == BLOCKS[key]
    assert backbone_of(row.tiny) is row and all(backbone_of(hub) is row for hub in row.hub_ids.values())
    low = run_decoder(model_of(key)[0], key)
    assert low.shape[-1] == row.low_res_side(row.tiny_size) and torch.isfinite(low).all()


def test_edgetam_trunk_is_repvit_and_a_resnet_is_refused():
    import transformers

    # transformers' default config misspells the key and falls back to a ResNet-50 ...
    assert transformers.EdgeTamConfig().vision_config.backbone_config.architecture == "resnet50"
    # ... ours names the trunk explicitly, and the tiny model built is a RepViT
    assert released_image_config(BACKBONES["edgetam"]).vision_config.backbone_config.architecture == "repvit_m1"
    model, _ = model_of("edgetam")
    kinds = {type(m).__name__ for m in model.vision_encoder.backbone.modules()}
    assert "RepViTBlock" in kinds and "Bottleneck" not in kinds
    model.vision_encoder.backbone.config.architecture = "resnet50"
    with pytest.raises(ConfigError, match="must be timm's repvit_m1, but the config builds 'resnet50'"):
        finish(model)


@pytest.mark.parametrize(
    ("key", "asked", "used"),
    [("sam3_tracker", 256, 252), ("sam3_tracker", 120, 126), ("sam2", 100, 128), ("edgetam", 160, 192)],
)
def test_a_side_the_trunk_cannot_take_is_mapped_and_the_summary_says_so(key, asked, used):
    model, info = model_of(key, image_size=asked)
    assert (info.image_size, info.requested_image_size) == (used, asked)
    assert model.config.prompt_encoder_config.image_size == used
    out = io.StringIO()
    print_summary(
        {
            "model": info.to_dict(),
            "params": {"trainable": 1, "total": 2},
            "adapter": {"kind": "lora"},
            "data": {"card": "x", "bad_cases": 0},
            "steps": 1,
            "before": {},
            "after": {},
            "seconds": 1.0,
            "run_dir": "r",
        },
        Console(file=out, width=300),
    )
    assert f"model.image_size={asked} mapped to the nearest side" in out.getvalue()
    assert BACKBONES[key].title in out.getvalue()


@pytest.mark.parametrize(
    ("key", "mean", "std"),
    [
        ("sam2", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ("sam3_tracker", (0.5,) * 3, (0.5,) * 3),
        ("edgetam", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ],
)
def test_pixels_are_normalised_as_the_backbones_reference_does(key, mean, std):
    stats = pixel_stats(model_of(key)[0])
    assert stats == {"mean": mean, "std": std}
    grey = torch.full((1, 1, 8, 8), 0.5)
    expected = (0.5 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(preprocess(grey, **stats)[0, :, 0, 0], expected)


#: A module each preset must reach on each tiny model (and the trunk's module family).
PRESET_HITS = {
    ("sam3_tracker", "encoder_attn"): "vision_encoder.backbone.layers.3.attention.o_proj",
    ("sam3_tracker", "encoder_mlp"): "vision_encoder.backbone.layers.0.mlp.fc1",
    ("edgetam", "encoder_attn"): "vision_encoder.backbone.timm_model.stages_0.blocks.0.se.fc2",
    ("edgetam", "encoder_mlp"): "vision_encoder.backbone.timm_model.stages_3.blocks.0.channel_mixer.conv2.c",
    ("sam3_tracker", "decoder_attn"): "mask_decoder.transformer.layers.0.self_attn.q_proj",
    ("edgetam", "decoder_attn"): "mask_decoder.transformer.layers.0.self_attn.q_proj",
}


@pytest.mark.parametrize(("key", "preset"), list(PRESET_HITS))
def test_lora_presets_reach_the_backbones_own_modules(key, preset):
    model = apply_adapter(model_of(key)[0], {"kind": "lora", "rank": 2, "targets": [preset]})
    targeted = list(model.base_model.targeted_module_names)
    regex = BACKBONES[key].targets[preset]
    assert PRESET_HITS[key, preset] in targeted and all(re.fullmatch(regex, n) for n in targeted)
    if preset.startswith("encoder"):
        assert all(n.startswith("vision_encoder.backbone.") for n in targeted)


@pytest.mark.parametrize("key", NEW)
def test_memory_preset_reaches_the_video_models_memory(key):
    model = apply_adapter(model_of(key, video=True)[0], {"kind": "lora", "rank": 2, "targets": ["memory"]})
    targeted = list(model.base_model.targeted_module_names)
    assert any(n.startswith("memory_attention.layers.0.") for n in targeted)
    assert any(n.startswith("memory_encoder.memory_fuser.") for n in targeted)


@pytest.mark.parametrize("key", list(BACKBONES))
def test_bottleneck_starts_as_the_base_and_then_changes_it(key):
    base = run_decoder(model_of(key)[0], key)
    model = apply_adapter(model_of(key)[0], {"kind": "bottleneck", "reduction": 2})
    adapters = [m for m in model.modules() if type(m).__name__ in ("Bottleneck", "ParallelBottleneck")]
    assert len(adapters) == 2 * BLOCKS[key]
    torch.testing.assert_close(run_decoder(model, key), base, rtol=0, atol=1e-6)  # up-projections start at zero
    with torch.no_grad():
        for adapter in adapters:
            adapter.up.weight.normal_(0, 0.5)
    assert not torch.allclose(run_decoder(model, key), base, atol=1e-4)


def test_adapter_blocks_count_vit_layers_and_are_refused_on_repvit():
    model = apply_adapter(
        model_of("sam3_tracker")[0], {"kind": "lora", "rank": 2, "targets": ["encoder_attn"], "blocks": 2}
    )
    layers = {int(n.split(".")[3]) for n in model.base_model.targeted_module_names}
    assert layers == {2, 3}
    for spec in ({"kind": "lora", "targets": ["encoder_attn"], "blocks": 2}, {"kind": "bottleneck", "blocks": 1}):
        with pytest.raises(ConfigError, match=r"adapter.blocks is not offered on EdgeTAM \(RepViT\)"):
            apply_adapter(model_of("edgetam")[0], spec)


@pytest.mark.parametrize("key", NEW)
def test_prefix_cache_is_offered_on_hiera_only(key):
    spec = {"kind": "lora", "targets": ["encoder_attn"], "blocks": 2}
    assert prefix_cache_wanted(spec, "memory", False, BACKBONES["sam2"])
    assert not prefix_cache_wanted(spec, "auto", False, BACKBONES[key])
    with pytest.raises(ConfigError, match=f"offered on SAM2's Hiera only, not on {re.escape(BACKBONES[key].title)}"):
        prefix_cache_wanted(spec, "memory", False, BACKBONES[key])


def test_gradient_checkpointing_switches_vit_layers_and_is_refused_on_repvit():
    assert enable_gradient_checkpointing(model_of("sam3_tracker")[0]) == BLOCKS["sam3_tracker"]
    with pytest.raises(ConfigError, match="gradient_checkpointing is not offered on EdgeTAM"):
        enable_gradient_checkpointing(model_of("edgetam")[0])


@pytest.mark.parametrize("key", NEW)
def test_memory_loop_tracks_a_clip_and_trains_the_memory(key):
    row = BACKBONES[key]
    model = apply_adapter(model_of(key, video=True)[0], {"kind": "lora", "rank": 2, "targets": ["memory"]})
    frames = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    pixels = preprocess(frames, row.tiny_size, **pixel_stats(model))
    prompts = {0: {"boxes": torch.tensor([[8.0, 8.0, 50.0, 60.0]])}}
    from adapt.models.memory import FramePrompt

    out = track_clip(model, pixels, {0: FramePrompt.build(boxes=prompts[0]["boxes"])}, "forward")
    assert out.visited.all() and out.low_res.shape[-1] == row.low_res_side(row.tiny_size)
    out.object_score[1:].sum().backward()  # frames 1, 2 come from the memory: its LoRA gets a gradient
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and "memory_attention" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("key", NEW)
def test_adapter_records_its_backbone_and_another_is_refused(key, tmp_path):
    model, info = model_of(key)
    spec = {"kind": "lora", "rank": 2, "targets": ["encoder_attn", "decoder_attn"]}
    adapted = apply_adapter(model, spec)
    save_adapter(
        adapted, spec, tmp_path / "a", {"base_model": {"name": info.name, "revision": None}, "model": info.to_dict()}
    )
    loaded = load_adapter(tmp_path / "a")
    assert loaded.model_info.backbone == key and loaded.metadata["model"]["backbone"] == key
    torch.testing.assert_close(run_decoder(loaded.model, key), run_decoder(adapted.eval(), key), rtol=0, atol=1e-6)
    title = re.escape(BACKBONES[key].title)
    for base in ("tiny", model_of("sam2")[0]):
        with pytest.raises(ConfigError, match=f"trained on the {title} backbone .* is SAM2.1 \\(Hiera\\)"):
            load_adapter(tmp_path / "a", base=base)


def test_edgetam_trunk_is_timms_repvit_and_our_path_is_transformers():
    """EdgeTAM's original code is not on the package index and installs as a package named ``sam2`` (it is a
    fork of Meta's), which would shadow the Meta sam2 the SAM2 parity tests import. What is compared
    instead: the trunk against timm's own RepViT-M1 with the same weights, and our image path
    (``image_embeddings`` + ``decode``) against transformers' ``EdgeTamModel.forward`` on the same weights."""
    import timm

    model, _ = model_of("edgetam")
    model.train()  # training mode: the trunk's batch norms keep the release's statistics all the same
    trunk = model.vision_encoder.backbone.timm_model
    assert not any(m.training for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))
    reference = timm.create_model(
        "repvit_m1",
        pretrained=False,
        features_only=True,
        out_indices=[0, 1, 2, 3],
        embed_dim=(8, 16, 32, 64),
        depth=(1, 1, 2, 1),
    ).eval()
    reference.load_state_dict(trunk.state_dict(), strict=True)
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = {k: v.clone() for k, v in trunk.state_dict().items()}
        for ours, theirs in zip(trunk(pixels), reference(pixels)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        assert all(torch.equal(v, trunk.state_dict()[k]) for k, v in before.items())  # running statistics kept
        model.eval()
        expected = model(pixel_values=pixels, input_boxes=BOX.expand(2, -1, -1), multimask_output=True)
        ours = decode(model, image_embeddings(model, pixels), True, input_boxes=BOX.expand(2, -1, -1))
    torch.testing.assert_close(ours.low_res, expected.pred_masks, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.iou, expected.iou_scores, rtol=0, atol=1e-6)


def test_the_guide_names_every_file_a_backbone_touches():
    """docs/adding_a_backbone.md lists the files a new backbone touches; each exists and names every row."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    guide = (root / "docs" / "adding_a_backbone.md").read_text()
    files = re.findall(r"^\d\. \*\*`([^`]+)`\*\*", guide, flags=re.M)
    assert files == [
        "adapt/models/backbones.py",
        "adapt/models/families.py",
        "configs/model/<name>.yaml",
        "tests/test_backbones.py",
    ]
    for row in BACKBONES.values():
        assert f"`{row.key}`" in guide and (root / "configs" / "model" / f"{row.tiny}.yaml").is_file()
        for preset in row.hub_ids:
            assert (root / "configs" / "model" / f"{preset}.yaml").is_file() or row.key == "sam2"
    # and no other module branches on a backbone: one that did would be a file the guide does not name
    from literals import retyped

    others = set(BACKBONES) - {"sam2"}  # SAM2's own path (adapt.models.sam2) is the default, not a branch
    homes = tuple(f.removeprefix("adapt/") for f in files if f.startswith("adapt/"))
    assert retyped(others, homes, subject="") == []


def test_a_task_asked_to_cache_a_vit_prefix_is_refused_by_name():
    from conftest import tiny_task_args

    from adapt.tasks.segmentation import SegmentationTask

    args = tiny_task_args(
        {"kind": "lora", "rank": 2, "targets": ["encoder_attn"], "blocks": 2},
        model={"name": "tiny_sam3_tracker", "image_size": 112},
        embedding_cache={"mode": "memory"},
    )
    with pytest.raises(ConfigError, match="offered on SAM2's Hiera only, not on SAM 3 tracker"):
        SegmentationTask(**args)
