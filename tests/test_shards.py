"""WebDataset shards of the prepared cache (``python -m adapt.data shards``, ``data.shards``): two
ranks read disjoint shares covering every sample, in an order a resume continues, with the
tensors the per-plane cache gives."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adapt.data.__main__ import main
from adapt.data.datamodule import build_datamodule
from adapt.data.planes import ChunkedArray
from adapt.data.sampling import ResumableLoader
from adapt.data.shards import decode_plane, read_shard_index, shard_url
from adapt.data.streaming import build_shard_datamodule, worker_plan
from adapt.errors import ConfigError, DataError

SHARD_SIZE = 16  # the phantoms' 2 x 8 training cases of 12 planes: 6 training shards, mixed across cases
BATCH = 3

#: Run in each rank's process: the rank's samples of epoch 0, of the same epoch resumed after two
#: batches, and of epoch 1, as (case, slice, target, image sum).
RANK_SCRIPT = (
    """
import json, sys
from adapt.data.streaming import build_shard_datamodule
module = build_shard_datamodule({"card": "ct_phantom", "shards": sys.argv[1]}, image_size=64, seed=0)
stream = module.train_set
def read(epoch, batches):
    stream.set_position(epoch, batches, %d)
    return [[s["meta"]["case"], s["meta"]["slice"], s["meta"]["target"], float(s["image"].double().sum())] for s in stream]
print(json.dumps({"world": stream.world, "rank": stream.rank, "epoch0": read(0, 0), "resumed": read(0, 2),
                  "epoch1": read(1, 0)}))
"""
    % BATCH
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards of the phantom card, written by the command, and the disk cache they were written from."""
    base = tmp_path_factory.mktemp("shards")
    out, cache = base / "shards", base / "cache"
    assert (
        main(["shards", "card=ct_phantom", f"out={out}", f"cache_dir={cache}", f"shard_size={SHARD_SIZE}", "workers=1"])
        == 0
    )
    return out, cache


def run_ranks(source: Path, world: int) -> list[dict]:
    """Every rank of a ``world``-process job, started together as plain processes with RANK/WORLD_SIZE."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "WORLD_SIZE": str(world)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(source)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


@pytest.mark.slow  # two rank processes, each importing the data layer
def test_two_processes_read_disjoint_shares_that_cover_every_sample_in_a_resumable_order(shards, tmp_path):
    source, cache = shards
    cached = build_datamodule({"card": "ct_phantom", "cache": "disk", "cache_dir": str(cache)}, image_size=64, seed=0)
    targets = dict(enumerate(cached.card.target_ids()))
    expected = sorted(
        (cached.train_set.store.cases[p].id, s, targets[t]) for p, s, t in cached.train_set.items.tolist()
    )
    ranks = run_ranks(source, 2)
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    shares = [[tuple(row[:3]) for row in r["epoch0"]] for r in ranks]
    per = -(-len(expected) // 2)
    assert [len(share) for share in shares] == [per, per]  # equal counts: DDP ranks step together
    assert sorted(set(shares[0]) | set(shares[1])) == expected  # the union is every sample index_cases lists
    assert len(set(shares[0]) & set(shares[1])) == 2 * per - len(expected)  # disjoint but for the padding
    for r in ranks:
        assert r["resumed"] == r["epoch0"][2 * BATCH :]  # a resume after two batches continues the order
        assert sorted(map(tuple, r["epoch1"])) != sorted(map(tuple, r["epoch0"]))  # a new epoch, new shares
    assert run_ranks(source, 2) == ranks  # same order on a re-run: seeded, not drawn


def test_streamed_samples_are_the_plane_cache_samples(shards):
    source, cache = shards
    index = read_shard_index(str(source))
    cached = build_datamodule({"card": "ct_phantom", "cache": "disk", "cache_dir": str(cache)}, image_size=64, seed=0)
    stored = {(case["id"], case["image"]["shape"][0]) for case in index["cases"]["train"]}
    assert stored == {(case.id, 1) for case in cached.train_set.store.cases}
    # One streamed plane decodes to the cache's chunks, bit for bit.
    import webdataset

    name = index["shards"]["train"][0]["name"]
    sample = next(
        iter(webdataset.DataPipeline(webdataset.SimpleShardList([str(source / name)]), webdataset.tarfile_to_samples()))
    )
    meta = json.loads(sample["json"])
    position = [case.id for case in cached.train_set.store.cases].index(meta["id"])
    volume = cached.train_set.store[position]
    assert isinstance(volume.image, ChunkedArray)
    image, label = decode_plane(index["cases"]["train"][meta["case"]], sample)
    assert np.array_equal(image.plane(meta["plane"]), volume.image.plane(meta["plane"]))
    assert np.array_equal(label.plane(meta["plane"]), volume.label.plane(meta["plane"]))
    # Whole samples, prompts included: validation (fixed prompts, 2 planes per case) sample by sample.
    cached = build_datamodule(
        {"card": "ct_phantom", "cache": "disk", "cache_dir": str(cache), "val_max_slices_per_case": 2},
        image_size=64,
        seed=0,
    )
    streamed = build_shard_datamodule(
        {"card": "ct_phantom", "shards": str(source), "val_max_slices_per_case": 2}, image_size=64, seed=0
    )
    by_key = {(cached.val_set.store.cases[p].id, s): i for i, (p, s, _) in enumerate(cached.val_set.items.tolist())}
    count = 0
    for got in streamed.val_set:
        want = cached.val_set[by_key[got["meta"]["case"], got["meta"]["slice"]]]
        assert got["meta"] == want["meta"] and set(got) == set(want)
        for key in set(got) - {"meta"}:
            assert torch.equal(got[key], want[key]), key
        count += 1
    assert count == len(cached.val_set) == 2 * len(cached.val_set.store)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_loader_continues_the_epoch_with_any_number_of_workers(shards, workers):
    source, _ = shards
    module = build_shard_datamodule(
        {"card": "ct_phantom", "shards": str(source), "batch_size": BATCH, "num_workers": workers},
        image_size=64,
        seed=0,
    )
    whole = [b["meta"]["slice"].tolist() for b in module.train_dataloader()]
    resumed = module.train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches": 3, "batch_size": BATCH, "ranks": 1})
    assert [b["meta"]["slice"].tolist() for b in resumed] == whole[3:]
    assert sum(map(len, whole)) == len(module.train_set) and isinstance(resumed, ResumableLoader)


def test_worker_plan_follows_the_loaders_turns():
    # parts of 3, 1 and 2 batches are handed out as p0 p1 p2 p0 p2 p0
    assert worker_plan([9, 3, 6], 3, 0) == ([0, 0, 0], 0)
    assert worker_plan([9, 3, 6], 3, 4) == ([2, 1, 1], 2)
    assert worker_plan([9, 3, 6], 3, 5) == ([2, 1, 2], 0)
    assert worker_plan([9, 3, 6], 3, 6) == ([3, 1, 2], 0)


def test_shards_refuse_a_folder_that_holds_files_and_a_card_they_were_not_written_from(shards, tmp_path, capsys):
    source, _ = shards
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["shards", "card=ct_phantom", f"out={taken}"]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (taken / "keep.txt").read_text() == "mine"
    killed = tmp_path / "killed"  # a run killed outright (no cleanup): shards, no index
    killed.mkdir()
    (killed / "train-000000.tar").write_bytes(b"x")
    assert main(["shards", "card=ct_phantom", f"out={killed}"]) == 2
    assert "shards without shards.json, a run that was killed: remove it" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="holds card 'ct_phantom', not data.card='mr_phantom'"):
        build_shard_datamodule({"card": "mr_phantom", "shards": str(source)}, image_size=64, seed=0)
    with pytest.raises(ConfigError, match="shards.json .*python -m adapt.data shards"):
        build_shard_datamodule({"card": "ct_phantom", "shards": str(tmp_path)}, image_size=64, seed=0)
    with pytest.raises(ConfigError, match="data.empty_share=0.2 does not apply to data.shards"):
        build_shard_datamodule({"card": "ct_phantom", "shards": str(source), "empty_share": 0.2}, image_size=64, seed=0)


#: what stops a run after its first shard -> the exit status of ``main`` (None: the error goes on up)
FAILURES = {
    "a full disk": (OSError(errno.ENOSPC, "No space left on device"), 2),
    "an interruption": (KeyboardInterrupt(), None),
    "a fault of the code": (RuntimeError("boom"), None),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_shards_run_leaves_the_folder_it_was_given_as_it_was(shards, tmp_path, monkeypatch, capsys, failure):
    import adapt.data.shards as module

    _, cache = shards
    error, status = FAILURES[failure]
    real, calls = module._member, []

    def member(*args):
        calls.append(1)
        if len(calls) > SHARD_SIZE:  # the first shard is whole, the second under way
            raise error
        return real(*args)

    monkeypatch.setattr(module, "_member", member)
    out = tmp_path / "given"
    out.mkdir()
    argv = ["shards", "card=ct_phantom", f"out={out}", f"cache_dir={cache}", f"shard_size={SHARD_SIZE}", "workers=1"]
    if status is None:
        with pytest.raises(type(error)):
            main(argv)
    else:
        assert main(argv) == status
        assert f"out: the disk holding {out} is full" in capsys.readouterr().err
    assert len(calls) == SHARD_SIZE + 1 and out.is_dir() and list(out.iterdir()) == []  # no shard, no .part
    monkeypatch.setattr(module, "_member", real)
    assert main(argv) == 0 and (out / "shards.json").is_file()  # the rerun starts over in the same folder


@pytest.mark.parametrize(
    "source, url",
    [
        ("/data/shards", "/data/shards/train-000000.tar"),
        ("https://host/shards/", "https://host/shards/train-000000.tar"),
        ("pipe:aws s3 cp s3://bucket/shards/{} -", "pipe:aws s3 cp s3://bucket/shards/train-000000.tar -"),
    ],
)
def test_shard_urls(source, url):
    assert shard_url(source, "train-000000.tar") == url


def test_shards_stream_through_a_pipe_command(shards):
    source, _ = shards
    local = build_shard_datamodule({"card": "ct_phantom", "shards": str(source)}, image_size=64, seed=0)
    piped = build_shard_datamodule({"card": "ct_phantom", "shards": f"pipe:cat {source}/{{}}"}, image_size=64, seed=0)
    first, again = next(iter(local.val_set)), next(iter(piped.val_set))
    assert first["meta"] == again["meta"] and torch.equal(first["image"], again["image"])


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


def _zero_members(path: Path) -> None:
    """Zeros over the shard's members after the first, the size kept (a disk or copy that lost blocks)."""
    data = bytearray(path.read_bytes())
    data[2048:-2048] = bytes(len(data) - 4096)
    path.write_bytes(bytes(data))


#: (name, what is done to a copy of the shards, the card given, the error and what its message says)
SHARD_FAULTS = [
    ("a shard missing", lambda d: (d / "train-000001.tar").unlink(), None, ConfigError, r"train-000001.tar is missing"),
    ("a shard cut short", lambda d: _cut(d / "train-000001.tar"), None, ConfigError, r"holds 3000 bytes, \d+ written"),
    ("a shard damaged", lambda d: _zero_members(d / "train-000000.tar"), None, DataError, r"train-000000.tar: "),
    ("an older index", lambda d: _older(d), None, ConfigError, r"not a shard index of format 2"),
    ("the card's window changed", None, {"window": [-100, 200]}, ConfigError, r"before its preprocessing changed"),
    (
        "the card's labels changed",
        None,
        {"labels": {"background": 0, "liver": 1, "bone": 2}},
        ConfigError,
        r"labels \{'background': 0, 'liver': 1, 'spine': 2\} then",
    ),
]


def _older(folder: Path) -> None:
    index = json.loads((folder / "shards.json").read_text())
    (folder / "shards.json").write_text(json.dumps({**index, "format": 1}))


@pytest.mark.parametrize("name, damage, change, error, says", SHARD_FAULTS, ids=[f[0] for f in SHARD_FAULTS])
def test_shards_that_do_not_match_their_index_or_card_are_named_before_or_as_they_are_read(
    name, damage, change, error, says, shards, tmp_path
):
    import shutil

    import yaml

    source, _ = shards
    copy = tmp_path / "shards"
    shutil.copytree(source, copy)
    if damage:
        damage(copy)
    card = "ct_phantom"
    if change:
        from adapt.data.cards import card_path

        fields = yaml.safe_load(Path(card_path("ct_phantom")).read_text())
        fields["intensity"].update({k: v for k, v in change.items() if k == "window"})
        fields.update({k: v for k, v in change.items() if k == "labels"})
        card = str(tmp_path / "ct_phantom.yaml")
        Path(card).write_text(yaml.safe_dump(fields))
    with pytest.raises(error, match=says) as raised:
        module = build_shard_datamodule({"card": card, "shards": str(copy)}, image_size=64, seed=0)
        for _ in module.train_set:
            pass
    assert "shards" in str(raised.value)  # the fix: copy or write the shards again
