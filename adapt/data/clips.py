"""Clips of consecutive slices for ``task=propagation``: SAM2's memory trained on volumes.

A sample is ``K`` consecutive slices of one case along the card's slice axis (the frames of
a short video), one target object, its mask on every frame, whether it is present on each
frame, and a prompt on one or a few frames; the task predicts the other frames through
SAM2's memory. Batches (default collation) follow the project's convention with a time axis:

* ``image`` ``[B, K, C, S, S]`` in [0, 1]; ``label`` ``[B, K, 1, S, S]`` binary;
* ``present`` ``[B, K, 1]`` bool; ``prompt_frames`` ``[B, K]`` bool;
* on prompted frames (zeros elsewhere): ``boxes`` ``[B, K, 1, 4]`` and/or ``points``
  ``[B, K, 1, k, 2]`` + ``point_labels`` ``[B, K, 1, k]`` simulated from the frame's mask by
  the seeded ``PromptSimulator``; a ``mask`` prompt is the frame's ground truth itself
  (``ClipDataModule.mask_prompts``; ``adapt.models.tracking.clip_prompts`` reads either);
* ``meta``: case, first slice, target name, label id.

Where clips are drawn (``require``): ``all`` keeps clips whose every frame holds the target
(inside the organ), ``any`` also clips that run past its ends, so frames without the object
train SAM2's object-presence head. Prompted frames are always frames that hold the target,
chosen ``first``, ``middle`` or ``random`` among them. Training clips are every valid start
(``stride``) with prompts that change each epoch; validation clips are a fixed, evenly
spaced few per case with fixed prompts.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from adapt.data.cache import CaseStore
from adapt.data.cards import DataCard, load_card
from adapt.data.datamodule import SegmentationDataModule
from adapt.data.load import odd_channels
from adapt.data.planes import ChunkedArray
from adapt.data.names import MASK_PROMPT, PROMPT_FRAME_MODES, REQUIRE_MODES
from adapt.data.sampling import sample_key
from adapt.data.splits import require_validation, split_cases
from adapt.data.volumes import data_root, list_cases
from adapt.errors import ConfigError, DataError, check_choice
from adapt.models.primitives import resize_image, to_model_coords
from adapt.transforms.prompts import PROMPT_KINDS, PromptSimulator, prompt_rng
from adapt.transforms.slices import resize_label

log = logging.getLogger(__name__)

#: Last key of the generator that picks ``random`` prompt frames (per-frame prompts use the frame index).
FRAME_CHOICE_KEY = 2**31 - 1


@dataclass(frozen=True)
class ClipOptions:
    """How clips are cut and prompted (the Hydra ``data.clip`` node).

    Attributes:
        length: frames per clip ``K``.
        require: ``all`` frames hold the target, or ``any`` frame does.
        prompt_frames: ``first``, ``middle`` or ``random`` frame(s) holding the target get the prompt.
        num_prompt_frames: how many frames are prompted (fewer if fewer hold the target).
        stride: step between the starts of training clips.
        val_clips_per_case: validation clips per case and target, at the centres of equal shares of
            the valid starts (one clip: the middle one).
    """

    length: int = 8
    require: str = "all"
    prompt_frames: str = "first"
    num_prompt_frames: int = 1
    stride: int = 1
    val_clips_per_case: int = 2

    def __post_init__(self) -> None:
        check_choice("data.clip.require", self.require, REQUIRE_MODES)
        check_choice("data.clip.prompt_frames", self.prompt_frames, PROMPT_FRAME_MODES)
        checks = [
            (self.length >= 1, f"data.clip.length must be >= 1, got {self.length}"),
            (
                1 <= self.num_prompt_frames <= self.length,
                f"data.clip.num_prompt_frames must be between 1 and data.clip.length={self.length}, "
                f"got {self.num_prompt_frames}",
            ),
            (self.stride >= 1, f"data.clip.stride must be >= 1, got {self.stride}"),
            (self.val_clips_per_case >= 1, f"data.clip.val_clips_per_case must be >= 1, got {self.val_clips_per_case}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def clip_starts(present: np.ndarray, length: int, require: str, stride: int = 1) -> np.ndarray:
    """First slices of the clips of ``length`` frames a case offers, given where the target is.

    Args:
        present: ``[D]`` bool, the target on each slice.
        length: frames per clip.
        require: ``all`` frames of the clip hold the target, or ``any`` frame does.
        stride: keep every ``stride``-th valid start.
    """
    present = np.asarray(present, dtype=bool)
    if len(present) < length:
        return np.zeros(0, dtype=int)
    counts = np.convolve(present.astype(int), np.ones(length, dtype=int), mode="valid")
    valid = np.flatnonzero(counts == length if require == "all" else counts > 0)
    return valid[::stride]


def choose_prompt_frames(present: np.ndarray, mode: str, count: int, rng: np.random.Generator) -> list[int]:
    """The clip frames that get a prompt: ``count`` of those holding the target, sorted.

    ``first``: the earliest; ``middle``: the closest to the clip's centre (earlier on ties);
    ``random``: drawn with ``rng``.
    """
    check_choice("data.clip.prompt_frames", mode, PROMPT_FRAME_MODES)
    candidates = np.flatnonzero(np.asarray(present, dtype=bool))
    if len(candidates) == 0:
        raise ValueError("a clip without the target has no frame to prompt")
    count = min(count, len(candidates))
    if mode == "first":
        chosen = candidates[:count]
    elif mode == "middle":
        centre = (len(present) - 1) / 2
        chosen = candidates[np.argsort(np.abs(candidates - centre), kind="stable")[:count]]
    else:  # random
        chosen = rng.choice(candidates, size=count, replace=False)
    return sorted(int(t) for t in chosen)


def volume_planes(volume: np.ndarray | ChunkedArray, axis: int, start: int, length: int) -> np.ndarray:
    """Slices ``start..start+length-1`` along ``axis`` of ``[X, Y, Z]`` (or ``[C, X, Y, Z]``) as ``[K, C, rows, cols]``.

    Rows run along the second in-plane axis, as the slice datamodule shows a plane. A disk
    cache's array (``ChunkedArray``, one chunk per plane) is read plane by plane: a clip reads
    its ``K`` chunks, not the whole case.
    """
    if isinstance(volume, ChunkedArray):
        planes = np.stack([volume.plane(i) for i in range(start, start + length)])  # [K, (C,) a, b]
        planes = planes[:, None] if planes.ndim == 3 else planes
        return np.ascontiguousarray(np.swapaxes(planes, 2, 3))
    if volume.ndim == 3:
        volume = volume[None]
    block = np.take(volume, np.arange(start, start + length), axis=axis + 1)  # [C, ..K.., ...]
    in_plane = [a + 1 for a in range(3) if a != axis]
    return np.ascontiguousarray(block.transpose(axis + 1, 0, in_plane[1], in_plane[0]))


class ClipDataset(Dataset):
    """Every clip (case, target, first slice) of a split's cases, with simulated prompts.

    Args:
        store: the split's preprocessed cases (``adapt.data.cache``: read and transformed once).
        image_size: side S of the square model input.
        options: clip length, placement and prompting.
        prompts: the prompt simulator, or ``None`` for mask prompts.
        train: all starts and per-epoch prompts; otherwise a fixed few clips with fixed prompts.
        seed: seeds the choice of ``random`` prompt frames (with the sample index and its seed).
        skip_bad_cases: warn and skip a bad case instead of raising.
    """

    def __init__(
        self,
        store: CaseStore,
        image_size: int,
        options: ClipOptions,
        prompts: PromptSimulator | None,
        train: bool,
        seed: int = 0,
        skip_bad_cases: bool = False,
    ) -> None:
        self.store, self.card = store, store.card
        self.image_size, self.options, self.prompts, self.train, self.seed = image_size, options, prompts, train, seed
        card = self.card
        self.bad_cases: list[str] = []
        self.short_cases: list[str] = []
        self.channels: dict[str, tuple[Any, int]] = {}  # case id -> (case, image channels), for odd_channels
        self.items: list[tuple[int, int, str, int]] = []  # (case position in the store, first slice, target, id)
        targets = list(card.target_ids().items())
        for position, counts in self._counts(skip_bad_cases, [value for _, value in targets]):
            if len(counts) < options.length:
                self.short_cases.append(store.cases[position].id)
            for t, (name, value) in enumerate(targets):
                present = counts[:, t] > 0
                starts = clip_starts(present, options.length, options.require, options.stride if train else 1)
                if not train and len(starts) > options.val_clips_per_case:  # centres of equal shares: 1 = middle
                    count = options.val_clips_per_case
                    starts = starts[((np.arange(count) + 0.5) * len(starts) / count).astype(int)]
                self.items += [(position, int(s), name, value) for s in starts]
        if self.short_cases:
            log.warning(
                "%d case(s) have fewer than %d slices and give no clip: %s",
                len(self.short_cases),
                options.length,
                ", ".join(self.short_cases[:5]),
            )

    def _counts(self, skip_bad_cases: bool, ids: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Each case's position with its target pixels per slice (``CaseStore.counts``: a disk cache's index
        alone, no label decoded); a bad case raises, or is counted and skipped."""
        self.store.prepare_missing()  # a disk cache's missing cases, on every core
        for position, case in enumerate(self.store.cases):
            try:
                counts = self.store.counts(position, ids)
                self.channels[case.id] = (case, self.store.image_channels(position))
            except DataError as err:
                if skip_bad_cases:
                    log.warning("skipping bad case %s: %s", case.id, err)
                    self.bad_cases.append(case.id)
                    continue
                raise
            yield position, counts

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Clip ``key``: an index, or ``(index, seed)`` from ``EpochSampler`` (the seed draws the prompts)."""
        i, draw = sample_key(key, self.train)
        position, start, name, value = self.items[i]
        k, size, axis = self.options.length, (self.image_size, self.image_size), self.card.slice_axis
        case, volume = self.store.cases[position], self.store.prepare(position)
        image = torch.from_numpy(volume_planes(volume.image, axis, start, k).astype(np.float32))
        image = resize_image(image, size)
        native = torch.from_numpy(volume_planes(volume.label, axis, start, k) == value)  # [K, 1, H, W] bool
        label = resize_label(native, size).float()  # [K, 1, S, S]
        present = label.flatten(2).any(-1)  # [K, 1]
        key = (i, draw) if self.train else (i,)
        if not present.any():
            raise DataError(
                f"{case.label}: target {name!r} on slices {start}..{start + k - 1} vanishes when resized "
                f"to {self.image_size} px; raise model.image_size or drop such small targets"
            )
        frames = choose_prompt_frames(
            present[:, 0].numpy(),
            self.options.prompt_frames,
            self.options.num_prompt_frames,
            prompt_rng(self.seed, *key, FRAME_CHOICE_KEY),
        )
        prompt_frames = torch.zeros(k, dtype=torch.bool)
        prompt_frames[frames] = True
        sample = {
            "image": image,
            "label": label,
            "present": present,
            "prompt_frames": prompt_frames,
            "meta": {"case": case.id, "start": start, "target": name, "label_id": value},
        }
        if self.prompts is not None:
            sample.update(self._prompts(native, frames, key))
        return sample

    def _prompts(self, native: torch.Tensor, frames: list[int], key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Simulated prompts on the prompted frames, zeros elsewhere (``[K, 1, ...]``), drawn on the
        slices' own pixels and mapped onto the model's grid as a user's prompt is."""
        height, width = native.shape[-2:]
        per_frame = {t: self.prompts(native[t, 0].numpy(), key=(*key, t)) for t in frames}
        out = {}
        for field, first in per_frame[frames[0]].items():
            stacked = np.zeros((self.options.length, *first.shape), dtype=first.dtype)
            for t, prompt in per_frame.items():
                stacked[t] = prompt[field]
            if field in ("boxes", "points"):
                stacked = to_model_coords(stacked, height, width, self.image_size)
            out[field] = torch.from_numpy(stacked)
        return out


class ClipDataModule(SegmentationDataModule):
    """Train/val clip datasets of one card, split by case (never by slice).

    The loaders (shuffled training clips with the epoch's prompts, fixed validation clips)
    are the slice datamodule's; only the datasets differ.

    Exposes what ``adapt.train`` records with the adapter: ``card``, ``label_map``,
    ``preprocessing`` (as the slice datamodule, so ``adapt.predict`` reads volumes alike) and
    ``num_bad_cases``; ``mask_prompts`` tells the task to prompt with the ground-truth mask.
    """

    def __init__(
        self,
        card: DataCard,
        root: str | None,
        image_size: int,
        options: ClipOptions,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        prompts: PromptSimulator | None,
        val_prompts: PromptSimulator | None,
        seed: int = 0,
        skip_bad_cases: bool = False,
        cache: str = "auto",
        cache_dir: str | None = None,
        train_cases: int | str | None = None,
    ) -> None:
        L.LightningDataModule.__init__(self)  # the slice datamodule's __init__ builds slices
        card.require_volumes("task=propagation")
        self.card, self.options = card, options
        self.root = data_root(card, root)
        splits = split_cases(list_cases(card, self.root), card.split, f"data card {card.name!r}", train_cases, seed)
        require_validation(splits, f"data card {card.name!r}")
        self.splits = splits
        train_cases, val_cases = splits["train"], splits["val"]
        stores = [CaseStore(card, cases, cache, cache_dir) for cases in (train_cases, val_cases)]
        self.train_set = ClipDataset(stores[0], image_size, options, prompts, True, seed, skip_bad_cases)
        self.val_set = ClipDataset(stores[1], image_size, options, val_prompts, False, seed + 1, skip_bad_cases)
        odd = odd_channels({**self.train_set.channels, **self.val_set.channels}, skip_bad_cases)
        for dataset in (self.train_set, self.val_set):
            dataset.items = [item for item in dataset.items if dataset.store.cases[item[0]].id not in odd]
            dataset.bad_cases += sorted(odd & set(dataset.channels))
        for split, dataset in (("training", self.train_set), ("validation", self.val_set)):
            if not len(dataset):
                raise DataError(
                    f"data card {card.name!r} ({self.root}): no {split} clip of {options.length} slices where "
                    f"require={options.require!r} holds; lower data.clip.length or set data.clip.require=any"
                )
        self.mask_prompts = prompts is None
        self.set_loading(batch_size, val_batch_size, num_workers, seed)
        self.label_map = dict(card.labels)
        self.num_bad_cases = len(self.train_set.bad_cases) + len(self.val_set.bad_cases)
        self.skipped = {"train": list(self.train_set.bad_cases), "val": list(self.val_set.bad_cases)}
        require_validation(splits, f"data card {card.name!r}", self.skipped["val"])
        channels = card.intensity.get("channels")
        self.preprocessing = {
            "dims": card.dims,
            "intensity": dict(card.intensity),
            "image_size": image_size,
            "slice_axis": card.slice_axis,
            "spacing": card.spacing,
            "channels": stores[0].channels,
            "bands": list(channels) if channels else None,
            "orientation": "RAS",
            "clip": asdict(options),
        }


def build_clip_datamodule(data_cfg: Mapping[str, Any], image_size: int, seed: int) -> ClipDataModule:
    """The clip datamodule described by the Hydra ``data`` node (``configs/data/clip.yaml``).

    ``data.prompt.kind`` is a ``PromptSimulator`` kind or ``mask``; ``data.clip`` holds the
    ``ClipOptions``. Validation prompts use ``seed + 1``, as the slice datamodule.
    """
    card = load_card(data_cfg["card"])
    clip = dict(data_cfg.get("clip") or {})
    unknown = sorted(set(clip) - set(ClipOptions.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"data.clip: unknown option(s) {unknown}; valid: {sorted(ClipOptions.__dataclass_fields__)}")
    prompt = dict(data_cfg.get("prompt") or {})
    prompt.setdefault("seed", seed)
    check_choice("data.prompt.kind", prompt.get("kind", "box"), (*PROMPT_KINDS, MASK_PROMPT))
    if prompt.get("kind", "box") == MASK_PROMPT:
        train_prompts = val_prompts = None
    else:
        train_prompts = PromptSimulator(**prompt)
        val_prompts = PromptSimulator(**{**prompt, "seed": prompt["seed"] + 1})
    return ClipDataModule(
        card=card,
        root=data_cfg.get("root"),
        image_size=image_size,
        options=ClipOptions(**clip),
        batch_size=int(data_cfg.get("batch_size", 1)),
        val_batch_size=int(data_cfg.get("val_batch_size", 2)),
        num_workers=int(data_cfg.get("num_workers", 0)),
        prompts=train_prompts,
        val_prompts=val_prompts,
        seed=int(prompt["seed"]),
        skip_bad_cases=bool(data_cfg.get("skip_bad_cases", False)),
        cache=str(data_cfg.get("cache", "auto")),
        cache_dir=data_cfg.get("cache_dir"),
        train_cases=data_cfg.get("train_cases"),
    )
