"""Surface metrics measured as a prediction's planes become final (``adapt.metrics.streamed``): the values of
``surface_metrics`` (and so MONAI's) whatever order the planes come in, each plane measured once its
neighbours are final, and never a plane asked for before it is."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage
from scipy.spatial import KDTree

from adapt.metrics import streamed
from adapt.metrics.streamed import SurfaceStream, first_hits, memory_order, nearest_among, streamable
from adapt.metrics.surface import surface_metrics


def blobs(seed: int, shape: tuple[int, ...], threshold: float, smooth: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), smooth) > threshold


def laid_out(mask: np.ndarray, layout: str) -> np.ndarray:
    """The same voxels in C order, Fortran order (a NIfTI file's), or with the middle axis outermost."""
    if layout == "F":
        return np.asfortranarray(mask)
    if layout == "middle":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(mask, 1, 0)), 0, 1)
    return np.ascontiguousarray(mask)


def streamed_metrics(pred, truth, spacing, tolerance, schedule, seed=0):
    """``SurfaceStream``'s result with the planes made final in ``schedule``'s order: "forward", "backward",
    "shuffled" (a few planes at a time, anywhere) or "end" (all at once)."""
    axis = memory_order(truth)[0]
    stream = SurfaceStream(truth, spacing, tolerance, axis, lambda a, b: np.take(pred, range(a, b), axis))
    n = truth.shape[axis]
    order = {
        "forward": np.arange(n),
        "backward": np.arange(n)[::-1],
        "shuffled": np.random.default_rng(seed).permutation(n),
        "end": np.arange(0),
    }[schedule]
    final = np.zeros(n, dtype=bool)
    for part in np.array_split(order, max(1, len(order) // 3)) if len(order) else []:
        final[part] = True
        stream.advance(final.copy())
    return stream.result()


def same(expected: dict, got: dict) -> bool:
    return expected.keys() == got.keys() and all(
        (math.isnan(expected[k]) and math.isnan(got[k])) or expected[k] == got[k] for k in expected
    )


CASES = [
    # (name, shape, spacing, layout, prediction: (threshold, smoothing), tolerance)
    ("ct-like, fortran", (30, 26, 12), (0.8, 0.8, 2.5), "F", (0.5, 1.0), 2.0),
    ("specks everywhere", (28, 30, 10), (0.8, 0.8, 2.5), "F", (0.62, 0.5), 2.0),
    ("isotropic, C order", (20, 22, 18), (1.0, 1.0, 1.0), "C", (0.5, 1.2), 1.0),
    ("thick first axis", (9, 30, 24), (3.0, 0.7, 0.7), "C", (0.55, 0.8), 3.0),
    ("middle axis outermost", (16, 14, 20), (1.5, 2.5, 0.9), "middle", (0.5, 1.0), 2.0),
]


@pytest.mark.parametrize("schedule", ["forward", "backward", "shuffled", "end"])
@pytest.mark.parametrize(
    ("name", "shape", "spacing", "layout", "prediction", "tolerance"), CASES, ids=[c[0] for c in CASES]
)
def test_streamed_metrics_equal_the_whole_volumes(name, shape, spacing, layout, prediction, tolerance, schedule):
    """Planes final front to back, back to front, anywhere a few at a time, or all at the end: HD95 and NSD
    are ``surface_metrics``' numbers exactly (the same edges, elements, distances, and sums in the same
    order), on masks that touch every border of the volume."""
    for seed in range(2):
        truth = laid_out(blobs(seed, shape, 0.5, 1.5), layout)
        pred = laid_out(blobs(seed + 10, shape, *prediction), layout)
        expected = surface_metrics(pred, truth, spacing, tolerance)
        assert not math.isnan(expected["hd95"]) and 0 < expected["nsd"] < 1
        assert same(expected, streamed_metrics(pred, truth, spacing, tolerance, schedule, seed))


def test_streamed_metrics_equal_monais():
    """The judge: MONAI's HD95 and its subvoxel surface Dice on an anisotropic volume."""
    truth, pred = blobs(1, (24, 20, 10), 0.5, 1.5), blobs(2, (24, 20, 10), 0.5, 1.0)
    spacing = (0.8, 0.8, 2.5)
    got = streamed_metrics(pred, truth, spacing, 2.0, "shuffled")
    a, b = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(truth)[None, None].float()
    monai_hd = compute_hausdorff_distance(a, b, include_background=True, percentile=95, spacing=list(spacing))
    monai_nsd = compute_surface_dice(a, b, [2.0], include_background=True, spacing=list(spacing), use_subvoxels=True)
    assert got["hd95"] == pytest.approx(monai_hd.item(), rel=1e-5)
    assert got["nsd"] == pytest.approx(monai_nsd.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("pred_on", "truth_on", "expected"),
    [(False, True, (math.nan, 0.0)), (True, False, (math.nan, 0.0)), (False, False, (math.nan, math.nan))],
    ids=["no-prediction", "no-truth", "neither"],
)
def test_streamed_empty_conventions_are_surface_metrics(pred_on, truth_on, expected):
    shape, spacing = (12, 10, 8), (1.0, 1.0, 2.0)
    pred, truth = blobs(3, shape, 0.5, 1.0) & pred_on, blobs(4, shape, 0.5, 1.0) & truth_on
    got = streamed_metrics(pred, truth, spacing, 2.0, "shuffled")
    assert same({"hd95": expected[0], "nsd": expected[1]}, got)
    assert same(surface_metrics(pred, truth, spacing, 2.0), got)


def test_a_plane_is_measured_once_its_neighbours_are_final_and_never_asked_before():
    """Half the planes final: the edges of every plane whose neighbours are final are found, the elements
    between two final planes too, the truth's look-ups wait for the planes within their reach; the mask is
    asked only for final planes, each plane's edges and elements once."""
    shape, spacing = (20, 18, 14), (0.8, 0.8, 2.5)
    truth = np.asfortranarray(blobs(5, shape, 0.5, 1.5))
    pred = np.asfortranarray(blobs(6, shape, 0.5, 1.0))
    asked, finals = [], []
    stream = SurfaceStream(truth, spacing, 2.0, 2, lambda a, b: asked.append((a, b)) or pred[:, :, a:b])
    real = stream._planes

    def planes(a, b):
        finals.append(stream.final.copy())
        return real(a, b)

    stream._planes = planes
    final = np.zeros(14, dtype=bool)
    final[:7] = True
    stream.advance(final)
    np.testing.assert_array_equal(stream.edges_done, [True] * 6 + [False] * 8)  # plane 6 waits for plane 7
    np.testing.assert_array_equal(stream.elements_done, [True] * 7 + [False] * 8)  # corner 7 too
    reach = stream.near_reach
    assert reach >= 1 and stream.truth_done.sum() == max(6 - reach, 0)
    for (a, b), known in zip(asked, finals):
        assert known[a:b].all()  # never a plane that is not final
    before = len(asked)
    stream.advance(final)  # nothing new: nothing asked again
    assert len(asked) == before
    assert same(surface_metrics(pred, truth, spacing, 2.0), stream.result())


def test_streamable_says_which_grids_are_measured_plane_by_plane():
    truth = np.asfortranarray(blobs(7, (10, 10, 6), 0.5, 1.0))
    assert streamable(truth, (0.8, 0.8, 2.5), 2.0, 2)
    assert not streamable(truth, (0.8, 0.8, 2.5), 2.0, 0)  # not the outermost axis in memory
    assert not streamable(truth, None, 2.0, 2)  # no spacing
    assert not streamable(truth, (0.8, 0.8, 2.5), None, 2)  # no NSD tolerance
    assert not streamable(truth, (0.01, 0.01, 0.01), 2.0, 2)  # a neighbourhood for the trees
    assert not streamable(truth[:, :, 0], (0.8, 0.8), 2.0, 1)  # 2D
    with pytest.raises(ValueError, match="axis 0 .* not measured plane by plane"):
        SurfaceStream(truth, (0.8, 0.8, 2.5), 2.0, 0, lambda a, b: truth[a:b])


def test_first_hits_are_the_nearest_target_within_the_offsets(monkeypatch):
    """The first offset that finds a target is the nearest (exact distances, ties kept together when the
    offsets are cut at ``NEAR_OFFSETS``), ``inf`` for a cell with none within the offsets."""
    monkeypatch.setattr(streamed, "NEAR_OFFSETS", 60)
    rng = np.random.default_rng(8)
    targets = rng.random((14, 16, 9)) < 0.02
    spacing = [0.8, 0.8, 2.5]
    offsets, lengths = streamed.nearest_offsets(spacing, targets.shape)
    assert np.all(np.diff(lengths) >= 0) and len(offsets) <= streamed.NEAR_OFFSETS
    cells = tuple(rng.integers(0, n, 200) for n in targets.shape)
    found = first_hits(cells, targets, offsets, lengths)
    points = np.stack(cells, axis=1) * spacing
    exact = KDTree(np.argwhere(targets) * spacing).query(points)[0]
    reached, beyond = exact < lengths[-1] * (1 - 1e-9), exact > lengths[-1] * (1 + 1e-9)  # not the last bit
    np.testing.assert_allclose(found[reached], exact[reached], rtol=1e-12)
    assert np.isinf(found[beyond]).all() and reached.sum() > 50 and beyond.sum() > 10


def test_truth_edges_beyond_the_offsets_are_searched_in_a_tree_of_the_predictions_near_them(monkeypatch):
    """With only 7 offsets, most truth edges find no predicted edge on the grid: those near HD95's ranks
    are searched among the predicted edges near them, and the value is still the whole volume's."""
    monkeypatch.setattr(streamed, "NEAR_OFFSETS", 7)
    searched = []
    real = streamed.nearest_among
    monkeypatch.setattr(streamed, "nearest_among", lambda q, p: searched.append(len(q)) or real(q, p))
    truth = np.asfortranarray(blobs(9, (30, 26, 12), 0.5, 1.5))
    pred = np.asfortranarray(blobs(10, (30, 26, 12), 0.58, 0.6))
    got = streamed_metrics(pred, truth, (0.8, 0.8, 2.5), 2.0, "forward")
    assert searched and same(surface_metrics(pred, truth, (0.8, 0.8, 2.5), 2.0), got)
    queries, points = np.random.default_rng(0).random((50, 3)) * 30, np.random.default_rng(1).random((5000, 3)) * 30
    assert torch.equal(
        nearest_among(queries, points), torch.from_numpy(KDTree(points).query(queries)[0].astype(np.float32))
    )
