"""Clips of consecutive slices for task=propagation: where they lie, what they hold, seeded prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapt.data.cards import load_card
from adapt.data.clips import ClipOptions, build_clip_datamodule, choose_prompt_frames, clip_starts, volume_planes
from adapt.data.volumes import load_volume
from adapt.errors import ConfigError, DataError
from adapt.transforms.prompts import box_from_mask

SIZE = 96  # the phantoms' in-plane size: no resizing, so clips compare exactly with the volume


def build(size: int = SIZE, seed: int = 0, **clip):
    prompt = clip.pop("prompt", {"kind": "box"})
    return build_clip_datamodule({"card": "ct_phantom", "clip": clip, "prompt": prompt}, image_size=size, seed=seed)


@pytest.fixture(scope="module")
def phantom_volumes():
    """Every phantom case as ``load_volume`` gives it, by case id (the reference the clips must match)."""
    module = build(length=4)
    card = load_card("ct_phantom")
    cases = module.train_set.store.cases + module.val_set.store.cases
    return {case.id: load_volume(card, case) for case in cases}


def test_clip_starts_by_hand():
    present = np.array([0, 1, 1, 1, 1, 0, 0], bool)  # windows of 3 hold 2, 3, 3, 2, 1 target slices
    assert clip_starts(present, 3, "all").tolist() == [1, 2]
    assert clip_starts(present, 3, "any").tolist() == [0, 1, 2, 3, 4]
    assert clip_starts(present, 3, "any", stride=2).tolist() == [0, 2, 4]
    assert clip_starts(present, 5, "all").tolist() == []
    assert clip_starts(present, 8, "any").tolist() == []  # the volume is shorter than a clip


def test_prompt_frames_hold_the_target():
    present = np.array([0, 0, 1, 1, 1, 1, 1, 0], bool)  # centre 3.5: frames 3 and 4 are nearest
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    assert choose_prompt_frames(present, "first", 1, rng()) == [2]
    assert choose_prompt_frames(present, "first", 2, rng()) == [2, 3]
    assert choose_prompt_frames(present, "middle", 1, rng()) == [3]
    assert choose_prompt_frames(present, "middle", 3, rng()) == [2, 3, 4]
    drawn = choose_prompt_frames(present, "random", 2, rng())
    assert drawn == choose_prompt_frames(present, "random", 2, rng()) and set(drawn) <= {2, 3, 4, 5, 6}
    assert choose_prompt_frames(present, "random", 9, rng()) == [2, 3, 4, 5, 6]  # capped at what exists
    with pytest.raises(ValueError, match="no frame to prompt"):
        choose_prompt_frames(np.zeros(4, bool), "first", 1, rng())


def test_volume_planes_follow_the_slice_axis():
    volume = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # [C, X, Y, Z]
    planes = volume_planes(volume, axis=2, start=1, length=3)
    assert planes.shape == (3, 2, 4, 3)  # [K, C, rows=Y, cols=X]
    assert planes[1, 0, 2, 1] == volume[0, 1, 2, 2]
    sagittal = volume_planes(volume[0], axis=0, start=0, length=2)
    assert sagittal.shape == (2, 1, 5, 4) and sagittal[1, 0, 3, 2] == volume[0, 1, 2, 3]


def test_clips_lie_where_the_target_is(phantom_volumes):
    module = build(length=4, require="all", prompt_frames="first")
    assert module.card.name == "ct_phantom" and module.preprocessing["clip"]["length"] == 4
    train_ids = {case.id for case in module.train_set.store.cases}
    assert train_ids and not train_ids & {case.id for case in module.val_set.store.cases}  # split by case
    for i in range(0, len(module.train_set), 7):
        sample = module.train_set[i]
        meta = sample["meta"]
        volume = phantom_volumes[meta["case"]]
        start = meta["start"]
        liver = volume.label[:, :, start : start + 4] == 1
        assert sample["image"].shape == (4, 1, SIZE, SIZE) and sample["label"].shape == (4, 1, SIZE, SIZE)
        for t in range(4):
            assert torch.equal(sample["label"][t, 0].bool(), torch.from_numpy(liver[:, :, t].T))
            # The case store keeps pixels as float16 (steps of at most 2**-11 in [0, 1]).
            np.testing.assert_allclose(sample["image"][t, 0].numpy(), volume.image[0, :, :, start + t].T, atol=2**-11)
        assert sample["present"].all()  # require=all: the liver is on every frame
        # The prompt is on the first frame, a tight box around its liver; no prompt elsewhere.
        assert sample["prompt_frames"].tolist() == [True, False, False, False]
        assert sample["boxes"][0, 0].tolist() == box_from_mask(liver[:, :, 0].T).tolist()
        assert not sample["boxes"][1:].any()


def test_a_disk_cached_clip_reads_its_own_planes_and_equals_the_memory_cache_clip(tmp_path, monkeypatch):
    import os

    from adapt.data.planes import ChunkedArray

    memory = build(size=64, length=4)
    disk = build_clip_datamodule(
        {
            "card": "ct_phantom",
            "clip": {"length": 4},
            "prompt": {"kind": "box"},
            "cache": "disk",
            "cache_dir": str(tmp_path),
        },
        image_size=64,
        seed=0,
    )
    assert disk.train_set.items == memory.train_set.items  # the clips come from the index's label counts
    planes: list[tuple[str, int]] = []
    sizes: list[int] = []
    plane, pread = ChunkedArray.plane, os.pread

    def counted_plane(self, i):
        planes.append((self.part, i))
        return plane(self, i)

    def counted_pread(fd, length, offset):
        sizes.append(length)
        return pread(fd, length, offset)

    monkeypatch.setattr(ChunkedArray, "plane", counted_plane)
    monkeypatch.setattr(os, "pread", counted_pread)
    for i in (0, len(disk.train_set) // 2):
        planes.clear(), sizes.clear()
        got, want = disk.train_set[(i, 3)], memory.train_set[(i, 3)]
        start = got["meta"]["start"]
        assert sorted(planes) == [(part, start + t) for part in ("image", "label") for t in range(4)]
        assert 0 < sum(sizes) <= 4 * SIZE * SIZE * 3  # at most the 4 planes' own bytes (float16 image + uint8 label)
        for key in ("image", "label", "present", "prompt_frames", "boxes"):
            assert torch.equal(got[key], want[key]), key


def test_clips_may_run_past_the_organ_and_are_prompted_where_it_is():
    module = build(length=6, require="any", prompt_frames="middle", num_prompt_frames=2)
    partial = 0
    for i in range(len(module.train_set)):
        sample = module.train_set[i]
        present = sample["present"][:, 0]
        assert torch.equal(present, sample["label"].flatten(1).any(1))
        assert present.any() and sample["prompt_frames"].sum() == min(2, int(present.sum()))
        assert present[sample["prompt_frames"]].all()
        partial += int(not present.all())
    assert partial > 0  # some clips hold slices without the liver: the presence head has work


def test_seeded_clips_are_reproducible():
    first = build(size=64, seed=3, length=4, prompt_frames="random", prompt={"kind": "box", "jitter": 0.2})
    again = build(size=64, seed=3, length=4, prompt_frames="random", prompt={"kind": "box", "jitter": 0.2})
    other = build(size=64, seed=4, length=4, prompt_frames="random", prompt={"kind": "box", "jitter": 0.2})
    keys = ("image", "label", "prompt_frames", "boxes")
    for i in (0, 5):
        a, b = first.train_set[(i, 7)], again.train_set[(i, 7)]
        assert all(torch.equal(a[k], b[k]) for k in keys)
    assert any(not torch.equal(first.train_set[(i, 7)]["boxes"], other.train_set[(i, 7)]["boxes"]) for i in range(3))
    # Training prompts change with the sample seed (EpochSampler's, new each epoch); validation
    # clips and prompts never do.
    before = [first.train_set[(i, 7)]["boxes"] for i in range(4)]
    assert any(not torch.equal(b, first.train_set[(i, 8)]["boxes"]) for i, b in enumerate(before))
    val = [first.val_set[i] for i in range(len(first.val_set))]
    assert all(torch.equal(v["boxes"], first.val_set[(i, 5)]["boxes"]) for i, v in enumerate(val))
    # The loader hands out (index, seed) pairs: a new epoch gives the same clips other prompts.
    loader = first.train_dataloader()
    epoch0 = list(loader)
    loader.sampler.set_epoch(1)
    epoch1 = list(loader)
    assert sorted(m for b in epoch0 for m in b["meta"]["start"].tolist()) == sorted(
        m for b in epoch1 for m in b["meta"]["start"].tolist()
    )
    assert not all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(epoch0, epoch1))
    assert len(first.val_set) == 2 * len({position for position, *_ in first.val_set.items})


def test_one_validation_clip_is_the_middle_one():
    from adapt.data.clips import ClipDataset

    module = build(size=64, length=4, require="all", val_clips_per_case=1)
    val = module.val_set
    every = ClipDataset(val.store, 64, ClipOptions(length=4), None, train=True)
    for position, start, *_ in val.items:
        starts = [s for p, s, *_ in every.items if p == position]
        assert start == starts[len(starts) // 2]


def test_points_and_mask_prompts():
    points = build(size=64, length=3, prompt={"kind": "points", "num_positive": 2, "num_negative": 1})
    for seed in range(8):  # (index, seed) keys: the draws do not depend on torch's global generator
        sample = points.train_set[0, seed]
        t = int(sample["prompt_frames"].nonzero()[0])
        assert sample["points"].shape == (3, 1, 3, 2) and sample["point_labels"][t, 0].tolist() == [1, 1, 0]
        for x, y in sample["points"][t, 0, :2].round().long().tolist():
            # A positive click lies on the object: drawn on the slice's own pixels, it may land one
            # model pixel off the resized label's edge, never further.
            assert sample["label"][t, 0, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].any(), (seed, x, y)
    masks = build(size=64, length=3, prompt={"kind": "mask"})
    assert masks.mask_prompts and not points.mask_prompts
    assert not {"boxes", "points"} & set(masks.train_set[0])


def test_collated_batch_matches_the_tracker_contract():
    from adapt.models.tracking import clip_prompts

    module = build(size=64, length=3)
    batch = next(iter(module.val_dataloader()))
    assert batch["image"].shape == (2, 3, 1, 64, 64) and batch["boxes"].shape == (2, 3, 1, 4)
    prompts = clip_prompts(batch, 1)
    t = int(batch["prompt_frames"][1].nonzero()[0])
    assert list(prompts) == [t] and prompts[t].labels.tolist() == [[2, 3]]


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="data.clip: unknown option.*lenght"):
        build(lenght=4)
    with pytest.raises(ConfigError, match="data.clip.prompt_frames"):
        ClipOptions(prompt_frames="last")
    with pytest.raises(ConfigError, match="num_prompt_frames must be between 1 and data.clip.length=4"):
        ClipOptions(length=4, num_prompt_frames=5)
    with pytest.raises(ConfigError, match="data.prompt.kind='scribble'"):
        build(prompt={"kind": "scribble"})
    with pytest.raises(DataError, match="lower data.clip.length or set data.clip.require=any"):
        build(length=30)
