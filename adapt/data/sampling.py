"""Training order that a checkpoint can resume in the middle of an epoch.

A run killed mid-epoch and resumed with ``ckpt_path=last`` must go on with exactly the
batches the uninterrupted run trained on: same order, same per-sample randomness (prompt
jitter, augmentation, prompt frames), and none of the batches it had already trained on.
Two pieces make it so:

- ``EpochSampler`` derives everything random about the training data from (seed, epoch):
  the shuffled order, sharded over DDP ranks (it is a ``DistributedSampler``, so Lightning
  keeps it and calls its ``set_epoch``), and one seed per sample, handed to the dataset
  with the index. The samples then depend neither on the global random generators, nor on
  the number of loader workers, nor on what was fetched before a checkpoint.
- ``ResumableLoader`` tells Lightning where it is in the epoch (``state_dict``, stored in
  every checkpoint) and, loaded from a checkpoint, skips the batches already trained on.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Callable, Iterator, Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)

#: Per-sample seeds are drawn from [0, SAMPLE_SEEDS).
SAMPLE_SEEDS = 2**31 - 1


def sample_key(key: int | tuple[int, int], train: bool) -> tuple[int, int]:
    """``(index, seed)`` of a dataset key: ``EpochSampler``'s pair, or a bare index.

    A bare training index (a notebook reading ``train_set[i]``) draws a fresh seed from
    torch's generator; validation samples use seed 0, so their prompts never change.
    """
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), int(torch.randint(0, SAMPLE_SEEDS, ())) if train else 0


class EpochSampler(DistributedSampler):
    """This rank's share of an epoch's shuffled order, each index paired with its sample seed.

    The order is ``DistributedSampler``'s (a permutation seeded by ``seed + epoch``, padded
    to a multiple of the ranks, every ``num_replicas``-th index from ``rank``); the seeds
    come from ``(seed, epoch)`` and index, so a sample is the same on any rank. ``start``
    skips the first samples of this rank's share (set by ``ResumableLoader``). ``gate(index)``, when
    given, is called before each index is handed out, in the process that iterates the loader (the
    early start waits there for the sample's case: ``adapt.data.background``); it changes no order.
    """

    def __init__(
        self,
        dataset: Sized,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        gate: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        self.start = 0
        self.gate = gate

    def sample_seeds(self) -> np.ndarray:
        """One seed per sample of the whole dataset for this epoch."""
        return np.random.default_rng([self.seed, self.epoch]).integers(0, SAMPLE_SEEDS, len(self.dataset))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        seeds = self.sample_seeds()
        for index in itertools.islice(super().__iter__(), self.start, None):
            if self.gate is not None:
                self.gate(index)
            yield index, int(seeds[index])


class ResumableLoader(DataLoader):
    """A training loader whose place in the epoch is saved in Lightning's checkpoints.

    ``state_dict`` holds the epoch of the pass in progress, the batches handed out so far,
    and the batch size and number of ranks they were counted in. Lightning iterates a sized
    loader without fetching ahead, so at a checkpoint these are the batches trained on.
    ``load_state_dict`` (on resume, before the first batch: by Lightning, and by the
    datamodule that built the loader) makes the next pass of that epoch skip them; a
    checkpoint from the end of an epoch skips nothing, since the run goes on with the next.
    """

    def __init__(self, dataset: Dataset, epoch_of: Callable[[], int] | None = None, **kwargs: Any) -> None:
        """``sampler=EpochSampler(...)`` among the kwargs; or a dataset that places itself
        (``set_position``: a stream, ``adapt.data.streaming``) and ``epoch_of``, the current epoch."""
        # Each new iterator draws the workers' base seed from the loader's generator; its own
        # keeps that draw out of the global stream (dropout), which a resume restores exactly.
        kwargs.setdefault("generator", torch.Generator().manual_seed(getattr(kwargs.get("sampler"), "seed", 0)))
        super().__init__(dataset, **kwargs)
        self.epoch_of = epoch_of
        self.epoch, self.batches = 0, 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches) of a loaded checkpoint

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        epoch = (
            self.epoch_of() if self.epoch_of else getattr(self.sampler, "epoch", 0)
        )  # Lightning may swap in its own sampler (overfit_batches)
        skip = self.resume_at[1] if self.resume_at is not None and self.resume_at[0] == epoch else 0
        if isinstance(self.sampler, EpochSampler):
            self.sampler.start = skip * int(self.batch_size or 1)
        elif hasattr(self.dataset, "set_position"):
            self.dataset.set_position(epoch, skip, int(self.batch_size or 1))
        else:
            skip = 0
        self.epoch, self.batches = epoch, skip
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def layout(self) -> tuple[int, int]:
        """(batch size, ranks): how many samples one batch of this loader stands for."""
        return int(self.batch_size or 1), int(getattr(self.sampler, "num_replicas", getattr(self.dataset, "world", 1)))

    def state_dict(self) -> dict[str, int]:
        batch_size, ranks = self.layout()
        return {"epoch": self.epoch, "batches": self.batches, "batch_size": batch_size, "ranks": ranks}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = int(state["batches"])
        saved, now = (int(state["batch_size"]), int(state["ranks"])), self.layout()
        if saved != now:  # e.g. a preempted job restarted on fewer GPUs: skip the same share of the epoch
            batches = batches * saved[0] * saved[1] // (now[0] * now[1])
            log.warning(
                "resuming with batch size %d on %d rank(s) where the checkpoint had %d on %d: the rest of "
                "epoch %d skips the same share of it (%d batches), but not exactly the same samples",
                *now,
                *saved,
                int(state["epoch"]),
                batches,
            )
        self.resume_at = (int(state["epoch"]), batches)
        if isinstance(self.sampler, DistributedSampler):  # Lightning sets it too, but after its first iter()
            self.sampler.set_epoch(self.resume_at[0])
