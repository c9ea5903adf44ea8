"""Preprocessed cases, read and transformed once: ``data.cache=none|memory|disk|auto``.

Indexing a dataset already runs every case through ``load_volume`` (to validate it and to
find the slices that hold each target); the store keeps that result so an epoch never
re-reads or re-transforms a NIfTI, DICOM or image file:

* ``memory``: arrays kept in the process (shared copy-on-write with forked workers);
* ``disk``: one compressed chunk per plane under ``<cache_root>/preprocessed/<card>-<settings
  hash>/`` (``adapt.data.planes``: a sample reads its plane's chunk, a run start reads only the
  small per-case indexes, which hold each plane's label counts), reused by later runs: the key
  covers the card's preprocessing fields and each source file's size and mtime. A cache in an
  older layout (whole ``.npy`` volumes) is not read: it is reported, and the cases are
  prepared again into the new layout;
* ``none``: recomputed on every access (for datasets that change while training);
* ``auto``: ``memory`` for synthetic sources, ``disk`` for real datasets (too large for RAM).

This plays the role of MONAI's ``CacheDataset`` / ``PersistentDataset`` at the level of a
case rather than a sample: samples are slices, and a persistent dataset would unpickle the
whole volume for each of them. Pixels are cached as float16 (values in [0, 1]; steps of at
most 2**-11, far below 8-bit or windowed-HU resolution).

Cases missing from a disk cache are prepared by ``data.prepare_workers`` processes (default:
every core), ahead of indexing; ``python -m adapt.data prepare card=...`` does the same as a
separate, resumable step with a progress bar. A training run starts early instead
(``CaseStore.early``): the missing volumes are indexed from their label maps and image headers
(``adapt.data.label_index``) and written by the workers while training runs
(``adapt.data.background``); a sample waits for its case only if the case is not written yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from adapt.data.background import Preparation, default_workers, prepare_case, process_pool
from adapt.data.cards import DataCard
from adapt.data.label_index import can_summarize, label_summary
from adapt.data.names import CACHE_MODES
from adapt.data.planes import ChunkedArray, read_index, write_case
from adapt.data.sources import Case, cache_root
from adapt.data.volumes import Volume, load_volume
from adapt.errors import DataError, check_choice
from adapt.storage import check_folder_place, check_writable, write_atomically
from adapt.transforms.slices import target_counts

log = logging.getLogger(__name__)

# 3: 2D images at native size (no shrink-to-fit); 4: GeoTIFF nodata marked in labels;
# 5: one chunk per plane (adapt.data.planes). Bump when the cached content or its layout changes meaning.
CACHE_FORMAT = 5
LAYOUT_FILE = "layout.json"
#: A worker process is started for every this many missing cases at most: starting one (imports
#: included) costs about as much as preparing a few CT cases.
CASES_PER_WORKER = 4
#: A run starts early (``CaseStore.early``) when at least this many cases are missing from its disk
#: cache: fewer are prepared before the start, in this process, sooner than a worker would start.
EARLY_START_CASES = 2 * CASES_PER_WORKER
DISK_FIX = (
    "free some space, put the cache on a larger disk (data.cache_dir=<dir> or $SAM2_ADAPT_DATA), "
    "or keep cases in RAM or uncached (data.cache=memory|none)"
)
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


def older_layouts(base: Path, card: DataCard, current: Path) -> list[Path]:
    """Cache folders of ``card`` under ``base`` written in another layout than this version's."""
    found = []
    for folder in sorted(base.glob(f"{card.name}-*")):
        if folder == current or not folder.is_dir():
            continue
        try:
            layout = json.loads((folder / LAYOUT_FILE).read_text()).get("format")
        except (FileNotFoundError, ValueError, AttributeError):
            layout = None
        if layout != CACHE_FORMAT and (layout is not None or any(folder.glob("*.geometry.npy"))):
            found.append(folder)
    return found


class CaseStore:
    """Preprocessed cases of one split, by position.

    Args:
        card: the data card.
        cases: the split's cases.
        mode: one of ``CACHE_MODES``.
        directory: root of disk caches (default ``<cache_root>/preprocessed``).

    Attributes:
        loads: how many times a case was read from its source files in this process (for tests
            and benchmarks; cases prepared by worker processes are counted in ``prepared``).
        prepared: cases written to the disk cache by this store's worker processes.
        channels: image channels of the cases prepared so far (``None`` before the first).
        early: index the cases missing from the disk cache from their labels (``label_summary``) instead
            of preparing them first; ``preparation`` (an ``adapt.data.background.Preparation``) then
            writes them while training runs, and reading one waits for it (``wait``).
    """

    def __init__(
        self, card: DataCard, cases: list[Case], mode: str = "auto", directory: str | Path | None = None
    ) -> None:
        check_choice("data.cache", mode, CACHE_MODES)
        if mode == "auto":
            mode = "memory" if card.source["kind"] == "synthetic" else "disk"
        self.card, self.cases, self.mode = card, list(cases), mode
        base = Path(directory).expanduser() if directory else cache_root() / "preprocessed"
        self.directory = base / f"{card.name}-{settings_key(card)}"
        #: The setting that chose ``directory``, as errors name it.
        self.setting = ("data.cache_dir", base) if directory else ("SAM2_ADAPT_DATA", cache_root())
        self.loads = self.prepared = 0
        self.channels: int | None = None
        self._memory: dict[int, Volume] = {}
        self._indexes: dict[int, dict[str, Any]] = {}
        self._channels_of: dict[int, int] = {}
        self._summaries: dict[int, dict[str, Any]] = {}
        self.early = False
        self.preparation: Preparation | None = None
        if mode == "disk":
            check_folder_place(self.setting[1], self.setting[0])  # before a path inside a file is read
            for folder in older_layouts(base, card, self.directory):
                log.warning(
                    "data cache %s is in an older layout and is not read; cases are prepared again into %s "
                    "(delete the old folder to free its space)",
                    folder,
                    self.directory,
                )

    def __len__(self) -> int:
        return len(self.cases)

    def __getstate__(self) -> dict[str, Any]:
        """What crosses into a worker process: not the pool, nor the label summaries and indexes (a
        preparing worker needs neither; a loader worker reads indexes from the disk as it goes)."""
        state = dict(self.__dict__)
        state.update(preparation=None, _summaries={}, _indexes={})
        return state

    def _load(self, index: int) -> Volume:
        self.loads += 1
        volume = load_volume(self.card, self.cases[index])
        self.channels = int(volume.image.shape[0])
        return volume

    def stem(self, index: int) -> Path:
        """Path (without suffix) of case ``index`` in the disk cache: its id and a hash of its files' stamps."""
        case = self.cases[index]
        stamp = json.dumps([case.id, _file_stamp(Path(case.image)), _file_stamp(Path(case.label))])
        return (
            self.directory
            / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', case.id)}-{hashlib.sha1(stamp.encode()).hexdigest()[:10]}"
        )

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
            return self._read(index, self.index(index))
        return self._load(index)

    def wait(self, index: int) -> None:
        """Return once case ``index`` is in the disk cache if the background preparation is writing it
        (in the process that started it; at once otherwise).

        Raises:
            DataError: the case could not be prepared (``Preparation.wait``).
        """
        if self.preparation is not None:
            self.preparation.wait(self, index)

    def write(self, index: int) -> dict[str, Any]:
        """Read case ``index`` from its files and write it into the disk cache; its index (what a
        preparing worker does: counted in ``prepared`` by the caller, not in ``loads``).

        Raises:
            DataError: the case's files are bad (nothing is cached for it).
        """
        return self._write(load_volume(self.card, self.cases[index]), self.stem(index))

    def summary(self, index: int) -> dict[str, Any]:
        """``{"counts", "planes", "channels"}`` of case ``index``: from the disk cache's index, or with
        ``early`` and the case not written yet, from its label map and header (``label_summary``)."""
        if index in self._summaries:
            return self._summaries[index]
        if index not in self._indexes and self.deferred(index) and not self._cached(index):
            self._summaries[index] = label_summary(self.card, self.cases[index])
            self.channels = self._summaries[index]["channels"]
            return self._summaries[index]
        entry = self.index(index)
        return {"counts": entry["counts"], "planes": len(entry["chunks"]), "channels": entry["image"]["shape"][0]}

    def unwritten(self) -> list[int]:
        """The cases indexed from their labels (``early``), which the disk cache does not hold yet."""
        return sorted(self._summaries)

    def __getitem__(self, index: int) -> Volume:
        return self.prepare(index)

    def index(self, index: int) -> dict[str, Any]:
        """The disk cache's index of case ``index`` (shapes, chunks, grid, label counts), written first if missing.

        Raises:
            DataError: the case's files are bad (nothing is cached for it).
        """
        if index not in self._indexes:
            stem = self.stem(index)
            entry = read_index(stem)
            if entry is None:
                self.wait(index)  # being written in the background; else (or in a loader worker) written here
                entry = read_index(stem) or self._write(self._load(index), stem)
            self._indexes[index] = entry
            self.channels = int(entry["image"]["shape"][0])
        return self._indexes[index]

    def counts(self, index: int, ids: list[int]) -> np.ndarray:
        """Pixels of each target id in each plane, ``[planes, targets]`` (``target_counts``); from the
        index alone with a disk cache, so a run on a prepared cache reads no label."""
        axis = self.card.slice_axis if self.card.dims == 3 else None
        if self.mode != "disk":
            volume = self.prepare(index)
            self._channels_of[index] = int(volume.image.shape[0])
            return target_counts(volume.label, ids, axis)
        entry = self.summary(index)
        planes = entry["planes"]
        return (
            np.stack([np.asarray(entry["counts"].get(str(i), [0] * planes), dtype=np.int64) for i in ids], axis=1)
            if ids
            else np.zeros((planes, 0), dtype=np.int64)
        )

    def image_channels(self, index: int) -> int:
        """The image channels of case ``index``: from the index alone with a disk cache, else as ``counts``
        saw them (an uncached case is not read twice while it is indexed)."""
        if self.mode == "disk":
            return int(self.summary(index)["channels"])
        if index not in self._channels_of:
            self._channels_of[index] = int(self.prepare(index).image.shape[0])
        return self._channels_of[index]

    def _write(self, volume: Volume, stem: Path) -> dict[str, Any]:
        self.directory.mkdir(parents=True, exist_ok=True)
        grid = {}
        if volume.affine is not None:
            grid = {
                "affine": np.asarray(volume.affine).tolist(),
                "source_affine": np.asarray(volume.source_affine).tolist(),
                "source_shape": list(volume.source_shape),
            }
        axis = self.card.slice_axis if self.card.dims == 3 else None
        entry = write_case(stem, volume.image, volume.label, axis, grid, self._atomic)
        layout = self.directory / LAYOUT_FILE  # after a whole entry: a failed first write leaves nothing
        if not layout.exists():
            self._atomic(layout, lambda file: file.write(json.dumps({"format": CACHE_FORMAT}).encode()))
        return entry

    def check_writable(self) -> None:
        """Refuse, before a case is read, a disk cache that cannot be written (a read-only folder or
        mount); a complete cache is only read, so this runs when cases are missing from it.

        Raises:
            ConfigError: naming the setting that chose the place (``data.cache_dir``, ``$SAM2_ADAPT_DATA``).
        """
        setting, base = self.setting
        check_writable(self.directory, setting, base)

    def _atomic(self, path: Path, fill: Callable[[Any], None]) -> None:
        write_atomically(path, fill, f"data.cache=disk ({self.directory})", DISK_FIX)

    def _read(self, index: int, entry: dict[str, Any]) -> Volume:
        path = self.stem(index).with_suffix(".planes")
        image, label = ChunkedArray(path, entry, "image"), ChunkedArray(path, entry, "label")
        if "affine" not in entry:
            return Volume(self.cases[index], image, label)
        return Volume(
            self.cases[index],
            image,
            label,
            affine=np.asarray(entry["affine"]),
            source_affine=np.asarray(entry["source_affine"]),
            source_shape=tuple(entry["source_shape"]),
        )

    def prepare_missing(
        self,
        positions: Iterable[int] | None = None,
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[int, DataError]:
        """Write the cases of ``positions`` (default: all) that the disk cache lacks, in worker processes.

        Cases are read, reoriented, resampled and scaled in ``workers`` processes (default: every
        core); a case already cached is not read again, so an interrupted preparation resumes.
        Other modes have nothing to write ahead (memory caches fill in the process that trains).

        Args:
            positions: the cases to prepare.
            workers: processes (1: in this process).
            progress: called with ``(done, total)`` after each case.

        Returns:
            ``{position: error}`` of the cases whose files are bad (nothing cached for them).
        """
        if self.mode != "disk":
            return {}
        wanted = list(range(len(self.cases)) if positions is None else positions)
        return prepare_stores([(self, wanted)], workers, progress)[0]

    def deferred(self, index: int) -> bool:
        """Whether case ``index`` is left to the background (``early``) rather than prepared before indexing."""
        return self.early and self.mode == "disk" and can_summarize(self.card, self.cases[index])

    def _cached(self, index: int) -> bool:
        try:
            return read_index(self.stem(index)) is not None
        except DataError:  # a source file is missing: the worker reports it as a bad case
            return False


def missing_cases(stores: Iterable[CaseStore]) -> int:
    """How many cases the disk caches of ``stores`` do not hold yet."""
    return sum(not store._cached(i) for store in stores if store.mode == "disk" for i in range(len(store)))


def prepare_stores(
    wanted: list[tuple[CaseStore, list[int]]],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[int, DataError]]:
    """Write the cases that disk caches lack, for several stores (a run's splits) in one pool of workers.

    One pool for all: starting a worker (its imports) costs about as much as preparing a few CT
    cases, and a split with few cases (validation) would otherwise be prepared by one process
    after the others. Stores in other modes have nothing to write ahead.

    Args:
        wanted: each store with the positions of its cases to prepare.
        workers: processes (default: every core; 1: in this process).
        progress: called with ``(done, total)`` after each case.

    Returns:
        Per store, ``{position: error}`` of the cases whose files are bad (nothing cached for them).
    """
    missing = [
        (n, store, i)
        for n, (store, positions) in enumerate(wanted)
        if store.mode == "disk"
        for i in positions
        if not store._cached(i)
    ]
    for store in {id(store): store for _, store, _ in missing}.values():  # before the first case is read
        store.check_writable()
    jobs = [(n, store, i) for n, store, i in missing if not store.deferred(i)]
    total = sum(len(positions) for store, positions in wanted if store.mode == "disk")
    errors: list[dict[int, DataError]] = [{} for _ in wanted]
    done = total - len(jobs)
    if progress:
        progress(done, total)

    def collect(results: Iterable[tuple[int, DataError | None]]) -> None:
        nonlocal done
        for (n, store, _), (position, error) in zip(jobs, results):
            done += 1
            if error is None:
                store.prepared += 1
            else:
                errors[n][position] = error
            if progress:
                progress(done, total)

    workers = max(1, min(workers or default_workers(), len(jobs) // CASES_PER_WORKER))
    if workers == 1:
        collect(prepare_case(store, i) for _, store, i in jobs)
        return errors
    with process_pool(workers) as pool:
        collect(pool.map(prepare_case, [store for _, store, _ in jobs], [i for *_, i in jobs]))
    return errors
