"""SAM2's differentiable memory loop: same numbers as transformers' tracker, gradients through memory.

The tiny random model is made "lively" first: PyTorch's default initialisation instead of
transformers' std-0.02 one, the zero-initialised memory parameters (temporal encodings,
no-object pointer, occlusion embedding, fuser layer scales) set to random values, and an
object-score head that judges objects present on some frames and absent on others. With
the stock initialisation every memory looks alike and a comparison would prove little.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from adapt.adapters.lora import apply_lora
from adapt.models.memory import FramePrompt, MemoryTracker
from adapt.models.tiny import TINY_IMAGE_SIZE, tiny_video_config
from adapt.models.tracking import clip_prompts, track_clip, visiting_order

S = TINY_IMAGE_SIZE
TOL = dict(atol=1e-4, rtol=1e-4)


def lively_video_model(seed: int = 1) -> Sam2VideoModel:
    """The tiny video model with weights under which every memory path changes the output."""
    torch.manual_seed(seed)
    model = Sam2VideoModel(tiny_video_config())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()
        for param in model.parameters():
            if not param.any():
                param.normal_(0, 0.1)
        head = model.mask_decoder.pred_obj_score_head.proj_out
        head.weight.mul_(20)
        head.bias.fill_(1.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> Sam2VideoModel:
    return lively_video_model()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.randn(6, 3, S, S, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def no_memory(monkeypatch):
    """Disconnect the memory: every frame sees only its own features (SAM2's no-memory embedding)."""

    def condition(self, frame, features, reverse):
        n = self.num_objects
        flat = (features.levels[-1] + self.sam.no_memory_embedding).expand(-1, n, -1)
        return flat.permute(1, 2, 0).reshape(n, -1, *self.sam.backbone_feature_sizes[-1])

    monkeypatch.setattr(MemoryTracker, "condition", condition)


def box_and_click() -> FramePrompt:
    boxes = torch.tensor([[20.0, 30.0, 70.0, 90.0], [60.0, 10.0, 120.0, 50.0]])
    clicks = torch.tensor([[[45.0, 60.0]], [[90.0, 30.0]]])
    return FramePrompt.build(boxes=boxes, points=clicks, labels=torch.ones(2, 1, dtype=torch.long))


def transformers_track(model, pixels, prompts, reverse=False):
    """Low-res masks and object scores per frame from transformers' own video inference."""
    session = Sam2VideoInferenceSession(
        video=pixels, video_height=S, video_width=S, dtype=torch.float32, max_vision_features_cache_size=len(pixels)
    )
    outputs = {}
    for frame in sorted(prompts):
        prompt = prompts[frame]
        for i in range(prompt.num_objects):
            index = session.obj_id_to_idx(i)
            if prompt.mask is not None:
                session.add_mask_inputs(index, frame, prompt.mask[i][None, None].float())
            else:
                session.add_point_inputs(
                    index,
                    frame,
                    {"point_coords": prompt.points[i][None, None], "point_labels": prompt.labels[i][None, None]},
                )
        session.obj_with_new_inputs = list(range(prompt.num_objects))
        outputs[frame] = model(session, frame_idx=frame)
    for out in model.propagate_in_video_iterator(session, start_frame_idx=min(prompts), reverse=reverse):
        outputs[out.frame_idx] = out
    return {t: (o.pred_masks[:, 0], o.object_score_logits.reshape(-1)) for t, o in outputs.items()}


def assert_matches(ours, reference, frames):
    for t in frames:
        masks, scores = reference[t]
        torch.testing.assert_close(ours.low_res[t, :, 0], masks, **TOL)
        torch.testing.assert_close(ours.object_score[t, :, 0], scores, **TOL)


def test_forward_tracking_matches_transformers(model, frames):
    prompts = {1: box_and_click()}
    with torch.no_grad():
        ours = track_clip(model, frames, prompts, direction="forward", storage_dtype=torch.bfloat16)
    reference = transformers_track(model, frames, prompts)
    assert sorted(reference) == [1, 2, 3, 4, 5]
    assert_matches(ours, reference, reference)
    assert ours.visited.tolist() == [False, True, True, True, True, True]
    # The comparison has teeth: the objects are tracked, and differ.
    assert (ours.object_score[1:] > 0).all()
    assert not torch.allclose(ours.low_res[3, 0], ours.low_res[3, 1], **TOL)


def test_memoryless_loop_would_fail_the_comparison(model, frames, no_memory):
    prompts = {1: box_and_click()}
    with torch.no_grad():
        ours = track_clip(model, frames, prompts, direction="forward", storage_dtype=torch.bfloat16)
    masks, _ = transformers_track(model, frames, prompts)[3]
    assert (ours.low_res[3, :, 0] - masks).abs().max() > 100 * TOL["atol"]


def test_mask_prompt_both_directions_match_transformers(model, frames):
    mask = torch.zeros(3, S, S)  # the third object is absent: no-object pointer and occlusion memory
    mask[0, 30:80, 40:100] = 1
    mask[1, 90:120, 10:50] = 1
    prompts = {3: FramePrompt.build(mask=mask)}
    with torch.no_grad():
        ours = track_clip(model, frames, prompts, direction="both", storage_dtype=torch.bfloat16)
    assert ours.order == [(4, False), (5, False), (2, True), (1, True), (0, True)]
    # Each direction is independent: a fresh transformers session per direction.
    assert_matches(ours, transformers_track(model, frames, prompts), [3, 4, 5])
    assert_matches(ours, transformers_track(model, frames, prompts, reverse=True), [2, 1, 0])
    area = (ours.low_res[3, :, 0] > 0).sum(dim=(1, 2)) * 16  # the mask itself is the prompted frame's output
    assert area.tolist()[2] == 0 and torch.allclose(area[:2].float(), mask[:2].sum(dim=(1, 2)), rtol=0.2)
    assert ours.object_score[3, :, 0].tolist() == [10.0, 10.0, -10.0]


def test_two_prompted_frames_and_single_clicks_match_transformers(model, frames):
    # One click is ambiguous: SAM2 decodes three candidates and keeps the best by predicted IoU.
    clicks = {
        t: FramePrompt.build(
            points=torch.tensor([[[50.0, 50.0]], [[100.0, 20.0]]]) + t, labels=torch.ones(2, 1, dtype=torch.long)
        )
        for t in (0, 3)
    }
    with torch.no_grad():
        ours = track_clip(model, frames, clicks, direction="forward", storage_dtype=torch.bfloat16)
    assert ours.candidates[0].shape == (2, 3, S // 4, S // 4)
    assert_matches(ours, transformers_track(model, frames, clicks), range(6))


def test_unprompted_frames_train_memory_attention_lora(frames):
    torch.manual_seed(0)
    model = get_peft_model(
        lively_video_model(), LoraConfig(r=4, target_modules=r".*memory_attention.*(q_proj|k_proj|v_proj|o_proj)")
    )
    model.train()
    pixels = frames[:3].clone().requires_grad_(True)
    out = track_clip(model, pixels, {0: box_and_click()}, direction="forward")
    loss = out.object_score[1:].sum() + sum(c.sigmoid().mean() for c in out.candidates[1:])  # unprompted only
    loss.backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    # The prompted frame reaches the others only through the memory bank.
    assert pixels.grad[0].abs().sum() > 0


def test_disconnected_memory_gives_no_gradient(frames, no_memory):
    model = get_peft_model(
        lively_video_model(), LoraConfig(r=4, target_modules=r".*memory_attention.*(q_proj|k_proj|v_proj|o_proj)")
    )
    model.train()
    pixels = frames[:3].clone().requires_grad_(True)
    out = track_clip(model, pixels, {0: box_and_click()}, direction="forward")
    (out.object_score[1:].sum() + sum(c.sigmoid().mean() for c in out.candidates[1:])).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)
    assert pixels.grad[0].abs().sum() == 0 and pixels.grad[1:].abs().sum() > 0


def test_memory_preset_trains_memory_encoder_backward(frames):
    model = apply_lora(lively_video_model(), rank=4, targets=["memory"])
    model.train()
    out = track_clip(model, frames[:4], {3: box_and_click()}, direction="backward")
    assert [t for t, _ in out.order] == [2, 1, 0]
    out.object_score[:3].sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    fuser = [g for n, g in grads.items() if "memory_fuser" in n]
    assert fuser and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_visiting_order():
    assert visiting_order(5, [0]) == [(1, False), (2, False), (3, False), (4, False)]
    assert visiting_order(5, [2], "backward") == [(1, True), (0, True)]
    assert visiting_order(6, [1, 4], "both") == [(2, False), (3, False), (5, False), (0, True)]
    assert visiting_order(6, [1, 4], "backward") == [(3, True), (2, True), (0, True)]
    with pytest.raises(ValueError, match="at least one prompted frame"):
        visiting_order(4, [])
    with pytest.raises(ValueError, match="outside"):
        visiting_order(4, [4])
    with pytest.raises(ValueError, match="direction"):
        visiting_order(4, [0], "sideways")


def test_clip_prompts_from_a_batch():
    label = torch.zeros(1, 3, 1, S, S)
    label[0, :, 0, 10:20, 30:50] = 1
    batch = {
        "label": label,
        "prompt_frames": torch.tensor([[False, True, False]]),
        "boxes": torch.tensor([[[[0.0, 0, 0, 0]], [[30.0, 10, 49, 19]], [[0.0, 0, 0, 0]]]]),
    }
    prompts = clip_prompts(batch, 0)
    assert list(prompts) == [1]
    assert prompts[1].points.tolist() == [[[30.0, 10.0], [49.0, 19.0]]]
    assert prompts[1].labels.tolist() == [[2, 3]]
    masked = clip_prompts(batch, 0, mask_prompts=True)
    assert masked[1].mask.sum() == 200 and masked[1].points is None
    batch["prompt_frames"][:] = False
    with pytest.raises(ValueError, match="no prompted frame"):
        clip_prompts(batch, 0)


def test_prompt_validation():
    with pytest.raises(ValueError, match="either a mask"):
        FramePrompt.build(boxes=torch.zeros(1, 4), mask=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="together"):
        FramePrompt.build(points=torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="needs a box"):
        FramePrompt.build()
