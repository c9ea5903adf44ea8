import math
import re

import pytest
from conftest import tiny_task_args
import torch

from adapt.tasks.base import warmup_cosine

TASK_ARGS = tiny_task_args(optim={"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 2, "min_lr_ratio": 0.1})


def test_warmup_then_cosine_schedule():
    factors = [warmup_cosine(s, warmup=4, total=14, min_ratio=0.1) for s in range(16)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert factors[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[14] == pytest.approx(0.1) and factors[15] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_optimizer_sees_only_trainable_parameters():
    from adapt.tasks.segmentation import SegmentationTask

    task = SegmentationTask(**TASK_ARGS)
    optimizer = task.build_optimizer()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in task.model.parameters() if p.requires_grad}
    assert in_optimizer == trainable and len(trainable) > 0
    assert task.parameter_counts()[0] == sum(p.numel() for p in task.model.parameters() if p.requires_grad)


def test_single_point_gets_three_candidates_and_box_gets_one(box_batch):
    from adapt.tasks.segmentation import SegmentationTask

    task = SegmentationTask(**TASK_ARGS)
    logits, iou = task(box_batch)
    assert logits.shape == (2, 1, 1, 128, 128) and iou.shape == (2, 1, 1)
    point_batch = {
        "image": box_batch["image"],
        "points": torch.tensor([[[[60.0, 50.0]]], [[[40.0, 80.0]]]]),
        "point_labels": torch.ones(2, 1, 1, dtype=torch.long),
    }
    assert SegmentationTask.wants_multimask(point_batch)
    logits, iou = task(point_batch)
    assert logits.shape == (2, 1, 3, 128, 128) and iou.shape == (2, 1, 3)
    two_points = {
        **point_batch,
        "points": point_batch["points"].repeat(1, 1, 2, 1),
        "point_labels": torch.ones(2, 1, 2, dtype=torch.long),
    }
    assert not SegmentationTask.wants_multimask(two_points)


def test_checkpoint_keeps_only_trainable_weights():
    from adapt.tasks.segmentation import SegmentationTask

    task = SegmentationTask(**TASK_ARGS)
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    kept = set(checkpoint["state_dict"])
    assert kept == {f"model.{n}" for n, p in task.model.named_parameters() if p.requires_grad}
    assert all("lora_" in k for k in kept)


@pytest.mark.parametrize("name", ["segmentation", "propagation", "semantic"])
def test_every_registered_task_builds_its_lightning_module(name):
    """A row of ``adapt.tasks.TASKS`` names the class ``adapt.train`` builds for ``task=<name>``."""
    import lightning as L

    from adapt.tasks import TASKS, task_class

    cls = task_class(name)
    assert issubclass(cls, L.LightningModule)
    assert f"{cls.__module__}:{cls.__name__}" == TASKS[name].trains


def test_an_unknown_task_is_refused_with_the_registered_names():
    from adapt.errors import ConfigError
    from adapt.tasks import task_class

    with pytest.raises(ConfigError, match=r"task='nope' is not one of \['propagation', 'segmentation', 'semantic'\]"):
        task_class("nope")


@pytest.mark.parametrize(
    "task, backend, outcome",
    [
        ("segmentation", "torch", {"propagation": False, "clicks": (1, 3)}),
        ("propagation", "torch", {"propagation": True, "clicks": ()}),  # clicks are scored on single slices only
        ("segmentation", "onnx", {"propagation": False, "clicks": ()}),  # the export takes no mask prompt
        ("propagation", "onnx", "needs SAM2's memory model"),
        ("semantic", "torch", "task='semantic' is not one of ('segmentation', 'propagation')"),
    ],
)
def test_the_evaluation_protocol_follows_the_task_registry(task, backend, outcome):
    """``evaluate``'s ``task=`` takes the registry's evaluated tasks; a memory task runs propagation."""
    from omegaconf import OmegaConf

    from adapt.errors import ConfigError
    from adapt.evaluation.models import ModelSpec
    from adapt.evaluation.runner import protocol_from

    cfg = OmegaConf.create({"task": task, "prompt": "box", "clicks": [1, 3]})
    spec = ModelSpec(label="a", path=None, metadata={"task": "segmentation"}, backend=backend)
    if isinstance(outcome, str):
        with pytest.raises(ConfigError, match=re.escape(outcome)):
            protocol_from(cfg, spec)
        return
    protocol = protocol_from(cfg, spec)
    assert (protocol.propagation, protocol.clicks) == (outcome["propagation"], outcome["clicks"])
