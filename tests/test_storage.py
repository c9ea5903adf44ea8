"""Cache files are written whole or not at all; a full disk stops the run with the setting and the fix."""

import errno

import numpy as np
import pytest
import torch

from adapt.data import planes
from adapt.data.cache import CaseStore
from adapt.data.cards import load_card
from adapt.data.sources import list_cases
from adapt.errors import ConfigError
from adapt.models.embedding_cache import EmbeddingCache
from adapt.storage import write_atomically, write_folder_atomically


def cut_short(error: BaseException):
    """A writer that gets half way, then fails as a full disk or a killed process does."""

    def write(*args, **kwargs):  # np.save(file, array), torch.save(obj, file) or a writer(file)
        next(a for a in args if hasattr(a, "write")).write(b"\x93NUMPY partial")
        raise error

    return write


def test_a_complete_write_replaces_the_file(tmp_path):
    path = tmp_path / "entry.bin"
    path.write_bytes(b"old")
    write_atomically(path, lambda file: file.write(b"new"), "setting", "fix")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["entry.bin"]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("boom")])
def test_an_interrupted_write_leaves_the_old_file_and_no_partial_one(error, tmp_path):
    path = tmp_path / "entry.bin"
    path.write_bytes(b"old")
    with pytest.raises(type(error)):
        write_atomically(path, cut_short(error), "setting", "fix")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["entry.bin"]


def test_a_full_disk_names_the_setting_the_directory_and_the_fix(tmp_path):
    path = tmp_path / "entry.bin"
    with pytest.raises(
        ConfigError,
        match=rf"^data\.cache=disk: the disk holding {tmp_path} is full "
        r"\(\d+\.\d GiB free\) while writing entry\.bin; use another disk$",
    ):
        write_atomically(
            path, cut_short(OSError(errno.ENOSPC, "No space left on device")), "data.cache=disk", "use another disk"
        )
    assert list(tmp_path.iterdir()) == []


def _folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"old weights")
    (folder / "README.md").write_text("model card")
    return folder


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_folder_write_replaces_its_files_and_keeps_the_others(tmp_path):
    folder = _folder(tmp_path)

    def write(staging):
        (staging / "weights.bin").write_bytes(b"new weights")
        (staging / "config.json").write_text("{}")

    assert write_folder_atomically(folder, write, "setting", "fix") == folder
    assert _contents(folder) == {"weights.bin": b"new weights", "config.json": b"{}", "README.md": b"model card"}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no staging folder left


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(), RuntimeError("boom")]
)
def test_a_folder_write_that_fails_half_way_leaves_the_old_folder_as_it_was(error, tmp_path):
    folder = _folder(tmp_path)
    before = _contents(folder)

    def write(staging):
        (staging / "config.json").write_text("{}")
        (staging / "weights.bin").write_bytes(b"half")
        raise error

    expected = ConfigError if isinstance(error, OSError) else type(error)
    with pytest.raises(expected) as raised:
        write_folder_atomically(folder, write, "the adapter folder", "free some space")
    if expected is ConfigError:
        assert str(raised.value).startswith(f"the adapter folder: the disk holding {tmp_path} is full")
        assert str(raised.value).endswith("while writing adapter; free some space")
    assert _contents(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_case_cache_on_a_full_disk_stops_and_a_later_run_builds_whole_entries(tmp_path, monkeypatch):
    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")[:1]
    cache = tmp_path / "cache"
    write_chunks = planes.write_chunks
    monkeypatch.setattr(planes, "write_chunks", cut_short(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(
        ConfigError,
        match=r"^data\.cache=disk \(.*\): the disk holding .* is full .*"
        r"data\.cache_dir=<dir> or \$SAM2_ADAPT_DATA.*data\.cache=memory\|none\)$",
    ):
        CaseStore(card, cases, "disk", cache)[0]
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # nothing a later run could take for an entry
    monkeypatch.setattr(planes, "write_chunks", write_chunks)
    cached = CaseStore(card, cases, "disk", cache)[0]
    fresh = CaseStore(card, cases, "none")[0]
    np.testing.assert_array_equal(np.asarray(cached.label), fresh.label)
    assert sorted(p.name.split(".", 1)[1] for p in cache.rglob("*-*.*")) == ["index.json", "planes"]


def test_embedding_cache_killed_mid_write_recomputes_the_entry_next_time(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "n")
    embeddings = [torch.arange(6.0).reshape(1, 1, 2, 3)]
    save = torch.save
    monkeypatch.setattr(torch, "save", cut_short(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        cache.fetch(["a"], lambda rows: embeddings, torch.device("cpu"), torch.float32)
    assert len(cache) == 0 and list((tmp_path / "n").iterdir()) == []
    monkeypatch.setattr(torch, "save", save)
    again = EmbeddingCache(tmp_path, "n")
    out = again.fetch(["a"], lambda rows: embeddings, torch.device("cpu"), torch.float32)
    assert again.misses == 1 and torch.equal(out[0][0], embeddings[0][0]) and len(again) == 1
    assert torch.equal(
        EmbeddingCache(tmp_path, "n").fetch(["a"], None, torch.device("cpu"), torch.float32)[0], out[0]
    )  # read back from the file, no compute


def test_embedding_cache_on_a_full_disk_names_its_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", cut_short(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(
        ConfigError,
        match=r"^embedding_cache\.mode=disk \(.*\): .* is full .*"
        r"embedding_cache\.mode=off\)$",
    ):
        EmbeddingCache(tmp_path, "n").fetch(
            ["a"], lambda rows: [torch.zeros(1, 1, 2, 2)], torch.device("cpu"), torch.float32
        )
