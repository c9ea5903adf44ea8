"""The LightningDataModule: a card's cases as 2D samples (images, or slices of volumes) with prompts.

Batches follow the project's convention: ``image`` ``[B, C, S, S]`` in [0, 1] (C = 1 or 3),
``label`` ``[B, N, S, S]`` binary masks, ``boxes`` / ``points`` / ``point_labels`` simulated
from each mask with a seeded ``PromptSimulator``, and ``meta`` (case, slice (-1 for 2D),
target, label id). With ``data.objects=each`` a sample is one target in one slice (N = 1);
with ``data.objects=all`` it is every target of the card, in the card's order (N = number
of targets; the semantic task's class map), and an absent target gets a neutral prompt
(the whole-image box, points marked -1 = padding).

With ``data.device_transforms=true`` the loader ships each sample at its own resolution instead
(``image`` ``[C, H, W]`` in the cache's dtype, ``label`` ``[N, H, W]`` uint8, prompts already on
the model's grid, augmentation parameters) and the datamodule's ``on_after_batch_transfer``
turns the batch into the layout above on the training device (``adapt.data.device_transforms``).

Every case is read and checked while indexing, before training starts; bad cases raise a
``DataError`` naming the file, or with ``data.skip_bad_cases=true`` are warned about,
counted (``num_bad_cases``) and left out. Cases are split by patient, never by slice.
With ``data.early_start=true`` (the default) and a disk cache that lacks many volumes, only their
label maps and image headers are read before training starts (``adapt.data.label_index``); the
images are prepared by worker processes while it runs (``adapt.data.background``), and a fault
that only the image shows is raised, naming the case, when a sample first asks for it.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from adapt.data.background import Preparation, default_workers, first_use_order
from adapt.data.cache import EARLY_START_CASES, CaseStore, missing_cases, prepare_stores
from adapt.data.cards import DataCard, load_card
from adapt.data.device_transforms import AUGMENT, NATIVE_SIZE, collate_native, to_model_grid
from adapt.data.load import odd_channels
from adapt.data.names import OBJECT_MODES
from adapt.data.sources import data_root, list_cases
from adapt.data.sampling import EpochSampler, ResumableLoader, sample_key
from adapt.data.splits import require_validation, split_cases
from adapt.errors import ConfigError, DataError, check_choice
from adapt.models.primitives import resize_image, to_model_coords
from adapt.transforms.augment import PairAugment, SplitAugment
from adapt.transforms.prompts import PromptSimulator
from adapt.transforms.slices import (
    NODATA_LABEL,
    NODATA_MASK,
    mark_nodata,
    object_masks,
    plane_view,
    resize_label,
    take_plane,
)

__all__ = [
    "SampleDataset",
    "SegmentationDataModule",
    "build_datamodule",
    "data_root",
    "index_cases",
    "list_cases",
    "split_cases",
]

log = logging.getLogger(__name__)

#: ``data.device_transforms`` when a config does not say (``configs/data/default.yaml`` repeats it).
DEVICE_TRANSFORMS = True
#: Batches each loader worker prepares ahead with device transforms (small: native planes).
NATIVE_PREFETCH = 4


def index_cases(
    store: CaseStore,
    objects: str = "each",
    empty_share: float = 0.0,
    max_slices_per_case: int | None = None,
    skip_bad_cases: bool = False,
    seed: int = 0,
    require_target: bool | None = None,
    channels: dict[str, tuple[Any, int]] | None = None,
    prepare_workers: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read and check every case of ``store``; list its samples.

    Cases missing from a disk cache are first prepared by ``prepare_workers`` processes (default:
    every core); the samples then come from each case's cached label counts, without reading a label.

    Args:
        store: the split's preprocessed cases.
        objects: ``each`` (one sample per target and slice) or ``all`` (one per slice).
        empty_share: share of the samples that hold no target (drawn with ``seed`` from the
            slices/images without one); 0 keeps foreground samples only.
        max_slices_per_case: at most this many foreground slices per case and target, evenly spaced.
        skip_bad_cases: warn and leave a bad case out instead of raising.
        seed: seed of the empty-sample draw, the training order and the per-sample seeds.
        require_target: a case without any target is bad (default: when ``empty_share`` is 0).
        channels: filled with case id -> ``(case, image channels)``, for ``odd_channels`` over every split.
        prepare_workers: processes that prepare missing disk-cache entries (``CaseStore.prepare_missing``).

    Returns:
        ``(items, bad_cases)``: ``int64 [n, 3]`` rows of (case position, slice (-1 for 2D),
        target position (-1 = all targets)), and the ids of the cases left out.

    Raises:
        DataError: a bad case (file named), unless ``skip_bad_cases``.
    """
    card = store.card
    ids = list(card.target_ids().values())
    axis = card.slice_axis if card.dims == 3 else None
    foreground: list[tuple[int, int, int]] = []
    empty: list[tuple[int, int, int]] = []
    bad: list[str] = []
    require_target = empty_share == 0 if require_target is None else require_target
    store.prepare_missing(workers=prepare_workers)  # bad cases are reported below, in order, as before
    for position, case in enumerate(store.cases):
        try:
            counts = store.counts(position, ids)
            if channels is not None:
                channels[case.id] = (case, store.image_channels(position))
            if not counts.any() and require_target:
                raise DataError(
                    f"{case.label}: none of the targets {card.target_ids()} occurs in the label map; "
                    f"fix the label file, or set data.skip_bad_cases=true (or data.empty_share>0 "
                    f"to train on images without the target)"
                )
        except DataError as err:
            if not skip_bad_cases:
                raise
            log.warning("skipping bad case %s: %s", case.id, err)
            bad.append(case.id)
            continue
        slices = np.arange(len(counts)) if axis is not None else np.array([-1])
        columns = [(t, counts[:, t] > 0) for t in range(len(ids))] if objects == "each" else [(-1, counts.any(1))]
        for target, present in columns:
            kept = evenly_spaced(slices[present], max_slices_per_case)
            foreground += [(position, int(k), target) for k in kept]
            empty += [(position, int(k), target) for k in slices[~present]]
    wanted = int(round(empty_share / (1 - empty_share) * len(foreground))) if empty_share > 0 else 0
    if wanted > len(empty):  # the share asked for is not there: say so rather than train on less without a word
        log.warning(
            "data.empty_share=%s asks for %d samples without a target beside the %d with one, but the cases of "
            "data card %s hold only %d; training uses those: lower data.empty_share, or add %s without the target",
            empty_share,
            wanted,
            len(foreground),
            card.path or card.name,
            len(empty),
            "images" if axis is None else "slices",
        )
    if wanted and empty:
        chosen = np.sort(np.random.default_rng(seed).choice(len(empty), size=min(wanted, len(empty)), replace=False))
        foreground += [empty[i] for i in chosen]
    return np.array(sorted(foreground), dtype=np.int64).reshape(-1, 3), bad


def evenly_spaced(slices: np.ndarray, most: int | None) -> np.ndarray:
    """At most ``most`` of ``slices`` (sorted), evenly spaced from the first to the last; all when ``most`` is ``None``."""
    if most and len(slices) > most:
        return slices[np.linspace(0, len(slices) - 1, most).round().astype(int)]
    return slices


def without_cases(items: np.ndarray, store: CaseStore, ids: set[str]) -> np.ndarray:
    """``index_cases`` rows without the samples of the cases ``ids``."""
    if not ids or not len(items):
        return items
    keep = np.array([store.cases[int(position)].id not in ids for position in items[:, 0]])
    return items[keep]


class SampleDataset(Dataset):
    """2D samples of one split (see the module doc for the batch layout).

    Args:
        store: the split's preprocessed cases.
        items: rows from ``index_cases``.
        image_size: side S of the square model input.
        prompts: the prompt simulator.
        train: training samples draw fresh prompts (and augmentation) each time they are
            read; validation prompts are fixed per sample.
        augment: the augmenter (training only), or ``None``: a ``PairAugment``, or with ``native`` a
            ``SplitAugment``.
        native: ship the plane at its own resolution (``adapt.data.device_transforms``).
    """

    def __init__(
        self,
        store: CaseStore,
        items: np.ndarray,
        image_size: int,
        prompts: PromptSimulator,
        train: bool,
        augment: PairAugment | SplitAugment | None = None,
        native: bool = False,
    ) -> None:
        self.store, self.items, self.image_size, self.prompts = store, items, int(image_size), prompts
        self.train, self.augment, self.native = train, augment if train else None, native
        if self.augment is not None and isinstance(self.augment, SplitAugment) != native:
            raise ValueError("SampleDataset: native samples take a SplitAugment, resized ones a PairAugment")
        self.card = store.card
        self.targets = list(self.card.target_ids().items())

    def __len__(self) -> int:
        return len(self.items)

    def wait(self, i: int) -> None:
        """Return once sample ``i``'s case is in the cache (``CaseStore.wait``; the early start)."""
        self.store.wait(int(self.items[i][0]))

    def plane(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``[C, H, W]`` (float32) and label map ``[H, W]`` of sample ``i`` on its own grid:
        the slice's (3D) or the cached image's (2D, at most the model's side)."""
        position, index, _ = (int(v) for v in self.items[i])
        volume = self.store[position]
        if self.card.dims == 3:
            return take_plane(volume.image, volume.label, self.card.slice_axis, index)
        return np.asarray(volume.image, dtype=np.float32), np.array(volume.label)  # copies: the cache may be read-only

    def pixels(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``[C, S, S]`` and label map ``[S, S]`` of sample ``i``, before augmentation."""
        image, label = self.plane(i)
        return (
            resize_image(torch.from_numpy(image), self.image_size),
            resize_label(torch.from_numpy(label), self.image_size),
        )

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``key``: an index, or ``(index, seed)`` from ``EpochSampler`` (the seed draws the prompts and augmentation)."""
        if self.native:
            return self._native(key)
        i, draw = sample_key(key, self.train)
        position, index, target = (int(v) for v in self.items[i])
        image, label = self.plane(i)
        if self.augment is not None:  # on the plane's own grid: usually cheaper than at the model's side
            image, label = self.augment(image, label, seed=draw)
        chosen = self.targets if target < 0 else [self.targets[target]]
        values = [value for _, value in chosen]
        key = (i, draw) if self.train else (i,)
        # Prompts are drawn on the plane's own pixels and mapped as SAM2 maps a user's prompt,
        # so training sees boxes exactly where prediction puts the same box.
        prompts = self._prompts(object_masks(torch.from_numpy(label), values).numpy(), key, *label.shape)
        image = resize_image(torch.from_numpy(image), self.image_size)
        resized = resize_label(torch.from_numpy(label), self.image_size)
        masks = mark_nodata(object_masks(resized, values), resized)
        sample = {"image": image, "label": masks, **prompts}
        sample["meta"] = self._meta(position, index, target)
        return sample

    def _native(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``key`` at its own resolution: ``image`` ``[C, H, W]`` in the cache's dtype, ``label``
        ``[N, H, W]`` uint8, prompts on the model's grid (drawn as ``__getitem__`` draws them, on the
        augmented label) and, when augmenting, ``augment`` (the device's share, ``SplitAugment``)."""
        i, draw = sample_key(key, self.train)
        position, index, target = (int(v) for v in self.items[i])
        volume = self.store[position]
        if self.card.dims == 3:
            image, label = plane_view(volume.image, volume.label, self.card.slice_axis, index)
        else:  # a disk cache's image is read (decoded) here, a memory cache's is taken as it is
            image, label = np.asarray(volume.image), np.asarray(volume.label)
        chosen = self.targets if target < 0 else [self.targets[target]]
        if len(chosen) == 1:  # object map: 0 = background, n + 1 = object n (distinct ids: disjoint)
            objects = (label == chosen[0][1]).view(np.uint8)
        else:
            objects = np.zeros(label.shape, dtype=np.uint8 if len(chosen) < NODATA_MASK - 1 else np.uint16)
            for n, (_, value) in enumerate(chosen):
                objects[label == value] = n + 1
        if label.dtype == np.uint16 and (label == NODATA_LABEL).any():  # nodata travels as its own object id
            objects = np.where(label == NODATA_LABEL, NODATA_MASK, objects).astype(objects.dtype)
        sample: dict[str, Any] = {}
        if self.augment is not None:
            image, objects, params = self.augment(image, objects, seed=draw)
            sample[AUGMENT] = torch.from_numpy(params)
        masks = np.stack([objects == n + 1 for n in range(len(chosen))])
        key = (i, draw) if self.train else (i,)
        sample.update(self._prompts(masks, key, *objects.shape))
        sample["image"] = torch.from_numpy(np.array(image, order="C"))  # a copy: the cache may be read-only
        masks = masks.view(np.uint8)
        if objects.max(initial=0) == NODATA_MASK:
            masks = np.where(objects == NODATA_MASK, np.uint8(NODATA_MASK), masks)
        sample["label"] = torch.from_numpy(np.ascontiguousarray(masks))
        sample["meta"] = self._meta(position, index, target)
        return sample

    def _meta(self, position: int, index: int, target: int) -> dict[str, Any]:
        name, value = ("all", -1) if target < 0 else self.targets[target]
        return {"case": self.store.cases[position].id, "slice": index, "target": name, "label_id": value}

    def _prompts(self, masks: np.ndarray, key: tuple[int, ...], height: int, width: int) -> dict[str, torch.Tensor]:
        """Each object's prompts on the model's grid (an absent object: the whole plane, padding points)."""
        parts: list[dict[str, np.ndarray]] = []
        for n, mask in enumerate(masks):
            parts.append(
                self.prompts(mask, key=key if len(masks) == 1 else (*key, n))
                if mask.any()
                else self._neutral(height, width)
            )
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for name in ("boxes", "points"):
            if name in out:
                out[name] = to_model_coords(out[name], height, width, self.image_size)
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def _neutral(self, height: int, width: int) -> dict[str, np.ndarray]:
        """Prompts of an absent object: the whole plane as box, padding points (label -1)."""
        out: dict[str, np.ndarray] = {}
        if self.prompts.kind in ("box", "box+points"):
            out["boxes"] = np.array([[0, 0, width - 1, height - 1]], dtype=np.float32)
        if self.prompts.num_points:
            out["points"] = np.zeros((1, self.prompts.num_points, 2), dtype=np.float32)
            out["point_labels"] = np.full((1, self.prompts.num_points), -1, dtype=np.int64)
        return out


class SegmentationDataModule(L.LightningDataModule):
    """Train/val samples of one card (2D images or slices of volumes), split by case.

    Args:
        card: the data card.
        root: where the files are (``None``: the card's root or the cache).
        image_size: side S of the model input.
        batch_size, val_batch_size, num_workers: loader settings.
        prompts, val_prompts: prompt simulators of each split.
        skip_bad_cases: warn, count and leave out bad cases instead of raising.
        val_max_slices_per_case: validation slices per case and target (evenly spaced).
        objects: ``each`` or ``all`` (see the module doc).
        empty_share: share of training samples without the target (validation has none).
        augment: 2D augmentation of training samples.
        device_transforms: ship native planes and resize/augment them on the training device
            (``adapt.data.device_transforms``); otherwise the loader resizes and augments.
        cache: ``auto``, ``none``, ``memory`` or ``disk`` (``adapt.data.cache``).
        cache_dir: root of disk caches.
        prepare_workers: processes that write cases missing from a disk cache (``None``: every core).
        seed: seed of the empty-sample draw, the training order and the per-sample seeds.
        require_target: a case without any target is bad (default: when ``empty_share`` is 0).
        train_cases: train on this many of the training patients (``data.train_cases``, drawn with
            ``seed``, nested as it grows: ``adapt.data.splits.training_subset``); ``None``: all.
        early_start: with a disk cache missing at least ``EARLY_START_CASES`` cases, index them from
            their labels and prepare them in worker processes while training runs (not with
            ``skip_bad_cases``, whose samples are known only once every case is read, nor with one
            ``prepare_workers``, which prepares in this process).
    """

    native = False  # subclasses that build their own datasets (clips) ship resized samples
    preparation: Preparation | None = None  # the early start's background preparation (slices only)

    def __init__(
        self,
        card: DataCard,
        root: str | None,
        image_size: int,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        prompts: PromptSimulator,
        val_prompts: PromptSimulator,
        skip_bad_cases: bool = False,
        val_max_slices_per_case: int | None = None,
        objects: str = "each",
        empty_share: float = 0.0,
        augment: bool = False,
        cache: str = "auto",
        cache_dir: str | None = None,
        seed: int = 0,
        device_transforms: bool = DEVICE_TRANSFORMS,
        train_cases: int | str | None = None,
        prepare_workers: int | None = None,
        early_start: bool = True,
    ) -> None:
        super().__init__()
        check_choice("data.objects", objects, OBJECT_MODES)
        if not 0 <= empty_share < 1:
            raise ConfigError(f"data.empty_share must be in [0, 1), got {empty_share}")
        self.card, self.image_size = card, int(image_size)
        self.root = data_root(card, root)
        cases = list_cases(card, self.root, say="training")  # raises at once when the data is missing
        where = f"data card {card.path or card.name}"
        self.splits = split_cases(cases, card.split, where, train_cases, seed)
        require_validation(self.splits, where)
        self.bad_cases: list[str] = []
        stores = {side: CaseStore(card, self.splits[side], cache, cache_dir) for side in ("train", "val")}
        early = (
            early_start
            and not skip_bad_cases
            and (prepare_workers or default_workers()) > 1  # 1: every case is prepared in this process
            and missing_cases(stores.values()) >= EARLY_START_CASES
        )
        for store in stores.values():
            store.early = early
        # Workers start now, importing while this process reads the labels.
        self.preparation = Preparation(prepare_workers) if early else None
        # Both splits' missing cases in one pool (bad cases are reported by index_cases, in order).
        prepare_stores([(store, list(range(len(store)))) for store in stores.values()], prepare_workers)
        found: dict[str, tuple[Any, int]] = {}
        train_items, bad = index_cases(
            stores["train"],
            objects,
            empty_share,
            None,
            skip_bad_cases,
            seed,
            channels=found,
            prepare_workers=prepare_workers,
        )
        # Validation measures segmentation of present targets: foreground samples only.
        val_items, val_bad = index_cases(
            stores["val"],
            objects,
            0.0,
            val_max_slices_per_case,
            skip_bad_cases,
            seed,
            require_target=empty_share == 0,
            channels=found,
            prepare_workers=prepare_workers,
        )
        odd = odd_channels(found, skip_bad_cases)
        train_items, val_items = (
            without_cases(train_items, stores["train"], odd),
            without_cases(val_items, stores["val"], odd),
        )
        self.skipped = {
            "train": bad + sorted(odd & {c.id for c in self.splits["train"]}),
            "val": val_bad + sorted(odd & {c.id for c in self.splits["val"]}),
        }
        self.bad_cases = self.skipped["train"] + self.skipped["val"]
        require_validation(self.splits, where, self.skipped["val"])
        if not len(train_items):
            raise DataError(
                f"data card {card.name!r}: no training sample left at {self.root} "
                f"({len(self.bad_cases)} bad case(s) skipped)"
            )
        self.native = bool(device_transforms)
        augmenter = (SplitAugment() if self.native else PairAugment()) if augment else None
        self.train_set = SampleDataset(
            stores["train"], train_items, image_size, prompts, True, augmenter, native=self.native
        )
        self.val_set = SampleDataset(stores["val"], val_items, image_size, val_prompts, False, native=self.native)
        self.set_loading(batch_size, val_batch_size, num_workers, seed)
        if self.preparation is not None:
            self.prepare_in_background(stores)
        self.label_map = dict(card.labels)
        self.num_bad_cases = len(self.bad_cases)
        channels = card.intensity.get("channels")
        self.preprocessing = {
            "dims": card.dims,
            "intensity": dict(card.intensity),
            "image_size": self.image_size,
            "slice_axis": card.slice_axis,
            "spacing": card.spacing,
            "channels": stores["train"].channels,
            "bands": list(channels) if channels else None,
            "orientation": "RAS" if card.dims == 3 else None,
            "objects": objects,
        }

    def prepare_in_background(self, stores: dict[str, CaseStore]) -> None:
        """Start writing the cases indexed from their labels, in the order training reads them
        (``first_use_order``: the first epoch's order as one rank sees it, from ``seed``)."""
        unwritten = {side: set(store.unwritten()) for side, store in stores.items()}
        first = [int(self.train_set.items[i][0]) for i, _ in EpochSampler(self.train_set, seed=self.seed)]
        lead = len(set(first[: 2 * self.batch_size]))  # the cases of the first two batches
        order = first_use_order(first, self.val_set.items[:, 0], lead)
        jobs = [(stores[side], p) for side, p in order if p in unwritten[side]]
        self.preparation.submit(jobs)
        log.info("training starts while %d case(s) are prepared in the background", len(jobs))

    def teardown(self, stage: str) -> None:
        """Stop the background preparation when training ends (cases not started are left for the next
        run); not after the validation a run does before it trains (``validate_before``)."""
        if self.preparation is not None and stage == "fit":
            self.preparation.close()

    def set_loading(self, batch_size: int, val_batch_size: int, num_workers: int, seed: int) -> None:
        """The loaders' settings, and no training loader or checkpointed position yet."""
        self.batch_size, self.val_batch_size, self.num_workers, self.seed = (
            batch_size,
            val_batch_size,
            num_workers,
            seed,
        )
        self.train_loader: ResumableLoader | None = None
        self.loader_state: dict[str, int] | None = None  # from a checkpoint, for the next training loader

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled per epoch from ``seed``, sharded over the trainer's ranks, resumable mid-epoch."""
        trainer = self.trainer
        ranks = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        gate = self.train_set.wait if self.preparation is not None else None
        sampler = EpochSampler(self.train_set, seed=self.seed, num_replicas=ranks[0], rank=ranks[1], gate=gate)
        self.train_loader = ResumableLoader(
            self.train_set,
            sampler=sampler,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **self.loader_options(),
        )
        if self.loader_state:
            self.train_loader.load_state_dict(self.loader_state)
        return self.train_loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's place in the epoch, saved in every checkpoint.

        Lightning restores a resumable loader by itself only if the loader is built after the
        restore; ``configure_optimizers`` builds it before (``estimated_stepping_batches``,
        Lightning issue #20550), so the datamodule carries the state too.
        """
        return {"train_loader": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the position for the next training loader, and give it to the current one: under
        FSDP, Lightning restores a checkpoint after the strategy's setup, which built the loader."""
        self.loader_state = state_dict.get("train_loader")
        if self.loader_state and self.train_loader is not None:
            self.train_loader.load_state_dict(self.loader_state)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **self.loader_options(),
        )

    def loader_options(self) -> dict[str, Any]:
        """Native batches: padded collation, pinned memory when training on CUDA, deeper prefetch."""
        if not self.native:
            return {}
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        options: dict[str, Any] = {"collate_fn": collate_native, "pin_memory": cuda}
        if self.num_workers > 0:
            options["prefetch_factor"] = NATIVE_PREFETCH
        return options

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A native batch, now on the training device, to the model's grid (``to_model_grid``);
        Lightning calls it for every training, validation and test batch. Other batches pass."""
        if not isinstance(batch, dict) or NATIVE_SIZE not in batch:  # resized batches, clips: as they are
            return batch
        return to_model_grid(batch, self.image_size)


def loader_options(data_cfg: Mapping[str, Any], image_size: int, seed: int) -> dict[str, Any]:
    """The keyword arguments of the ``data`` node that every datamodule takes, the cases' and the
    shards' (``adapt.data.streaming``): card, grid, batches, workers, prompts, objects, augmentation."""
    prompt = dict(data_cfg.get("prompt") or {})
    prompt.setdefault("seed", seed)
    return {
        "card": load_card(data_cfg["card"]),
        "root": data_cfg.get("root"),
        "image_size": image_size,
        "batch_size": int(data_cfg.get("batch_size", 4)),
        "val_batch_size": int(data_cfg.get("val_batch_size", 8)),
        "num_workers": int(data_cfg.get("num_workers", 0)),
        "prompts": PromptSimulator(**prompt),
        "val_prompts": PromptSimulator(**{**prompt, "seed": prompt["seed"] + 1}),
        "val_max_slices_per_case": data_cfg.get("val_max_slices_per_case"),
        "objects": str(data_cfg.get("objects", "each")),
        "augment": bool(data_cfg.get("augment", False)),
        "seed": seed,
        "device_transforms": bool(data_cfg.get("device_transforms", DEVICE_TRANSFORMS)),
    }


def build_datamodule(data_cfg: Mapping[str, Any], image_size: int, seed: int) -> SegmentationDataModule:
    """The datamodule described by the Hydra ``data`` node (see ``configs/data/default.yaml``), on the
    card's cases; ``data.shards`` streams instead (``adapt.data.streaming.build_shard_datamodule``,
    which the task picks: ``adapt.tasks.base.BaseTask.build_datamodule``)."""
    return SegmentationDataModule(
        **loader_options(data_cfg, image_size, seed),
        skip_bad_cases=bool(data_cfg.get("skip_bad_cases", False)),
        empty_share=float(data_cfg.get("empty_share", 0.0)),
        cache=str(data_cfg.get("cache", "auto")),
        cache_dir=data_cfg.get("cache_dir"),
        train_cases=data_cfg.get("train_cases"),
        prepare_workers=data_cfg.get("prepare_workers"),
        early_start=bool(data_cfg.get("early_start", True)),
    )
