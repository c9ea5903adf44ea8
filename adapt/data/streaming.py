"""Training and validation samples streamed from WebDataset shards (``data.shards=<folder or URL>``).

The shards (``adapt.data.shards``) hold the per-plane cache's chunks; this module turns them
into the datamodule's samples with the slice datamodule's own ``SampleDataset`` code, so a
streamed sample equals the one read from the cache (same prompts and augmentation for the
same sample seed). What each rank reads:

* **Samples**: every plane of a split gives one sample per target present on it
  (``data.objects=each``) or one holding them all (``all``), as ``index_cases`` finds them;
  ``shards.json`` lists the label ids on each plane, so the list is known before a shard is read.
* **Order of an epoch**: the shards in a permutation seeded by ``(seed, epoch)`` (their planes
  were mixed across cases when written), the samples of each shard in their stored order.
* **Per rank**: a contiguous ``1/world`` of that order (padded by wrapping to equal counts, as
  ``DistributedSampler`` pads, so DDP ranks step together); a rank opens only the shards its
  share touches. Rank and world size come from the trainer, else from ``torch.distributed``,
  else from ``RANK`` / ``WORLD_SIZE``. Loader workers split their rank's share into contiguous
  parts (so the order depends on ``data.num_workers``: resume with the same number).
* **Resume**: the order and every sample's seed follow from ``(seed, epoch)``; a loader resumed
  after ``b`` batches (``ResumableLoader``) makes each worker skip the batches it had handed out,
  reading past their bytes without decoding them.

Not streamed: ``data.empty_share`` (samples without the target are drawn per case) and
``data.train_cases``; every foreground plane of the training shards is a sample.
"""

from __future__ import annotations

import math
import os
import tarfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from adapt.data.cards import DataCard
from adapt.data.datamodule import (
    DEVICE_TRANSFORMS,
    OBJECT_MODES,
    SampleDataset,
    SegmentationDataModule,
    evenly_spaced,
    loader_options,
)
from adapt.data.sampling import SAMPLE_SEEDS, ResumableLoader
from adapt.data.shards import SHARD_FIX, SPLITS, check_shards, decode_plane, read_shard_index, shard_url, webdataset
from adapt.data.sources import Case, data_root
from adapt.data.volumes import Volume
from adapt.errors import ConfigError, DataError
from adapt.transforms.augment import PairAugment, SplitAugment
from adapt.transforms.prompts import PromptSimulator


def ranks() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``torch.distributed``'s, else ``RANK`` / ``WORLD_SIZE``, else one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_plan(sizes: list[int], batch_size: int, batches: int) -> tuple[list[int], int]:
    """Batches each worker's part skips so that the loader skips its first ``batches``, and whose turn is next.

    A ``DataLoader`` over an iterable dataset hands out its workers' batches in turn (worker 0,
    1, ..., 0, 1, ..., passing over a worker that has run out), starting again at worker 0 when a
    resumed pass begins; loader worker ``w`` then takes part ``(w + turn) % len(sizes)``, which
    keeps the uninterrupted pass's order.

    Returns:
        ``(batches to skip per part, the part whose batch comes next)``.
    """
    counts = [math.ceil(size / batch_size) for size in sizes]
    turns = [part for round_ in range(max(counts, default=0)) for part, count in enumerate(counts) if count > round_]
    skips = [turns[:batches].count(part) for part in range(len(sizes))]
    return skips, turns[batches] if batches < len(turns) else 0


class _StreamStore:
    """The case store ``SampleDataset`` reads, holding the streamed plane of the sample at hand."""

    def __init__(self, card: DataCard, cases: list[dict[str, Any]], where: str) -> None:
        self.card, self.entries = card, cases
        self.cases = [Case(c["id"], Path(where), Path(where), c["id"]) for c in cases]
        self.volume: Volume | None = None

    def __getitem__(self, position: int) -> Volume:
        assert self.volume is not None and self.volume.case is self.cases[position]
        return self.volume

    def hold(self, position: int, sample: dict[str, Any]) -> None:
        entry = self.entries[position]
        image, label = decode_plane(entry, sample)
        grid = {k: np.asarray(entry[k]) for k in ("affine", "source_affine") if k in entry}
        if "source_shape" in entry:
            grid["source_shape"] = tuple(entry["source_shape"])
        self.volume = Volume(self.cases[position], image, label, **grid)  # type: ignore[arg-type]


class ShardStream(IterableDataset):
    """One split's samples, streamed from the shards at ``source`` (see the module doc).

    Args:
        source: folder, URL base or ``{}`` template of the shards (``data.shards``).
        index: their ``shards.json``.
        split: ``train`` or ``val``.
        card: the data card they were written from.
        samples: builds a sample from a plane (a ``SampleDataset`` over the stream's store).
        objects: ``each`` or ``all``.
        seed: seed of the shard order and the sample seeds.
        shuffle: shuffle the shards each epoch (training).
        max_slices_per_case: at most this many planes per case and target, evenly spaced (validation).
    """

    def __init__(
        self,
        source: str,
        index: dict[str, Any],
        split: str,
        card: DataCard,
        image_size: int,
        prompts: PromptSimulator,
        objects: str = "each",
        seed: int = 0,
        shuffle: bool = True,
        augment: PairAugment | SplitAugment | None = None,
        native: bool = False,
        max_slices_per_case: int | None = None,
    ) -> None:
        self.source, self.split, self.seed, self.shuffle = source, split, seed, shuffle
        self.shards = index["shards"][split]
        self.store = _StreamStore(card, index["cases"][split], source)
        targets = list(card.target_ids().values())
        found: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (case, target) -> its (plane, shard, k)
        for s, shard in enumerate(self.shards):
            for k, (case, plane, present) in enumerate(shard["planes"]):
                hits = [t for t, value in enumerate(targets) if value in present]
                for t in hits if objects == "each" else [-1] * bool(hits):
                    found.setdefault((case, t), []).append((plane, s, k))
        kept = set()
        for planes in found.values():  # data.val_max_slices_per_case, as index_cases keeps them
            chosen = evenly_spaced(np.array(sorted(planes)), max_slices_per_case)
            kept.update(tuple(int(v) for v in plane) for plane in chosen)
        rows = sorted((s, k, t) for (_, t), planes in found.items() for plane, s, k in planes if (plane, s, k) in kept)
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 3)  # (shard, plane in shard, target), by shard
        self.runs = [np.flatnonzero(self.rows[:, 0] == s) for s in range(len(self.shards))]
        self.samples = SampleDataset(self.store, self.rows[:0], image_size, prompts, shuffle, augment, native)  # type: ignore[arg-type]
        self.epoch, self.start_batches, self.batch_size = 0, 0, 1
        self.rank, self.world = ranks()

    def set_position(self, epoch: int, batches: int, batch_size: int) -> None:
        """The epoch of the next pass and the batches of it to skip (``ResumableLoader``)."""
        self.epoch, self.start_batches, self.batch_size = epoch, batches, batch_size

    def __len__(self) -> int:
        """Samples of this rank per epoch."""
        return math.ceil(len(self.rows) / self.world)

    def rank_order(self) -> np.ndarray:
        """Row numbers this rank reads in the current epoch, in order."""
        count = len(self.rows)
        if not count:
            return np.zeros(0, dtype=np.int64)
        shards = (
            np.random.default_rng([self.seed, self.epoch]).permutation(len(self.runs))
            if self.shuffle
            else np.arange(len(self.runs))
        )
        order = np.concatenate([self.runs[s] for s in shards])
        return order[(self.rank * len(self) + np.arange(len(self))) % count]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        parts = np.array_split(self.rank_order(), workers)
        skips, turn = worker_plan([len(p) for p in parts], self.batch_size, self.start_batches)
        part = (worker + turn) % workers
        rows = parts[part][skips[part] * self.batch_size :]
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(0, SAMPLE_SEEDS, len(self.rows))
        for row, sample in self._planes(rows):
            shard, _, target = (int(v) for v in self.rows[row])
            position, plane, _ = self.shards[shard]["planes"][int(self.rows[row, 1])]
            self.store.hold(position, sample)
            self.samples.items = np.array([[position, plane, target]], dtype=np.int64)
            yield self.samples[(0, int(seeds[row]))] if self.shuffle else self.samples[0]

    def _planes(self, rows: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row, tar sample of its plane)`` for ``rows`` in order, opening each shard once per run of its rows."""
        wds = webdataset()
        i = 0
        while i < len(rows):
            shard = int(self.rows[rows[i], 0])
            end = i
            while end < len(rows) and self.rows[rows[end], 0] == shard and (end == i or rows[end] > rows[end - 1]):
                end += 1
            wanted = rows[i:end]
            planes = self.rows[wanted, 1]
            url = shard_url(self.source, self.shards[shard]["name"])
            stream = iter(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()))
            k, sample = -1, None
            for row, plane in zip(wanted, planes):
                while k < plane:  # past the planes this rank does not need: read, not decoded
                    sample, k = _next_sample(stream, url, k + 1), k + 1
                yield int(row), sample  # type: ignore[misc]
            i = end


def _next_sample(stream: Iterator[dict[str, Any]], url: str, number: int) -> dict[str, Any]:
    """Sample ``number`` of the shard at ``url``, read from ``stream``.

    Raises:
        DataError: the shard ends before it (cut short) or is not a readable tar file, naming it.
    """
    try:
        return next(stream)
    except StopIteration:
        problem = f"ends before its sample {number} (shards.json lists more: it was cut short)"
    except (OSError, tarfile.TarError, ValueError) as err:
        problem = f"is not a readable tar shard ({type(err).__name__}: {err})"
    raise DataError(f"{url}: {problem}; {SHARD_FIX}")


class ShardDataModule(SegmentationDataModule):
    """The slice datamodule's batches, streamed from shards (``data.shards``); see the module doc.

    Args:
        card: the data card the shards were written from (checked against ``shards.json``).
        source: the shards' folder, URL base or ``{}`` template.
        root: the card's data root (recorded with the run; the samples come from the shards).
        val_max_slices_per_case: validation planes per case and target (evenly spaced).
    """

    def __init__(
        self,
        card: DataCard,
        source: str,
        root: str | None,
        image_size: int,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        prompts: PromptSimulator,
        val_prompts: PromptSimulator,
        objects: str = "each",
        augment: bool = False,
        seed: int = 0,
        device_transforms: bool = DEVICE_TRANSFORMS,
        val_max_slices_per_case: int | None = None,
    ) -> None:
        super(SegmentationDataModule, self).__init__()
        if objects not in OBJECT_MODES:
            raise ConfigError(f"data.objects={objects!r} is not one of {OBJECT_MODES}")
        index = read_shard_index(source)
        check_shards(source, index, card)
        self.card, self.image_size, self.source, self.root = card, int(image_size), source, data_root(card, root)
        self.native = bool(device_transforms)
        augmenter = (SplitAugment() if self.native else PairAugment()) if augment else None
        self.train_set = ShardStream(
            source, index, "train", card, image_size, prompts, objects, seed, True, augmenter, self.native
        )
        self.val_set = ShardStream(
            source,
            index,
            "val",
            card,
            image_size,
            val_prompts,
            objects,
            seed,
            False,
            None,
            self.native,
            val_max_slices_per_case,
        )
        for split, stream in zip(SPLITS, (self.train_set, self.val_set)):
            if not len(stream.rows):
                raise ConfigError(
                    f"data.shards={source}: no {split} sample in the shards; write them from a card "
                    f"with {split} cases holding a target"
                )
        self.set_loading(batch_size, val_batch_size, num_workers, seed)
        self.label_map = dict(card.labels)
        self.bad_cases = sorted(index["bad_cases"])
        self.skipped = {"train": self.bad_cases, "val": []}
        self.num_bad_cases = len(self.bad_cases)
        channels = card.intensity.get("channels")
        first = index["cases"]["train"][0]
        self.preprocessing = {
            "dims": card.dims,
            "intensity": dict(card.intensity),
            "image_size": self.image_size,
            "slice_axis": card.slice_axis,
            "spacing": card.spacing,
            "channels": int(first["image"]["shape"][0]),
            "bands": list(channels) if channels else None,
            "orientation": "RAS" if card.dims == 3 else None,
            "objects": objects,
        }

    def _place(self, stream: ShardStream) -> None:
        trainer = self.trainer
        if trainer is not None:
            stream.rank, stream.world = trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> ResumableLoader:
        """This rank's share of the shuffled shards, resumable mid-epoch (workers restart each epoch,
        so that they see the new epoch's order)."""
        self._place(self.train_set)
        self.train_loader = ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            epoch_of=lambda: self.trainer.current_epoch if self.trainer else 0,
            **self.loader_options(),
        )
        if self.loader_state:
            self.train_loader.load_state_dict(self.loader_state)
        return self.train_loader

    def val_dataloader(self) -> DataLoader:
        self._place(self.val_set)
        return DataLoader(
            self.val_set, batch_size=self.val_batch_size, num_workers=self.num_workers, **self.loader_options()
        )


def build_shard_datamodule(data_cfg: Mapping[str, Any], image_size: int, seed: int) -> ShardDataModule:
    """The datamodule of ``data.shards`` (see ``build_datamodule`` for the other keys)."""
    for key, default in (("empty_share", 0.0), ("train_cases", None)):
        if data_cfg.get(key, default) not in (default, "all"):
            raise ConfigError(
                f"data.{key}={data_cfg[key]} does not apply to data.shards (every foreground plane "
                f"of the shards is a sample); leave data.{key} at {default}"
            )
    return ShardDataModule(**loader_options(data_cfg, image_size, seed), source=str(data_cfg["shards"]))
