"""Faults of the case cache's place and content, met by ``python -m adapt.data prepare`` and by training
(``CaseStore``): a cache folder that is a file or cannot be written is refused before a case is read,
naming the setting that chose it (``cache_dir=``, ``data.cache_dir``, ``$SAM2_ADAPT_DATA``); a cached
chunk damaged after it was written is a ``DataError`` naming the file and how to write it again; a
complete cache in a read-only place is still read. The data is an nnU-Net folder written as its users
have it (``tests/data/user_folders.py``) and its card drafted by ``data init``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import load_user_folders
from fault_gen import run_entry

from adapt.data.__main__ import main
from adapt.data.cache import CaseStore
from adapt.data.cards import load_card
from adapt.data.sources import data_root, list_cases
from adapt.errors import ConfigError, DataError

folders = load_user_folders()
#: A place no process can write in, root included (``/proc`` takes no new files).
UNWRITABLE = Path("/proc/sam2-adapt-cache")


@pytest.fixture
def card(tmp_path) -> Path:
    """A drafted card of a three-case nnU-Net folder."""
    folders.write_nnunet_folder(tmp_path / "Dataset001_Liver", num_cases=3, shape=(20, 18, 4))
    out = tmp_path / "liver.yaml"
    assert main(["init", str(tmp_path / "Dataset001_Liver"), f"out={out}"]) == 0
    return out


def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    return path


#: (name, how the cache place is given: "option" -> cache_dir=, "env" -> $SAM2_ADAPT_DATA, the place, named)
PLACES = [
    ("cache_dir= a file", "option", a_file, "cache_dir="),
    ("cache_dir= below a file", "option", lambda tmp: a_file(tmp) / "cache", "cache_dir="),
    ("$SAM2_ADAPT_DATA a file", "env", a_file, "SAM2_ADAPT_DATA="),
    ("cache_dir= unwritable", "option", lambda tmp: UNWRITABLE, "cache_dir="),
    ("$SAM2_ADAPT_DATA unwritable", "env", lambda tmp: UNWRITABLE, "SAM2_ADAPT_DATA="),
]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc as an unwritable folder")
@pytest.mark.parametrize("name, given, place, names", PLACES, ids=[p[0] for p in PLACES])
def test_prepare_refuses_a_cache_place_it_cannot_write_before_reading_a_case(
    name, given, place, names, card, tmp_path, monkeypatch
):
    where = place(tmp_path)
    monkeypatch.setattr(CaseStore, "write", lambda *a: pytest.fail("a case was read before the refusal"))
    argv = ["prepare", f"card={card}", "workers=1"]
    if given == "env":
        monkeypatch.setenv("SAM2_ADAPT_DATA", str(where))
    else:
        argv.append(f"cache_dir={where}")
    code, message = run_entry(lambda: main(argv))
    assert code == 2, message
    assert "Traceback" not in message and f"{names}{where}" in message, message
    assert ("is a file, not a folder" in message) != (where == UNWRITABLE), message
    if where != UNWRITABLE:
        assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc as an unwritable folder")
def test_training_names_data_cache_dir_and_a_complete_cache_is_read_where_it_cannot_be_written(card, tmp_path):
    loaded = load_card(str(card))
    cases = list_cases(loaded, data_root(loaded))
    with pytest.raises(ConfigError, match=f"data.cache_dir={a_file(tmp_path)}: .* is a file, not a folder"):
        CaseStore(loaded, cases, "disk", tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match=f"data.cache_dir={UNWRITABLE}: cannot write in /proc"):
        CaseStore(loaded, cases, "disk", UNWRITABLE).prepare_missing(workers=1)
    # A complete cache is only read: nothing to write, nothing refused.
    store = CaseStore(loaded, cases, "disk", tmp_path / "cache")
    assert store.prepare_missing(workers=1) == {} and store.prepared == 3
    again = CaseStore(loaded, cases, "disk", tmp_path / "cache")
    again.check_writable = lambda: pytest.fail("a complete cache was checked for writing")  # type: ignore[method-assign]
    assert again.prepare_missing(workers=1) == {} and again.prepared == 0
    assert np.array_equal(np.asarray(again[0].label), np.asarray(store[0].label))


def test_a_damaged_chunk_of_the_cache_is_named_with_the_entry_to_delete(card, tmp_path):
    loaded = load_card(str(card))
    store = CaseStore(loaded, list_cases(loaded, data_root(loaded)), "disk", tmp_path / "cache")
    assert store.prepare_missing(workers=1) == {}
    planes = store.stem(0).with_suffix(".planes")
    damaged = bytearray(planes.read_bytes())
    damaged[: len(damaged) // 2] = bytes(len(damaged) // 2)  # zeros over the first chunks, same size
    planes.write_bytes(bytes(damaged))
    fresh = CaseStore(loaded, store.cases, "disk", tmp_path / "cache")
    with pytest.raises(
        DataError, match=rf"{planes}: plane 0 of the image does not decode .*delete {store.stem(0).name}"
    ):
        fresh[0].image[:, :, :, 0]
    os.remove(store.stem(0).with_suffix(".index.json"))  # the fix the message gives
    assert fresh.prepare_missing(workers=1) == {} and fresh.prepared == 1
    rewritten = np.asarray(CaseStore(loaded, store.cases, "disk", tmp_path / "cache")[0].image)
    assert np.array_equal(rewritten, np.asarray(CaseStore(loaded, store.cases, "none")[0].image).astype(np.float16))
