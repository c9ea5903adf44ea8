"""The early start: samples listed from the labels, cases written while training runs.

A run on an empty disk cache indexes its volumes from their label maps and image headers
(``adapt.data.label_index``) and lets workers write them in the background
(``adapt.data.background``). What must hold: the label pass lists exactly the samples the
prepared indexes list; a sample of a case not written yet waits for it and is the sample a
prepared cache gives; a case that cannot be prepared raises its error, naming the case, instead
of hanging; the datamodule's order and batches are those of a run that prepared everything first.
Workers are stood in for by an executor the test controls (a process pool would cost seconds of
imports per test and make the waiting untestable).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch

import adapt.data.background as background
from adapt.data.background import Preparation, first_use_order
from adapt.data.cache import CaseStore
from adapt.data.cards import load_card
from adapt.data.datamodule import SampleDataset, build_datamodule, index_cases
from adapt.data.label_index import label_summary
from adapt.data.volumes import list_cases
from adapt.errors import DataError
from adapt.transforms.prompts import PromptSimulator

SHAPE = (40, 48, 8)


class HeldBack(Executor):
    """Runs each submitted call only when the test releases it (``release``), in the caller's thread; a
    call counts as taken by a worker at once (it cannot be cancelled and written by the waiting process)."""

    def __init__(self, taken: bool = True) -> None:
        self.calls: list[tuple[Future, object, tuple]] = []
        self.taken = taken

    def submit(self, fn, *args, **kwargs):  # type: ignore[override]
        future: Future = Future()
        if self.taken:
            future.set_running_or_notify_cancel()
        self.calls.append((future, fn, args))
        return future

    def release(self, n: int) -> None:
        future, fn, args = self.calls[n]
        future.set_result(fn(*args))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


@pytest.fixture
def phantoms(tmp_path):
    from adapt.data.synthetic import write_ct_phantoms

    write_ct_phantoms(tmp_path / "ct", num_cases=3, shape=SHAPE)
    card = load_card("ct_phantom")
    return card, list_cases(card, tmp_path / "ct")


@pytest.mark.parametrize(
    "changes",
    [{}, {"spacing": [1.7, 1.3, 2.0]}, {"slice_axis": 0}],
    ids=["as stored", "resampled", "sagittal planes"],
)
def test_label_pass_lists_what_the_prepared_index_holds(phantoms, tmp_path, changes):
    card, cases = phantoms
    card = dataclasses.replace(card, **changes)
    store = CaseStore(card, cases[:2], "disk", tmp_path / "cache")
    for position, case in enumerate(store.cases):
        summary = label_summary(card, case)
        entry = store.write(position)
        assert summary == {"counts": entry["counts"], "planes": len(entry["chunks"]), "channels": 1}
        assert len(summary["counts"]) > 1  # background and the organs: a test that can fail


def test_a_dicom_series_is_listed_from_its_slices_headers_and_its_label(tmp_path, monkeypatch):
    """A DICOM series (with a NIfTI label on its grid) is indexed by the label pass as NIfTI cases are: the
    grid from the slices' headers (no pixel data read), the same counts as its prepared index."""
    import pydicom

    from conftest import load_fake_data
    from adapt.data.label_index import can_summarize
    from adapt.data.sources import Case

    root = load_fake_data().write_dicom_tree(tmp_path / "dicom", num_cases=2)
    card = load_card("ct_phantom")
    cases = [Case(p.name, p / "image", p / "label.nii.gz", p.name) for p in sorted((root / "patients").iterdir())]
    store = CaseStore(card, cases, "disk", tmp_path / "cache")
    read_pixels = []
    real = pydicom.dataset.Dataset.pixel_array
    monkeypatch.setattr(
        pydicom.dataset.Dataset, "pixel_array", property(lambda ds: read_pixels.append(1) or real.fget(ds))
    )
    for position, case in enumerate(cases):
        read_pixels.clear()
        assert can_summarize(card, case)
        summary = label_summary(card, case)
        assert not read_pixels  # the label pass decodes no slice
        entry = store.write(position)
        assert read_pixels  # preparing it does (the spy sees reads)
        assert summary == {"counts": entry["counts"], "planes": len(entry["chunks"]), "channels": 1}
        assert len(summary["counts"]) > 1


def _early_store(card, cases, folder):
    store = CaseStore(card, cases, "disk", folder)
    store.early = True
    return store


def test_a_sample_of_a_case_not_yet_written_waits_for_it_and_equals_the_prepared_one(phantoms, tmp_path):
    card, cases = phantoms
    store = _early_store(card, cases[:2], tmp_path / "early")
    items, _ = index_cases(store)
    assert store.unwritten() == [0, 1] and store.loads == 0  # indexed from the labels: no image read
    prepared = CaseStore(card, cases[:2], "disk", tmp_path / "prepared")
    assert np.array_equal(index_cases(prepared)[0], items)  # the same samples as after preparation
    executor = HeldBack()
    preparation = Preparation(executor=executor)
    preparation.submit([(store, 1), (store, 0)])
    dataset = SampleDataset(store, items, 32, PromptSimulator(), False, native=True)
    reference = SampleDataset(prepared, items, 32, PromptSimulator(), False, native=True)
    i = int(np.flatnonzero(items[:, 0] == 1)[len(items[items[:, 0] == 1]) // 2])  # a sample of case 1
    got: list[dict] = []
    reader = threading.Thread(target=lambda: got.append(dataset[i]))
    reader.start()
    time.sleep(0.3)
    assert reader.is_alive() and not got and len(preparation) == 2  # waiting for case 1
    executor.release(0)
    reader.join(timeout=30)
    assert got and len(preparation) == 1
    expected = reference[i]
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[0][key], value), key
    assert got[0]["meta"] == expected["meta"]


def test_a_case_no_worker_has_taken_is_written_by_the_process_that_waits(phantoms, tmp_path):
    card, cases = phantoms
    store = _early_store(card, cases[:1], tmp_path / "cache")
    items, _ = index_cases(store)
    preparation = Preparation(executor=HeldBack(taken=False))  # workers still starting: nothing taken
    preparation.submit([(store, 0)])
    assert not store._cached(0) and len(preparation) == 1
    sample = SampleDataset(store, items, 32, PromptSimulator(), False, native=True)[0]
    assert store._cached(0) and len(preparation) == 0 and sample["image"].shape[0] == 1


@pytest.mark.parametrize(
    "fault, message",
    [
        ("image", r"case phantom_000 could not be prepared: .*phantom_000\.nii\.gz: unreadable as NIfTI"),
        (
            "worker",
            r"case phantom_000 \(.*phantom_000\.nii\.gz\): the process preparing it stopped .*python -m adapt.data prepare",
        ),
    ],
)
def test_a_case_that_cannot_be_prepared_raises_naming_it_instead_of_hanging(phantoms, tmp_path, fault, message):
    card, cases = phantoms
    image = cases[0].image
    if fault == "image":  # the header reads (the label pass passes), the pixels do not
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 3])
    store = _early_store(card, cases[:1], tmp_path / "cache")
    items, _ = index_cases(store)
    executor = HeldBack()
    preparation = Preparation(executor=executor)
    preparation.submit([(store, 0)])
    if fault == "image":
        executor.release(0)
    else:
        executor.calls[0][0].set_exception(BrokenProcessPool("a worker was killed"))
    dataset = SampleDataset(store, items, 32, PromptSimulator(), False, native=True)
    for _ in range(2):  # and again for the next sample: the same error, not a hang
        with pytest.raises(DataError, match=message):
            dataset[0]


def test_the_datamodule_starts_early_with_the_order_and_batches_of_a_prepared_run(tmp_path, monkeypatch):
    from adapt.data.synthetic import write_ct_phantoms

    write_ct_phantoms(tmp_path / "ct", num_cases=8, shape=SHAPE)
    monkeypatch.setattr(background, "process_pool", lambda workers: ThreadPoolExecutor(1))
    config = {"card": "ct_phantom", "root": str(tmp_path / "ct"), "cache": "disk", "batch_size": 4}
    early = build_datamodule({**config, "cache_dir": str(tmp_path / "a")}, 32, seed=3)
    reference = {"cache_dir": str(tmp_path / "b"), "early_start": False, "prepare_workers": 1}  # in this process
    before = build_datamodule({**config, **reference}, 32, seed=3)
    assert early.preparation is not None and before.preparation is None
    assert len(early.train_set.store.unwritten()) == 6  # indexed from the labels
    assert np.array_equal(early.train_set.items, before.train_set.items)
    assert np.array_equal(early.val_set.items, before.val_set.items)
    assert early.preprocessing == before.preprocessing
    loaders = early.train_dataloader(), before.train_dataloader()
    assert loaders[0].sampler.gate is not None
    for got, expected in zip(*(list(zip(range(2), loader)) for loader in loaders)):
        assert got[1]["meta"]["case"] == expected[1]["meta"]["case"]
        assert all(torch.equal(got[1][k], v) for k, v in expected[1].items() if isinstance(v, torch.Tensor))
    early.teardown("validate")  # the validation before training: the preparation goes on
    assert early.preparation._finalizer.alive
    early.teardown("fit")
    assert not early.preparation._finalizer.alive


def test_cases_are_prepared_in_the_order_training_reads_them():
    order = first_use_order([4, 4, 2, 7, 2, 0, 7], [5, 5, 1], lead=2)
    assert order == [("train", 4), ("train", 2), ("val", 5), ("val", 1), ("train", 7), ("train", 0)]
