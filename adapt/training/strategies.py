"""Lightning's FSDP strategy, configurable from YAML and runnable on CPU processes too.

``trainer=fsdp`` is for GPUs, but a sharded run should be checkable on a laptop (two gloo
processes, the tiny model) before it takes cluster hours. What stood in the way with
Lightning's own ``FSDPStrategy`` is mended here, nothing else. On every device:

- its ``auto_wrap_policy`` takes a *set* of block classes, which YAML cannot write (a list
  reaches torch as a policy and fails with "'list' object is not callable");
- each stage of a trainer (``adapt.train`` validates, fits, validates) wraps the model again,
  and the second wrapping sees the root's weights as shard views; the first wrapping is kept.

On the CPU:

- it refuses ``accelerator=cpu``;
- it wraps the model with the device *index* as ``device_id``, ``None`` on the CPU, and
  torch's FSDP then looks for an accelerator and stops;
- it gathers full state dicts with ``offload_to_cpu=True``; when the tensors already are in
  CPU memory, torch's FSDP (2.13) then reads memory it has freed: the model's state dict
  segfaults on every rank but 0, and the optimizer's comes back with ``exp_avg`` aliasing
  ``exp_avg_sq`` (a checkpoint that resumes with wrong moments, silently). On the CPU both
  are gathered without offloading.

Gradient clipping under FSDP is the task's (``BaseTask.configure_gradient_clipping``).
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Any, Iterator

from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from torch import nn
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    OptimStateKeyType,
    StateDictType,
)
from torch.optim import Optimizer

from adapt.errors import ConfigError


def module_classes(policy: Any) -> Any:
    """A list of module classes or import paths (what YAML holds) as the set of classes that
    Lightning turns into torch's ``ModuleWrapPolicy``; any other policy as given."""
    if not isinstance(policy, (list, tuple)):
        return policy
    return {import_class(entry) if isinstance(entry, str) else entry for entry in policy}


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"trainer.strategy.auto_wrap_policy: cannot import {path!r} ({error}); list the module classes "
            "that FSDP shards as import paths, e.g. transformers.models.sam2.modeling_sam2.Sam2MultiScaleBlock"
        ) from None


class FSDPStrategy(LightningFSDPStrategy):
    """Lightning's ``FSDPStrategy`` (same options) whose ``auto_wrap_policy`` may be a list of
    block classes or their import paths, and which also runs on ``accelerator=cpu`` (gloo).

    Lightning's accelerator check names its own class exactly, so this subclass passes it on
    the CPU; on GPUs it behaves as Lightning's.
    """

    def __init__(self, *args: Any, auto_wrap_policy: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, auto_wrap_policy=module_classes(auto_wrap_policy), **kwargs)
        self._root: nn.Module | None = None

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if self._root is not None and self._root.module is model:
            # Wrapped by an earlier stage of this trainer (validate before fit, fit before
            # validate): the blocks inside are FSDP units already, and the remaining weights
            # live in the root's flat parameter. Wrapping again would see shard-shaped views.
            return self._root
        if self.root_device.type == "cpu":
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=self.root_device,
                **self.kwargs,
            )
            # Applied; Lightning would warn that a wrapped model ignores it.
            self.kwargs.pop("auto_wrap_policy", None)
        self._root = super()._setup_model(model)
        return self._root

    @property
    def _gathers_in_place(self) -> bool:
        return self.root_device.type == "cpu" and self._state_dict_type == "full"

    @contextmanager
    def _full_state_dict_in_place(self) -> Iterator[None]:
        """Lightning's full-state-dict context (gathered on rank 0), without offloading."""
        with FullyShardedDataParallel.state_dict_type(
            self.model,
            StateDictType.FULL_STATE_DICT,
            FullStateDictConfig(offload_to_cpu=False, rank0_only=True),
            FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True),
        ):
            yield

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if not self._gathers_in_place:
            return super().lightning_module_state_dict()
        with self._full_state_dict_in_place():
            return self.model.state_dict()

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        if not self._gathers_in_place:
            return super().optimizer_state(optimizer)
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer wraps it
        with self._full_state_dict_in_place():
            state = FullyShardedDataParallel.optim_state_dict(self.model, optimizer)
        # Keyed by parameter index on rank 0, the layout Lightning saves and loads back.
        if self.global_rank == 0:
            state = FullyShardedDataParallel.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
        return state
