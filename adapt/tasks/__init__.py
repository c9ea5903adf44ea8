"""Lightning tasks: what is predicted from a batch, which loss, which metrics.

This module is the task registry, importable without torch or Lightning: the config schema
checks ``task=`` against it before the heavy libraries load (``configs/task/`` has one option
per name), and ``adapt.train.task_class`` imports the class on use.
"""

from __future__ import annotations

#: task name -> "module:Class", imported on use.
TASKS = {
    "segmentation": "adapt.tasks.segmentation:SegmentationTask",
    "propagation": "adapt.tasks.propagation:PropagationTask",
    "semantic": "adapt.tasks.semantic:SemanticTask",
}
#: The validation metric that checkpoints, sweeps and the summary follow.
MONITOR = "val/dice"
#: ``prompts.grad``: backpropagate through the last correction round only (SAM2's way) or all.
CLICK_GRAD = ("last", "all")
#: ``loss.pixel``: the pixel term of the loss (``adapt.tasks.losses``).
PIXEL_LOSSES = ("bce", "focal")
