"""Bottleneck adapters inside the Hiera blocks, in the style of Medical-SAM-Adapter.

Each adapted block gets a small down-project / GELU / up-project MLP in one or both places:

- ``attn``: in series after the windowed attention (``y = attn(x); y + adapter(y)``);
- ``mlp``: in parallel with the block's MLP (``mlp(x) + scale * adapter(x)``).

The blocks are the image trunk's (``Backbone.bottleneck`` names the two sites): Hiera's
``attn``/``mlp``, the SAM 3 tracker's ViT ``attention``/``mlp``, and in EdgeTAM's convolutional
RepViT the depthwise ``token_mixer`` (serial) and the ``channel_mixer`` (parallel), where the
adapter projects over channels of ``[B, C, H, W]`` maps (moved last and back).

Adapters are attached with forward hooks, so the frozen base keeps its parameter names and
its checkpoint loads unchanged; the adapters live as new submodules of each block
(``...blocks.3.adapter_attn.down.weight``). The up-projection starts at zero, so before
training the adapted model computes exactly what the base model does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from adapt.adapters.kinds import KINDS, PLACEMENTS
from adapt.adapters.partial import with_task_modules
from adapt.adapters.placement import block_prefix, resolve_blocks
from adapt.errors import ConfigError
from adapt.models.families import backbone_of_model
from adapt.models.sam2 import hiera_blocks

PEFT_TYPE = KINDS["bottleneck"].layout


class Bottleneck(nn.Module):
    """``up(gelu(down(x)))`` over the last dimension, with the up-projection zero-initialised."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    channels_last: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:  # [B, C, H, W] maps: project over C
            return self.up(self.act(self.down(x.movedim(1, -1)))).movedim(-1, 1)
        return self.up(self.act(self.down(x)))

    def serial_hook(self, module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        """Forward hook: the adapter after ``module``, with a residual connection (on the first output of a
        module that returns a tuple, as the ViT's attention returns its weights beside)."""
        if isinstance(output, tuple):
            return (output[0] + self(output[0]), *output[1:])
        return output + self(output)


class ParallelBottleneck(Bottleneck):
    """A bottleneck run beside ``module`` on the same input, its output scaled and added."""

    def __init__(self, dim: int, hidden: int, scale: float):
        super().__init__(dim, hidden)
        self.scale = scale

    def parallel_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook: ``module(x) + scale * adapter(x)``."""
        return output + self.scale * self(args[0])


@dataclass
class BottleneckConfig:
    """Where and how large the adapters are; saved as ``adapter_config.json``.

    Attributes:
        reduction: hidden width = block width // reduction (Medical-SAM-Adapter: 4).
        placement: any of ``attn`` (serial after attention) and ``mlp`` (parallel to the MLP).
        blocks: Hiera blocks to adapt: ``None`` or empty = all, an int ``N`` = the last ``N``,
            a list = those indices (``adapt.adapters.placement``).
        mlp_scale: weight of the parallel adapter's output (Medical-SAM-Adapter: 0.5).
    """

    reduction: int = 4
    placement: list[str] = field(default_factory=lambda: list(PLACEMENTS))
    blocks: int | list[int] | None = None
    mlp_scale: float = 0.5
    peft_type: str = PEFT_TYPE

    def __post_init__(self) -> None:
        self.placement = list(self.placement)
        if isinstance(self.blocks, tuple):
            self.blocks = list(self.blocks)
        bad = [p for p in self.placement if p not in PLACEMENTS]
        if bad or not self.placement:
            raise ConfigError(f"adapter.placement {self.placement} must be a non-empty subset of {PLACEMENTS}")
        if self.reduction < 1:
            raise ConfigError(f"adapter.reduction must be >= 1, got {self.reduction}")

    def to_dict(self) -> dict:
        return asdict(self)


def apply_bottleneck(model: nn.Module, config: BottleneckConfig) -> nn.Module:
    """Insert bottleneck adapters into ``model`` in place and return it.

    Only the adapters are left trainable; call on a frozen model.
    """
    backbone = backbone_of_model(model)
    attn_site, mlp_site, channels_last = backbone.bottleneck
    blocks = hiera_blocks(model)
    if config.blocks not in (None, [], ()):
        block_prefix(backbone)  # refuses where blocks cannot be chosen
    chosen = resolve_blocks(config.blocks, len(blocks))
    for index in range(len(blocks)) if chosen is None else chosen:
        block = blocks[index]
        width = _width(getattr(block, attn_site))
        hidden = max(width // config.reduction, 1)
        if "attn" in config.placement:
            block.adapter_attn = Bottleneck(width, hidden)
            block.adapter_attn.channels_last = channels_last
            getattr(block, attn_site).register_forward_hook(block.adapter_attn.serial_hook)
        if "mlp" in config.placement:
            block.adapter_mlp = ParallelBottleneck(width, hidden, config.mlp_scale)
            block.adapter_mlp.channels_last = channels_last
            getattr(block, mlp_site).register_forward_hook(block.adapter_mlp.parallel_hook)
    for name, param in model.named_parameters():
        if ".adapter_attn." in name or ".adapter_mlp." in name:
            param.requires_grad_(True)
    return model


def apply_kind(model: nn.Module, options: dict[str, Any], task_modules: list[str]) -> nn.Module:
    """``adapter=bottleneck``: the adapters inserted (options: ``BottleneckConfig``), plus the task's modules."""
    return with_task_modules(apply_bottleneck(model, BottleneckConfig(**options)), task_modules)


def _width(site: nn.Module) -> int:
    """The feature width a block site outputs: its last linear or convolution's output size."""
    layers = [m for m in site.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ConfigError(f"no linear or convolution layer in {type(site).__name__} to size a bottleneck adapter by")
    last = layers[-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels
