"""Cases through evaluation as a pipeline: the next case is read, and the last one scored and saved,
while the model works on the current one.

Reading a CT (gzip, reorientation, intensity scaling) and scoring it (the 3D confusion matrix,
surface distances, the saved mask) need no model. Done one after the other, they took three
quarters of ``evaluate``'s time with a small model on 512 x 512 x 48-64 volumes. numpy,
scipy.ndimage, zlib and torch release the GIL in their loops, so one background thread runs them
beside the model's thread. That thread takes its work in order (read case ``i + 1``, then score
case ``i - 1``), so at most three cases are held at once, whatever the dataset's size. The last
case has no next case beside it: each of its classes whose last plane the model has passed is measured
in the background (its voxels are final then) while the model works on the planes after it, and the
planes the model has passed are counted and measured for the classes that end last
(``adapt.evaluation.streaming.PlanesAhead``); the model's thread then scores the case, the classes still
to measure (or a single one's two halves) split between the two threads.

The results come back in case order and equal the serial ``evaluate_case``'s: a case's prompts
and clicks are seeded by its index, not by when its work runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from adapt.data.encoding import LabelEncoding
from adapt.evaluation.case import (
    CaseInput,
    CaseResult,
    Protocol,
    class_surfaces,
    predict_input,
    read_input,
    score_case,
    stored,
)
from adapt.evaluation.cases import EvalCase
from adapt.evaluation.streaming import PlanesAhead
from adapt.inference.engine import Engine

#: A case's input corruption by its index (a robustness run), or ``None`` for every clean case.
ShiftOf = Callable[[int], Callable[[np.ndarray], np.ndarray] | None]


def evaluate_cases(
    engine: Engine,
    cases: Sequence[EvalCase],
    classes: dict[str, int],
    protocol: Protocol,
    slice_axis: int,
    video: Any = None,
    label_encoding: LabelEncoding | float | None = None,
    shift_of: ShiftOf | None = None,
    finish: Callable[[EvalCase, CaseResult], None] | None = None,
) -> Iterator[CaseResult]:
    """Each case's ``CaseResult``, in order, with reading and scoring beside the model.

    Args:
        engine, classes, protocol, slice_axis, video, label_encoding: as ``evaluate_case`` takes them.
        cases: the cases; case ``i`` is prompted with index ``i``.
        shift_of: the corruption of case ``i`` (``adapt.evaluation.robustness.shift_for``).
        finish: run on each result right after its scoring, in the thread that scored it (the
            background thread; the caller's for the last case), e.g. to write its mask.

    Raises:
        Whatever reading, predicting or scoring a case raises, after the results of the cases before
        it; work queued for later cases is cancelled.
    """
    if not cases:
        return
    preprocessing, values = engine.predictor.loaded.preprocessing, list(classes.values())

    def read(index: int) -> Any:
        shift = shift_of(index) if shift_of is not None else None
        return read_input(cases[index], slice_axis, preprocessing, label_encoding, shift, values)

    def score(
        inputs: Any, prediction: Any, spread: Callable = map, surfaces: Any = None, confusions: Any = None
    ) -> CaseResult:
        result = score_case(inputs, prediction, classes, protocol, spread, surfaces, confusions)
        if finish is not None:
            finish(inputs.case, result)
        return result

    pool = ThreadPoolExecutor(1, thread_name_prefix="adapt-evaluate")
    try:
        reading, scoring = pool.submit(read, 0), None
        for index in range(len(cases)):
            try:
                inputs = reading.result()
            except Exception:  # the cases before a broken one still come back, then its error
                if scoring is not None:
                    yield scoring.result()
                raise
            last = index + 1 == len(cases)
            if not last:
                reading = pool.submit(read, index + 1)
            early: dict[int, Future] = {}
            on_class = measure_early(pool, inputs, protocol, early) if last else None
            ahead = PlanesAhead.of(pool, inputs, values, protocol) if last else None
            on_planes = ahead.planes_done if ahead is not None else None
            prediction = predict_input(engine, inputs, values, protocol, index, video, on_class, on_planes)
            if scoring is not None:
                yield scoring.result()
            scoring = None if last else pool.submit(score, inputs, prediction)
        confusions: dict = {}
        if ahead is not None:
            confusions, measured = ahead.finish({0: prediction.classes, **prediction.after_clicks})
            early.update({index: _done(surfaces) for index, surfaces in measured.items()})
        yield score(inputs, prediction, shared_map(pool), early, confusions)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: The most class masks waiting for ``measure_early``'s thread; a class beyond them is measured with the case.
WAITING_MASKS = 2


def measure_early(
    pool: ThreadPoolExecutor, inputs: CaseInput, protocol: Protocol, started: dict[int, Future]
) -> Callable[[int, np.ndarray], None]:
    """``predict_input``'s ``on_class``: class ``i``'s surface metrics (``class_surfaces``) started in ``pool``
    into ``started[i]``, beside the model's work on the planes after its last. Not while ``WAITING_MASKS``
    wait: each holds a volume-sized mask, and a dataset of a hundred classes would hold them all (a class
    left out is measured with the case)."""

    def on_class(index: int, mask: np.ndarray) -> None:
        if sum(not future.done() for future in started.values()) < WAITING_MASKS:
            started[index] = pool.submit(class_surfaces, inputs, stored(inputs.scan, mask), index, protocol)

    return on_class


def _done(value: Any) -> Future:
    """A future that holds ``value`` already."""
    future: Future = Future()
    future.set_result(value)
    return future


def shared_map(pool: ThreadPoolExecutor) -> Callable:
    """``map`` that computes the first item in this thread and the others in ``pool``'s: a thread that
    would wait for the pool works beside it."""

    def run(function: Callable, items: Any) -> list:
        items = list(items)
        others: list[Future] = [pool.submit(function, item) for item in items[1:]]
        return [function(item) for item in items[:1]] + [future.result() for future in others]

    return run
