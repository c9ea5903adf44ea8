"""Every metric against hand-computed cases, its empty-mask convention, and MONAI/torchmetrics."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU, compute_hausdorff_distance, compute_iou, compute_surface_dice
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter
from scipy.spatial.distance import cdist

from adapt.metrics import (
    FrameTimer,
    boundary_map,
    boundary_pixels,
    boundary_precision_recall,
    case_metrics,
    class_iou,
    confusion_matrix,
    contour_accuracy_f,
    dice,
    dice_score,
    fps,
    global_accuracy,
    hd95,
    iou,
    iou_score,
    j_and_f,
    mean_pixel_accuracy,
    miou,
    nsd,
    pixel_accuracy,
    region_similarity_j,
    summarize,
    surface_metrics,
)
from adapt.metrics.video import _disk

nan = float("nan")


def box(shape: tuple[int, ...], *slices: slice) -> np.ndarray:
    """A boolean array of ``shape`` that is True inside the given slices."""
    mask = np.zeros(shape, bool)
    mask[slices] = True
    return mask


def random_masks(seed: int, shape: tuple[int, ...], p: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < p


# ----------------------------------------------------------------------------- Dice / IoU

# 4x4 by hand:      pred          gt
#                 1 1 1 0       0 1 1 0
#                 1 1 1 0       0 1 1 0
#                 0 0 0 0       0 1 1 0
#                 0 0 0 0       0 0 0 0
# |P| = 6, |G| = 6, |P∩G| = 4 (rows 0-1, cols 1-2), |P∪G| = 8
# Dice = 2*4 / 12 = 2/3, IoU = 4 / 8 = 1/2.
PRED_4 = box((4, 4), slice(0, 2), slice(0, 3))
GT_4 = box((4, 4), slice(0, 3), slice(1, 3))


def test_dice_iou_hand_computed_4x4():
    assert dice(PRED_4, GT_4) == pytest.approx(2 / 3)
    assert iou(PRED_4, GT_4) == pytest.approx(1 / 2)
    pred, gt = torch.from_numpy(PRED_4), torch.from_numpy(GT_4)
    assert dice_score(pred, gt).item() == pytest.approx(2 / 3)
    assert iou_score(pred, gt).item() == pytest.approx(1 / 2)
    # uint8 label maps read from files count nonzero as foreground
    assert dice(PRED_4.astype(np.uint8) * 255, GT_4.astype(np.uint8)) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (np.zeros((4, 4), bool), np.zeros((4, 4), bool), 1.0),  # both empty: correct "no object"
        (np.zeros((4, 4), bool), GT_4, 0.0),  # missed object
        (PRED_4, np.zeros((4, 4), bool), 0.0),  # false positive on an empty image
    ],
    ids=["both-empty", "empty-pred", "empty-gt"],
)
def test_dice_iou_empty_convention(pred, gt, expected):
    for value in (
        dice(pred, gt),
        iou(pred, gt),
        dice_score(torch.from_numpy(pred), torch.from_numpy(gt)).item(),
        iou_score(torch.from_numpy(pred), torch.from_numpy(gt)).item(),
    ):
        assert value == expected


def test_one_pixel_objects_have_no_smoothing_bias():
    one = box((5, 5), slice(2, 3), slice(2, 3))
    assert dice(one, one) == 1.0 and iou(one, one) == 1.0
    # a missed one-pixel object scores 0, not the 0.5 an eps of 1 would give
    assert dice(box((5, 5), slice(0, 1), slice(0, 1)), one) == 0.0
    # one pixel against two: Dice 2*1/3, IoU 1/2
    two = box((5, 5), slice(2, 3), slice(2, 4))
    assert dice(one, two) == pytest.approx(2 / 3) and iou(one, two) == pytest.approx(1 / 2)


def test_batched_shapes_and_numpy_agreement():
    pred, gt = random_masks(0, (3, 2, 16, 16)), random_masks(1, (3, 2, 16, 16))
    gt[0, 1] = False  # an empty target among them
    pred[0, 1] = False  # ... with an empty prediction: 1.0
    gt[2, 0] = False  # an empty target with a non-empty prediction: 0.0
    pred_t, gt_t = torch.from_numpy(pred), torch.from_numpy(gt)
    d, j = dice_score(pred_t, gt_t), iou_score(pred_t, gt_t)
    assert d.shape == j.shape == (3, 2) and d.dtype == torch.float32
    for b, n in np.ndindex(3, 2):
        assert d[b, n].item() == pytest.approx(dice(pred[b, n], gt[b, n]), abs=1e-6)
        assert j[b, n].item() == pytest.approx(iou(pred[b, n], gt[b, n]), abs=1e-6)
    assert d[0, 1] == 1.0 and d[2, 0] == 0.0


def test_batched_3d_volumes_reduce_three_dims():
    pred, gt = random_masks(2, (2, 4, 8, 8)), random_masks(3, (2, 4, 8, 8))
    d = dice_score(torch.from_numpy(pred), torch.from_numpy(gt), dims=3)
    assert d.shape == (2,)
    assert d.tolist() == pytest.approx([dice(pred[0], gt[0]), dice(pred[1], gt[1])], abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        dice_score(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 4, 5, dtype=torch.bool))


def test_soft_dice_and_finite_gradients_on_empty_objects():
    # pred probabilities 0.5, 0.5 on the top row, target the top-left pixel:
    # Dice = 2*0.5 / (1 + 1) = 0.5, IoU = 0.5 / (1 + 1 - 0.5) = 1/3
    pred = torch.tensor([[[0.5, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    d = dice_score(pred, target)
    assert d.tolist() == pytest.approx([0.5, 1.0])
    assert iou_score(pred, target)[0].item() == pytest.approx(1 / 3)
    d.sum().backward()
    assert torch.isfinite(pred.grad).all()
    # half-precision inputs are scored in float32
    assert dice_score(pred.detach().bfloat16(), target.bfloat16()).dtype == torch.float32


def test_dice_iou_agree_with_monai_on_random_masks():
    pred, gt = random_masks(4, (6, 1, 24, 24)), random_masks(5, (6, 1, 24, 24))
    gt[1], pred[2], gt[3], pred[3] = False, False, False, False
    pt, gtt = torch.from_numpy(pred).float(), torch.from_numpy(gt).float()
    monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pt, gtt)
    monai_iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(pt, gtt)
    assert torch.allclose(dice_score(pt.bool(), gtt.bool()), monai_dice.float(), atol=1e-6)
    assert torch.allclose(iou_score(pt.bool(), gtt.bool()), monai_iou.float(), atol=1e-6)
    # MONAI's default (ignore_empty=True) differs only where the target is empty: nan there
    default = DiceMetric(include_background=True, reduction="none")(pt, gtt)[:, 0]
    assert torch.isnan(default[[1, 3]]).all()
    assert torch.allclose(default[[0, 2, 4, 5]], monai_dice[[0, 2, 4, 5], 0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_scores_stay_on_the_gpu_without_sync():
    pred = torch.rand(4, 3, 64, 64, device="cuda") > 0.5
    gt = torch.rand(4, 3, 64, 64, device="cuda") > 0.5
    gt[0, 0] = pred[0, 0] = False
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host sync raises
    try:
        d, j = dice_score(pred, gt), iou_score(pred, gt)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert d.device.type == "cuda" and d[0, 0].item() == 1.0
    assert torch.allclose(d.cpu(), dice_score(pred.cpu(), gt.cpu()))
    assert torch.allclose(j.cpu(), iou_score(pred.cpu(), gt.cpu()))
    assert torch.allclose(contour_accuracy_f(pred, gt).cpu(), contour_accuracy_f(pred.cpu(), gt.cpu()))


# ----------------------------------------------------------------------------- NSD / HD95

# 10x10, gt a 4x4 square at rows 2-5, cols 2-5; pred the same square one column right.
# HD95 and surface="voxels" NSD use edge pixels (mask minus cross erosion): each square's ring of 12.
# Spacing (1, 1): every ring pixel lies 0 (6 of 12) or 1 voxel (6 of 12) from the other ring,
#   so HD95 = 1 and NSD(tol 0.5) = 12/24 = 1/2.
# Spacing (1, 2) (a column is 2 mm): the shift is 2 mm. Pred ring -> gt ring:
#   6 on the gt ring (0), the 2 inner pixels of pred's left column 1 mm from gt's top/bottom row,
#   the 4 pixels of pred's right column 2 mm from gt's right column; gt -> pred mirrors it.
#   Sorted: 0 x6, 1 x2, 2 x4 -> 95th percentile (index 10.45 of 0..11) = 2 mm; NSD(1.5 mm) = 16/24.
# Spacing (2, 1) (a row is 2 mm): the column shift is 1 mm and nothing is farther -> HD95 = 1 mm.
#
# surface="decathlon" (DeepMind): surface elements sit on the 2x2 windows between pixel centres,
# a ring of 16 windows around each square (rows 1-5 x cols 1-5 for gt, cols 2-6 for pred): 4
# corner windows (one pixel in, a diagonal segment of length |spacing| / 2), 6 windows along the
# rows (top and bottom, length = column spacing) and 6 along the columns (length = row spacing).
# Spacing (1, 2): corner d = sqrt(5)/2, row segments 2, column segments 1; gt total 4d + 12 + 6.
#   Within 1.5 mm of the other ring: top and bottom rows at cols 2-5 (distance 0: 3 row segments +
#   1 corner each) and the column windows at rows 2 and 4 on the shifted side (1 mm to the other
#   ring's corner windows): 2 (3*2 + d) + 2. Both rings alike: NSD = (14 + sqrt5) / (18 + 2 sqrt5)
#   = 0.7225, against 16/24 for edge voxels (the 2 mm-long row segments weigh more).
# Spacing (2, 1): row segments 1, column segments 2, same d; within 0.5 mm only the distance-0
#   windows: 2 (3 + d) of 4d + 6 + 12 -> (6 + sqrt5) / (18 + 2 sqrt5) = 0.3665 against 12/24.
GT_SQ = box((10, 10), slice(2, 6), slice(2, 6))
PRED_SQ = box((10, 10), slice(2, 6), slice(3, 7))
R5 = math.sqrt(5)


def test_hd95_shifted_square_voxels_versus_mm():
    assert hd95(PRED_SQ, GT_SQ) == pytest.approx(1.0)
    assert hd95(PRED_SQ, GT_SQ, spacing=(1.0, 2.0)) == pytest.approx(2.0)
    assert hd95(PRED_SQ, GT_SQ, spacing=(2.0, 1.0)) == pytest.approx(1.0)
    assert hd95(GT_SQ, GT_SQ, spacing=(3.0, 0.5)) == 0.0


@pytest.mark.parametrize(
    ("spacing", "tolerance", "decathlon", "voxels"),
    [
        (None, 0.5, 1 / 2, 1 / 2),
        (None, 1.5, 1.0, 1.0),
        ((1.0, 2.0), 1.5, (14 + R5) / (18 + 2 * R5), 16 / 24),
        ((1.0, 2.0), 2.0, 1.0, 1.0),
        ((2.0, 1.0), 0.5, (6 + R5) / (18 + 2 * R5), 12 / 24),
        ((2.0, 1.0), 1.0, 1.0, 1.0),
    ],
)
def test_nsd_shifted_square_hand_computed(spacing, tolerance, decathlon, voxels):
    by_rule = {
        rule: nsd(PRED_SQ, GT_SQ, spacing, tolerance_mm=tolerance, surface=rule) for rule in ("decathlon", "voxels")
    }
    assert by_rule == pytest.approx({"decathlon": decathlon, "voxels": voxels}, abs=1e-6)
    assert nsd(PRED_SQ, GT_SQ, spacing, tolerance_mm=tolerance) == by_rule["decathlon"]  # the default


def test_one_voxel_objects_anisotropic():
    # 2D: 3 columns apart; columns 2 mm -> 6 mm, rows 2 mm -> 3 mm
    gt, pred = box((6, 8), slice(2, 3), slice(2, 3)), box((6, 8), slice(2, 3), slice(5, 6))
    assert hd95(pred, gt) == pytest.approx(3.0)
    assert hd95(pred, gt, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(pred, gt, spacing=(2.0, 1.0)) == pytest.approx(3.0)
    assert nsd(pred, gt, spacing=(1.0, 2.0), tolerance_mm=5.0, surface="voxels") == 0.0
    assert nsd(pred, gt, spacing=(2.0, 1.0), tolerance_mm=5.0, surface="voxels") == 1.0
    # Surface elements of a single pixel are its 4 corner windows, half a pixel either side:
    # 2 and 3 columns (4 and 6 mm) from the other's; at 5 mm the nearer half of each is correct.
    assert nsd(pred, gt, spacing=(1.0, 2.0), tolerance_mm=5.0) == pytest.approx(0.5)
    assert nsd(pred, gt, spacing=(2.0, 1.0), tolerance_mm=5.0) == 1.0
    # 3D CT-like spacing (5 mm slices, 0.7 mm in-plane): two slices apart = 10 mm, not 2
    gt3 = box((6, 4, 4), slice(1, 2), slice(1, 2), slice(1, 2))
    pred3 = box((6, 4, 4), slice(3, 4), slice(1, 2), slice(1, 2))
    assert hd95(pred3, gt3, spacing=(5.0, 0.7, 0.7)) == pytest.approx(10.0)
    assert hd95(pred3, gt3, spacing=5.0) == pytest.approx(10.0)
    assert hd95(pred3, gt3) == pytest.approx(2.0)


@pytest.mark.parametrize("surface", ["decathlon", "voxels"])
@pytest.mark.parametrize(
    ("pred", "gt", "nsd_expected"),
    [
        (np.zeros((6, 6), bool), np.zeros((6, 6), bool), nan),
        (np.zeros((6, 6), bool), box((6, 6), slice(1, 3), slice(1, 3)), 0.0),
        (box((6, 6), slice(1, 3), slice(1, 3)), np.zeros((6, 6), bool), 0.0),
    ],
    ids=["both-empty", "empty-pred", "empty-gt"],
)
def test_surface_empty_convention_without_warnings(pred, gt, nsd_expected, surface):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(hd95(pred, gt, spacing=(1.0, 1.0)))
        result = nsd(pred, gt, tolerance_mm=1.0, surface=surface)
        both = surface_metrics(pred, gt, spacing=(1.0, 1.0), tolerance_mm=1.0, surface=surface)
    assert math.isnan(both["hd95"]) and (both["nsd"] == result or math.isnan(both["nsd"]) and math.isnan(result))
    assert (math.isnan(result) and math.isnan(nsd_expected)) or result == nsd_expected


def _brute_force_surface(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]):
    """Directed edge-to-edge distances in mm, from scratch (scipy), independent of MONAI."""
    edges = [np.argwhere(m & ~binary_erosion(m)) * np.asarray(spacing) for m in (pred, gt)]
    d = cdist(edges[0], edges[1])
    return d.min(1), d.min(0)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI's own internal call
@pytest.mark.parametrize("shape,spacing", [((20, 24), (0.8, 2.5)), ((6, 12, 10), (5.0, 0.7, 0.9))])
def test_hd95_and_voxel_nsd_agree_with_monai_and_brute_force(shape, spacing):
    for seed in range(3):
        pred, gt = random_masks(10 + seed, shape, 0.4), random_masks(20 + seed, shape, 0.4)
        a, b = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()
        monai_hd = compute_hausdorff_distance(a, b, include_background=True, percentile=95, spacing=list(spacing))
        monai_nsd = compute_surface_dice(a, b, [2.0], include_background=True, spacing=list(spacing))
        voxel_nsd = nsd(pred, gt, spacing, tolerance_mm=2.0, surface="voxels")
        assert hd95(pred, gt, spacing) == pytest.approx(monai_hd.item(), rel=1e-5)
        assert voxel_nsd == pytest.approx(monai_nsd.item(), rel=1e-5)
        forward, backward = _brute_force_surface(pred, gt, spacing)
        expected_hd95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
        expected_nsd = ((forward <= 2.0).sum() + (backward <= 2.0).sum()) / (forward.size + backward.size)
        assert hd95(pred, gt, spacing) == pytest.approx(expected_hd95, rel=1e-5)
        assert voxel_nsd == pytest.approx(expected_nsd, rel=1e-5)
        both = surface_metrics(pred, gt, spacing, tolerance_mm=2.0, surface="voxels")  # one distance pass
        assert both == pytest.approx({"hd95": expected_hd95, "nsd": expected_nsd}, rel=1e-5)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize(
    ("shape", "spacing", "specks"),
    [((40, 40, 12), (0.8, 0.8, 2.5), 0.02), ((30, 36, 16), (3.0, 0.7, 0.7), 0.2), ((60, 50), None, 0.05)],
)
def test_hd95_searches_only_the_points_at_its_ranks_and_equals_the_full_search(monkeypatch, shape, spacing, specks):
    """``nearest_quantile`` (HD95 of noisy masks): the same float as the full search and as MONAI, from a
    search of fewer points (forced on small masks: no minimum of points, small cells)."""
    import adapt.metrics.surface as surface

    monkeypatch.setattr(surface, "FEW_POINTS", 0)
    monkeypatch.setattr(surface, "CELL_MM", 2.0)
    searched = []
    full_search = surface.nearest
    monkeypatch.setattr(
        surface, "nearest", lambda p, t, bound=None: searched.append(len(p)) or full_search(p, t, bound)
    )
    for seed in range(2):
        gt = smooth_blob(50 + seed, shape, 0.55)
        pred = binary_dilation(gt, iterations=1) | (np.random.default_rng(seed).random(shape) < specks)
        grid = None if spacing is None else list(spacing)
        pred_edges, gt_edges = (surface.coordinates(surface.edge_grid(m), grid) for m in surface.crop_union(pred, gt))
        expected = max(
            float(torch.quantile(full_search(pred_edges, gt_edges), 0.95)),
            float(torch.quantile(full_search(gt_edges, pred_edges), 0.95)),
        )
        searched.clear()
        assert hd95(pred, gt, spacing) == expected  # exactly: the searched points' distances are the full search's
        assert sum(searched) < len(pred_edges) + len(gt_edges)  # and not every point was searched
        a, b = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()
        monai_hd = compute_hausdorff_distance(a, b, include_background=True, percentile=95, spacing=grid)
        assert expected == pytest.approx(monai_hd.item(), rel=1e-6)


def smooth_blob(seed: int, shape: tuple[int, ...], level: float = 0.5) -> np.ndarray:
    """An organ-like blob: smoothed noise above a level."""
    return gaussian_filter(np.random.default_rng(seed).random(shape), 2.0) > level


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize(
    ("shape", "spacing", "tolerance"),
    [
        ((16, 28, 28), (3.0, 0.7, 0.7), 2.0),
        ((28, 28, 12), (0.7, 0.7, 3.0), 2.0),
        ((12, 24, 24), (5.0, 0.8, 0.8), 1.0),
        ((40, 40), (0.7, 3.0), 2.0),
        ((12, 20, 20), None, 1.0),
    ],
)
def test_nsd_default_is_monai_subvoxel_surface_dice(shape, spacing, tolerance):
    """Default NSD = MONAI's DeepMind-equivalent compute_surface_dice(use_subvoxels=True), 2D and 3D."""
    gaps = []
    for seed in range(3):
        pred, gt = smooth_blob(30 + seed, shape), smooth_blob(40 + seed, shape, 0.51)
        if seed == 1:  # an object cut by the volume border on two sides
            pred[:3], gt[:2], gt[..., -2:] = True, True, True
        a, b = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()
        grid = None if spacing is None else list(spacing)
        reference = compute_surface_dice(
            a, b, [tolerance], include_background=True, spacing=grid, use_subvoxels=True
        ).item()
        voxel_reference = compute_surface_dice(a, b, [tolerance], include_background=True, spacing=grid).item()
        ours = nsd(pred, gt, spacing, tolerance_mm=tolerance)
        assert ours == pytest.approx(reference, abs=1e-6)
        assert surface_metrics(pred, gt, spacing, tolerance)["nsd"] == pytest.approx(reference, abs=1e-6)
        assert case_metrics(pred, gt, spacing, tolerance)["nsd"] == pytest.approx(reference, abs=1e-6)
        assert nsd(pred, gt, spacing, tolerance_mm=tolerance, surface="voxels") == pytest.approx(
            voxel_reference, abs=1e-6
        )
        gaps.append(abs(ours - voxel_reference))
    if spacing is not None:  # anisotropic: the definitions differ measurably (0.06-0.13 here)
        assert max(gaps) > 0.03


@pytest.mark.parametrize(
    ("spacing", "tolerance"),
    [
        ((0.8, 0.8, 2.5), 2.0),  # the CT: 21 neighbours, none across slices
        ((1.0, 1.0, 1.0), 1.0),  # distances exactly at the tolerance
        ((1.0, 1.0, 1.0), 2.0),
        ((0.8, 0.8, 2.5), 1.6),  # two in-plane voxels: 0.8 * 2 at the tolerance, as float32
        ((3.0, 0.7, 0.7), 2.1),
        ((0.7, 0.7, 3.0), 0.0),  # only the same point
        (None, 1.5),
        ((0.5, 0.5), 1.5),
    ],
)
def test_nsd_looks_up_the_grid_and_decides_as_the_kd_trees(monkeypatch, spacing, tolerance):
    """``within_tolerance`` (the grid's neighbours within the tolerance) gives each point the answer of the
    KD-tree search it replaced, distances at the tolerance included; NSD is the same float both ways (the
    trees forced with ``MAX_OFFSETS = 0``), and the same as MONAI's."""
    import adapt.metrics.surface as surface

    ndim = 2 if spacing is not None and len(spacing) == 2 else 3
    shape = (30, 34) if ndim == 2 else (14, 18, 9)
    grid = None if spacing is None else list(spacing)
    for seed in range(3):
        points, targets = random_masks(60 + seed, shape, 0.05), random_masks(70 + seed, shape, 0.05)
        found = surface.within_tolerance(points, targets, grid, tolerance)
        bound = surface.tolerance_bound(tolerance)
        distances = surface.nearest(surface.coordinates(points, grid), surface.coordinates(targets, grid), bound)
        np.testing.assert_array_equal(found, (distances <= tolerance).numpy())
        assert 0 < found.sum() < len(found) or tolerance == 0.0
    pred, gt = smooth_blob(80, shape, 0.55), smooth_blob(81, shape, 0.5)
    on_grid = (
        nsd(pred, gt, spacing, tolerance_mm=tolerance),
        nsd(pred, gt, spacing, tolerance_mm=tolerance, surface="voxels"),
    )
    monkeypatch.setattr(surface, "MAX_OFFSETS", 0)
    assert (
        nsd(pred, gt, spacing, tolerance_mm=tolerance),
        nsd(pred, gt, spacing, tolerance_mm=tolerance, surface="voxels"),
    ) == on_grid
    if tolerance > 0:
        a, b = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()
        reference = compute_surface_dice(a, b, [tolerance], include_background=True, spacing=grid, use_subvoxels=True)
        assert on_grid[0] == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize(
    ("shape", "spacing", "box"),
    [
        ((14, 18, 9), [0.8, 0.8, 2.5], (slice(0, 3), slice(5, 9), slice(0, 9))),  # on the border, one side
        ((14, 18, 9), [2.5, 0.8, 0.8], (slice(6, 8), slice(15, 18), slice(4, 5))),  # the far corner
        ((30, 34), [1.0, 1.0], (slice(10, 14), slice(0, 2))),
        ((30, 34), None, (slice(0, 0), slice(0, 0))),  # no target at all
    ],
)
def test_targets_in_a_corner_are_looked_up_in_their_box_and_edges_equal_scipys(shape, spacing, box):
    """Targets gathered in one box (a liver beside a noisy prediction over the whole grid) are looked up in
    that box grown by the reach: every point, inside it, beyond it or on the grid's border, gets the trees'
    answer. Edges and coordinates equal scipy's erosion and numpy's ``argwhere`` on masks touching the border."""
    import adapt.metrics.surface as surface

    points = random_masks(101, shape, 0.3)
    targets = np.zeros(shape, dtype=bool)
    targets[box] = random_masks(102, shape, 0.5)[box]
    for tolerance in (0.0, 1.0, 2.0, 3.5):
        found = surface.within_tolerance(points, targets, spacing, tolerance)
        distances = surface.nearest(
            surface.coordinates(points, spacing),
            surface.coordinates(targets, spacing),
            surface.tolerance_bound(tolerance),
        )
        np.testing.assert_array_equal(found, (distances <= tolerance).numpy())
        assert found.any() == targets.any()
    for mask in (points, targets, np.ones(shape, dtype=bool)):
        np.testing.assert_array_equal(surface.edge_grid(mask), mask & ~binary_erosion(mask))
        scale = np.ones(len(shape)) if spacing is None else np.asarray(spacing)
        np.testing.assert_array_equal(surface.coordinates(mask, spacing), np.argwhere(mask) * scale)


@pytest.mark.parametrize(
    ("shape", "spacing", "tolerance"),
    [
        ((14, 18, 9), (1.0, 1.0, 1.0), 12.0),  # past the grid along z: the neighbourhood stops at its edge
        ((40, 40), (1e-5, 1e-5), 2.0),  # a geographic tile's degrees against a tolerance of 2: 2e5 cells
        ((10, 34), (1.0, 4.0), 12.0),  # the grid cut to 9 cells along the first axis, looked up without trees
    ],
)
def test_a_tolerance_wider_than_the_grid_searches_no_farther_and_equals_monai(monkeypatch, shape, spacing, tolerance):
    """A tolerance reaching past the grid asks for no neighbour outside it (``tolerance_reach``): the answer is
    the trees' and MONAI's, where the unbounded neighbourhood of a geographic tile was 10^10 offsets."""
    import adapt.metrics.surface as surface

    pred, gt = smooth_blob(90, shape, 0.55), smooth_blob(91, shape, 0.5)
    points, targets = random_masks(92, shape, 0.05), random_masks(93, shape, 0.05)
    assert np.all(surface.tolerance_reach(list(spacing), shape, tolerance) <= np.array(shape) - 1)
    found = surface.within_tolerance(points, targets, list(spacing), tolerance)
    bound = surface.tolerance_bound(tolerance)
    distances = surface.nearest(
        surface.coordinates(points, list(spacing)), surface.coordinates(targets, list(spacing)), bound
    )
    np.testing.assert_array_equal(found, (distances <= tolerance).numpy())
    ours = nsd(pred, gt, spacing, tolerance_mm=tolerance)
    a, b = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float()
    reference = compute_surface_dice(
        a, b, [tolerance], include_background=True, spacing=list(spacing), use_subvoxels=True
    )
    assert ours == pytest.approx(reference.item(), abs=1e-6)
    monkeypatch.setattr(surface, "MAX_OFFSETS", 0)
    assert nsd(pred, gt, spacing, tolerance_mm=tolerance) == ours


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 2.5), (3.0, 0.7, 0.9)])
def test_surface_metrics_do_not_depend_on_the_memory_layout(spacing):
    """A NIfTI file's Fortran-order masks (measured as their C-order transpose with the spacing reversed),
    flipped views and transposed arrays give the C-order values: HD95 the same float, NSD within float32
    summation order."""
    pred = smooth_blob(90, (30, 26, 12), 0.55) | random_masks(91, (30, 26, 12), 0.02)
    gt = smooth_blob(92, (30, 26, 12), 0.5)
    expected = surface_metrics(pred, gt, spacing, 2.0)
    for p, g in ((np.asfortranarray(pred), np.asfortranarray(gt)), (pred[::-1, ::-1], gt[::-1, ::-1])):
        found = surface_metrics(p, g, spacing, 2.0)
        assert found["hd95"] == expected["hd95"] and found["nsd"] == pytest.approx(expected["nsd"], abs=1e-6)
    transposed = surface_metrics(pred.transpose(2, 0, 1), gt.transpose(2, 0, 1), (spacing[2], *spacing[:2]), 2.0)
    assert transposed == pytest.approx(expected, abs=1e-6)
    # A flipped view of a Fortran-order mask (a prediction put back on a file stored top to bottom) against
    # the file's Fortran-order truth: the same float as the mask copied in the file's layout.
    in_file = np.asfortranarray(pred)
    flipped = np.flip(np.asfortranarray(np.flip(pred, 2)), 2)
    assert flipped.strides[2] < 0 and np.array_equal(flipped, in_file)
    assert surface_metrics(flipped, np.asfortranarray(gt), spacing, 2.0) == surface_metrics(
        in_file, np.asfortranarray(gt), spacing, 2.0
    )


@pytest.mark.parametrize("surface_kind", ["decathlon", "voxels"])
def test_surface_metrics_spread_over_threads_equal_one_after_the_other(surface_kind):
    """Both masks' surfaces and both directions' searches run beside each other (``spread``, as evaluate's last
    case does): the same floats as one after the other, and each half ran in its own call of ``spread``."""
    from concurrent.futures import ThreadPoolExecutor

    pred = smooth_blob(93, (34, 30, 14), 0.55) | random_masks(94, (34, 30, 14), 0.03)
    gt = smooth_blob(95, (34, 30, 14), 0.5)
    calls = []
    with ThreadPoolExecutor(2) as pool:

        def spread(function, items):
            items = list(items)
            calls.append(len(items))
            return list(pool.map(function, items))

        both = surface_metrics(pred, gt, (0.8, 0.8, 2.5), 2.0, surface=surface_kind, spread=spread)
    assert both == surface_metrics(pred, gt, (0.8, 0.8, 2.5), 2.0, surface=surface_kind)
    assert calls == [2, 2] and 0 < both["nsd"] < 1 and both["hd95"] > 0


def _full_volume_surface(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None, tolerance: float):
    """HD95 and both NSDs on the whole (zero-padded) volume, with dense pairwise distances: no crop, no search."""
    from monai.metrics.utils import get_mask_edges

    scale = np.ones(pred.ndim) if spacing is None else np.asarray(spacing)
    padded = [np.pad(m, 1) for m in (pred, gt)]  # a border of background: masks touching the edge keep their surface
    voxels = [np.argwhere(m ^ binary_erosion(m)) * scale for m in padded]
    pair = cdist(voxels[0], voxels[1]).astype(np.float32)
    forward, backward = pair.min(1), pair.min(0)
    tol = np.float32(tolerance)
    edges_p, edges_g, area_p, area_g = (
        np.asarray(a)
        for a in get_mask_edges(
            torch.from_numpy(padded[0]), torch.from_numpy(padded[1]), crop=False, spacing=list(scale)
        )
    )
    elements = cdist(np.argwhere(edges_p) * scale, np.argwhere(edges_g) * scale).astype(np.float32)
    covered = area_p[edges_p][elements.min(1) <= tol].sum() + area_g[edges_g][elements.min(0) <= tol].sum()
    return {
        "hd95": max(np.percentile(forward, 95), np.percentile(backward, 95)),
        "nsd": covered / (area_p[edges_p].sum() + area_g[edges_g].sum()),
        "nsd_voxels": ((forward <= tol).sum() + (backward <= tol).sum()) / (forward.size + backward.size),
    }


def _corner_blobs(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = smooth_blob(5, shape, 0.52), smooth_blob(6, shape, 0.5)
    pred[(0,) * len(shape)], gt[(slice(None),) + (-1,) * (len(shape) - 1)] = True, True  # on the array's border
    return pred, gt


SURFACE_CASES = {
    "noisy": lambda shape: (random_masks(1, shape, 0.05) | smooth_blob(2, shape), smooth_blob(3, shape)),
    "border": _corner_blobs,
    "specks": lambda shape: (random_masks(4, shape, 0.01), box(shape, *(slice(n // 3, n // 2) for n in shape))),
    "one_empty": lambda shape: (np.zeros(shape, bool), smooth_blob(7, shape)),
    "both_empty": lambda shape: (np.zeros(shape, bool), np.zeros(shape, bool)),
}


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize("case", sorted(SURFACE_CASES))
@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((14, 30, 26), (2.5, 0.8, 0.8)), ((20, 18, 16), None), ((36, 40), (0.7, 3.0)), ((24, 24, 10), (1.0, 1.0, 1.0))],
)
def test_cropped_surface_metrics_equal_the_whole_volume(case, shape, spacing):
    """The crop around prediction | truth and the searches cut at the tolerance change no value (<= 1e-6)."""
    pred, gt = SURFACE_CASES[case](shape)
    got = surface_metrics(pred, gt, spacing, 2.0)
    voxel_nsd = nsd(pred, gt, spacing, tolerance_mm=2.0, surface="voxels")
    if not (pred.any() and gt.any()):
        expected_nsd = nan if not (pred.any() or gt.any()) else 0.0
        assert math.isnan(got["hd95"]) and got["nsd"] == pytest.approx(expected_nsd, nan_ok=True)
        assert voxel_nsd == pytest.approx(expected_nsd, nan_ok=True)
        return
    full = _full_volume_surface(pred, gt, spacing, 2.0)
    assert got["hd95"] == pytest.approx(full["hd95"], rel=1e-6, abs=1e-6)
    assert got["nsd"] == pytest.approx(full["nsd"], abs=1e-6)
    assert voxel_nsd == pytest.approx(full["nsd_voxels"], abs=1e-6)
    assert 0 < got["nsd"] < 1  # the cases are neither trivially perfect nor disjoint


def test_surface_rejects_bad_spacing_surface_and_tolerance():
    with pytest.raises(ValueError, match="spacing"):
        hd95(PRED_SQ, GT_SQ, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        nsd(PRED_SQ, GT_SQ, spacing=(1.0, 0.0), tolerance_mm=1.0)
    with pytest.raises(ValueError, match="surface"):
        nsd(PRED_SQ, GT_SQ, tolerance_mm=1.0, surface="faces")
    with pytest.raises(ValueError, match="tolerance"):
        nsd(PRED_SQ, GT_SQ, tolerance_mm=-1.0)


def test_case_metrics_row():
    row = case_metrics(PRED_SQ, GT_SQ, spacing=(1.0, 2.0), tolerance_mm=1.5)
    # 4x4 squares overlapping in 4x3: Dice 24/32, IoU 12/20; NSD as hand-computed above
    expected = {
        "dice": 0.75,
        "iou": 0.6,
        "hd95": 2.0,
        "nsd": (14 + R5) / (18 + 2 * R5),
        "gt_voxels": 16,
        "pred_voxels": 16,
    }
    assert row == pytest.approx(expected)
    voxels = case_metrics(PRED_SQ, GT_SQ, spacing=(1.0, 2.0), tolerance_mm=1.5, surface="voxels")
    assert voxels == pytest.approx({**expected, "nsd": 16 / 24})
    assert "nsd" not in case_metrics(PRED_SQ, GT_SQ)


# ----------------------------------------------------------------------------- semantic

# 4x4, 3 classes:   target        pred
#                 0 0 1 1       0 0 0 1
#                 0 0 1 1       0 0 1 1
#                 2 2 2 2       2 2 1 2
#                 2 2 2 2       2 2 2 2
# rows = truth:  class 0 -> [4 0 0]; class 1 -> [1 3 0] (one 1 called 0); class 2 -> [0 1 7]
# IoU: 0: 4/(4+1) = 0.8; 1: 3/(4+4-3) = 0.6; 2: 7/(8+7-7) = 0.875; mIoU = 2.275/3
# per-class accuracy (recall): 4/4, 3/4, 7/8, mean 0.875; global 14/16 = 0.875
TARGET_SEM = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
PRED_SEM = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [2, 2, 1, 2], [2, 2, 2, 2]])


def test_semantic_hand_computed():
    cm = confusion_matrix(PRED_SEM, TARGET_SEM, 3)
    assert cm.tolist() == [[4, 0, 0], [1, 3, 0], [0, 1, 7]]
    assert class_iou(cm).tolist() == pytest.approx([0.8, 0.6, 0.875])
    assert miou(cm).item() == pytest.approx(2.275 / 3)
    assert pixel_accuracy(cm).tolist() == pytest.approx([1.0, 0.75, 0.875])
    assert mean_pixel_accuracy(cm).item() == pytest.approx(0.875)
    assert global_accuracy(cm).item() == pytest.approx(14 / 16)


def test_semantic_ignore_index_and_absent_classes():
    target = TARGET_SEM.copy()
    target[3, 3] = 255  # void: a correct class-2 pixel leaves the count
    cm = confusion_matrix(PRED_SEM, target, 3, ignore_index=255)
    assert cm[2].tolist() == [0, 1, 6] and global_accuracy(cm).item() == pytest.approx(13 / 15)
    # class 3 in neither map: undefined (nan) and out of the means, which stay as above
    cm4 = confusion_matrix(PRED_SEM, TARGET_SEM, 4)
    assert math.isnan(class_iou(cm4)[3]) and math.isnan(pixel_accuracy(cm4)[3])
    assert miou(cm4).item() == pytest.approx(2.275 / 3)
    assert mean_pixel_accuracy(cm4).item() == pytest.approx(0.875)
    # class 3 predicted but absent from the truth: IoU 0 counts, accuracy stays undefined
    pred = PRED_SEM.copy()
    pred[0, 0] = 3
    cm4 = confusion_matrix(pred, TARGET_SEM, 4)
    assert class_iou(cm4)[3] == 0.0 and math.isnan(pixel_accuracy(cm4)[3])
    with pytest.raises(ValueError, match="labels"):
        confusion_matrix(PRED_SEM, TARGET_SEM, 2)


def test_semantic_agrees_with_torchmetrics_and_monai():
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    rng = np.random.default_rng(7)
    target, pred = torch.from_numpy(rng.integers(0, 4, (3, 32, 32))), torch.from_numpy(rng.integers(0, 4, (3, 32, 32)))
    cm = confusion_matrix(pred, target, 4)
    assert torch.allclose(class_iou(cm).float(), MulticlassJaccardIndex(4, average=None)(pred, target))
    assert miou(cm).item() == pytest.approx(MulticlassJaccardIndex(4, average="macro")(pred, target).item(), abs=1e-6)
    assert torch.allclose(pixel_accuracy(cm).float(), MulticlassAccuracy(4, average=None)(pred, target))
    macro, micro = (MulticlassAccuracy(4, average=a)(pred, target).item() for a in ("macro", "micro"))
    assert mean_pixel_accuracy(cm).item() == pytest.approx(macro, abs=1e-6)
    assert global_accuracy(cm).item() == pytest.approx(micro, abs=1e-6)
    # MONAI's per-image IoU on one-hot maps equals ours on that image's confusion matrix
    one_hot = lambda x: torch.nn.functional.one_hot(x, 4).permute(0, 3, 1, 2).float()  # noqa: E731
    monai = compute_iou(one_hot(pred), one_hot(target), include_background=True)
    for i in range(3):
        assert torch.allclose(class_iou(confusion_matrix(pred[i], target[i], 4)).float(), monai[i])


@pytest.mark.parametrize("classes", [2, 3, 16, 17, 300])
def test_confusion_matrix_of_numpy_arrays_counts_as_the_tensor_path(classes):
    """Numpy inputs are counted in their own layout with the narrowest pair code (uint8 up to 16 classes):
    the same matrix as the int64 tensor path, for C-order, Fortran-order and flipped arrays, with ignored
    pixels, and float inputs truncated as ``long()`` truncates them."""
    rng = np.random.default_rng(classes)
    pred = rng.integers(0, classes, (9, 10, 11)).astype(np.uint8 if classes < 256 else np.int32)
    target = rng.integers(-1, classes, (9, 10, 11)).astype(np.int16)
    expected = confusion_matrix(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target), classes, -1)
    assert int(expected.sum()) == int((target != -1).sum())
    for p, t in (
        (pred, target),
        (np.asfortranarray(pred), np.asfortranarray(target)),
        (pred[::-1, :, ::-1], target[::-1, :, ::-1]),
        (pred.T, target.T),
    ):
        assert torch.equal(confusion_matrix(p, t, classes, ignore_index=-1), expected)
    floats = pred.astype(np.float32) + 0.4
    assert torch.equal(confusion_matrix(floats, target, classes, ignore_index=-1), expected)
    with pytest.raises(ValueError, match=f"labels must lie in \\[0, {classes - 1}\\)"):
        confusion_matrix(pred, target, classes - 1, ignore_index=-1)


def test_class_overlaps_equal_each_class_counted_alone():
    """Dice, IoU and counts of every class from one confusion matrix equal ``case_overlap`` of that class's
    masks, an empty class included (1.0: nothing to find, nothing found)."""
    from adapt.metrics import class_overlaps
    from adapt.metrics.overlap import case_overlap

    rng = np.random.default_rng(3)
    pred, target = rng.integers(0, 3, (6, 20, 20)), rng.integers(0, 3, (6, 20, 20))
    pred[pred == 2], target[target == 2] = 1, 1  # class 2 absent from both
    overlaps = class_overlaps(confusion_matrix(pred, target, 4))
    for index in range(4):
        assert overlaps[index] == case_overlap(pred == index, target == index)
    assert overlaps[2] == {"dice": 1.0, "iou": 1.0, "gt_voxels": 0, "pred_voxels": 0}


# ----------------------------------------------------------------------------- DAVIS J / F

# 20x20, gt a 10x10 square (rows 5-14, cols 5-14), pred shifted right by 2 (cols 7-16).
# "inner" boundaries are 36-pixel rings. With a radius-1 disk (the cross), a pred ring pixel
# matches if a gt ring pixel is at distance <= 1: top and bottom rows cols 7-15 (9 + 9), and in
# pred's left column (col 7) only rows 6 and 13, next to gt's top/bottom rows (2);
# pred's right column (col 16) is 2 px from gt's. Precision = 20/36 = 5/9 and, mirrored,
# recall = 5/9, so F = 5/9. With radius 2 every ring pixel matches: F = 1.
# DAVIS's seg2bmap boundaries are 40-pixel rings (11x11, half a pixel up-left): radius 1
# matches 10 + 10 along the top and bottom rows and 2 in the left column: F = 22/40.
# DAVIS's default bound_th 0.008 x diagonal (28.3 px) = 0.23 -> ceil -> 1 px.
# J of this frame: overlap 10x8 = 80, union 120 -> 2/3.
GT_V = box((20, 20), slice(5, 15), slice(5, 15))
PRED_V = box((20, 20), slice(5, 15), slice(7, 17))


def skimage_disk(radius: int) -> np.ndarray:
    """``skimage.morphology.disk`` if scikit-image is installed, else its documented rule."""
    try:
        from skimage.morphology import disk
    except ImportError:
        offsets = np.arange(-radius, radius + 1)
        return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2
    return disk(radius).astype(bool)


def davis_seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS's boundary rule as published: differs from the right, lower or lower-right neighbour
    (False beyond the image); the last row is compared with its right neighbour only, the last
    column with its lower one only, and the bottom-right pixel is never a boundary."""
    seg = np.asarray(seg, bool)
    right, down, diag = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    right[:, :-1], down[:-1, :], diag[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    bmap = (seg != right) | (seg != down) | (seg != diag)
    bmap[-1, :] = seg[-1, :] != right[-1, :]
    bmap[:, -1] = seg[:, -1] != down[:, -1]
    bmap[-1, -1] = False
    return bmap


def davis_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008, void: np.ndarray | None = None) -> float:
    """DAVIS's f_measure from its published algorithm: numpy, scipy dilation by skimage's disk."""
    keep = np.ones(pred.shape, bool) if void is None else ~void
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    pred_b, gt_b = davis_seg2bmap(pred & keep), davis_seg2bmap(gt & keep)
    footprint = skimage_disk(int(bound_pix))
    pred_d, gt_d = binary_dilation(pred_b, footprint), binary_dilation(gt_b, footprint)
    n_pred, n_gt = pred_b.sum(), gt_b.sum()
    precision = 1.0 if n_pred == 0 else (pred_b & gt_d).sum() / n_pred
    recall = 1.0 if n_gt == 0 else (gt_b & pred_d).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pixels(*coords: tuple[int, int], shape=(6, 6)) -> np.ndarray:
    out = np.zeros(shape, bool)
    for r, c in coords:
        out[r, c] = True
    return out


# Hand-made 6x6 frames and their seg2bmap boundaries, worked out pixel by pixel.
SEG2BMAP_CASES = {
    # 3x3 object in the bottom-right corner: the outside row above (cols 2-5) and column to the
    # left (rows 3-5, the last row by its right neighbour); nothing along the image border.
    "bottom-right": (
        box((6, 6), slice(3, 6), slice(3, 6)),
        pixels((2, 2), (2, 3), (2, 4), (2, 5), (3, 2), (4, 2), (5, 2)),
    ),
    # 3x3 object in the top-left corner: its own last row and last column, inside the object.
    "top-left": (box((6, 6), slice(0, 3), slice(0, 3)), pixels((2, 0), (2, 1), (2, 2), (0, 2), (1, 2))),
    # rows 2-3 along the right border: row 1 cols 2-5 (col 5 by its lower neighbour), col 2
    # rows 2-3 (right neighbour inside), the object's row 3 (lower neighbour outside, col 5 too).
    "right-edge": (
        box((6, 6), slice(2, 4), slice(3, 6)),
        pixels((1, 2), (1, 3), (1, 4), (1, 5), (2, 2), (3, 2), (3, 3), (3, 4), (3, 5)),
    ),
    # a full column on the left border: only the column itself (right neighbour outside), down
    # to the last row, which is compared with its right neighbour.
    "left-column": (box((6, 6), slice(0, 6), slice(0, 1)), pixels(*[(r, 0) for r in range(6)])),
    "full-frame": (np.ones((6, 6), bool), np.zeros((6, 6), bool)),
    "single-pixel": (pixels((2, 3)), pixels((1, 2), (1, 3), (2, 2), (2, 3))),
}


@pytest.mark.parametrize("name", list(SEG2BMAP_CASES))
def test_default_boundary_is_davis_seg2bmap_on_hand_made_frames(name):
    mask, expected = SEG2BMAP_CASES[name]
    assert np.array_equal(davis_seg2bmap(mask), expected)  # the reference agrees with the hand count
    assert np.array_equal(boundary_map(mask).numpy(), expected)
    assert np.array_equal(boundary_map(mask, boundary="davis").numpy(), expected)


def test_inner_boundary_rings_and_image_border():
    ring = boundary_map(box((8, 8), slice(2, 6), slice(2, 6)), boundary="inner")
    assert ring.sum() == 12 and not ring[3:5, 3:5].any() and ring[2, 2:6].all() and ring[2:6, 2].all()
    assert boundary_map(box((8, 8), slice(3, 4), slice(3, 4)), boundary="inner").sum() == 1
    assert boundary_map(np.ones((4, 4), bool), boundary="inner").sum() == 12  # the image edge is a boundary
    with pytest.raises(ValueError, match="boundary"):
        boundary_map(GT_V, boundary="outer")


def test_dilation_disk_equals_skimage_disk():
    # skimage.morphology.disk(2) and disk(3), written out: offsets with dy² + dx² <= r².
    disk2 = [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    disk3 = [
        [0, 0, 0, 1, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 0, 0, 0],
    ]
    ours = lambda r: _disk(r, torch.device("cpu"))[0, 0].bool().numpy()  # noqa: E731
    assert ours(0).tolist() == [[True]] and ours(1).sum() == 5
    assert np.array_equal(ours(2), np.array(disk2, bool)) and np.array_equal(ours(3), np.array(disk3, bool))
    for radius in range(13):
        assert np.array_equal(ours(radius), skimage_disk(radius)), radius


# (pred, gt, bound_th, F by DAVIS's rule, F by "inner"), hand-computed. Objects on the image border
# are where the rules part: "inner" counts border pixels as boundary on both sides, all matched.
#   corner: gt a 10x10 square in the top-left corner, pred 2 px right. DAVIS: gt boundary its last
#     row and column (19 px), pred the outside column left of it (10), its last row (10) and last
#     column (9): 29 px. At 1 px, 11 pred pixels match (8 + 1 in the shared row, 2 of the left
#     column near gt's last row), 11 gt pixels (10 in the row, 1 of the column): F = 22/48 = 11/24.
#     Inner: 36-pixel rings, 20 matches each way as for the middle square: 5/9.
#   band: gt rows 0-9, pred rows 0-14, full width. DAVIS: one row each, 5 apart: 0. Inner: gt 56 px
#     (rows 0 and 9, sides rows 1-8), pred 66; 40 matches each way (row 0, sides): F = 80/122 = 40/61.
BORDER = {
    "middle-1px": (PRED_V, GT_V, 1, 22 / 40, 5 / 9),
    "middle-default": (PRED_V, GT_V, 0.008, 22 / 40, 5 / 9),
    "middle-2px": (PRED_V, GT_V, 2, 1.0, 1.0),
    "corner": (box((20, 20), slice(0, 10), slice(2, 12)), box((20, 20), slice(0, 10), slice(0, 10)), 1, 11 / 24, 5 / 9),
    "band": (box((20, 20), slice(0, 15), slice(None)), box((20, 20), slice(0, 10), slice(None)), 1, 0.0, 40 / 61),
    # one-pixel objects 2 apart: seg2bmap makes each a 2x2 block, half of each within 1 px
    "pixel-2-apart": (
        box((20, 20), slice(10, 11), slice(12, 13)),
        box((20, 20), slice(10, 11), slice(10, 11)),
        1,
        0.5,
        0.0,
    ),
    "pixel-1-apart": (
        box((20, 20), slice(10, 11), slice(11, 12)),
        box((20, 20), slice(10, 11), slice(10, 11)),
        1,
        1.0,
        1.0,
    ),
}


@pytest.mark.parametrize("name", list(BORDER))
def test_contour_accuracy_davis_default_versus_inner(name):
    pred, gt, bound_th, f_davis, f_inner = BORDER[name]
    assert davis_f(pred, gt, bound_th) == pytest.approx(f_davis)  # the reference agrees with the hand count
    assert contour_accuracy_f(pred, gt, bound_th).item() == pytest.approx(f_davis)
    assert contour_accuracy_f(pred, gt, bound_th, boundary="inner").item() == pytest.approx(f_inner)


def test_contour_accuracy_equals_davis_reference_on_random_frames():
    rng = np.random.default_rng(3)
    for shape in [(20, 20), (31, 17), (48, 85)]:
        for seed in range(6):
            pred, gt = smooth_blob(50 + seed, shape, 0.5 + 0.01 * seed), smooth_blob(60 + seed, shape)
            if seed % 2:  # objects cut by every image border
                gt[:, -3:], pred[-2:, :], gt[:2, :], pred[:, :1] = True, True, True, True
            void = rng.random(shape) < 0.05 if seed % 3 == 0 else None
            for bound_th in (0.008, 0.02, 0.05, 0, 1, 2, 3):
                expected = davis_f(pred, gt, bound_th, void)
                assert contour_accuracy_f(pred, gt, bound_th, void).item() == pytest.approx(expected, abs=1e-6)
            assert np.array_equal(boundary_map(pred).numpy(), davis_seg2bmap(pred))


def test_bound_th_pixels_must_be_whole_numbers():
    for shape in [(20, 20), (480, 854), (1080, 1920), (17, 301)]:
        for bound_th in (0.0, 0.001, 0.008, 0.05, 0.5, 0.999):
            assert boundary_pixels(*shape, bound_th=bound_th) == int(np.ceil(bound_th * np.linalg.norm(shape)))
    assert boundary_pixels(480, 854) == 8 and boundary_pixels(20, 20) == 1 and boundary_pixels(20, 20, 3) == 3
    assert boundary_pixels(20, 20, 2.0) == 2
    assert contour_accuracy_f(PRED_V, GT_V, bound_th=2.0).item() == contour_accuracy_f(PRED_V, GT_V, 2).item()
    # DAVIS would dilate by skimage's disk(2.5), a 4x4 square anchored off centre: refused, not truncated to 2
    for bad in (2.5, 1.5):
        with pytest.raises(ValueError, match="whole number of pixels"):
            contour_accuracy_f(PRED_V, GT_V, bound_th=bad)
        with pytest.raises(ValueError, match="whole number of pixels"):
            j_and_f(PRED_V[None], GT_V[None], bound_th=bad)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bound_th"):
            boundary_pixels(20, 20, bad)


def test_region_similarity_shifted_square():
    assert region_similarity_j(PRED_V, GT_V).item() == pytest.approx(2 / 3)
    precision, recall = boundary_precision_recall(PRED_V, GT_V, bound_th=1)
    assert precision.item() == pytest.approx(22 / 40) and recall.item() == pytest.approx(22 / 40)


@pytest.mark.parametrize("boundary", ["davis", "inner"])
@pytest.mark.parametrize(
    ("pred", "gt", "expected"),  # expected (precision, recall, F, J), DAVIS conventions
    [
        (np.zeros((20, 20), bool), np.zeros((20, 20), bool), (1.0, 1.0, 1.0, 1.0)),
        (np.zeros((20, 20), bool), GT_V, (1.0, 0.0, 0.0, 0.0)),
        (PRED_V, np.zeros((20, 20), bool), (0.0, 1.0, 0.0, 0.0)),
    ],
    ids=["both-empty", "empty-pred", "empty-gt"],
)
def test_davis_empty_convention(pred, gt, expected, boundary):
    precision, recall = boundary_precision_recall(pred, gt, boundary=boundary)
    f = contour_accuracy_f(pred, gt, boundary=boundary).item()
    assert (precision.item(), recall.item(), f, region_similarity_j(pred, gt).item()) == expected
    assert davis_f(pred, gt) == expected[2]


@pytest.mark.parametrize(
    ("boundary", "f_shifted", "j_and_f_value"),
    # frame 0 perfect (J = F = 1), frame 1 shifted (J = 2/3, F as above): J-Mean 5/6,
    # DAVIS: F-Mean (1 + 22/40) / 2 = 31/40, J&F = (5/6 + 31/40) / 2 = 193/240;
    # inner (the old default, numbers unchanged): F-Mean 7/9, J&F = (15/18 + 14/18) / 2 = 29/36.
    [("davis", 22 / 40, 193 / 240), ("inner", 5 / 9, 29 / 36)],
)
def test_j_and_f_over_frames_and_objects(boundary, f_shifted, j_and_f_value):
    video_pred, video_gt = np.stack([GT_V, PRED_V]), np.stack([GT_V, GT_V])
    scores = j_and_f(video_pred, video_gt, boundary=boundary)
    assert scores.boundary == boundary
    assert scores.j.tolist() == pytest.approx([1.0, 2 / 3]) and scores.f.tolist() == pytest.approx([1.0, f_shifted])
    assert scores.j_mean.item() == pytest.approx(5 / 6) and scores.f_mean.item() == pytest.approx((1 + f_shifted) / 2)
    assert scores.j_and_f.item() == pytest.approx(j_and_f_value)
    # two objects at once: [objects, frames, H, W] -> per object; the second object is perfect
    both = j_and_f(np.stack([video_pred, video_gt]), np.stack([video_gt, video_gt]), boundary=boundary)
    assert both.j.shape == (2, 2) and both.j_and_f.tolist() == pytest.approx([j_and_f_value, 1.0])
    if boundary == "davis":  # the default is DAVIS's protocol
        default = j_and_f(video_pred, video_gt)
        assert default.boundary == "davis" and default.j_and_f.item() == pytest.approx(j_and_f_value)


def test_davis_void_pixels_are_ignored():
    void = np.zeros((20, 20), bool)
    void[:, [5, 6, 15, 16]] = True  # exactly the columns where the shifted square disagrees
    assert region_similarity_j(PRED_V, GT_V, void=void).item() == 1.0
    assert region_similarity_j(PRED_V, GT_V).item() < 1.0
    assert contour_accuracy_f(PRED_V, GT_V, 1, void).item() == pytest.approx(davis_f(PRED_V, GT_V, 1, void))


# ----------------------------------------------------------------------------- speed


def test_fps_and_frame_timer_with_a_fake_clock():
    assert fps(30, 2.0) == 15.0
    with pytest.raises(ValueError):
        fps(30, 0.0)
    ticks = iter([10.0, 12.5])
    timer = FrameTimer(clock=lambda: next(ticks))
    with pytest.raises(RuntimeError):
        _ = timer.fps
    with timer:
        timer.count(4)
        timer.count()
    assert timer.frames == 5 and timer.seconds == 2.5 and timer.fps == 2.0


# ----------------------------------------------------------------------------- summaries


def test_summarize_counts_undefined_and_never_emits_nan():
    summary = summarize({"dice": [0.5, 1.0, nan], "hd95": [nan, float("inf")], "nsd": [torch.tensor(0.25)]})
    assert summary["dice"] == {
        "mean": 0.75,
        "std": 0.25,
        "median": 0.75,
        "min": 0.5,
        "max": 1.0,
        "count": 2,
        "count_undefined": 1,
    }
    assert summary["hd95"] == {
        "mean": None,
        "std": None,
        "median": None,
        "min": None,
        "max": None,
        "count": 0,
        "count_undefined": 2,
    }
    assert summary["nsd"]["mean"] == 0.25 and summary["nsd"]["std"] == 0.0
    json.dumps(summary, allow_nan=False)


def test_summarize_case_rows():
    rows = [
        {"case": "liver_0", "dice": 0.5, "hd95": 4.0},
        {"case": "liver_1", "dice": 0.7, "hd95": nan},
        {"case": "liver_2", "dice": 0.9},
    ]
    summary = summarize(rows)
    assert set(summary) == {"dice", "hd95"}  # the case ids are not a metric
    assert summary["dice"]["mean"] == pytest.approx(0.7) and summary["dice"]["median"] == pytest.approx(0.7)
    assert summary["hd95"]["count"] == 1 and summary["hd95"]["count_undefined"] == 2
    assert summarize(rows, metrics=["dice"], ddof=1)["dice"]["std"] == pytest.approx(0.2)
    with pytest.raises(KeyError, match="nsd"):
        summarize(rows, metrics=["nsd"])
