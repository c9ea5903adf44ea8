"""The last case of an evaluation scored as the model passes its planes.

The pipeline (``adapt.evaluation.pipeline``) scores a case while the model works on the next one; the
last case has no next one, and its scoring came after the model. With one validation CT (a dataset of
four cases) that was most of ``evaluate``'s time outside the model: the confusion matrices of every
click count, and the surface distances of the classes that end on the last planes (a noisy liver:
~0.4 s after 1.3 s of model, with both threads).

Prompted plane by plane, the class maps are written in plane order, and a plane is final once the
model has passed it (``predict_classes``' ``on_planes``). Scoring decomposes by planes: a confusion
matrix is the sum of its planes', and ``adapt.metrics.streamed.SurfaceStream`` measures the surface
metrics of a class as its planes become final. ``PlanesAhead`` does both in the pipeline's background
thread while the model works, on the stored grid (a stack that is a pure reorientation of it: the
stored planes of stack planes ``[0, stop)`` are a range of one stored axis); what is left when the
model is done is the last batch's planes and HD95's final search. The values are those of
``score_case`` (confusions exactly, surface metrics within ``SurfaceStream``'s float rounding).
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from adapt.evaluation.case import CaseInput, Protocol, class_planes, stored, voxel_spacing
from adapt.inference.names import GT_PROMPTS
from adapt.metrics import confusion_matrix
from adapt.metrics.streamed import SurfaceStream, true_runs, streamable

#: The most classes measured plane by plane (each holds grids around its truth and the coordinates of its
#: predicted edges); the classes that end on the last planes beyond them are measured once the model is done.
STREAMED_CLASSES = 2


class PlanesAhead:
    """A case's confusion matrices (by number of clicks) and the surface metrics of the classes that end
    last, counted in ``pool`` as the model's planes become final (``planes_done``, the ``on_planes`` of
    ``predict_input``), finished by ``finish`` when the model is done.

    Build it with ``PlanesAhead.of``, which says ``None`` where planes do not decompose the scoring.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        inputs: CaseInput,
        values: list[int],
        protocol: Protocol,
        along: tuple[int, bool],
    ):
        self.pool, self.inputs, self.values, self.protocol = pool, inputs, values, protocol
        self.axis, self.backwards = along  # ``VolumeView.stack_axis``
        self.counted = np.zeros(len(inputs.truth), dtype=bool)  # stack planes whose confusions are counted
        self.confusions: dict[int, torch.Tensor] = {}
        self.maps: dict[int, np.ndarray] = {}
        self.streams: dict[int, SurfaceStream] = {}
        self.pending: list[Future] = [pool.submit(self._start)]

    @classmethod
    def of(
        cls, pool: ThreadPoolExecutor, inputs: CaseInput, values: list[int], protocol: Protocol
    ) -> PlanesAhead | None:
        """Scoring ahead of a case, or ``None`` where its planes do not decompose it: a 2D image, a stack
        resampled from the stored grid, nodata pixels, a protocol that is not prompted plane by plane
        (propagation, semantic, auto), planes that are not the label file's outermost axis in memory, or an
        NSD tolerance wider than the grid look-ups (``streamable``)."""
        scan = inputs.scan
        if not (scan.is_volume and scan.valid is None) or protocol.prompt not in GT_PROMPTS or protocol.propagation:
            return None
        along, (spacing, _) = scan.view.stack_axis(), voxel_spacing(scan)
        if along is None or not streamable(inputs.truth_classes, spacing, protocol.tolerance_mm, along[0]):
            return None
        return cls(pool, inputs, values, protocol, along)

    def _start(self) -> None:
        """Where the model writes (planes without a class are never prompted: final from the start), and a
        ``SurfaceStream`` for each class that ends on the last planes, its truth side measured now."""
        present = class_planes(self.inputs.truth, self.values)
        self.empty = ~present.any(axis=0)
        ends = [int(np.flatnonzero(row)[-1]) if row.any() else -1 for row in present]
        last = [index + 1 for index, end in enumerate(ends) if end == max(ends) and end >= 0]
        spacing, _ = voxel_spacing(self.inputs.scan)
        for index in last[:STREAMED_CLASSES]:
            truth = self.inputs.truth_classes == index
            mask = functools.partial(self._class_planes, index)
            self.streams[index] = SurfaceStream(truth, spacing, self.protocol.tolerance_mm, self.axis, mask)

    def _class_planes(self, index: int, a: int, b: int) -> np.ndarray:
        """Class ``index``'s predicted mask on stored planes ``[a, b)`` (final ones: ``SurfaceStream`` asks)."""
        return self._slab(stored(self.inputs.scan, self.maps[0]), a, b) == index

    def _slab(self, volume: np.ndarray, a: int, b: int) -> np.ndarray:
        """Planes ``[a, b)`` along the stack's stored axis of a volume on the stored grid (a view)."""
        index = [slice(None)] * 3
        index[self.axis] = slice(a, b)
        return volume[tuple(index)]

    def planes_done(self, stop: int, maps: dict[int, np.ndarray]) -> None:
        """Stack planes ``[0, stop)`` of ``maps`` are final: count and measure them in the pool."""
        self.maps = dict(maps)  # the caller's dict loses its first map when the model is done
        self.pending.append(self.pool.submit(self._count, stop))

    def _count(self, stop: int) -> None:
        """The confusions of the planes newly final, and the surface streams advanced to them."""
        final = self.empty.copy()
        final[:stop] = True
        classes = len(self.values) + 1
        for a, b in true_runs(final & ~self.counted):
            truth = self._stack_planes(self.inputs.truth_classes, a, b)
            for k, stack in self.maps.items():
                predicted = self._stack_planes(stored(self.inputs.scan, stack), a, b)
                counted = confusion_matrix(predicted, truth, classes, ignore_index=-1)
                self.confusions[k] = counted if k not in self.confusions else self.confusions[k] + counted
        self.counted |= final
        stored_final = final[::-1] if self.backwards else final
        for stream in self.streams.values():
            stream.advance(stored_final)

    def _stack_planes(self, volume: np.ndarray, a: int, b: int) -> np.ndarray:
        """Stack planes ``[a, b)`` of a volume on the stored grid: its stored planes there."""
        n = volume.shape[self.axis]
        return self._slab(volume, n - b, n - a) if self.backwards else self._slab(volume, a, b)

    def finish(self, maps: dict[int, np.ndarray]) -> tuple[dict[int, torch.Tensor], dict[int, dict[str, float]]]:
        """Every plane final (``maps``: the finished class maps, by number of clicks): the confusion
        matrices by number of clicks, and the surface metrics of the streamed classes."""
        for future in self.pending:
            future.result()
        self.maps = maps
        self._count(len(self.counted))
        measured = {index: stream.result() for index, stream in self.streams.items()}
        self.streams, self.maps = {}, {}  # each stream's mask reads this object's maps: free both now
        return self.confusions, measured
