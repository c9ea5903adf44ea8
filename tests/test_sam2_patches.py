"""``adapt.models.sam2_patches``: the patched SAM2 computes exactly what transformers' own modules compute.

Each test runs a patched model (``load_sam2`` patches every model it returns) against an
unpatched transformers model holding the same weights, and compares with ``torch.equal``:
image features and their positional encodings, at batch 1 and 2, on the first call (filling
the caches) and later ones (reading them), under inference mode and with autograd, after the
weights change, for the image and video models and under a peft LoRA adapter; decoded masks,
IoU and object scores for one and several prompts per image.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Sam2Model, Sam2VideoModel

from adapt.models import sam2_patches
from adapt.models.sam2 import load_sam2


def unpatched_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A transformers model of ``model``'s class and config with its weights, not patched."""
    cls = Sam2VideoModel if isinstance(model, Sam2VideoModel) else Sam2Model
    twin = cls(model.config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


def randomise_pos_embed(*models: torch.nn.Module, seed: int = 0) -> None:
    """transformers initialises Hiera's positional embeddings to zero; give them values (same in each model)."""
    generator = torch.Generator().manual_seed(seed)
    backbone = models[0].vision_encoder.backbone
    values = [torch.randn(p.shape, generator=generator) for p in (backbone.pos_embed, backbone.pos_embed_window)]
    with torch.no_grad():
        for model in models:
            b = model.vision_encoder.backbone
            b.pos_embed.copy_(values[0])
            b.pos_embed_window.copy_(values[1])


def assert_features_equal(ours: torch.nn.Module, theirs: torch.nn.Module, pixels: torch.Tensor) -> None:
    a = ours.get_image_features(pixels, return_dict=True)
    b = theirs.get_image_features(pixels, return_dict=True)
    for name in ("fpn_hidden_states", "fpn_position_encoding"):
        for level, (x, y) in enumerate(zip(getattr(a, name), getattr(b, name))):
            assert x.shape == y.shape and torch.equal(x, y), f"{name}[{level}] differs"
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)


@pytest.fixture
def model():
    patched, _ = load_sam2("tiny")
    twin = unpatched_twin(patched.eval())
    randomise_pos_embed(patched, twin)
    return patched, twin


def test_every_kind_of_module_is_patched_and_nothing_else_changes(model):
    patched, twin = model
    kinds = {type(m) for m in patched.modules()}
    assert {
        sam2_patches.CachedSinePositionEmbedding,
        sam2_patches.CachedPosEmbedHiera,
        sam2_patches.LeanMultiScaleAttention,
        sam2_patches.LeanMaskDecoder,
    } <= kinds
    assert sam2_patches.patch_sam2(patched) == 0  # already patched
    assert list(patched.state_dict()) == list(twin.state_dict())


def test_features_equal_under_inference_mode(model):
    patched, twin = model
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for batch in (1, 2, 1):  # cache filled, reused, reused at another batch size
            assert_features_equal(patched, twin, torch.randn(batch, 3, 128, 128, generator=generator))


def test_features_and_gradients_equal_with_autograd(model):
    """A cache filled under inference mode serves a training forward; trainable positional
    embeddings are recomputed with their gradient; frozen ones come from the cache."""
    patched, twin = model
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        patched.get_image_features(pixels[:1])
    for frozen in (False, True):
        for m in (patched, twin):
            m.zero_grad()
            backbone = m.vision_encoder.backbone
            backbone.pos_embed.requires_grad_(not frozen)
            backbone.pos_embed_window.requires_grad_(not frozen)
        losses = [
            sum(f.square().mean() for f in m.get_image_features(pixels, return_dict=True).fpn_hidden_states)
            for m in (patched, twin)
        ]
        assert torch.equal(losses[0], losses[1])
        for loss in losses:
            loss.backward()
        for (name, p), q in zip(patched.named_parameters(), twin.parameters()):
            assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name


def test_changed_positional_embedding_is_not_served_from_the_cache(model):
    patched, twin = model
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert_features_equal(patched, twin, pixels)
    randomise_pos_embed(patched, twin, seed=4)  # in place, as load_state_dict or an optimizer step
    with torch.inference_mode():
        assert_features_equal(patched, twin, pixels)
    twin.load_state_dict(patched.state_dict())
    for m in (patched, twin):
        m.vision_encoder.backbone.pos_embed.data = torch.ones_like(m.vision_encoder.backbone.pos_embed)
    with torch.inference_mode():
        assert_features_equal(patched, twin, pixels)


def test_video_model_features_equal():
    patched, _ = load_sam2("tiny", video=True)
    twin = unpatched_twin(patched.eval())
    randomise_pos_embed(patched, twin)
    with torch.inference_mode():
        for batch in (3, 1):
            assert_features_equal(patched, twin, torch.randn(batch, 3, 128, 128))


def test_lora_adapter_stays_live_in_patched_attention(model):
    patched, twin = model
    plain = unpatched_twin(twin)
    config = LoraConfig(r=4, target_modules=["qkv", "proj"], init_lora_weights=False)
    wrapped = []
    for m in (patched, twin):
        torch.manual_seed(5)
        wrapped.append(get_peft_model(m, config).eval())
    assert torch.equal(
        *(w.base_model.model.vision_encoder.backbone.blocks[1].attn.qkv.lora_A["default"].weight for w in wrapped)
    )
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        a, b = (w.base_model.model.get_image_features(pixels, return_dict=True).fpn_hidden_states for w in wrapped)
        plain = plain.get_image_features(pixels, return_dict=True).fpn_hidden_states
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[-1], plain[-1])  # the adapter changed the output


def test_real_architecture_at_another_size():
    """hiera-tiny's real layout (windows of 8/4/14/7, global blocks, Q-pooling) at 256 px."""
    patched, _ = load_sam2("random:sam2.1_hiera_tiny", image_size=256)
    twin = unpatched_twin(patched.eval())
    randomise_pos_embed(patched, twin)
    with torch.inference_mode():
        for _ in range(2):
            assert_features_equal(patched, twin, torch.randn(1, 3, 256, 256))


@pytest.mark.parametrize("multimask", [False, True])
def test_decoding_equal_for_one_and_several_prompts_per_image(model, multimask):
    """The mask decoder skips its per-prompt copies for one prompt per image only; both cases equal."""
    patched, twin = model
    generator = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        embeddings = patched.get_image_features(torch.randn(2, 3, 128, 128, generator=generator), return_dict=True)
        maps = [
            f.permute(1, 2, 0).reshape(2, -1, *size)
            for f, size in zip(embeddings.fpn_hidden_states, patched.backbone_feature_sizes)
        ]
        for prompts in (1, 3):
            corner = torch.rand(2, prompts, 2, generator=generator) * 64
            boxes = torch.cat([corner, corner + 32], dim=-1)
            a, b = (m(image_embeddings=maps, input_boxes=boxes, multimask_output=multimask) for m in (patched, twin))
            for name in ("pred_masks", "iou_scores", "object_score_logits"):
                assert torch.equal(getattr(a, name), getattr(b, name)), (prompts, name)


def test_video_mask_decoder_equal_with_autograd():
    patched, _ = load_sam2("tiny", video=True)
    twin = unpatched_twin(patched.eval())
    generator = torch.Generator().manual_seed(8)
    hidden = patched.config.mask_decoder_config.hidden_size
    inputs = {
        "image_embeddings": torch.randn(2, hidden, 8, 8, generator=generator),
        "image_positional_embeddings": torch.randn(2, hidden, 8, 8, generator=generator),
        "sparse_prompt_embeddings": torch.randn(2, 1, 3, hidden, generator=generator),
        "dense_prompt_embeddings": torch.randn(2, hidden, 8, 8, generator=generator),
        "multimask_output": True,
        "high_resolution_features": [
            torch.randn(2, hidden // 8, 32, 32, generator=generator),
            torch.randn(2, hidden // 4, 16, 16, generator=generator),
        ],
    }
    inputs = {k: v.requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    outputs = [m.mask_decoder(**inputs) for m in (patched, twin)]
    for x, y in zip(*outputs):
        assert torch.equal(x, y)
    grads = [
        torch.autograd.grad(out[0].square().sum() + out[1].sum(), inputs["image_embeddings"])[0] for out in outputs
    ]
    assert torch.equal(*grads)


@pytest.mark.parametrize("memory_frames, pointers", [(1, 0), (3, 0), (7, 16), (2, 4)])
def test_memory_attention_equal_with_several_memory_frames_and_autograd(memory_frames, pointers):
    """The memory attention's RoPE keys of several frames (and unrotated object pointers) as transformers."""
    patched, _ = load_sam2("tiny", video=True)
    assert isinstance(patched.memory_attention.layers[0].cross_attn_image, sam2_patches.LeanRoPEAttention)
    twin = unpatched_twin(patched.eval())
    generator = torch.Generator().manual_seed(memory_frames)
    config = patched.config
    side = config.memory_attention_rope_feat_sizes[0]
    tokens, dim, kv = side * side, config.memory_attention_hidden_size, config.memory_encoder_output_channels
    current = torch.randn(tokens, 1, dim, generator=generator, requires_grad=True)
    position = torch.randn(tokens, 1, dim, generator=generator)
    memory = torch.randn(memory_frames * tokens + pointers, 1, kv, generator=generator)
    memory_position = torch.randn(memory_frames * tokens + pointers, 1, kv, generator=generator)
    outputs = [
        m.memory_attention(
            current_vision_features=current,
            memory=memory,
            current_vision_position_embeddings=position,
            memory_posision_embeddings=memory_position,
            num_object_pointer_tokens=pointers,
        )
        for m in (patched, twin)
    ]
    assert torch.equal(*outputs)
    grads = [torch.autograd.grad(out.square().sum(), current)[0] for out in outputs]
    assert torch.equal(*grads)


def test_saved_model_names_transformers_classes(model, tmp_path):
    """A patched model saves as the transformers model it is (config ``architectures``, weights)."""
    import json

    patched, twin = model
    patched.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["Sam2Model"]
    again = Sam2Model.from_pretrained(tmp_path).eval()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), twin.state_dict().values()))


def test_unpatch_restores_transformers_classes(model):
    patched, _ = model
    restored = sam2_patches.unpatch_sam2(patched)
    assert restored > 0 and not {type(m) for m in patched.modules()} & set(sam2_patches.PATCHES.values())
    assert sam2_patches.patch_sam2(patched) == restored
