"""The training order: seeded per epoch, sharded per rank, independent of workers, resumable mid-epoch."""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import Dataset

from adapt.data.datamodule import build_datamodule
from adapt.data.sampling import EpochSampler, ResumableLoader


class Keys(Dataset):
    """Returns the key it is read with, so a batch shows the (index, seed) pairs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        return torch.tensor(key)


def test_ranks_share_out_one_permutation_with_the_same_sample_seeds():
    single = list(EpochSampler(Keys(10), seed=3))
    shards = [list(EpochSampler(Keys(10), seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(i for i, _ in single) == list(range(10))
    assert [i for i, _ in shards[0]] == [i for i, _ in single[0::2]]  # global batch = single process's batch
    assert [i for i, _ in shards[1]] == [i for i, _ in single[1::2]]
    seeds = dict(single)
    assert all(seeds[i] == s for shard in shards for i, s in shard), "a sample's seed does not depend on the rank"
    assert len(set(seeds.values())) == 10


def test_the_epoch_and_the_seed_set_order_and_sample_seeds():
    sampler = EpochSampler(Keys(10), seed=3)
    first = list(sampler)
    assert list(EpochSampler(Keys(10), seed=3)) == first  # no global generator involved
    torch.manual_seed(123)
    assert list(EpochSampler(Keys(10), seed=3)) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first]
    assert dict(second)[0] != dict(first)[0]
    assert list(EpochSampler(Keys(10), seed=4)) != first


def test_a_loader_state_resumes_the_epoch_after_the_batches_handed_out():
    def loader():
        return ResumableLoader(Keys(7), sampler=EpochSampler(Keys(7), seed=1), batch_size=2)

    whole = loader()
    whole.sampler.set_epoch(2)
    reference = [b.tolist() for b in whole]
    assert len(reference) == 4 and whole.state_dict() == {"epoch": 2, "batches": 4, "batch_size": 2, "ranks": 1}

    killed = loader()
    killed.sampler.set_epoch(2)
    seen = [b.tolist() for b in itertools.islice(killed, 3)]
    state = killed.state_dict()
    assert state == {"epoch": 2, "batches": 3, "batch_size": 2, "ranks": 1} and seen == reference[:3]

    resumed = loader()
    resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 2
    assert [b.tolist() for b in resumed] == reference[3:]
    assert resumed.state_dict()["batches"] == 4, "a second kill in this epoch resumes from 4"
    resumed.sampler.set_epoch(3)
    assert len(list(resumed)) == 4, "the next epoch skips nothing"


def test_samples_do_not_depend_on_the_number_of_workers_or_the_global_generator():
    config = {
        "card": "ct_phantom",
        "augment": True,
        "prompt": {"kind": "box+points", "jitter": 0.2},
        "batch_size": 4,
        "cache": "memory",
    }
    batches = {}
    for workers in (0, 2):
        dm = build_datamodule({**config, "num_workers": workers}, 32, seed=5)
        torch.manual_seed(workers)
        batches[workers] = list(itertools.islice(dm.train_dataloader(), 3))
    for a, b in zip(batches[0], batches[2]):
        assert a["meta"]["case"] == b["meta"]["case"] and torch.equal(a["meta"]["slice"], b["meta"]["slice"])
        for key in ("image", "label", "boxes", "points"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # The seeds are at work: another epoch jitters the same samples' prompts differently.
    dm = build_datamodule({**config, "num_workers": 0}, 32, seed=5)
    loader = dm.train_dataloader()
    first = {(c, int(s)): box for b in loader for c, s, box in zip(b["meta"]["case"], b["meta"]["slice"], b["boxes"])}
    loader.sampler.set_epoch(1)
    second = {(c, int(s)): box for b in loader for c, s, box in zip(b["meta"]["case"], b["meta"]["slice"], b["boxes"])}
    assert first.keys() == second.keys()
    assert sum(not torch.equal(first[k], second[k]) for k in first) > len(first) // 2


def test_the_datamodule_carries_the_loader_state_through_a_checkpoint():
    config = {"card": "ct_phantom", "prompt": {"kind": "box", "jitter": 0.2}, "batch_size": 4, "cache": "memory"}
    dm = build_datamodule(config, 32, seed=5)
    assert dm.state_dict() == {}  # no loader yet: nothing to resume
    reference = [b["boxes"] for b in dm.train_dataloader()]
    loader = dm.train_dataloader()
    assert [b["boxes"] for b in itertools.islice(loader, 2)] and dm.state_dict()["train_loader"]["batches"] == 2
    again = build_datamodule(config, 32, seed=5)
    again.load_state_dict(dm.state_dict())  # Lightning: restored before the loader is built
    built_first = build_datamodule(config, 32, seed=5)
    early = built_first.train_dataloader()
    built_first.load_state_dict(dm.state_dict())  # under FSDP: restored after the loader is built
    for rest in ([b["boxes"] for b in again.train_dataloader()], [b["boxes"] for b in early]):
        assert len(rest) == len(reference) - 2
        for a, b in zip(rest, reference[2:]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_resume_on_another_layout_skips_the_same_share_of_the_epoch(caplog):
    """Killed with 2 ranks x batch 2 after 2 batches (8 samples); resumed on 1 rank x batch 4: skip 2 batches."""
    state = {"epoch": 0, "batches": 2, "batch_size": 2, "ranks": 2}
    loader = ResumableLoader(Keys(12), sampler=EpochSampler(Keys(12), seed=1), batch_size=4)
    loader.load_state_dict(state)
    assert loader.resume_at == (0, 2)
    assert "batch size 4 on 1 rank(s) where the checkpoint had 2 on 2" in caplog.text
    assert [len(b) for b in loader] == [4]
