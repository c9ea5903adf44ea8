"""Image embeddings of a frozen encoder, computed once per image and reused.

When nothing in SAM2's image encoder trains (``adapter=decoder``, or LoRA only in the
decoder), the encoder — nearly all of SAM2's compute — gives the same embeddings for a
slice at every epoch. Caching them (in memory, or on disk for datasets that do not fit)
turns decoder tuning into a decoder-only loop after the first epoch. With adapters in the
last Hiera blocks only (``adapter.blocks``), the same cache holds the frozen prefix's output
instead (``adapt.models.hiera_prefix``), and each step runs the adapted blocks onwards.
Entries are keyed by the sample's identity (case and slice) inside a namespace that hashes
the model and the preprocessing (and the prefix's length), so a disk cache is never read by
a run that would compute other embeddings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from adapt.adapters.kinds import kind_of
from adapt.errors import ConfigError
from adapt.models.backbones import BACKBONES, Backbone
from adapt.storage import write_atomically


def encoder_is_frozen(adapter: Mapping[str, Any]) -> bool:
    """Whether an adapter spec trains nothing in the image encoder (decided before building it, by its kind)."""
    kind = kind_of(adapter)
    return kind is not None and kind.encoder_frozen(adapter)


def frozen_prefix(adapter: Mapping[str, Any]) -> bool:
    """Whether an adapter spec puts its encoder adapters in some Hiera blocks only (``adapter.blocks``),
    leaving the blocks before the first one frozen."""
    kind = kind_of(adapter)
    return kind is not None and kind.in_blocks and adapter.get("blocks") not in (None, [], ())


def prefix_cache_wanted(
    adapter: Mapping[str, Any], mode: str, augment: bool, backbone: Backbone = BACKBONES["sam2"]
) -> bool:
    """Whether to cache the frozen prefix's output: asked for (``mode`` memory or disk), or ``auto``
    with pixel augmentation already off (the cache holds un-augmented images; ``auto`` never
    switches augmentation off for it). Only SAM2's Hiera trunk has a prefix to cache
    (``Backbone.prefix_cache``): elsewhere ``auto`` computes every step and an explicit mode is refused.

    Raises:
        ConfigError: a cache asked for on a backbone whose trunk prefix cannot be cached.
    """
    if not frozen_prefix(adapter):
        return False
    if not backbone.prefix_cache:
        if mode not in ("auto", "off"):
            raise ConfigError(
                f"embedding_cache.mode={mode} with adapter.blocks caches the trunk's frozen prefix, which "
                f"is offered on SAM2's Hiera only, not on {backbone.title}; use embedding_cache.mode=off "
                "(or auto), or train the decoder only (adapter=decoder) to cache whole embeddings"
            )
        return False
    return mode != "auto" or not augment


def namespace(*parts: Any) -> str:
    """A short stable hash of what the embeddings depend on (model, preprocessing, size)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class EmbeddingCache:
    """Per-image lists of embedding tensors, in memory or under ``directory/namespace``.

    Args:
        directory: where to keep entries on disk; ``None`` keeps them in memory.
        namespace: hash of the model and preprocessing (see ``namespace``).
        dtype: storage dtype; float32 reproduces uncached training exactly, bfloat16 halves memory.
    """

    def __init__(
        self, directory: str | Path | None = None, namespace: str = "default", dtype: torch.dtype = torch.float32
    ) -> None:
        self.directory = Path(directory) / namespace if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self._memory: dict[str, list[torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"

    def _load(self, key: str) -> list[torch.Tensor] | None:
        if self.directory is None:
            return self._memory.get(key)
        path = self._path(key)
        return torch.load(path, weights_only=True) if path.exists() else None

    def _store(self, key: str, tensors: list[torch.Tensor]) -> None:
        tensors = [t.detach().to(self.dtype) for t in tensors]
        if self.directory is None:
            self._memory[key] = tensors
        else:
            write_atomically(
                self._path(key),
                lambda file: torch.save([t.cpu() for t in tensors], file),
                f"embedding_cache.mode=disk ({self.directory})",
                "free some space, put the cache on a larger disk (embedding_cache.directory=<dir>), "
                "keep embeddings in RAM (embedding_cache.mode=memory, or dtype=bfloat16 for half the "
                "size), or compute them every step (embedding_cache.mode=off)",
            )

    def __len__(self) -> int:
        return len(self._memory) if self.directory is None else sum(1 for _ in self.directory.glob("*.pt"))

    def fetch(
        self,
        keys: Sequence[str],
        compute: Callable[[list[int]], list[torch.Tensor]],
        device: torch.device,
        dtype: torch.dtype,
    ) -> list[torch.Tensor]:
        """Embeddings for ``keys``, computing (``compute(indices)``) only those not cached yet.

        Args:
            keys: one key per image of the batch (repeats allowed: one object per sample).
            compute: returns the embedding levels ``[k, C, H, W]`` for the given batch indices.
            device: device of the returned batch.
            dtype: dtype of the returned batch.
        """
        found = {key: self._load(key) for key in dict.fromkeys(keys)}
        missing = [key for key, value in found.items() if value is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        if missing:
            first_index = {key: keys.index(key) for key in missing}
            levels = compute([first_index[key] for key in missing])
            for row, key in enumerate(missing):
                found[key] = [level[row] for level in levels]
                self._store(key, found[key])
        return [
            torch.stack([found[key][level] for key in keys]).to(device=device, dtype=dtype)
            for level in range(len(found[keys[0]]))
        ]
