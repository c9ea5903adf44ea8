"""The 3D data path: cards, case lists, geometry, alignment, splits and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from adapt.data.cards import load_card
import adapt.data.cache
from adapt.data.background import process_pool
from adapt.data.cache import CACHE_FORMAT, CaseStore, prepare_stores
from adapt.data.datamodule import SampleDataset, build_datamodule, index_cases
from adapt.data.splits import split_cases
from adapt.data.volumes import Case, list_cases
from adapt.errors import ConfigError, DataError, DataNotFoundError
from adapt.transforms.prompts import PromptSimulator


def write_card(tmp_path, root, **changes):
    card = yaml.safe_load(open("data_cards/ct_phantom.yaml"))
    card.update({"source": {"kind": "msd", "root": str(root)}, **changes})
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def write_msd(root, cases):
    """cases: {name: (image array, label array, affine)} written in the MSD layout."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (image, label, affine, label_affine) in cases.items():
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, label_affine), root / "labelsTr" / f"{name}.nii.gz")
        entries.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"training": entries}))


def slice_dataset(card, cases, size, train=False, skip_bad_cases=False):
    store = CaseStore(card, cases, "memory")
    items, bad = index_cases(store, skip_bad_cases=skip_bad_cases)
    return SampleDataset(store, items, size, PromptSimulator(), train), bad


def test_unknown_card_key_is_named(tmp_path):
    path = write_card(tmp_path, tmp_path, windw=[0, 1])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['windw'\]"):
        load_card(path)


def test_unknown_card_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="choose from .*ct_phantom"):
        load_card("no_such_card")


def test_bad_modality_and_target(tmp_path):
    with pytest.raises(ConfigError, match=r"modality must be one of \[.*\], got 'XRAY'"):
        load_card(write_card(tmp_path, tmp_path, modality="XRAY"))
    with pytest.raises(ConfigError, match="targets"):
        load_card(write_card(tmp_path, tmp_path, targets=["kidney"]))


def test_missing_data_names_the_path_and_the_fix(tmp_path):
    card = load_card("msd_liver")
    with pytest.raises(DataNotFoundError) as err:
        list_cases(card, tmp_path / "Task03_Liver")
    message = str(err.value)
    assert str(tmp_path / "Task03_Liver") in message
    assert "data.root=" in message and "python -m adapt.data download card=msd_liver" in message


def test_a_mask_voxel_lands_where_the_affine_says(tmp_path):
    """A volume stored with flipped x/y (LPS-like) is read in RAS: the voxel keeps its world position."""
    shape = (12, 12, 6)
    affine = np.array([[-2.0, 0, 0, 30], [0, -1.5, 0, 20], [0, 0, 4.0, -10], [0, 0, 0, 1]])
    label = np.zeros(shape, np.uint8)
    label[2, 7, 3] = 1  # world = affine @ (2, 7, 3) = (26, 9.5, 2)
    image = (label.astype(np.int16) * 1000 - 500).astype(np.int16)
    write_msd(tmp_path / "d", {"c0": (image, label, affine, affine), "c1": (image, label, affine, affine)})
    card = load_card(write_card(tmp_path, tmp_path / "d", split={"val": ["c1"]}))
    dataset, _ = slice_dataset(card, list_cases(card, tmp_path / "d")[:1], 12)
    assert dataset.items.tolist() == [[0, 3, 0]]
    sample = dataset[0]
    assert sample["meta"] == {"case": "c0", "slice": 3, "target": "liver", "label_id": 1}
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "d" / "labelsTr" / "c0.nii.gz"))
    i, j, k = np.argwhere(canonical.get_fdata() > 0)[0]
    np.testing.assert_allclose(canonical.affine @ [i, j, k, 1], [26, 9.5, 2, 1])
    # Slices are (rows = RAS y, columns = RAS x): the mask pixel sits at the canonical indices.
    rows, cols = np.nonzero(sample["label"][0].numpy())
    assert rows.tolist() == [j] and cols.tolist() == [i] and (i, j) == (12 - 1 - 2, 12 - 1 - 7)
    # image and mask stay aligned: the one bright pixel is the mask pixel
    assert sample["image"][0, j, i] == 1.0 and sample["image"].sum() == 1.0


def test_window_maps_hu_to_unit_range(tmp_path):
    from adapt.data.volumes import scale_intensity

    volume = np.array([-1000.0, -160.0, 40.0, 240.0, 2000.0])
    np.testing.assert_allclose(scale_intensity(volume, {"window": [-160, 240]}), [0, 0, 0.5, 1, 1])


def test_bad_cases_raise_or_are_skipped_and_counted(tmp_path):
    shape, affine = (8, 8, 4), np.eye(4)
    good = (np.zeros(shape, np.int16), np.pad(np.ones((2, 2, 2), np.uint8), 3)[:8, :8, :4], affine, affine)
    write_msd(
        tmp_path / "d",
        {
            "good0": good,
            "good1": good,
            "shape": (np.zeros(shape, np.int16), np.zeros((8, 8, 5), np.uint8), affine, affine),
            "affine": (np.zeros(shape, np.int16), np.zeros(shape, np.uint8), affine, np.diag([2.0, 1, 1, 1])),
            "ids": (np.zeros(shape, np.int16), np.full(shape, 7, np.uint8), affine, affine),
            "empty": (np.zeros(shape, np.int16), np.zeros(shape, np.uint8), affine, affine),
        },
    )
    (tmp_path / "d" / "imagesTr" / "truncated.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "d" / "labelsTr" / "truncated.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    manifest = json.loads((tmp_path / "d" / "dataset.json").read_text())
    manifest["training"].append({"image": "./imagesTr/truncated.nii.gz", "label": "./labelsTr/truncated.nii.gz"})
    manifest["training"].append({"image": "./imagesTr/missing.nii.gz", "label": "./labelsTr/missing.nii.gz"})
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(manifest))
    card = load_card(write_card(tmp_path, tmp_path / "d"))
    cases = {c.id: c for c in list_cases(card, tmp_path / "d")}
    expected = {
        "shape": r"shapes differ\):\n  image .*shape \(8, 8, 4\).*\n  label .*shape \(8, 8, 5\)",
        "affine": r"affines differ .*\n  image .*spacing \(1.0, 1.0, 1.0\).*\n  label .*spacing \(2.0, 1.0, 1.0\)",
        "ids": r"label ids \[7\] are not in the data card's labels",
        "truncated": "unreadable as NIfTI",
        "missing": "file not found",
        "empty": "none of the targets",
    }
    for name, message in expected.items():
        with pytest.raises(DataError, match=message) as err:
            slice_dataset(card, [cases[name]], 16, train=True)
        assert name in str(err.value)
    dataset, bad = slice_dataset(card, list(cases.values()), 16, train=True, skip_bad_cases=True)
    assert sorted(bad) == sorted(expected) and len(dataset) == 2  # one liver slice per good case


def test_split_is_per_case_and_seeded():
    cases = [Case(f"c{i}", None, None, group=f"c{i}") for i in range(10)]
    sides = split_cases(cases, {"val": 0.3, "seed": 4})
    train, val = sides["train"], sides["val"]
    assert len(val) == 3 and not {c.id for c in train} & {c.id for c in val} and not sides["test"]
    assert split_cases(cases, {"val": 0.3, "seed": 4})["val"] == val
    assert split_cases(cases, {"val": 0.3, "seed": 5})["val"] != val
    assert [c.id for c in split_cases(cases, {"val": ["c2"]})["val"]] == ["c2"]


def test_phantom_batches_follow_the_contract():
    dm = build_datamodule({"card": "ct_phantom", "prompt": {"kind": "box+points", "num_positive": 2}}, 64, seed=3)
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # as the model receives it
    assert batch["image"].shape == (4, 1, 64, 64) and 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert batch["label"].shape == (4, 1, 64, 64) and set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    assert batch["boxes"].shape == (4, 1, 4) and batch["points"].shape == (4, 1, 2, 2)
    height, width = dm.train_set.plane(0)[1].shape
    sx, sy = 64 / width, 64 / height  # boxes are drawn on the slice's pixels and mapped as SAM2 maps them
    for b in range(4):
        ys, xs = np.nonzero(batch["label"][b, 0].numpy())
        x0, y0, x1, y1 = batch["boxes"][b, 0].tolist()
        # In SAM2's frame pixel i covers [i, i + 1); the box spans the mask's native pixels.
        assert x0 <= xs.min() + 0.5 and y0 <= ys.min() + 0.5 and x1 + sx > xs.max() and y1 + sy > ys.max()
    train_cases = {dm.train_set.store.cases[row[0]].id for row in dm.train_set.items}
    val_cases = {dm.val_set.store.cases[row[0]].id for row in dm.val_set.items}
    assert train_cases and val_cases and not train_cases & val_cases
    assert dm.preprocessing["intensity"] == {"window": [-160, 240]}


def _counting_preads(monkeypatch):
    """Every ``os.pread`` of the disk cache, as (file name, bytes)."""
    import adapt.data.planes as planes

    reads = []
    pread = planes.os.pread
    monkeypatch.setattr(planes.os, "pread", lambda fd, n, offset: reads.append(n) or pread(fd, n, offset))
    return reads


def test_one_pool_prepares_the_missing_cases_of_both_splits_and_names_bad_ones_per_split(tmp_path):
    import dataclasses

    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")[:3]
    train = CaseStore(card, cases[:2], "disk", tmp_path / "cache")
    broken = dataclasses.replace(cases[2], id="broken", image=tmp_path / "missing.nii.gz")
    val = CaseStore(card, [cases[2], broken], "disk", tmp_path / "cache")
    assert train.prepare_missing([0], workers=1) == {} and train.prepared == 1
    seen: list[tuple[int, int]] = []
    errors = prepare_stores([(train, [0, 1]), (val, [0, 1])], workers=1, progress=lambda *p: seen.append(p))
    assert [list(e) for e in errors] == [[], [1]] and "missing.nii.gz" in str(errors[1][1])
    assert (train.prepared, val.prepared, train.loads, val.loads) == (2, 1, 0, 0)  # the cached case is not read again
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_disk_cache_reads_one_plane_per_sample_and_only_indexes_at_start(tmp_path, monkeypatch):
    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")[:3]
    cached = CaseStore(card, cases, "disk", tmp_path / "cache")
    items, _ = index_cases(cached, prepare_workers=2)  # 3 cases: one worker (``CASES_PER_WORKER``)
    assert cached.prepared == 3 and cached.loads == 0
    memory = CaseStore(card, cases, "memory")
    assert np.array_equal(index_cases(memory)[0], items)  # the samples, from the cached label counts
    reads = _counting_preads(monkeypatch)
    again = CaseStore(card, cases, "disk", tmp_path / "cache")
    assert np.array_equal(index_cases(again)[0], items) and reads == [] and again.loads == 0  # indexes only
    on_disk, in_memory = (SampleDataset(s, items, 32, PromptSimulator(), False) for s in (again, memory))
    for i in (0, len(items) // 2, len(items) - 1):
        reads.clear()
        image, label = on_disk.plane(i)
        expected_image, expected_label = in_memory.plane(i)
        assert np.array_equal(image, expected_image) and np.array_equal(label, expected_label)  # the float16 values
        assert len(reads) == 2 and sum(reads) <= image.size * 2 + label.size  # its own chunks, compressed
    uncached = SampleDataset(CaseStore(card, cases, "none"), items, 32, PromptSimulator(), False)
    assert np.abs(on_disk.plane(1)[0] - uncached.plane(1)[0]).max() <= 2**-11  # float16 steps in [0, 1]


def test_disk_cache_of_an_older_layout_is_reported_and_rebuilt(tmp_path, caplog):
    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")[:1]
    old = tmp_path / "cache" / f"{card.name}-0123456789ab"
    old.mkdir(parents=True)
    np.save(old / "ct_0-abc.geometry.npy", np.zeros((3, 4, 4)))
    store = CaseStore(card, cases, "disk", tmp_path / "cache")
    assert f"data cache {old} is in an older layout" in caplog.text and "prepared again" in caplog.text
    store[0]
    assert store.loads == 1 and json.loads((store.directory / "layout.json").read_text()) == {"format": CACHE_FORMAT}
    caplog.clear()
    CaseStore(card, cases, "disk", tmp_path / "cache")[0]  # the old folder again, never the current one
    assert caplog.text.count("older layout") == 1 and f"data cache {store.directory} " not in caplog.text


def test_prepare_command_fills_the_cache_resumes_and_names_bad_cases(tmp_path, capsys):
    from adapt.data.__main__ import PROBLEM_STATUS, main

    card = load_card("ct_phantom")
    cases = list_cases(card, tmp_path / "ct")
    args = ["prepare", "card=ct_phantom", f"root={tmp_path / 'ct'}", f"cache_dir={tmp_path / 'cache'}", "workers=2"]
    assert main(args) == 0
    assert f"{len(cases)} case(s) prepared, 0 already cached" in capsys.readouterr().out
    store = CaseStore(card, cases, "disk", tmp_path / "cache")
    index_cases(store)
    assert store.loads == 0  # training finds every case prepared
    Path(cases[0].label).unlink()
    assert main(args) == PROBLEM_STATUS
    out = capsys.readouterr().out
    assert f"0 case(s) prepared, {len(cases) - 1} already cached" in out  # resumed: nothing read twice
    assert f"bad case {cases[0].id}: {cases[0].label}: file not found" in out
    size = float(re.search(r"holds ([\d.,]+) MB", out).group(1).replace(",", ""))
    (store.directory / f"{cases[1].id}.image.planes.4242.tmp").write_bytes(b"0" * 3_000_000)  # a killed writer's
    assert main(args) == PROBLEM_STATUS
    out = capsys.readouterr().out
    assert f"holds {size:,.1f} MB" in out, out  # not counted in the cache's size, and named
    assert "1 unfinished file(s) (*.tmp, 3.0 MB) of a preparation that was killed" in out


@pytest.mark.parametrize("native", [True, False])
def test_disk_cache_of_2d_images_gives_the_memory_cache_samples(tmp_path, native):
    config = {"card": "aerial_phantom", "augment": True, "cache_dir": str(tmp_path), "device_transforms": native}
    memory, disk = (build_datamodule({**config, "cache": mode}, 64, seed=0).train_set for mode in ("memory", "disk"))
    assert len(list(tmp_path.rglob("*.planes"))) > 0
    for key in [(0, 7), (len(disk) - 1, 3)]:
        a, b = memory[key], disk[key]
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


#: Evaluated in a case-preparing worker: the code it runs, its folder, a variable of its environment.
WORKER_VIEW = "(__import__('adapt.data.cache').data.cache.__file__, __import__('os').getcwd(), __import__('os').environ.get('SAM2_ADAPT_PROBE'))"


def test_case_workers_run_this_processes_code_in_its_current_folder_and_environment(tmp_path, monkeypatch):
    # The fork server keeps what it started with; each pool's workers take the parent's as it is now.
    for step in ("first", "second"):
        folder = tmp_path / step
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("SAM2_ADAPT_PROBE", step)
        with process_pool(1) as pool:
            seen = pool.submit(eval, WORKER_VIEW).result(timeout=120)
        assert seen == (adapt.data.cache.__file__, str(folder.resolve()), step)
