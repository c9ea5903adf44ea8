"""Preprocessed cases, read and transformed once: ``data.cache=none|memory|disk|auto``.

Indexing a dataset already runs every case through ``load_volume`` (to validate it and to
find the slices that hold each target); the store keeps that result so an epoch never
re-reads or re-transforms a NIfTI, DICOM or image file:

* ``memory``: arrays kept in the process (shared copy-on-write with forked workers);
* ``disk``: ``.npy`` files under ``<cache_root>/preprocessed/<card>-<settings hash>/``, opened
  memory-mapped so a slice costs a page read, and reused by later runs: the key covers the
  card's preprocessing fields, the model input side and each source file's size and mtime;
* ``none``: recomputed on every access (for datasets that change while training);
* ``auto``: ``memory`` for synthetic sources, ``disk`` for real datasets (too large for RAM).

This plays the role of MONAI's ``CacheDataset`` / ``PersistentDataset`` at the level of a
case rather than a sample: samples are slices, and a persistent dataset would unpickle the
whole volume for each of them. Pixels are cached as float16 (values in [0, 1]; steps of at
most 2**-11, far below 8-bit or windowed-HU resolution).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from adapt.data.cards import DataCard
from adapt.data.sources import Case, cache_root
from adapt.data.volumes import Volume, load_volume
from adapt.errors import ConfigError, DataError
from adapt.storage import write_atomically

CACHE_MODES = ("auto", "none", "memory", "disk")
CACHE_FORMAT = 3  # 3: 2D images at native size (no shrink-to-fit); bump when the cached content changes meaning
PREPROCESSING_FIELDS = ("dims", "source", "labels", "intensity", "spacing")


def settings_key(card: DataCard) -> str:
    """A short hash of everything that changes a preprocessed case."""
    fields = {k: card.to_dict()[k] for k in PREPROCESSING_FIELDS}
    if card.mask_values:  # how label files are decoded (absent: the keys of older caches stay valid)
        fields["mask_values"] = card.mask_values
    payload = json.dumps({"card": fields, "format": CACHE_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _file_stamp(path: Path) -> list[Any]:
    if not path.exists():  # the reader's own error, so data.skip_bad_cases applies
        raise DataError(f"{path}: file not found")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


class CaseStore:
    """Preprocessed cases of one split, by position.

    Args:
        card: the data card.
        cases: the split's cases.
        mode: one of ``CACHE_MODES``.
        directory: root of disk caches (default ``<cache_root>/preprocessed``).

    Attributes:
        loads: how many times a case was read from its source files (for tests and benchmarks).
        channels: image channels of the cases prepared so far (``None`` before the first).
    """

    def __init__(self, card: DataCard, cases: list[Case], mode: str = "auto",
                 directory: str | Path | None = None) -> None:
        if mode not in CACHE_MODES:
            raise ConfigError(f"data.cache={mode!r} is not one of {CACHE_MODES}")
        if mode == "auto":
            mode = "memory" if card.source["kind"] == "synthetic" else "disk"
        self.card, self.cases, self.mode = card, list(cases), mode
        base = Path(directory).expanduser() if directory else cache_root() / "preprocessed"
        self.directory = base / f"{card.name}-{settings_key(card)}"
        self.loads = 0
        self.channels: int | None = None
        self._memory: dict[int, Volume] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def _load(self, index: int) -> Volume:
        self.loads += 1
        volume = load_volume(self.card, self.cases[index])
        self.channels = int(volume.image.shape[0])
        return volume

    def _paths(self, index: int) -> dict[str, Path]:
        case = self.cases[index]
        stamp = json.dumps([case.id, _file_stamp(Path(case.image)), _file_stamp(Path(case.label))])
        stem = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', case.id)}-{hashlib.sha1(stamp.encode()).hexdigest()[:10]}"
        return {part: self.directory / f"{stem}.{part}.npy" for part in ("image", "label", "geometry")}

    def prepare(self, index: int) -> Volume:
        """Load (or find in the cache) case ``index`` and keep it as the mode says.

        Raises:
            DataError: the case's files are bad (nothing is cached for it).
        """
        if self.mode == "memory":
            if index not in self._memory:
                volume = self._load(index)
                volume.image = volume.image.astype(np.float16)
                self._memory[index] = volume
            return self._memory[index]
        if self.mode == "disk":
            paths = self._paths(index)
            if not paths["geometry"].exists():
                self._write(self._load(index), paths)
            volume = self._read(index, paths)
            self.channels = int(volume.image.shape[0])
            return volume
        return self._load(index)

    def __getitem__(self, index: int) -> Volume:
        return self.prepare(index)

    def _write(self, volume: Volume, paths: dict[str, Path]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        geometry = np.full((3, 4, 4), np.nan)
        if volume.affine is not None:
            geometry[0], geometry[1] = volume.affine, volume.source_affine
            geometry[2, 0, :3] = volume.source_shape
        for part, array in (("image", volume.image.astype(np.float16)), ("label", volume.label),
                            ("geometry", geometry)):  # geometry last: its presence marks a complete entry
            write_atomically(paths[part], lambda file, array=array: np.save(file, array),
                             f"data.cache=disk ({self.directory})",
                             "free some space, put the cache on a larger disk (data.cache_dir=<dir> or "
                             "$SAM2_ADAPT_DATA), or keep cases in RAM or uncached (data.cache=memory|none)")

    def _read(self, index: int, paths: dict[str, Path]) -> Volume:
        geometry = np.load(paths["geometry"])
        image = np.load(paths["image"], mmap_mode="r")
        label = np.load(paths["label"], mmap_mode="r")
        if np.isnan(geometry[0, 0, 0]):
            return Volume(self.cases[index], image, label)
        shape = tuple(int(v) for v in geometry[2, 0, :3])
        return Volume(self.cases[index], image, label, affine=geometry[0], source_affine=geometry[1],
                      source_shape=shape)
