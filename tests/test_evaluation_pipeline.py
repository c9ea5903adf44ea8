"""Evaluation as a pipeline (``adapt.evaluation.pipeline``): the next case read and the last one scored
beside the model, with the serial path's values; label files read once, in their own layout."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adapt.data.cards import load_card
from adapt.errors import DataError
from adapt.evaluation import case as case_module
from adapt.evaluation import pipeline
from adapt.evaluation.case import Protocol, evaluate_case, read_case, stored_labels
from adapt.evaluation.cases import EvalCase
from adapt.evaluation.streaming import PlanesAhead
from adapt.evaluation.models import load_model, resolve_spec
from adapt.inference.engine import Engine
from adapt.inference.io import read_scan
from adapt.inference.runner import Predictor
from adapt.metrics.streamed import SurfaceStream

CLASSES = {"liver": 1, "tumour": 2}


def write_case(root: Path, name: str, seed: int, affine: np.ndarray, shape=(28, 24, 9)) -> EvalCase:
    """A CT-like case with a liver and a tumour that change from slice to slice, and a noisy edge."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for k in range(1, shape[2] - 1):
        label[4 + k % 3 : 20 + k % 4, 3 : 15 + k, k] = 1
        label[8 : 11 + k % 2, 6 : 9 + k % 3, k] = 2
    label[rng.random(shape) < 0.01] = 1
    image = np.where(label > 0, 60 + 40 * label, -900).astype(np.int16) + rng.integers(-20, 20, shape).astype(np.int16)
    case = EvalCase(name, root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz")
    for path, array in ((case.image, image), (case.label, label)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), path)
    return case


RAS = np.diag([0.8, 0.8, 2.5, 1.0])
LPS = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 18.0], [0, 0, 2.5, -4.0], [0, 0, 0, 1]])  # DICOM-like: x, y flipped
SAGITTAL = np.array([[0, 0, 0.8, 0], [2.5, 0, 0, 0], [0, 0.8, 0, 0], [0, 0, 0, 1]])  # stored axes permuted


@pytest.fixture(scope="module")
def engine():
    card = load_card("ct_phantom")
    loaded = load_model(resolve_spec("none", None, "tiny", None), card)
    return Engine(Predictor(loaded, "cpu"), batch_size=4)


@pytest.fixture
def cases(tmp_path):
    return [write_case(tmp_path, f"case_{i}", i, affine) for i, affine in enumerate((RAS, LPS, SAGITTAL, RAS))]


def comparable(result) -> dict:
    """A result without its clock."""
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result.rows]
    return {"rows": rows, "clicks": result.clicks, "confusion": result.confusion.tolist()}


def test_the_pipeline_gives_the_serial_values_in_case_order(engine, cases):
    """Reading and scoring beside the model: every row, click score and confusion matrix equals reading,
    predicting and scoring one case after the other, whatever the stored orientation; the results come
    back in case order and ``finish`` runs on each once, off the model's thread while the model works
    (the last case, with the model done, is scored by the model's thread, its classes split with the
    pool's)."""
    protocol = Protocol(clicks=(1, 2))
    serial = [evaluate_case(engine, case, i, CLASSES, protocol, 2) for i, case in enumerate(cases)]
    finished = []

    def finish(case, result):
        finished.append((case.id, threading.current_thread() is not threading.main_thread()))

    piped = list(pipeline.evaluate_cases(engine, cases, CLASSES, protocol, 2, finish=finish))
    assert [r.rows[0]["case"] for r in piped] == [c.id for c in cases]
    assert [comparable(r) for r in piped] == [comparable(r) for r in serial]
    assert finished == [(c.id, True) for c in cases[:-1]] + [(cases[-1].id, False)]
    assert {row["class"] for r in piped for row in r.rows} == set(CLASSES)
    dice = [row["dice"] for r in piped for row in r.rows]
    assert all(0 <= d <= 1 for d in dice) and any(0 < d < 1 for d in dice)  # a random model's masks, scored


@pytest.mark.parametrize("waiting", [pipeline.WAITING_MASKS, 0], ids=["early", "none-waiting"])
def test_a_class_is_measured_while_the_model_works_on_the_planes_after_it(engine, cases, monkeypatch, waiting):
    """The last case's tumour ends on plane 3, its liver on plane 7: the tumour is measured by the pool while
    the model works on the later planes (the last ``segment`` call waits until that measurement has
    started), the liver plane by plane (``test_the_last_cases_planes_are_scored_as_the_model_passes_them``);
    the earlier cases' classes in the pool. With no mask allowed to wait (``WAITING_MASKS = 0``) nothing
    starts early and the tumour is measured once the model is done, its halves on both threads. The values
    are the serial path's either way."""
    monkeypatch.setattr(pipeline, "WAITING_MASKS", waiting)
    label = nib.load(cases[-1].label)
    ids = np.asarray(label.dataobj).copy()
    ids[:, :, 4:][ids[:, :, 4:] == 2] = 1
    nib.save(nib.Nifti1Image(ids, label.affine), cases[-1].label)
    protocol = Protocol()
    serial = [evaluate_case(engine, case, i, CLASSES, protocol, 2) for i, case in enumerate(cases)]
    started, told, measured, segments, spreads = threading.Event(), threading.Event(), [], [], []
    measure, segment, measure_early = pipeline.class_surfaces, engine.segment, pipeline.measure_early

    def spy_early(*args):
        on_class = measure_early(*args)
        return lambda index, mask: on_class(index, mask) or told.set()  # the last case's tumour is done

    def spy_measure(inputs, mask, index, protocol, spread=map):
        if inputs.case.id == cases[-1].id and index == 2:
            started.set()
        measured.append((inputs.case.id, index, threading.current_thread() is threading.main_thread()))
        spreads.append(spread is not map)
        return measure(inputs, mask, index, protocol, spread)

    def spy_segment(*args, **kwargs):  # the batches after the tumour's last plane wait for its measurement
        segments.append(started.wait(timeout=30 if waiting else 0) if told.is_set() else None)
        return segment(*args, **kwargs)

    monkeypatch.setattr(pipeline, "class_surfaces", spy_measure)
    monkeypatch.setattr(case_module, "class_surfaces", spy_measure)
    monkeypatch.setattr(engine, "segment", spy_segment)
    monkeypatch.setattr(pipeline, "measure_early", spy_early)
    piped = list(pipeline.evaluate_cases(engine, cases, CLASSES, protocol, 2))
    assert [comparable(r) for r in piped] == [comparable(r) for r in serial]
    assert segments[-1] is bool(waiting)  # with early measuring, the tumour's began before the model's last batch
    earlier = [(c.id, index, False) for c in cases[:-1] for index in (1, 2)]
    last = [(cases[-1].id, 2, not waiting)]  # the liver is measured by its SurfaceStream
    assert sorted(measured) == sorted(earlier + last)
    # the tumour, left to measure once the model is done, has both threads: its two halves beside each other
    halves = [where for where, spread in zip(measured, spreads) if spread]
    assert halves == ([] if waiting else [(cases[-1].id, 2, True)])


def test_a_planes_image_is_encoded_once_for_all_its_classes(engine, cases, monkeypatch):
    """Liver and tumour share most planes: the model encodes each plane once per case (a batch holds every
    class's objects of its planes), where class after class encoded the shared planes twice."""
    encoded = []
    embed = engine.predictor.embed
    monkeypatch.setattr(engine.predictor, "embed", lambda images: encoded.append(len(images)) or embed(images))
    case = cases[0]
    evaluate_case(engine, case, 0, CLASSES, Protocol(clicks=(1,)), 2)
    ids = np.asarray(nib.load(case.label).dataobj)
    planes = np.flatnonzero(np.isin(ids, list(CLASSES.values())).any(axis=(0, 1)))
    assert sum(encoded) == len(planes) and max(encoded) <= engine.batch_size


def test_a_broken_case_stops_the_pipeline_at_its_turn_and_names_its_file(engine, cases):
    """A truncated label file in the middle: the cases before it come back, then its error (naming it)."""
    broken = cases[2].label
    broken.write_bytes(gzip.compress(b"not a nifti"))
    results = pipeline.evaluate_cases(engine, cases, CLASSES, Protocol(), 2)
    assert [next(results).rows[0]["case"] for _ in range(2)] == ["case_0", "case_1"]
    with pytest.raises(DataError, match=str(broken.name)):
        next(results)


def test_shifts_are_seeded_by_the_case_index_in_the_pipeline(engine, cases):
    """A robustness run through the pipeline: case ``i`` gets ``shift_of(i)``, as the serial call would."""
    from adapt.evaluation.robustness import shift_for

    protocol = Protocol()
    shift_of = lambda i: shift_for("noise", 3, "CT", {}, 0, i)  # noqa: E731
    piped = list(pipeline.evaluate_cases(engine, cases[:2], CLASSES, protocol, 2, shift_of=shift_of))
    serial = [evaluate_case(engine, c, i, CLASSES, protocol, 2, shift=shift_of(i)) for i, c in enumerate(cases[:2])]
    assert [comparable(r) for r in piped] == [comparable(r) for r in serial]


@pytest.mark.parametrize("affine", [RAS, LPS, SAGITTAL], ids=["ras", "lps", "sagittal"])
def test_a_label_file_is_read_once_and_scored_in_its_own_voxels_and_layout(tmp_path, monkeypatch, affine):
    """``stored_labels`` is the file's own array (no second read, compact ids, the file's memory layout),
    the stack of ids keeps the file's integer type, and the prediction put back on the stored grid is a
    view laid out like it."""
    case = write_case(tmp_path, "one", 0, affine)
    loads = []
    real_load = nib.load
    monkeypatch.setattr(nib, "load", lambda path, *a, **k: loads.append(Path(path)) or real_load(path, *a, **k))
    scan, label = read_case(case, 2)
    ids = stored_labels(label)
    assert loads == [case.image, case.label]
    monkeypatch.undo()
    on_disk = np.asarray(nib.load(case.label).dataobj)
    np.testing.assert_array_equal(ids, on_disk)
    assert ids.dtype == np.uint8 and ids.flags.f_contiguous  # a NIfTI's Fortran order, not transposed
    assert label.pixels.dtype == np.uint8  # ids stay integers on the stack (float32 was 4x the bytes)
    np.testing.assert_array_equal(scan.view.to_volume(label.pixels[:, 0]), on_disk)
    stack = read_scan(case.label, 2, label=True).pixels[:, 0].copy()
    back = scan.view.to_volume(stack)
    np.testing.assert_array_equal(back, on_disk)
    assert np.shares_memory(back, stack)  # a reorientation is a view, no copy
    if affine is RAS:
        assert sorted(back.strides) == sorted(ids.strides) and back.strides == ids.strides


def test_a_resampled_grid_is_scored_on_the_label_files_own_voxels(tmp_path):
    """With an adapter spacing the stack is resampled; the truth scored is still the file's own voxels."""
    case = write_case(tmp_path, "one", 0, RAS)
    scan, label = read_case(case, 2, spacing=(1.6, 1.6, None))
    assert scan.shape[1:] != (24, 28)  # resampled in-plane
    np.testing.assert_array_equal(stored_labels(label), np.asarray(nib.load(case.label).dataobj))
    assert scan.view.to_volume(np.zeros(scan.shape, np.uint8)).shape == (28, 24, 9)


def test_evaluate_summary_is_unchanged_by_the_pipeline(engine, cases, tmp_path, monkeypatch):
    """The command through the pipeline and through a serial executor: the same cases.csv values and
    summary (a thread that runs nothing beside the model)."""
    from concurrent.futures import Future

    from omegaconf import OmegaConf

    from adapt.conf import CONFIG_DIR
    from adapt.evaluation import evaluate

    root = tmp_path / "data"
    for i, affine in enumerate((RAS, LPS, SAGITTAL)):
        write_case(root, f"case_{i}", i, affine)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "training": [
                    {"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"} for i in range(3)
                ]
            }
        )
    )

    def run(out: Path) -> tuple[dict, str]:
        cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
        cfg.merge_with(
            {
                "out": str(out),
                "adapter": "none",
                "model": "tiny",
                "device": "cpu",
                "split": "all",
                "clicks": [1],
                "save_masks": 1,
                "data": {"card": "ct_phantom", "root": str(root)},
            }
        )
        summary = evaluate(cfg)
        text = (out / "cases.csv").read_text().splitlines()
        seconds = text[0].split(",").index("seconds")
        rows = [",".join(v for i, v in enumerate(line.split(",")) if i != seconds) for line in text]
        return {k: v for k, v in summary.items() if k not in ("seconds", "throughput")}, "\n".join(rows)

    piped = run(tmp_path / "piped")

    class Serial:
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, *args):
            future = Future()
            future.set_result(fn(*args))
            return future

        def shutdown(self, **kwargs):
            pass

    monkeypatch.setattr(pipeline, "ThreadPoolExecutor", Serial)
    assert run(tmp_path / "serial") == piped
    assert len(piped[0]["masks"]) == 1 and (tmp_path / "piped" / next(iter(piped[0]["masks"].values()))).exists()


@pytest.mark.parametrize("last", ["ras", "slices-stored-backwards"])
def test_the_last_cases_planes_are_scored_as_the_model_passes_them(engine, cases, monkeypatch, tmp_path, last):
    """The last case (its planes the label file's outermost axis in memory; stored RAS, or with its slices
    stored top to bottom so the stack runs backwards along them): its confusion matrices (every click count)
    and the surface metrics of the liver, the class that ends last, are counted in the pool while the model
    still has batches to do (``PlanesAhead``), each plane once it is final; what is left is counted once the
    model is done. The values are the serial path's, to the last bit."""
    if last != "ras":
        cases[-1] = write_case(tmp_path / "backwards", "case_3", 3, np.diag([0.8, 0.8, -2.5, 1.0]))
    protocol = Protocol(clicks=(1, 2))
    serial = [evaluate_case(engine, case, i, CLASSES, protocol, 2) for i, case in enumerate(cases)]
    segments, advances, counted = [], [], []
    segment, advance, count = engine.segment, SurfaceStream.advance, PlanesAhead._count

    def spy_advance(self, final):
        advances.append((len(segments), final.copy(), threading.current_thread() is threading.main_thread()))
        return advance(self, final)

    monkeypatch.setattr(engine, "segment", lambda *a, **k: segments.append(1) or segment(*a, **k))
    monkeypatch.setattr(SurfaceStream, "advance", spy_advance)
    monkeypatch.setattr(PlanesAhead, "_count", lambda self, stop: counted.append(stop) or count(self, stop))
    piped = list(pipeline.evaluate_cases(engine, cases, CLASSES, protocol, 2))
    assert [comparable(r) for r in piped] == [comparable(r) for r in serial]
    in_pool = [(calls, final) for calls, final, main in advances if not main]
    assert in_pool and in_pool[0][0] < len(segments)  # before the model's last batch
    assert any(final.any() and not final.all() for _, final in in_pool)  # some planes final, not all
    assert advances[-1][1].all() and advances[-1][2]  # the rest once the model is done, by its thread
    assert counted[-1] == 9 and len(counted) > 2  # confusions counted batch by batch, then the last planes
    first = next(final for _, final in in_pool if final.any())  # stored planes: the stack's first, in order
    assert first[-1] if last != "ras" else first[0]


@pytest.mark.parametrize("change", ["propagation", "resampled", "sagittal", "semantic"])
def test_scoring_ahead_only_where_planes_decompose_it(tmp_path, change):
    """``PlanesAhead.of`` declines a stack resampled from the stored grid, planes that are not the label
    file's outermost axis, and protocols not prompted plane by plane: those cases are scored after the
    model, as before."""
    from concurrent.futures import ThreadPoolExecutor

    from adapt.evaluation.case import read_input

    affine = SAGITTAL if change == "sagittal" else RAS
    case = write_case(tmp_path, "one", 0, affine)
    spacing = {"spacing": [1.6, 1.6, None]} if change == "resampled" else {}
    inputs = read_input(case, 2, spacing, values=list(CLASSES.values()))
    protocol = {"propagation": Protocol(propagation=True), "semantic": Protocol(prompt="none")}.get(change, Protocol())
    with ThreadPoolExecutor(1) as pool:
        assert PlanesAhead.of(pool, inputs, list(CLASSES.values()), protocol) is None
        plain = read_input(write_case(tmp_path, "two", 0, RAS), 2, {}, values=list(CLASSES.values()))
        assert PlanesAhead.of(pool, plain, list(CLASSES.values()), Protocol()) is not None
