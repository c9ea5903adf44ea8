"""The prepared cache as WebDataset tar shards, for training on nodes that read shared or object storage.

``python -m adapt.data shards card=... out=<dir>`` writes, per split (``train``, ``val``),
``<split>-000000.tar``, ``<split>-000001.tar``, ... of ``shard_size`` planes each, and
``shards.json``. A tar member group is one plane (``<key>.image.zst``, ``<key>.label.zst``: the
very chunks of the per-plane disk cache, ``adapt.data.planes``; ``<key>.json``: its case and
plane), so a streamed sample decodes to the same tensors as one read from the cache.
``shards.json`` holds what a rank needs before it reads a byte of a shard: each case's shapes
and grid, and for every shard the planes it holds with the label ids present on each (the
samples follow from them, as ``index_cases`` finds them in the cache's label counts), and what
``check_shards`` compares before a shard is read: the card's preprocessing key (``settings_key``) and
labels, and each shard's size (a copy cut short, a card edited since the shards were written).

Why shards: a node reading a per-case cache from object storage would issue one request per
plane; a shard is one sequential read of many planes, and WebDataset (installs without
torchvision, unlike LitData here) opens local files, ``http(s)://`` URLs and ``pipe:`` commands
(``pipe:aws s3 cp s3://bucket/shards/{} -``: ``{}`` is replaced by the file name). Planes are
written in a seeded order mixed across cases, so a shard is not one patient; each epoch
shuffles the order of the shards (``adapt.data.streaming``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from adapt.data.cache import CaseStore, settings_key
from adapt.data.cards import DataCard
from adapt.data.planes import ChunkedArray, IMAGE_DTYPE
from adapt.data.sources import list_cases
from adapt.data.splits import split_cases
from adapt.errors import ConfigError, DataError
from adapt.storage import disk_full_error, is_disk_full

#: 2: the card's preprocessing key and each shard's size recorded (checked before training reads a shard).
SHARD_FORMAT = 2
INDEX_FILE = "shards.json"
SPLITS = ("train", "val")
#: Planes per shard: ~100-200 MB of compressed CT planes, WebDataset's advice for object storage.
SHARD_SIZE = 512
PARTS = ("image.zst", "label.zst")
SHARD_FIX = (
    "copy the shard folder again, or write the shards again (python -m adapt.data shards card=... out=<new folder>)"
)


def webdataset() -> Any:
    """The ``webdataset`` module, or a ``ConfigError`` saying how to install it (the ``scale`` extra)."""
    try:
        import webdataset as module
    except ImportError:
        raise ConfigError('shards need the webdataset package: pip install "sam2-adapt[scale]"') from None
    return module


def shard_url(source: str, name: str) -> str:
    """Where file ``name`` of the shards at ``source`` is: a folder, a URL base, or a template with ``{}``."""
    if "{}" in source:
        return source.replace("{}", name)
    if "://" in source or source.startswith("pipe:"):
        return source.rstrip("/") + "/" + name
    return str(Path(source).expanduser() / name)


def read_shard_index(source: str) -> dict[str, Any]:
    """``shards.json`` of the shards at ``source`` (``data.shards``).

    Raises:
        ConfigError: no readable index there (the message names the place and the command that writes it).
    """
    gopen = webdataset().gopen
    url = shard_url(source, INDEX_FILE)
    fix = "write shards with: python -m adapt.data shards card=<card> out=<dir>"
    try:
        with gopen(url, "rb") as stream:
            index = json.loads(stream.read())
    except (OSError, ValueError) as err:
        raise ConfigError(f"data.shards={source}: cannot read {url} ({err}); {fix}") from None
    if not isinstance(index, dict) or index.get("format") != SHARD_FORMAT:
        raise ConfigError(
            f"data.shards={source}: {url} is not a shard index of format {SHARD_FORMAT} (written by another "
            f"version, or not by sam2-adapt); {fix}"
        )
    return index


def check_shards(source: str, index: dict[str, Any], card: DataCard) -> None:
    """Refuse, before a shard is read, shards of another card or preprocessing, and local shard files
    that are missing or of another size than written (cut short by a copy, replaced).

    Raises:
        ConfigError: naming ``data.shards``, what differs (both values) and the fix.
    """
    again = f"write them again: python -m adapt.data shards card={card.path or card.name} out=<new folder>"
    if index["card"] != card.name:
        raise ConfigError(
            f"data.shards={source} holds card {index['card']!r}, not data.card={card.name!r}; "
            f"give the card the shards were written from, or {again}"
        )
    if index.get("settings") != settings_key(card):
        then, now = index.get("labels"), dict(card.labels)
        what = f"labels {then} then, {now} now" if then != now else "its dims, source, intensity or spacing"
        raise ConfigError(
            f"data.shards={source}: written from card {card.name!r} as it was before its preprocessing changed "
            f"({what}): training on them would learn from pixels or labels the card no longer describes; {again}"
        )
    if "://" in source or source.startswith("pipe:") or "{}" in source:
        return  # remote: read as streamed
    for shard in (entry for split in SPLITS for entry in index["shards"].get(split, [])):
        path = Path(shard_url(source, shard["name"]))
        size = path.stat().st_size if path.is_file() else None
        if size != shard["bytes"]:
            state = "is missing" if size is None else f"holds {size} bytes, {shard['bytes']} written"
            raise ConfigError(
                f"data.shards={source}: {path} {state} (cut short or replaced since {INDEX_FILE} was written); "
                f"copy the shard folder again, or {again}"
            )


def write_shards(
    card: DataCard,
    root: Path,
    out: Path,
    shard_size: int = SHARD_SIZE,
    cache_dir: str | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Prepare the card's cases into the disk cache, then write its planes as shards under ``out``.

    Args:
        card: the data card.
        root: where its files are.
        out: an empty or new folder.
        shard_size: planes per shard.
        cache_dir: root of disk caches (``data.cache_dir``).
        workers: processes that prepare missing cases (default: every core).
        seed: seed of the order of the planes across shards.
        progress: called with ``(planes written, total)``.

    Returns:
        The index written to ``out/shards.json`` (``bad_cases``: ids left out, with their errors).

    Raises:
        ConfigError: ``out`` holds files already (nothing is overwritten), or its disk filled up. A run that
            fails while writing removes the shards it wrote: ``out`` is left as it was, and a rerun starts over.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        killed = out.is_dir() and not (out / "shards.json").exists() and any(out.glob("*.tar*"))
        why = "; it holds shards without shards.json, a run that was killed: remove it and run again" if killed else ""
        raise ConfigError(
            f"out={out}: not an empty folder{why}; give a new or empty folder (shards are never overwritten)"
        )
    splits = split_cases(list_cases(card, root), card.split, f"data card {card.name!r}")
    stores = {split: CaseStore(card, splits[split], "disk", cache_dir) for split in SPLITS}
    bad: dict[str, str] = {}
    for store in stores.values():
        errors = store.prepare_missing(workers=workers)
        bad.update({store.cases[position].id: str(error) for position, error in errors.items()})
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "format": SHARD_FORMAT,
        "card": card.name,
        "settings": settings_key(card),
        "labels": dict(card.labels),
        "slice_axis": card.slice_axis if card.dims == 3 else None,
        "cases": {},
        "shards": {},
        "bad_cases": bad,
    }
    try:
        _write_splits(out, stores, bad, index, shard_size, seed, progress)
    except BaseException as error:  # a failed run leaves out= as it found it: no shard without its index
        for name in (s["name"] for entries in index["shards"].values() for s in entries):
            (out / name).unlink(missing_ok=True)
        for part in out.glob("*.tar.part"):
            part.unlink()
        if is_disk_full(error):
            raise disk_full_error(out / "its shards", "out", "free space there, or give out= on another disk") from None
        raise
    return index


def _write_splits(
    out: Path,
    stores: dict[str, CaseStore],
    bad: dict[str, str],
    index: dict[str, Any],
    shard_size: int,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """The shards of every split, then ``shards.json`` (``index`` filled in as they are written)."""
    total = sum(
        len(store.index(p)["chunks"])
        for store in stores.values()
        for p in range(len(store))
        if store.cases[p].id not in bad
    )
    written = 0
    for split, store in stores.items():
        good = [p for p in range(len(store)) if store.cases[p].id not in bad]
        index["cases"][split] = [_case_entry(store, p) for p in good]
        planes = [(n, plane) for n, p in enumerate(good) for plane in range(len(store.index(p)["chunks"]))]
        order = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(planes))
        index["shards"][split] = []
        for number, first in enumerate(range(0, len(planes), shard_size)):
            chosen = [planes[k] for k in order[first : first + shard_size]]
            name = f"{split}-{number:06d}.tar"
            _write_tar(out / name, (_member(store, good[n], n, plane) for n, plane in chosen))
            index["shards"][split].append(
                {
                    "name": name,
                    "bytes": (out / name).stat().st_size,
                    "planes": [[n, plane, _ids(store, good[n], plane)] for n, plane in chosen],
                }
            )
            written += len(chosen)
            if progress:
                progress(written, total)
    (out / INDEX_FILE).write_text(json.dumps(index))  # last: its presence marks complete shards


def _case_entry(store: CaseStore, position: int) -> dict[str, Any]:
    entry = store.index(position)
    return {
        "id": store.cases[position].id,
        "image": entry["image"],
        "label": entry["label"],
        "axis": entry["axis"],
        **{k: entry[k] for k in ("affine", "source_affine", "source_shape") if k in entry},
    }


def _ids(store: CaseStore, position: int, plane: int) -> list[int]:
    """Label ids present on ``plane`` of case ``position`` (from the cache's counts)."""
    return sorted(int(i) for i, counts in store.index(position)["counts"].items() if counts[plane] > 0)


def _member(store: CaseStore, position: int, number: int, plane: int) -> dict[str, Any]:
    """The tar members of one plane: its two cached chunks, as stored, and what it is."""
    entry = store.index(position)
    offsets = entry["chunks"][plane]
    path = store.stem(position).with_suffix(".planes")
    fd = os.open(path, os.O_RDONLY)
    try:
        image, label = (os.pread(fd, offsets[k + 1], offsets[k]) for k in (0, 2))
    finally:
        os.close(fd)
    meta = {"case": number, "id": store.cases[position].id, "plane": plane}
    return {"__key__": f"{number:06d}_{plane:05d}", PARTS[0]: image, PARTS[1]: label, "json": json.dumps(meta).encode()}


def _write_tar(path: Path, members: Iterator[dict[str, Any]]) -> None:
    """One shard, written under a temporary name and renamed when whole."""
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as file, webdataset().TarWriter(file, mtime=0) as writer:
        for member in members:
            writer.write(member)
    part.replace(path)


def decode_plane(case: dict[str, Any], sample: dict[str, Any]) -> tuple[ChunkedArray, ChunkedArray]:
    """The image and label of a case whose one plane is ``sample``'s (a streamed tar member group),
    as the disk cache's ``ChunkedArray``: indexing that plane decodes it exactly as the cache does.

    Raises:
        DataError: the member group lacks a part or its ``json`` (a damaged shard), naming the shard.
    """
    url = sample.get("__url__", "a shard")
    try:
        meta = json.loads(sample["json"])
        image, label = (
            _OnePlane(case, part, meta["plane"], sample[key], url) for part, key in zip(("image", "label"), PARTS)
        )
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"{url}: sample {sample.get('__key__')!r} is incomplete or damaged ({type(err).__name__}: {err}); "
            f"{SHARD_FIX}"
        ) from None
    return image, label


class _OnePlane(ChunkedArray):
    """A ``ChunkedArray`` holding one plane's chunk in memory (the rest of the case is not there)."""

    def __init__(self, case: dict[str, Any], part: str, plane: int, data: bytes, url: str = "a shard") -> None:
        if part == "image" and np.dtype(case["image"]["dtype"]) != IMAGE_DTYPE:
            raise DataError(f"shard plane of case {case['id']}: image dtype {case['image']['dtype']}, expected float16")
        chunks = [
            [0, 0, 0, 0] for _ in range(case["image"]["shape"][case["axis"] + 1] if case["axis"] is not None else 1)
        ]
        super().__init__(Path(), {**case, "chunks": chunks}, part)
        self.case, self.index, self.data, self.url = case["id"], plane, data, url

    def where(self) -> str:
        return f"{self.url} (case {self.case})"

    def fix(self) -> str:
        return SHARD_FIX

    def read(self, i: int) -> bytes:
        if i != self.index:
            raise DataError(f"plane {i} of case {self.case} is not in this shard sample (it holds plane {self.index})")
        return self.data
