"""Surface metrics of a prediction that becomes final a few planes at a time, measured as it does.

``evaluate`` scored a case's last class once the model was done, and on a CT with a noisy prediction
that class's surface distances were most of the work left then (a random tiny model's liver: 0.4 s
after 1.3 s of model). Most of it does not need the whole prediction:

- the truth's side (edge voxels, surface elements and their areas, a KD tree and a coarse distance
  grid of its edges) is known before the model starts;
- a plane's predicted edge voxels need the planes beside it, the surface elements between two planes
  those two: they are found once those planes are final, and measured then: each element's NSD
  look-up in the truth's elements, each edge's bounds on its distance to the truth (the cells of
  ``coarse_bounds``, here on a grid fixed in advance);
- a truth edge finds its nearest predicted edge on the grid of predicted edges, nearest offset first
  (``first_hits``), once the planes within the offsets' reach have their edges.

What is left when every plane is final: the last planes, HD95's two order statistics and the truth's
NSD look-ups. The predicted edges whose bounds put them near HD95's ranks are searched in the truth's
tree (``quantile_from_bounds``), and so are the truth edges near its ranks that found no predicted edge
within ``NEAR_OFFSETS`` offsets, in a tree of the predicted edges around them.

The values are ``surface_metrics``'s (``surface="decathlon"``, HD95 as MONAI's): the same edges,
elements, areas, distances and float32 roundings, the elements summed in the same order (planes along
the grid's outermost axis, ``streamable``). The distances are measured from the whole grid's corner
instead of the box around both masks (MONAI's) or as a grid offset's length, so one may differ in its
last float64 bit, and from its float32 rounding (tests: equal, or within 1e-6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from scipy.spatial import KDTree

from adapt.metrics.surface import (
    LEAF_SIZE,
    Lookup,
    nsd_from_answers,
    bounded,
    bounding_box,
    crop_union,
    edge_grid,
    element_grid,
    grid_offsets,
    near_targets,
    nearest,
    nearest_within,
    quantile_from_bounds,
    tolerance_offsets,
)

#: Side of the cells (mm) that bound a predicted edge's distance to the truth: finer than
#: ``surface.CELL_MM`` (the grid is built before the model, beside it), so fewer edges are searched at the end.
STREAM_CELL_MM = 3.0
#: The nearest offsets at which a truth edge looks for a predicted edge on the grid (``first_hits``), and
#: the farthest (mm) they may reach: a random model's noisy liver has HD95 ~10 mm from the truth's side,
#: and an edge left without a hit may have to be searched in a tree of ~10^5 predicted edges at the end.
NEAR_OFFSETS, NEAR_MM = 4096, 15.0


def streamable(truth: np.ndarray, spacing: Sequence[float] | None, tolerance_mm: float | None, axis: int) -> bool:
    """Whether ``SurfaceStream`` measures ``truth``'s class plane by plane along ``axis``: a 3D grid with a
    spacing, planes along its outermost axis in memory (a slab is then a block of memory, and surface
    elements are summed in ``surface_metrics``' order), and an NSD tolerance whose neighbourhood is looked
    up on the grid (``grid_offsets``; wider ones go to trees)."""
    if spacing is None or truth.ndim != 3 or tolerance_mm is None or memory_order(truth)[0] != axis:
        return False
    return grid_offsets([float(s) for s in spacing], [n + 1 for n in truth.shape], tolerance_mm) is not None


def memory_order(array: np.ndarray) -> tuple[int, ...]:
    """The axes of ``array`` from the one that walks memory in the longest steps (``in_memory_order``'s)."""
    return tuple(int(a) for a in np.argsort([-abs(s) for s in array.strides], kind="stable"))


def nearest_offsets(spacing: list[float], shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The shortest grid offsets within ``NEAR_MM``, shortest first, and their lengths: at most ``NEAR_OFFSETS``,
    and every offset as long as one of them (a cell with no target among them has none that near)."""
    offsets = tolerance_offsets(spacing, shape, NEAR_MM)
    lengths = np.sqrt(((offsets * np.asarray(spacing)) ** 2).sum(axis=1))
    order = np.argsort(lengths, kind="stable")
    offsets, lengths = offsets[order], lengths[order]
    if len(lengths) > NEAR_OFFSETS:
        kept = np.searchsorted(lengths, lengths[NEAR_OFFSETS], side="left")
        offsets, lengths = offsets[:kept], lengths[:kept]
    return offsets, lengths


def first_hits(
    cells: tuple[np.ndarray, ...],
    targets: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    box: list[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Each cell's distance to its nearest True cell of ``targets`` among ``offsets`` (shortest first, of
    ``lengths``), ``inf`` where none is: the first offset that finds one is the nearest."""
    distances = np.full(len(cells[0]), np.inf)
    lookup = Lookup.of(cells, targets, offsets, box)
    if lookup is None:
        return distances
    found, todo, flat = np.full(len(lookup.flat), np.inf), np.arange(len(lookup.flat)), lookup.flat
    steps, start, size = offsets @ lookup.strides, 0, 8
    # Offsets in chunks that grow as the cells left without a hit get fewer: one look-up per cell and
    # offset as one step per offset would do, in ~20 numpy calls instead of thousands (this runs beside
    # the model, and a Python loop per offset held the interpreter from it).
    while start < len(steps) and len(todo):
        hits = lookup.region[flat[:, None] + steps[None, start : start + size]]
        hit = hits.any(axis=1)
        found[todo[hit]] = lengths[start + hits[hit].argmax(axis=1)]  # the first in a chunk is the nearest
        todo, flat = todo[~hit], flat[~hit]
        start, size = start + size, min(2 * size, 512)
    distances[lookup.inside] = found
    return distances


class SurfaceStream:
    """HD95 and NSD (``surface="decathlon"``) of a predicted mask against ``truth``, measured plane by plane.

    Args:
        truth: the true mask, 3D.
        spacing: voxel size per axis (mm).
        tolerance_mm: NSD tolerance.
        axis: the axis along which planes become final (``streamable(truth, spacing, tolerance_mm, axis)``
            must hold).
        mask: ``mask(a, b)`` gives the predicted mask's planes ``[a, b)`` along ``axis`` (in ``truth``'s
            layout) once they are final.

    ``advance(planes)`` says which planes are final (a boolean per plane; once final, always) and
    measures what they decide; ``result()`` measures the rest, every plane being final then.
    """

    def __init__(
        self,
        truth: np.ndarray,
        spacing: Sequence[float],
        tolerance_mm: float,
        axis: int,
        mask: Callable[[int, int], np.ndarray],
    ):
        truth = np.asarray(truth, dtype=bool)
        if not streamable(truth, spacing, tolerance_mm, axis):
            raise ValueError(
                f"a {tolerance_mm} mm tolerance at spacing {spacing}, planes along axis {axis} of a grid laid out "
                f"{memory_order(truth)}, is not measured plane by plane (streamable)"
            )
        # The axes in memory order, as ``surface_metrics`` lays them out (a NIfTI's Fortran order is a C-order
        # view), the planes' axis first: a slab is a block of memory, and elements come in the same order.
        self.order = memory_order(truth)
        self.truth = truth.transpose(self.order)
        self.grid = [float(spacing[a]) for a in self.order]
        self.shape = self.truth.shape
        self.mask = mask
        corners = tuple(n + 1 for n in self.shape)  # surface elements: corner c between voxels c - 1 and c
        self.offsets = grid_offsets(self.grid, corners, float(tolerance_mm))
        self.final = np.zeros(self.shape[0], dtype=bool)
        self.edges_done = np.zeros(self.shape[0], dtype=bool)
        self.elements_done = np.zeros(self.shape[0] + 1, dtype=bool)
        self.truth_done = np.zeros(self.shape[0], dtype=bool)  # planes whose truth edges looked up the nearest
        self.has_pred = False
        # Predicted edges: their coordinates and bounds; elements: their areas and NSD answers.
        self.points: list[np.ndarray] = []
        self.bounds: list[tuple[np.ndarray, np.ndarray]] = []
        self.areas: dict[int, np.ndarray] = {}  # by first corner plane: summed in plane order, as the whole grid's
        self.near: dict[int, np.ndarray] = {}
        self._truth_side()
        self.truth = None  # the truth's side is measured: its mask is not needed again

    def _truth_side(self) -> None:
        """The truth's edges (cells, coordinates, tree, the coarse grid of distances to them) and elements."""
        box = bounding_box(self.truth)
        self.has_truth = box is not None
        if not self.has_truth:
            return
        corner = np.array([lo - 1 for lo, _ in box])  # of the box grown by one voxel (``crop_union``'s)
        cropped, _ = crop_union(self.truth, self.truth)
        cells = np.stack(np.unravel_index(np.flatnonzero(edge_grid(cropped)), cropped.shape), axis=1) + corner
        self.truth_planes = np.searchsorted(cells[:, 0], np.arange(self.shape[0] + 1))  # plane p: [p], [p + 1]
        self.truth_points = cells * np.asarray(self.grid)
        self.near_offsets, self.near_lengths = nearest_offsets(self.grid, self.shape)
        self.near_reach = int(np.abs(self.near_offsets[:, 0]).max())
        self.truth_found = np.full(len(cells), np.inf)  # distance to the nearest predicted edge on the grid
        # The predicted edges and elements that the truth's look-ups can reach are kept on grids around the
        # truth's box (a liver's, not a CT's), in their coordinates: cell - origin.
        reach = np.maximum(np.abs(self.near_offsets).max(0), np.abs(self.offsets).max(0)) + 2
        self.origin = np.maximum(corner + 1 - reach, 0)
        end = np.minimum(np.array([hi for _, hi in box]) + 1 + reach, np.asarray(self.shape) + 1)
        self.edges = np.zeros(tuple(np.minimum(end, self.shape) - self.origin), dtype=bool)
        self.elements = np.zeros(tuple(end - self.origin), dtype=bool)
        self.edge_box: list[tuple[int, int]] | None = None
        self.element_box: list[tuple[int, int]] | None = None
        self.truth_cells = tuple((cells - self.origin).T)  # in C order: plane by plane
        self.truth_tree = KDTree(self.truth_points, leafsize=LEAF_SIZE)
        self.cell_voxels = np.maximum(1, np.round(STREAM_CELL_MM / np.asarray(self.grid))).astype(np.int64)
        empty = np.ones(tuple(-(-np.asarray(self.shape) // self.cell_voxels)), dtype=bool)
        empty[tuple((cells // self.cell_voxels).T)] = False
        self.cell = self.cell_voxels * np.asarray(self.grid)
        self.coarse = distance_transform_edt(empty, sampling=self.cell)
        # Elements: the cropped grid's corner c' is corner c' + the box's first voxel.
        found, self.truth_areas = element_grid(cropped, self.grid)
        first = corner + 1 - self.origin
        self.truth_elements = np.zeros(self.elements.shape, dtype=bool)
        self.truth_elements[tuple(slice(c, c + n) for c, n in zip(first, found.shape))] = found
        inner = np.unravel_index(np.flatnonzero(found), found.shape)
        self.truth_element_cells = tuple(along + c for along, c in zip(inner, first))
        self.truth_element_box = bounding_box(self.truth_elements)

    def _planes(self, a: int, b: int) -> np.ndarray:
        """Predicted voxel planes ``[a, b)`` in the stream's layout, C order; zeros beyond the volume."""
        out = np.zeros((b - a, *self.shape[1:]), dtype=bool)
        lo, hi = max(a, 0), min(b, self.shape[0])
        if lo < hi:
            out[lo - a : hi - a] = np.asarray(self.mask(lo, hi), dtype=bool).transpose(self.order)
        return out

    def advance(self, final: np.ndarray) -> None:
        """Measure what the planes ``final`` marks (a boolean per plane) decide and was not measured yet."""
        self.final |= final
        ready = np.concatenate([[True], self.final, [True]])  # beyond the volume: background, known
        # A voxel's edge needs the planes on both sides of it, a corner's elements the voxels on both sides.
        edges = ready[:-2] & ready[1:-1] & ready[2:]
        elements = ready[:-1] & ready[1:]
        for a, b in true_runs(edges & ~self.edges_done):
            self._edges(a, b)
        for a, b in true_runs(elements & ~self.elements_done):
            self._elements(a, b)
        self.edges_done |= edges
        self.elements_done |= elements
        if self.has_truth:
            # A truth edge's offsets reach ``near_reach`` planes to either side: those must have their edges.
            beside = [True] * self.near_reach  # beyond the volume: no edges to wait for
            done = np.concatenate([beside, self.edges_done, beside])
            window = np.lib.stride_tricks.sliding_window_view(done, 2 * self.near_reach + 1).all(axis=1)
            for a, b in true_runs(window & ~self.truth_done):
                self._truth_edges(a, b)
            self.truth_done |= window

    def _edges(self, a: int, b: int) -> None:
        """Edge voxels of planes ``[a, b)``, and their bounds on the distance to the truth's edges."""
        context = self._planes(a - 1, b + 1)
        box = bounding_box(context[1:-1])
        if box is None:
            return
        self.has_pred = True
        if not self.has_truth:
            return
        # Zeros beyond the volume's planes erode its first and last planes as ``edge_grid``'s border does;
        # the planes around the slab only erode it.
        window, y0, x0 = _framed(context, box)
        edge = edge_grid(window)[1:-1]
        cells = np.stack(np.unravel_index(np.flatnonzero(edge), edge.shape), axis=1) + np.array([a, y0 - 1, x0 - 1])
        self.edge_box = _marked(self.edges, self.edge_box, cells - self.origin)
        self.points.append(cells * np.asarray(self.grid))
        self.bounds.append(bounded(self.coarse[tuple((cells // self.cell_voxels).T)], self.cell))

    def _truth_edges(self, a: int, b: int) -> None:
        """The nearest predicted edge of each truth edge on planes ``[a, b)``, on the grid (``first_hits``)."""
        start, stop = self.truth_planes[a], self.truth_planes[b]
        if start == stop or self.edge_box is None:
            return
        a, b = a - self.origin[0], b - self.origin[0]  # on the grid around the truth
        lo, hi = max(a - self.near_reach, 0), min(b + self.near_reach, self.edges.shape[0])
        cells = (self.truth_cells[0][start:stop] - lo, *(c[start:stop] for c in self.truth_cells[1:]))
        edges = self.edges[lo:hi]
        box = bounding_box(edges)
        if box is not None:
            self.truth_found[start:stop] = first_hits(cells, edges, self.near_offsets, self.near_lengths, box)

    def _elements(self, a: int, b: int) -> None:
        """Surface elements of corner planes ``[a, b)``, their areas and NSD answers against the truth's."""
        voxels = self._planes(a - 1, b)
        box = bounding_box(voxels) if self.has_truth else None
        if box is None:  # no prediction here, or no truth: NSD is 0 whatever the elements
            return
        window, y0, x0 = _framed(voxels, box)
        found, areas = element_grid(window, self.grid)
        if not len(areas):
            return
        inner = np.unravel_index(np.flatnonzero(found), found.shape)
        cells = np.stack(inner, axis=1) + np.array([a, y0, x0]) - self.origin  # on the grid around the truth
        self.element_box = _marked(self.elements, self.element_box, cells)
        self.areas[a] = areas
        self.near[a] = near_targets(tuple(cells.T), self.truth_elements, self.offsets, self.truth_element_box)

    def result(self) -> dict[str, float]:
        """``{"hd95", "nsd"}`` of the whole prediction (every plane final), as ``surface_metrics`` gives them."""
        self.advance(np.ones(self.shape[0], dtype=bool))
        out = {"hd95": float("nan"), "nsd": float("nan") if not (self.has_pred or self.has_truth) else 0.0}
        if not (self.has_pred and self.has_truth):
            return out
        points = np.concatenate(self.points)
        lower = np.concatenate([low for low, _ in self.bounds])
        upper = np.concatenate([high for _, high in self.bounds])
        to_truth = quantile_from_bounds(lower, upper, 0.95, lambda chosen: nearest(points[chosen], self.truth_tree))
        out["hd95"] = float(torch.max(to_truth, self._truth_to_prediction(points)))
        truth_near = near_targets(self.truth_element_cells, self.elements, self.offsets, self.element_box)
        slabs = sorted(self.areas)
        near, areas = (np.concatenate([part[a] for a in slabs]) for part in (self.near, self.areas))
        out["nsd"] = nsd_from_answers(near, truth_near, areas, self.truth_areas)
        return out

    def _truth_to_prediction(self, points: np.ndarray) -> torch.Tensor:
        """The 95th percentile of the truth edges' distances to the nearest predicted edge (``points``)."""
        found = self.truth_found
        unknown = np.isinf(found)
        # Beyond the offsets looked at, a distance is at least the longest of them (less float noise).
        lower = np.where(unknown, self.near_lengths[-1] * (1 - 1e-6), found)

        def search(chosen: np.ndarray) -> torch.Tensor:
            exact = found[chosen].astype(np.float32)
            far = unknown[chosen]
            if far.any():
                exact[far] = nearest_among(self.truth_points[chosen][far], points).numpy()
            return torch.from_numpy(exact)

        return quantile_from_bounds(lower, found, 0.95, search)


def nearest_among(queries: np.ndarray, points: np.ndarray) -> torch.Tensor:
    """``nearest(queries, points)`` with a tree of only the points that can be nearest: within the reach
    that a sample of them already gives every query (a noisy CT mask has ~10^6 edge points)."""
    sample = points[:: max(1, len(points) // 4096)]
    return nearest_within(queries, points, float(np.max(KDTree(sample, leafsize=LEAF_SIZE).query(queries, k=1)[0])))


def true_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, stop)`` of each run of True in a boolean vector."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _framed(planes: np.ndarray, box: list[tuple[int, int]]) -> tuple[np.ndarray, int, int]:
    """``planes`` cut to the in-plane part of ``box`` with one cell of background around it (no edge or
    element is lost or made there), and the box's first row and column."""
    (y0, y1), (x0, x1) = box[1], box[2]
    window = np.zeros((len(planes), y1 - y0 + 3, x1 - x0 + 3), dtype=bool)
    window[:, 1:-1, 1:-1] = planes[:, y0 : y1 + 1, x0 : x1 + 1]
    return window, y0, x0


def _marked(grid: np.ndarray, box: list[tuple[int, int]] | None, cells: np.ndarray) -> list[tuple[int, int]] | None:
    """The cells (rows) that lie on ``grid`` set there; ``box`` grown by them."""
    cells = cells[np.all((cells >= 0) & (cells < np.asarray(grid.shape)), axis=1)]
    if not len(cells):
        return box
    grid[tuple(cells.T)] = True
    return _union(box, list(zip(cells.min(0).tolist(), cells.max(0).tolist())))


def _union(box: list[tuple[int, int]] | None, other: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The bounding box of two boxes (``None``: no box yet)."""
    return other if box is None else [(min(a, c), max(b, d)) for (a, b), (c, d) in zip(box, other)]
