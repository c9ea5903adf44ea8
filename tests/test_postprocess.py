"""``adapt.models.postprocess``: SAM2's hole filling in plain torch.

Checked against an independent computation with ``scipy.ndimage.label`` (random masks,
both connectivities, odd sizes, leading dimensions, edge cases) and against Meta's own
``sam2.utils.misc.fill_holes_in_mask_scores`` running on the CPU stand-in of its CUDA
kernel (``tests/meta_reference.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from adapt.models.postprocess import HOLE_FILL_LOGIT, connected_components, fill_holes, small_components

STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), dtype=int)}


def scipy_components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1 + the smallest flat index of the component) and areas of one plane."""
    components, count = ndimage.label(mask, structure=STRUCTURE[connectivity])
    flat_index = np.arange(mask.size).reshape(mask.shape)
    first = np.asarray(ndimage.minimum(flat_index, components, np.arange(1, count + 1)), dtype=np.int64)
    areas = np.bincount(components.ravel(), minlength=count + 1)
    return (np.where(mask, np.concatenate([[0], first + 1])[components], 0), np.where(mask, areas[components], 0))


def scipy_fill(logits: np.ndarray, max_area: int, connectivity: int = 8) -> np.ndarray:
    out = logits.copy()
    planes = out.reshape(-1, *out.shape[-2:])
    for plane in planes:
        background = plane <= 0
        _, areas = scipy_components(background, connectivity)
        plane[background & (areas <= max_area)] = HOLE_FILL_LOGIT
    return out


def random_logits(shape: tuple[int, ...], seed: int, smooth: int = 3) -> torch.Tensor:
    """Logits with blobs and specks of both signs (a box filter of noise, shifted a little)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = shape[-2:]
    noise = torch.randn(int(np.prod(shape[:-2])), 1, height + smooth - 1, width + smooth - 1, generator=generator)
    logits = F.avg_pool2d(noise, smooth, stride=1) + 0.2 * torch.randn(1, generator=generator)
    return logits.reshape(shape)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.8])
def test_connected_components_match_scipy(connectivity, density):
    mask = np.random.default_rng(int(density * 10)).random((3, 37, 50)) < density
    labels, areas = connected_components(torch.from_numpy(mask), connectivity)
    assert labels.shape == areas.shape == mask.shape and labels.dtype == areas.dtype == torch.int64
    for plane, got_labels, got_areas in zip(mask, labels.numpy(), areas.numpy()):
        want_labels, want_areas = scipy_components(plane, connectivity)
        np.testing.assert_array_equal(got_labels, want_labels)
        np.testing.assert_array_equal(got_areas, want_areas)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("max_area", [1, 2, 8, 60])
@pytest.mark.parametrize("smooth", [1, 3, 7])
def test_fill_holes_matches_scipy(connectivity, max_area, smooth):
    logits = random_logits((2, 3, 41, 64), seed=max_area + smooth, smooth=smooth)
    filled = fill_holes(logits, max_area, connectivity)
    want = scipy_fill(logits.numpy(), max_area, connectivity)
    assert filled.shape == logits.shape and filled.dtype == logits.dtype
    np.testing.assert_array_equal(filled.numpy(), want)
    assert (filled != logits).any() or max_area == 1  # holes were there to fill


def test_a_long_winding_component_is_never_small():
    """A 1-pixel-wide serpentine is one component with a long path: labelling takes many rounds."""
    n = 31
    serpentine = np.zeros((n, n), bool)
    serpentine[::2] = True
    serpentine[1::4, -1] = serpentine[3::4, 0] = True
    mask = torch.from_numpy(serpentine)
    _, area = scipy_components(serpentine, 8)
    assert area.max() == serpentine.sum()  # one component
    assert not small_components(mask, int(serpentine.sum()) - 1).any()
    assert torch.equal(small_components(mask, int(serpentine.sum())), mask)
    assert torch.equal(connected_components(mask)[1], torch.from_numpy(area))


def plane(rows: list[str]) -> torch.Tensor:
    """Logits from a picture: ``#`` foreground (+1), ``.`` background (-1), ``0`` exactly 0."""
    value = {"#": 1.0, ".": -1.0, "0": 0.0}
    return torch.tensor([[value[c] for c in row] for row in rows])


def filled_pixels(logits: torch.Tensor, max_area: int, connectivity: int = 8) -> list[tuple[int, int]]:
    out = fill_holes(logits, max_area, connectivity)
    assert torch.equal(out[out != logits], torch.full_like(out[out != logits], HOLE_FILL_LOGIT))
    return [tuple(p) for p in torch.nonzero(out != logits).tolist()]


def test_area_at_the_limit_is_filled_one_more_is_not():
    logits = plane(
        [
            "#######",
            "#..#...",  # a 2x2 hole and a 3-pixel hole at the right border
            "#..####",
            "#######",
        ]
    )
    assert filled_pixels(logits, 3) == [(1, 4), (1, 5), (1, 6)]
    assert filled_pixels(logits, 4) == [(1, 1), (1, 2), (1, 4), (1, 5), (1, 6), (2, 1), (2, 2)]


def test_holes_touching_the_border_are_filled_as_meta_does():
    logits = plane([".###", "####", "###."])
    assert filled_pixels(logits, 1) == [(0, 0), (2, 3)]


def test_diagonal_neighbours_connect_with_8_connectivity_only():
    logits = plane(["####", "#.##", "##.#", "####"])
    assert filled_pixels(logits, 1, connectivity=8) == []
    assert filled_pixels(logits, 2, connectivity=8) == [(1, 1), (2, 2)]
    assert filled_pixels(logits, 1, connectivity=4) == [(1, 1), (2, 2)]


def test_zero_logits_are_background():
    assert filled_pixels(plane(["###", "#0#", "###"]), 1) == [(1, 1)]


def test_empty_full_and_disabled():
    foreground = torch.ones(2, 8, 8)
    assert torch.equal(fill_holes(foreground, 8), foreground)
    background = -torch.ones(1, 4, 4)
    assert torch.equal(fill_holes(background, 15), background)  # one region of 16 pixels
    assert torch.equal(fill_holes(background, 16), torch.full_like(background, HOLE_FILL_LOGIT))
    logits = random_logits((1, 16, 16), seed=0)
    assert fill_holes(logits, 0) is logits and fill_holes(logits, -3) is logits
    empty = torch.zeros(0, 1, 16, 16)
    assert fill_holes(empty, 8).shape == empty.shape
    assert connected_components(torch.zeros(0, 5, 5, dtype=torch.bool))[0].shape == (0, 5, 5)
    with pytest.raises(ValueError, match="connectivity"):
        fill_holes(logits, 8, connectivity=6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_and_leading_dimensions_are_kept(dtype):
    logits = random_logits((2, 1, 3, 20, 24), seed=4).to(dtype)
    filled = fill_holes(logits, 8)
    assert filled.dtype == dtype and filled.shape == logits.shape
    want = scipy_fill(logits.float().numpy(), 8)
    changed = filled != logits
    assert changed.any()
    assert torch.equal(changed, torch.from_numpy(want != logits.float().numpy()))
    assert torch.equal(filled[changed], torch.full_like(filled[changed], HOLE_FILL_LOGIT))


def test_matches_meta_fill_holes_in_mask_scores(meta_sam2):
    """Meta's own ``fill_holes_in_mask_scores`` (CPU stand-in of its CUDA kernel): same output."""
    misc = meta_sam2.module("utils.misc")
    for smooth in (1, 3, 5):
        logits = random_logits((4, 1, 256, 256), seed=smooth, smooth=smooth)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Meta warns and skips when its kernel fails
            want = misc.fill_holes_in_mask_scores(logits.clone(), 8)
        got = fill_holes(logits, 8)
        assert (want != logits).any()
        assert torch.equal(got, want)


def test_meta_kernel_stand_in_labels_like_the_kernel(meta_sam2):
    """Labels: 1 + the flat index of the first 2x2 block's top-left pixel; counts: areas."""
    mask = torch.tensor(
        [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1]], dtype=torch.uint8
    )[None, None]
    labels, counts = meta_sam2.module("utils.misc").get_connected_components(mask)
    # Components: {(1,3), (2,2)} (diagonal) starts in block (0,2): index 2; {(3,0)} in block
    # (2,0): index 12; {(2,5), (3,4), (3,5)} in block (2,4): index 16.
    assert labels.dtype == counts.dtype == torch.int32
    assert labels[0, 0].tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 3, 0, 0], [0, 0, 3, 0, 0, 17], [13, 0, 0, 0, 17, 17]]
    assert counts[0, 0].tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 2, 0, 0], [0, 0, 2, 0, 0, 3], [1, 0, 0, 0, 3, 3]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_on_gpu():
    logits = random_logits((4, 1, 256, 256), seed=7)
    assert torch.equal(fill_holes(logits.cuda(), 8).cpu(), fill_holes(logits, 8))
