"""Cases prepared by worker processes while training runs: the second half of the early start.

A run on an empty disk cache used to prepare every case before its first step (44 s at N = 64
CT cases on 2 cores; ~11 min at N = 1,000). Now ``adapt.data.label_index`` lists the samples from
the label maps and the images' headers, and this module's ``Preparation`` writes the cases into
the cache in worker processes, in the order training needs them (``first_use_order``): the
cases of the first batches, then the validation cases, then the others in the order the first
epoch reaches them. A sample whose case is not written yet waits for it (``CaseStore.wait``):

* in the training process (``data.num_workers=0``), where the dataset reads the case; if no
  worker has taken the case yet (at the start they are still importing), this process, which
  would only wait, writes it itself;
* in the training sampler (``adapt.data.sampling.EpochSampler``'s ``gate``), which runs in the
  training process also when loader workers read the samples, so a worker is only ever handed
  samples of written cases.

Nothing about a sample changes: the epoch's order and seeds come from ``seed`` and the sample
list as before; only the moment a case is read does. A case that fails to prepare raises its
``DataError`` (the file named) when a sample first asks for it, prefixed with the case; a
worker that dies raises a ``DataError`` that names the case and the fix, instead of a hang.
A loader worker (another process) has no handle on the pool: if it meets an unwritten case
anyway (validation with ``data.num_workers>0``), it prepares the case itself, as before this
module (the writes are atomic, so two writers of one case leave one whole entry).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import threading
import weakref
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Iterable, Sequence

from adapt.errors import DataError

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Processes that prepare cases: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: The folder that holds the ``adapt`` package this module belongs to.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The module a case-preparing worker runs (``CaseStore.write`` and all it reads with).
DATA_LAYER = "adapt.data.cache"
#: What the fork server imports once, so that each worker it forks starts with the data layer loaded.
PRELOAD = [DATA_LAYER]


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes that prepare cases, forked by a fork server that imported the data layer once.

    Not forked from this process: a forked worker can inherit a lock held by another thread of a
    process that has trained or loaded before (it hung in the tests). Not spawned either: a spawned
    worker imports the data layer itself (torch and MONAI, 4-8 CPU seconds each), for every pool. The
    fork server is a clean single-threaded process started with the first pool; it imports
    ``PRELOAD`` once and forks every later worker, so a notebook or a test session that builds many
    datamodules pays the imports once. The server keeps the working directory and environment of its
    start, so each worker takes this process's current ones first (``_as_parent``), as a spawned
    worker would. Where there is no fork server (Windows), workers are spawned.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    cwd = os.getcwd()
    # The folder holding this very ``adapt`` first, so workers run the code this process runs; '' and
    # other relative entries are read from the working directory, as this process reads them now.
    search = [PACKAGE_PARENT, *(os.path.join(cwd, entry) for entry in sys.path)]
    start_fork_server(search)
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_as_parent, initargs=(cwd, dict(os.environ), search)
    )


def start_fork_server(search: list[str]) -> None:
    """Start the fork server (if it is not running) importing from ``search`` first.

    The server imports ``PRELOAD`` with its own import path (Python 3.11 ignores the one
    ``multiprocessing`` hands it), so ``search`` goes in through ``PYTHONPATH`` while it starts:
    otherwise '' would be read from the working directory of that moment, which may hold no ``adapt``
    or another copy (an installed one), and the workers would run other code than this process.
    """
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(search)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def _as_parent(cwd: str, environ: dict[str, str], search: list[str]) -> None:
    """Run a forked worker in the parent's working directory, environment and import path."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = search


def prepare_case(store: Any, position: int) -> tuple[int, DataError | None]:
    """Write case ``position`` into ``store``'s disk cache (``CaseStore.write``; in a worker process):
    ``(position, None)``, or ``(position, error)`` for a bad case (nothing cached for it)."""
    try:
        store.write(position)
    except DataError as error:
        return position, error
    return position, None


class Preparation:
    """Cases being written into their disk caches in the background.

    The workers start when this object is made (the first pool of a process also starts the fork
    server, which imports the data layer: seconds), so that they are ready by the time the label
    pass has listed the samples and ``submit`` gives them the cases; each counts as free once it
    has run its first call. Cases are handed to the workers one per free worker, not queued in the pool
    ahead: a case no worker holds yet stays here, and the process that waits for it (which would
    only wait) writes it itself; at the start, while the workers still import, that is how the
    first batches' cases get written.

    Args:
        workers: processes (default: every core).
        executor: runs the ``prepare_case`` calls instead of a new process pool (tests hold a case
            back with it); closed with this object.
    """

    def __init__(self, workers: int | None = None, executor: Executor | None = None) -> None:
        count = max(1, workers or default_workers())
        self._executor, self._owner = executor or process_pool(count), os.getpid()
        self._futures: dict[tuple[int, int], Future] = {}
        self._queue: dict[tuple[int, int], tuple[Any, int]] = {}  # not handed out yet, in order
        self._free, self._lock = count, threading.RLock()  # reentrant: a done callback may run in _feed
        # Drop what is not started when the run ends or its datamodule is dropped (an error while indexing).
        self._finalizer = weakref.finalize(self, _stop, self._executor, self._queue)
        if executor is None:
            self._free = 0
            for _ in range(count):
                self._executor.submit(importlib.import_module, DATA_LAYER).add_done_callback(self._release)

    def submit(self, jobs: Sequence[tuple[Any, int]]) -> None:
        """Write these cases, in this order: ``(store, position)``, a store being an
        ``adapt.data.cache.CaseStore`` (which then waits here for them)."""
        with self._lock:
            for store, position in jobs:
                self._queue[(id(store), position)] = (store, position)
                store.preparation = self
        self._feed()

    def _feed(self) -> None:
        """Hand the next queued cases to the free workers."""
        with self._lock:
            while self._free > 0 and self._queue and self._finalizer.alive:
                key = next(iter(self._queue))
                store, position = self._queue.pop(key)
                self._free -= 1
                self._futures[key] = self._executor.submit(prepare_case, store, position)
                self._futures[key].add_done_callback(self._release)

    def _release(self, _: Future) -> None:
        with self._lock:
            self._free += 1
        self._feed()

    def __len__(self) -> int:
        """Cases not written yet (queued, or being written)."""
        with self._lock:
            return len(self._queue) + sum(not future.done() for future in self._futures.values())

    def wait(self, store: Any, position: int) -> None:
        """Return once case ``position`` of ``store`` is in its cache (at once if it is not one of the jobs,
        or in another process than the one that started the jobs); a case no worker holds yet is written
        here.

        Raises:
            DataError: the case could not be prepared (its files named), or its worker died.
        """
        if os.getpid() != self._owner:
            return
        key = (id(store), position)
        with self._lock:
            mine = self._queue.pop(key, None) is not None
            future = self._futures.get(key)
            mine = mine or (future is not None and future.cancel())  # not started: this process writes it
            if mine:
                self._futures[key] = future = Future()
        if future is None:
            return
        if mine:
            try:
                future.set_result(prepare_case(store, position))
            except BaseException as err:  # not a data fault (interrupted...): the next wait raises it too
                future.set_exception(err)
                raise
        case = store.cases[position]
        try:
            _, error = future.result()
        except Exception as err:  # a worker killed (out of memory, a signal) breaks the whole pool
            raise DataError(
                f"case {case.id} ({case.image}): the process preparing it stopped ({type(err).__name__}: {err}); "
                f"prepare the cache first with python -m adapt.data prepare card={store.card.name} "
                f"(fewer workers=... if memory is short), then train again"
            ) from None
        if error is not None:
            raise DataError(f"case {case.id} could not be prepared: {error}")

    def close(self) -> None:
        """Drop the cases not started; those being written finish in their workers (whole entries)."""
        self._finalizer()


def _stop(executor: Executor, queue: dict) -> None:
    queue.clear()
    executor.shutdown(wait=False, cancel_futures=True)


def first_use_order(train: Iterable[int], val: Iterable[int], lead: int) -> list[tuple[str, int]]:
    """The order to prepare cases in, as ``(split, position)``: the first ``lead`` distinct training
    cases as the first epoch reaches them (its first batches), then the validation cases (a run
    validates before it trains, ``validate_before``), then the other training cases in first-use order.

    Args:
        train: the training case of each sample, in the first epoch's order.
        val: the validation case of each sample, in order.
        lead: training cases to put before validation.
    """
    first, checks = list(dict.fromkeys(int(p) for p in train)), list(dict.fromkeys(int(p) for p in val))
    return [("train", p) for p in first[:lead]] + [("val", p) for p in checks] + [("train", p) for p in first[lead:]]
