"""``timm`` (EdgeTAM's RepViT trunk) importable in the tests, where torchvision cannot be installed.

timm imports torchvision at import time in a few places (``FrozenBatchNorm2d`` from
``torchvision.ops.misc``, dataset and transform classes in ``timm.data``), and transformers
reports timm as unavailable without torchvision. The project's ``edgetam`` extra installs the
real thing for users; the tests install timm with ``pip install --no-deps`` and import it
through ``with_timm()``, which, as ``meta_reference`` does for Meta's sam2:

* puts stand-in ``torchvision`` modules into ``sys.modules`` while timm is imported, and takes
  them out again afterwards, so nothing else sees a torchvision;
* ``FrozenBatchNorm2d`` is written from its documented behaviour (a batch norm with fixed
  statistics and affine parameters, ``x * w / sqrt(var + eps) + b - mean * w / sqrt(var + eps)``);
  every other name is a placeholder that raises if used (RepViT uses none of them);
* tells transformers that timm is available (its check asks for torchvision too).
"""

from __future__ import annotations

import importlib.util
import sys
import types

import torch
from torch import nn

NAMES = (
    "torchvision",
    "torchvision.ops",
    "torchvision.ops.misc",
    "torchvision.datasets",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.models",
    "torchvision.models.feature_extraction",
    "torchvision.utils",
)


class _Placeholder(type):
    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{cls.__qualname__}.{name}")


def _missing(name: str) -> type:
    def refuse(cls, *args, **kwargs):
        raise RuntimeError(f"torchvision stand-in: {name} is not available in the tests")

    return _Placeholder(name, (), {"__new__": refuse, "__qualname__": name})


class _Module(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{self.__name__}.{name}")


class FrozenBatchNorm2d(nn.Module):
    """``torchvision.ops.misc.FrozenBatchNorm2d``: batch norm with fixed statistics and affine parameters."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        for name, init in (
            ("weight", torch.ones),
            ("bias", torch.zeros),
            ("running_mean", torch.zeros),
            ("running_var", torch.ones),
        ):
            self.register_buffer(name, init(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def with_timm() -> types.ModuleType:
    """Import timm (once) behind the torchvision stand-ins and make transformers accept it.

    Raises:
        RuntimeError: timm is not installed (``pip install --no-deps timm``, the dev extra).
    """
    import transformers.utils as transformers_utils
    import transformers.utils.import_utils as import_utils

    if importlib.util.find_spec("timm") is None:
        raise RuntimeError("the EdgeTAM tests need timm: pip install --no-deps 'timm>=1.0.31'")
    if "timm" not in sys.modules:
        real = importlib.util.find_spec("torchvision") is not None
        added = []
        if not real:
            for name in NAMES:
                module = _Module(name)
                module.__path__ = []
                sys.modules[name] = module
                added.append(name)
                parent, _, leaf = name.rpartition(".")
                if parent:
                    setattr(sys.modules[parent], leaf, module)
            sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
        try:
            import timm  # noqa: F401
        finally:
            for name in added:
                sys.modules.pop(name, None)

    def available() -> bool:
        return True

    transformers_utils.is_timm_available = import_utils.is_timm_available = available
    import_utils.BACKENDS_MAPPING["timm"] = (available, import_utils.BACKENDS_MAPPING["timm"][1])
    return sys.modules["timm"]
