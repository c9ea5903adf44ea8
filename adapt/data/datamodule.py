"""The LightningDataModule: a card's 3D cases as per-object 2D slices with simulated prompts.

Batches follow the project's convention: ``image`` ``[B, C, S, S]`` in [0, 1], ``label``
``[B, N, S, S]`` binary masks (one per object), ``boxes`` / ``points`` / ``point_labels``
simulated from each mask with a seeded ``PromptSimulator``, and ``meta`` (case, slice,
target, label id). Cases are split by patient, never by slice.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from adapt.data.cards import DataCard, load_card
from adapt.data.volumes import Case, check_pair, data_root, list_cases, load_image
from adapt.errors import DataError
from adapt.transforms.prompts import PromptSimulator

log = logging.getLogger(__name__)


def split_cases(cases: list[Case], split: Mapping[str, Any]) -> tuple[list[Case], list[Case]]:
    """Per-case train/val split: explicit ``val`` ids, or a ``val`` fraction with a ``seed``."""
    if isinstance(split.get("val"), list):
        wanted = set(split["val"])
        return [c for c in cases if c.id not in wanted], [c for c in cases if c.id in wanted]
    order = np.random.default_rng(int(split.get("seed", 0))).permutation(len(cases))
    n_val = max(1, int(round(float(split.get("val", 0.2)) * len(cases))))
    val = {int(i) for i in order[:n_val]}
    return [c for i, c in enumerate(cases) if i not in val], [c for i, c in enumerate(cases) if i in val]


class SliceDataset(Dataset):
    """Every (case, slice, target) where the target is present, as a 2D sample.

    Args:
        card: the data card.
        cases: cases of this split.
        image_size: side S of the square model input.
        prompts: the prompt simulator.
        train: training prompts vary per epoch; validation prompts are fixed per sample.
        skip_bad_cases: warn and skip a bad case instead of raising.
        max_slices_per_case: keep at most this many slices per case and target (evenly spaced).
    """

    def __init__(self, card: DataCard, cases: list[Case], image_size: int, prompts: PromptSimulator,
                 train: bool, skip_bad_cases: bool = False, max_slices_per_case: int | None = None) -> None:
        self.card, self.image_size, self.prompts, self.train = card, image_size, prompts, train
        self.epoch = 0
        self.bad_cases: list[str] = []
        self.items: list[tuple[Case, int, str, int]] = []
        targets = card.target_ids()
        known = set(card.labels.values())
        for case in cases:
            try:
                label = check_pair(case, known)
            except DataError as err:
                if not skip_bad_cases:
                    raise
                log.warning("skipping bad case %s: %s", case.id, err)
                self.bad_cases.append(case.id)
                continue
            axes = tuple(a for a in range(3) if a != card.slice_axis)
            for name, value in targets.items():
                present = np.flatnonzero((label == value).any(axis=axes))
                if max_slices_per_case and len(present) > max_slices_per_case:
                    present = present[np.linspace(0, len(present) - 1, max_slices_per_case).round().astype(int)]
                self.items += [(case, int(k), name, value) for k in present]
        self._labels: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _slice(self, volume: np.ndarray, index: int) -> torch.Tensor:
        plane = np.take(volume, index, axis=self.card.slice_axis).T  # rows = second in-plane axis
        tensor = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
        return tensor

    def _label(self, case: Case) -> np.ndarray:
        if case.id not in self._labels:
            self._labels[case.id] = check_pair(case, set(self.card.labels.values())).astype(np.int16)
        return self._labels[case.id]

    def __getitem__(self, i: int) -> dict[str, Any]:
        case, index, name, value = self.items[i]
        window = self.card.intensity.get("window")
        percentiles = self.card.intensity.get("percentiles")
        volume = load_image(case.image, tuple(window) if window else None, tuple(percentiles) if percentiles else None)
        size = (self.image_size, self.image_size)
        image = F.interpolate(self._slice(volume, index), size=size, mode="bilinear", align_corners=False)[0]
        mask = self._slice(self._label(case) == value, index)
        mask = (F.interpolate(mask, size=size, mode="nearest")[0] > 0.5).float()
        key = (i, self.epoch) if self.train else (i,)
        prompts = {k: torch.from_numpy(v) for k, v in self.prompts(mask[0].numpy(), key=key).items()}
        return {"image": image, "label": mask, **prompts,
                "meta": {"case": case.id, "slice": index, "target": name, "label_id": value}}


class SegmentationDataModule(L.LightningDataModule):
    """Train/val slice datasets of one card, split by case."""

    def __init__(self, card: DataCard, root: str | None, image_size: int, batch_size: int, val_batch_size: int,
                 num_workers: int, prompts: PromptSimulator, val_prompts: PromptSimulator,
                 skip_bad_cases: bool, val_max_slices_per_case: int | None) -> None:
        super().__init__()
        self.card = card
        self.root = data_root(card, root)
        cases = list_cases(card, self.root)  # raises at once when the data is missing
        train_cases, val_cases = split_cases(cases, card.split)
        self.train_set = SliceDataset(card, train_cases, image_size, prompts, True, skip_bad_cases)
        self.val_set = SliceDataset(card, val_cases, image_size, val_prompts, False, skip_bad_cases, val_max_slices_per_case)
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.label_map = dict(card.labels)
        self.num_bad_cases = len(self.train_set.bad_cases) + len(self.val_set.bad_cases)
        self.preprocessing = {"intensity": card.intensity, "image_size": image_size, "slice_axis": card.slice_axis,
                              "spacing": card.spacing, "channels": 1, "orientation": "RAS"}

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.train_set.epoch = self.trainer.current_epoch if self.trainer else 0
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)


def build_datamodule(data_cfg: Mapping[str, Any], image_size: int, seed: int) -> SegmentationDataModule:
    """The datamodule described by the Hydra ``data`` node (see ``configs/data/default.yaml``)."""
    card = load_card(data_cfg["card"])
    prompt = dict(data_cfg.get("prompt") or {})
    prompt.setdefault("seed", seed)
    return SegmentationDataModule(
        card=card,
        root=data_cfg.get("root"),
        image_size=image_size,
        batch_size=int(data_cfg.get("batch_size", 4)),
        val_batch_size=int(data_cfg.get("val_batch_size", 8)),
        num_workers=int(data_cfg.get("num_workers", 0)),
        prompts=PromptSimulator(**prompt),
        val_prompts=PromptSimulator(**{**prompt, "seed": prompt["seed"] + 1}),
        skip_bad_cases=bool(data_cfg.get("skip_bad_cases", False)),
        val_max_slices_per_case=data_cfg.get("val_max_slices_per_case"),
    )
