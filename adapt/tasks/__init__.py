"""Lightning tasks: what is predicted from a batch, which loss, which metrics.

This module is the task registry, importable without torch or Lightning: the door checks
``task=`` of ``train`` and of ``evaluate`` against it before the heavy libraries load
(``configs/task/`` has one option per trained task), and ``task_class`` imports a task's
LightningModule only when a run builds it. One row per task says what each command supports,
so training, evaluation and the schema read the same table instead of keeping lists of names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from adapt.errors import ConfigError


@dataclass(frozen=True)
class TaskSupport:
    """What one task supports.

    Attributes:
        trains: ``"module:Class"`` of the LightningModule ``adapt.train`` builds, imported on use.
        evaluated: ``python -m adapt.evaluate task=<name>`` has a protocol for it. A semantic
            adapter has none of its own: it is scored under ``task=segmentation`` with
            ``prompt=none|auto``.
        memory: it runs through SAM2's memory (clips of consecutive slices or frames), which an
            ONNX export does not hold.
    """

    trains: str
    evaluated: bool
    memory: bool = False


#: task name -> what training and evaluation support.
TASKS = {
    "segmentation": TaskSupport("adapt.tasks.segmentation:SegmentationTask", evaluated=True),
    "propagation": TaskSupport("adapt.tasks.propagation:PropagationTask", evaluated=True, memory=True),
    "semantic": TaskSupport("adapt.tasks.semantic:SemanticTask", evaluated=False),
}
#: The tasks ``python -m adapt.evaluate task=`` takes, in the table's order.
EVALUATED = tuple(name for name, task in TASKS.items() if task.evaluated)
#: The validation metric that checkpoints, sweeps and the summary follow.
MONITOR = "val/dice"


def task_class(name: str) -> type:
    """The LightningModule class registered under ``name`` (its module imported now).

    Raises:
        ConfigError: ``name`` is not a task of the registry.
    """
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not one of {sorted(TASKS)}")
    module, cls = TASKS[name].trains.split(":")
    return getattr(importlib.import_module(module), cls)


#: ``prompts.grad``: backpropagate through the last correction round only (SAM2's way) or all.
CLICK_GRAD = ("last", "all")
#: ``loss.pixel``: the pixel term of the loss (``adapt.tasks.losses``).
PIXEL_LOSSES = ("bce", "focal")
