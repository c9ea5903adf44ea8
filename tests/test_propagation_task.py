"""task=propagation: SAM2's clip loss, gradients through memory, training end to end, reuse of the adapter."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import compose_cfg, tiny_task_args
import torch
from safetensors.torch import load_file, save_file

from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
from adapt.errors import ConfigError
from adapt.inference import propagation as propagation_module
from adapt.inference import runner as runner_module
from adapt.models.memory import MemoryTracker
from adapt.models.tracking import ClipOutput
from adapt.tasks.losses import LossWeights
from adapt.tasks.propagation import PropagationTask, clip_loss

register_resolvers()
register_recipes()

S = 128
TASK_ARGS = tiny_task_args({"kind": "lora", "rank": 4, "targets": ["memory"]})
FAST = [
    "recipe=demo_3d",
    "model=tiny",
    f"model.image_size={S}",
    "trainer.max_steps=2",
    "optim.warmup_steps=1",
    "data.clip.length=3",
    "trainer.val_check_interval=2",
]


def fake_clip(scores: list[float], candidates: torch.Tensor) -> ClipOutput:
    """A tracked clip of one object with the given object scores and decoder candidates ``[T, 1, 1, h, w]``."""
    frames = len(scores)
    return ClipOutput(
        low_res=candidates.clone(),
        iou=torch.full((frames, 1, 1), 0.5),
        object_score=torch.tensor(scores)[:, None, None],
        candidates=list(candidates),
        candidate_iou=[torch.full((1, 1), 0.5) for _ in range(frames)],
        decoder_candidates=list(candidates),
        visited=torch.ones(frames, dtype=torch.bool),
        prompted=[0],
        order=[(t, False) for t in range(1, frames)],
    )


def test_presence_term_and_absent_frames_by_hand():
    torch.manual_seed(0)
    candidates = torch.randn(3, 1, 1, 8, 8).requires_grad_(True)
    target = torch.zeros(3, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1
    target[2, 0, 1:4, 3:7] = 1
    present = torch.tensor([[True], [False], [True]])
    scores = [2.0, -1.0, 0.5]
    out = fake_clip(scores, candidates)
    loss, parts = clip_loss(out, target, present, LossWeights(), presence_weight=0.5)

    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = [-math.log(sigmoid(2.0)), -math.log(1 - sigmoid(-1.0)), -math.log(sigmoid(0.5))]
    assert parts["presence"].item() == pytest.approx(sum(bce) / 3, rel=1e-6)
    # Mask terms on the present frames only, each as the 2D loss computes it; presence everywhere.
    from adapt.tasks.losses import segmentation_loss

    mask_terms = [
        segmentation_loss(candidates[t][None], target[t][None], out.candidate_iou[t][None])[0] for t in (0, 2)
    ]
    expected = (sum(mask_terms) + 0.5 * sum(bce)) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # The absent frame's masks are not supervised: no gradient reaches them.
    loss.backward()
    assert candidates.grad[1].abs().sum() == 0 and candidates.grad[0].abs().sum() > 0


def test_presence_alone_when_the_object_is_nowhere():
    out = fake_clip([0.0, 0.0], torch.zeros(2, 1, 1, 4, 4))
    loss, parts = clip_loss(out, torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, dtype=torch.bool), LossWeights())
    assert loss.item() == pytest.approx(math.log(2)) and set(parts) == {"presence"}


def moving_square_batch(frames: int = 3) -> dict:
    """One clip: a bright square moving right, a box prompt on frame 0 only."""
    image = torch.rand(1, frames, 1, S, S, generator=torch.Generator().manual_seed(0)) * 0.2
    label = torch.zeros(1, frames, 1, S, S)
    boxes = torch.zeros(1, frames, 1, 4)
    for t in range(frames):
        label[0, t, 0, 40:80, 30 + 8 * t : 70 + 8 * t] = 1
    image = image + 0.6 * label
    boxes[0, 0, 0] = torch.tensor([30.0, 40.0, 69.0, 79.0])
    prompt_frames = torch.zeros(1, frames, dtype=torch.bool)
    prompt_frames[0, 0] = True
    return {
        "image": image,
        "label": label,
        "present": label.flatten(3).any(-1),
        "prompt_frames": prompt_frames,
        "boxes": boxes,
    }


def lora_grads(task: PropagationTask, part: str) -> dict[str, torch.Tensor | None]:
    return {n: p.grad for n, p in task.model.named_parameters() if "lora_B" in n and part in n}


def memory_lora_grads(task: PropagationTask) -> dict[str, torch.Tensor | None]:
    return {**lora_grads(task, "memory_attention"), **lora_grads(task, "memory_encoder")}


@pytest.fixture(scope="module")
def memory_task() -> PropagationTask:
    """LoRA on memory and decoder of the tiny model; the fuser's layer scales non-zero as in trained SAM2.

    Random initialisation leaves them at 0, which would cut the memory fuser's gradient.
    """
    task = PropagationTask(
        **{**TASK_ARGS, "adapter": {"kind": "lora", "rank": 4, "targets": ["memory", "decoder_attn"]}}
    )
    with torch.no_grad():
        for name, param in task.model.named_parameters():
            if "memory_fuser" in name and name.endswith(".scale"):
                param.fill_(0.1)
    return task


def test_unprompted_frames_train_the_memory_through_the_task_step(memory_task):
    memory_task.train()
    memory_task.zero_grad()
    loss = memory_task.training_step(moving_square_batch(), 0)
    loss.backward()
    grads = memory_lora_grads(memory_task)
    # Memory LoRA acts only on frames after the prompt: its gradient comes from unprompted frames.
    assert any("memory_attention" in n for n in grads) and any("memory_fuser" in n for n in grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_disconnected_memory_leaves_the_memory_adapter_untrained(memory_task, monkeypatch):
    def condition(self, frame, features, reverse):  # each frame sees only itself
        n = self.num_objects
        flat = (features.levels[-1] + self.sam.no_memory_embedding).expand(-1, n, -1)
        return flat.permute(1, 2, 0).reshape(n, -1, *self.sam.backbone_feature_sizes[-1])

    monkeypatch.setattr(MemoryTracker, "condition", condition)
    memory_task.train()
    memory_task.zero_grad()
    memory_task.training_step(moving_square_batch(), 0).backward()
    assert all(g is None for g in memory_lora_grads(memory_task).values())
    assert all(g is not None and g.abs().sum() > 0 for g in lora_grads(memory_task, "mask_decoder").values())


def test_task_options_are_checked():
    with pytest.raises(ConfigError, match="prompts.direction"):
        PropagationTask(**TASK_ARGS, prompts={"direction": "sideways"})
    with pytest.raises(ConfigError, match="set prompts.iterations=0"):
        PropagationTask(**TASK_ARGS, prompts={"iterations": 2})
    with pytest.raises(ConfigError, match="embedding_cache.mode=off"):
        PropagationTask(**{**TASK_ARGS, "adapter": {"kind": "decoder"}}, embedding_cache={"mode": "memory"})
    task = PropagationTask(**TASK_ARGS, prompts={"direction": "forward"}, mask_prompts=True)
    task.eval()
    with torch.no_grad():
        out = task(moving_square_batch(), 0)
    assert out.order == [(1, False), (2, False)] and out.visited.all()
    assert torch.equal(out.object_score[0, :, 0], torch.tensor([10.0]))  # the mask prompt is frame 0's output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step demo_3d run with the tiny model: (run directory, metrics, objects)."""
    from adapt.train import train

    run_dir = tmp_path_factory.mktemp("propagation_run")
    metrics, objects = train(compose_cfg(run_dir, *FAST, "validate_before=false"))
    return run_dir, metrics, objects


def test_train_logs_clip_metrics_and_counts_memory_adapters(trained):
    run_dir, metrics, objects = trained
    assert metrics["steps"] == 2 and metrics["adapter"]["targets"] == ["encoder_attn", "decoder_attn", "memory"]
    after = metrics["after"]
    assert {"val/dice", "val/iou", "val/dice_frame", "val/iou_frame", "val/dice_tracked", "val/loss_presence"} <= set(
        after
    )
    assert all(0.0 <= after[k] <= 1.0 for k in ("val/dice", "val/iou", "val/dice_frame"))
    names = [n for n, p in objects["task"].model.named_parameters() if p.requires_grad]
    memory = sum(
        p.numel()
        for n, p in objects["task"].model.named_parameters()
        if p.requires_grad and ("memory_attention" in n or "memory_encoder" in n)
    )
    assert (
        memory > 0
        and metrics["params"]["trainable"]
        == sum(p.numel() for p in objects["task"].model.parameters() if p.requires_grad)
        and len(names) > 0
    )
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_adapter_reloads_on_the_video_and_the_image_model(trained):
    from adapt.adapters.loading import load_adapter
    from adapt.models.primitives import preprocess

    run_dir, _, objects = trained
    task = objects["task"].eval()
    batch = next(iter(objects["datamodule"].val_dataloader()))
    video = load_adapter(run_dir / "adapter")  # the video model, as the run recorded
    assert type(video.model.get_base_model()).__name__ == "Sam2VideoModel"
    with torch.no_grad():
        ours = task(batch, 0)
        task.model, original = video.model, task.model
        try:
            loaded = task(batch, 0)
        finally:
            task.model = original
    torch.testing.assert_close(loaded.low_res, ours.low_res, rtol=0, atol=1e-5)
    torch.testing.assert_close(loaded.object_score, ours.object_score, rtol=0, atol=1e-5)

    image = load_adapter(run_dir / "adapter", video=False)  # shared names: encoder/decoder LoRA apply as trained
    assert type(image.model.get_base_model()).__name__ == "Sam2Model"
    t = int(batch["prompt_frames"][0].nonzero()[0])
    with torch.no_grad():
        single = image.model(
            pixel_values=preprocess(batch["image"][0, t : t + 1], S),
            input_boxes=batch["boxes"][0, t][None],
            multimask_output=False,
        )
    # Sam2Model keeps the decoder's masks where the video model blanks an object judged absent.
    torch.testing.assert_close(single.pred_masks[0, :, 0], ours.decoder_candidates[t][:, 0], rtol=0, atol=1e-4)
    torch.testing.assert_close(single.object_score_logits[0], ours.object_score[t], rtol=0, atol=1e-4)


def test_predict_propagates_with_the_trained_adapter(trained, tmp_path, monkeypatch):
    import nibabel as nib
    from omegaconf import OmegaConf

    from adapt import predict
    from adapt.data.synthetic import write_ct_phantoms
    from adapt.models.sam2 import load_sam2

    run_dir, _, objects = trained
    case = write_ct_phantoms(tmp_path / "ct", num_cases=1, shape=(64, 64, 6))[0]
    calls = []
    real = propagation_module.propagate
    monkeypatch.setattr(  # where predict's runner looks it up
        runner_module,
        "propagate",
        lambda model, volume, prompts, **kw: (
            calls.append((model, volume, prompts)) or real(model, volume, prompts, **kw)
        ),
    )
    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    out = tmp_path / "mask.nii.gz"
    cfg.merge_with(
        {
            "adapter": str(run_dir / "adapter"),
            "input": str(tmp_path / "ct" / case["image"]),
            "output": str(out),
            "prompt": "box 10,20,40,50 slice=3",
            "propagation": "memory",
        }
    )
    predict.run(cfg)
    source, mask = nib.load(tmp_path / "ct" / case["image"]), nib.load(out)
    assert mask.shape == source.shape and np.array_equal(mask.affine, source.affine)
    ((model, volume, prompts),) = calls
    # predict ran the trained memory: the same scores as the run's own model, not the base's.
    got = real(model, volume, prompts, stop_after=None)
    trained_scores = real(objects["task"].model, volume, prompts, stop_after=None).scores
    base_scores = real(load_sam2("tiny", video=True)[0], volume, prompts, stop_after=None).scores
    np.testing.assert_allclose(got.scores, trained_scores, atol=1e-4)
    assert not np.allclose(got.scores, base_scores, atol=1e-4)


@pytest.mark.slow
def test_cli_demo_3d_end_to_end(tmp_path):
    import os

    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "adapt.train", *FAST, "validate_before=false", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/dice before → after" in result.stdout
    for name in (
        "metrics.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/sam2_adapt.json",
    ):
        assert (run_dir / name).exists(), name


def test_a_full_video_adapter_loads_on_the_image_model(tmp_path):
    """Weights of memory modules are left out on ``Sam2Model``; every shared weight arrives."""
    from adapt.adapters import apply_adapter
    from adapt.adapters.io import load_adapter_weights, save_adapter
    from adapt.models.sam2 import load_sam2

    video = apply_adapter(load_sam2("tiny", video=True)[0], {"kind": "full"})
    with torch.no_grad():
        for param in video.parameters():
            param.add_(0.01)
    save_adapter(video, {"kind": "full"}, tmp_path, metadata={})
    image = load_adapter_weights(load_sam2("tiny")[0], tmp_path)
    shared = dict(video.named_parameters())
    assert all(torch.equal(p, shared[n]) for n, p in image.named_parameters())
    weights = load_file(tmp_path / "adapter_model.safetensors")
    weights["mask_decoder.extra.weight"] = torch.zeros(1)  # a weight of a module the image model has: still refused
    save_file(weights, tmp_path / "adapter_model.safetensors")
    with pytest.raises(ConfigError, match="does not fit this base model"):
        load_adapter_weights(load_sam2("tiny")[0], tmp_path)
