"""Volume and video inference through SAM2's memory: visiting order, early stop, geometry, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam2VideoModel

from adapt.data.synthetic import make_ct_phantom
from adapt.errors import ConfigError, DataError
from adapt.inference.propagation import SlicePrompt, propagate, read_frames
from adapt.models.memory import FramePrompt
from adapt.models.postprocess import fill_holes, small_components
from adapt.models.primitives import preprocess
from adapt.models.tiny import TINY_IMAGE_SIZE, tiny_video_config
from adapt.models.tracking import track_clip
from adapt.transforms.prompts import box_from_mask

S = TINY_IMAGE_SIZE


@pytest.fixture(scope="module")
def model() -> Sam2VideoModel:
    torch.manual_seed(0)
    return Sam2VideoModel(tiny_video_config()).eval()


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, int]:
    """A CT phantom as ``[D, H, W]`` in [0, 1] (non-square slices), its liver and the largest liver slice."""
    image, label = make_ct_phantom(0, (72, 56, 14))
    volume = np.clip((image.transpose(2, 1, 0).astype(np.float32) + 160) / 400, 0, 1)
    liver = label.transpose(2, 1, 0) == 1
    return volume, liver, int(liver.sum(axis=(1, 2)).argmax())


def test_visits_every_slice_once_in_each_direction(model, phantom):
    volume, liver, k = phantom
    seen = []
    result = propagate(
        model,
        volume,
        {k: SlicePrompt(boxes=box_from_mask(liver[k]))},
        stop_after=None,
        on_frame=lambda s, d: seen.append((s, d)),
    )
    depth = len(volume)
    assert result.masks.shape == (1, *volume.shape) and result.masks.dtype == bool
    assert result.prompted == [k]
    assert result.forward == list(range(k + 1, depth))
    assert result.backward == list(range(k - 1, -1, -1))
    assert result.visited == list(range(depth))
    tracked = [(s, "forward") for s in result.forward] + [(s, "backward") for s in result.backward]
    assert seen == [(k, "prompt")] + tracked
    assert np.isfinite(result.scores).all() and result.fps > 0
    assert model.training is False


def test_matches_the_clip_loop_on_a_square_volume(model):
    """Same numbers as ``track_clip`` in eval mode: the API is the memory loop plus resizing."""
    volume = torch.rand(5, S, S, generator=torch.Generator().manual_seed(0))
    box = np.array([[30.0, 40.0, 90.0, 100.0]], np.float32)
    result = propagate(model, volume, {2: SlicePrompt(boxes=box)}, stop_after=None, fill_hole_area=0)
    with torch.no_grad():
        clip = track_clip(
            model,
            preprocess(volume[:, None]),
            {2: FramePrompt.build(boxes=torch.from_numpy(box))},
            storage_dtype=torch.bfloat16,
        )
    expected = torch.nn.functional.interpolate(clip.low_res[:, :, 0].float(), size=(S, S), mode="bilinear") > 0
    assert np.array_equal(result.masks[0], expected[:, 0].numpy())
    np.testing.assert_allclose(result.scores[:, 0], clip.object_score[:, 0, 0].numpy(), atol=1e-5)
    # SAM2's hole filling (on by default): the prompted slice's output is the filled logits, upsampled.
    filled = propagate(model, volume, {2: SlicePrompt(boxes=box)}, stop_after=None, fill_hole_area=40)
    low = fill_holes(clip.low_res[2, :, 0].float(), 40)
    expected = torch.nn.functional.interpolate(low[:, None], size=(S, S), mode="bilinear")[:, 0] > 0
    assert np.array_equal(filled.masks[0, 2], expected[0].numpy())
    holes = small_components(clip.low_res[2, :, 0] <= 0, 40)
    assert holes.any(), "the random model's mask should have small holes for this test to mean something"
    assert not np.array_equal(filled.masks[0, 2], result.masks[0, 2])


def test_frames_encoded_one_at_a_time_or_in_batches_give_the_same_result(model, phantom):
    """The encoder batch (``chunk``; on a CPU one frame by default) is a speed choice only."""
    volume, liver, k = phantom
    prompts = {k: SlicePrompt(boxes=box_from_mask(liver[k]))}
    single, batched = (propagate(model, volume, prompts, stop_after=None, chunk=chunk) for chunk in (None, 8))
    assert np.array_equal(single.masks, batched.masks)
    np.testing.assert_allclose(single.scores, batched.scores, rtol=0, atol=1e-4)


def test_stops_when_the_object_is_gone(model, phantom):
    volume, liver, k = phantom
    # Every tracked slice scores below the threshold: two in a row end each direction.
    result = propagate(model, volume, {k: SlicePrompt(mask=liver[k])}, stop_after=2, score_threshold=100.0)
    assert result.forward == [k + 1, k + 2] and result.backward == [k - 1, k - 2]
    assert np.isnan(result.scores[k + 3 :]).all() and not result.masks[0, k + 3 :].any()
    # The prompted slice's output is its mask prompt, back at the input's size.
    overlap = (result.masks[0, k] & liver[k]).sum() / (result.masks[0, k] | liver[k]).sum()
    assert overlap > 0.9


def test_prompts_map_to_the_model_grid():
    prompt = SlicePrompt(boxes=[0, 0, 99, 49], points=[[49.5, 24.5]])
    mapped = prompt.to_model(height=50, width=100, size=128, device=torch.device("cpu"))
    # Box corners travel as points 2/3, mapped as SAM2 maps coordinates.
    assert mapped.labels.tolist() == [[2, 3, 1]]
    expected = torch.tensor([[[0.0, 0.0], [126.72, 125.44], [63.36, 62.72]]])  # x * 128 / 100, y * 128 / 50
    torch.testing.assert_close(mapped.points, expected, atol=1e-2, rtol=0)


def test_two_objects_and_a_label_map(model, phantom):
    volume, liver, k = phantom
    boxes = np.stack([box_from_mask(liver[k]), np.array([5, 5, 20, 15], np.float32)])
    result = propagate(model, volume, {k: SlicePrompt(boxes=boxes)}, direction="forward", stop_after=None)
    assert result.masks.shape == (2, *volume.shape) and result.scores.shape == (len(volume), 2)
    assert result.backward == [] and result.forward == list(range(k + 1, len(volume)))
    labels = result.label_map()
    assert labels.shape == volume.shape and set(np.unique(labels)) <= {0, 1, 2}


def test_video_frames_from_a_folder(model, tmp_path):
    rng = np.random.default_rng(0)
    for t in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"{t:05d}.png")
    frames = read_frames(tmp_path)
    assert frames.shape == (4, 3, 40, 60) and frames.dtype == np.uint8
    result = propagate(model, frames, {1: SlicePrompt(points=[[30, 20]])}, stop_after=None, autocast=torch.bfloat16)
    assert result.masks.shape == (1, 4, 40, 60) and result.visited == [0, 1, 2, 3]


def test_clear_errors(model, phantom, tmp_path):
    volume, liver, k = phantom
    with pytest.raises(ConfigError, match="at least one slice"):
        propagate(model, volume, {})
    with pytest.raises(ConfigError, match="outside the volume"):
        propagate(model, volume, {99: SlicePrompt(boxes=[1, 1, 5, 5])})
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        propagate(model, volume * 400, {k: SlicePrompt(boxes=[1, 1, 5, 5])})
    with pytest.raises(ConfigError, match="differs from the slices"):
        propagate(model, volume, {k: SlicePrompt(mask=liver[k][:10])})
    with pytest.raises(ConfigError, match="same objects"):
        propagate(model, volume, {0: SlicePrompt(boxes=[1, 1, 5, 5]), 1: SlicePrompt(boxes=[[1, 1, 5, 5]] * 2)})
    with pytest.raises(DataError, match="no frames"):
        read_frames(tmp_path)
