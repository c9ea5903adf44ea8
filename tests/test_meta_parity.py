"""Our SAM2 path against Meta's own code (``sam2==1.1.0``) on identical random weights.

Meta's SAM2.1 hiera-tiny is built by Meta's ``build_sam2`` from Meta's config
(``sam2.1_hiera_t.yaml``), every tensor drawn at random (``meta_reference.randomize``),
saved as a Meta ``.pt`` and loaded into ours with ``load_sam2("sam2.1_hiera_tiny", checkpoint=...)`` (offline: the
architecture is built locally, every weight comes from the file).

* Images (uint8 RGB of smooth shapes and noise; 1024 x 1024, 512 x 512 and 2048 x 1536,
  W x H): Meta's ``SAM2ImagePredictor`` against our ``Predictor``: model input,
  image embeddings, low-res logits and IoU for a box, a point and a box with two points,
  with one and with three masks, and the final masks at the image's size.
* Video (5 JPEG frames read by Meta's ``init_state``): Meta's ``SAM2VideoPredictor`` as
  ``build_sam2_video_predictor`` makes it (dynamic multimask, binarised prompt masks for the
  memory, ``fill_hole_area=8``; its CUDA hole filling runs on the CPU stand-in of
  ``meta_reference``) against ``propagate`` with a box on frame 0. Model side 512 (Meta's
  config with ``image_size`` overridden), which keeps the memory attention affordable on CPU.

Logits must agree to ``REL_TOL`` of their largest magnitude (measured: about 5e-7 for the
images); a mask pixel may differ from Meta's only where Meta's logit is that close to 0.
"""

from __future__ import annotations

import meta_reference
from meta_reference import assert_masks_agree, natural_image, video_overrides
import numpy as np
import pytest
import torch
from PIL import Image

from adapt.adapters.loading import LoadedAdapter
from adapt.inference import propagation
from adapt.inference.runner import Predictor
from adapt.models import memory
from adapt.models.backbones import BACKBONES
from adapt.models.postprocess import fill_holes
from adapt.models.primitives import decode, preprocess, resize_video_frames, upsample_logits
from adapt.models.sam2 import load_sam2

SEED = 0
#: Logits (and embeddings) agree to this fraction of their largest magnitude.
REL_TOL = 2e-5
#: Image sizes, W x H: the model's side, an upsampled and a downsampled non-square image (its
#: prompts are not symmetric, so a swapped W/H shows; 1536 x 2048 too was checked by hand).
SIZES = {"1024x1024": (1024, 1024), "512x512": (512, 512), "2048x1536": (2048, 1536)}
KINDS = ("box", "point", "box+points")
#: Video: model side, frames, hole area (``build_sam2_video_predictor``'s ``fill_hole_area``).
VIDEO_SIZE, VIDEO_FRAMES, FILL_HOLE_AREA = 512, 5, 8
#: Video logits (measured: 1e-5): memories are stored in bfloat16 on both sides, and a value
#: on a rounding boundary can land one bfloat16 step apart.
VIDEO_ATOL = 1e-3


def prompts(kind: str, height: int, width: int) -> dict[str, np.ndarray]:
    """Meta's ``predict`` arguments for one prompt kind, in the image's pixels."""
    box = np.round([0.3 * width, 0.2 * height, 0.7 * width, 0.8 * height]).astype(np.float32)
    points = np.round([[0.5 * width, 0.45 * height], [0.62 * width, 0.3 * height]]).astype(np.float32)
    labels = np.array([1, 0])
    return {
        "box": dict(box=box),
        "point": dict(point_coords=points[:1], point_labels=labels[:1]),
        "box+points": dict(box=box, point_coords=points, point_labels=labels),
    }[kind]


def ours_args(meta_args: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """The same prompt as ``Predictor.segment`` takes it."""
    return dict(box=meta_args.get("box"), points=meta_args.get("point_coords"), labels=meta_args.get("point_labels"))


def assert_logits_close(ours: torch.Tensor, meta: torch.Tensor, what: str) -> None:
    meta = torch.as_tensor(meta, dtype=torch.float32)
    ours = ours.reshape(meta.shape).float()
    atol = REL_TOL * max(1.0, float(meta.abs().max()))
    diff = float((ours - meta).abs().max())
    assert diff <= atol, (
        f"{what}: max |ours - Meta| = {diff:.3g} > {atol:.3g} (|Meta| max {float(meta.abs().max()):.3g})"
    )


# --- images ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(meta_sam2, tmp_path_factory):
    """Meta's hiera-tiny with random weights, as a Meta ``.pt``."""
    return meta_reference.random_checkpoint(
        meta_sam2, tmp_path_factory.mktemp("meta") / "sam2.1_hiera_tiny_random.pt", SEED
    )


@pytest.fixture(scope="module")
def meta_predictor(meta_sam2, checkpoint):
    """Meta's image predictor; Meta's own loader reads the checkpoint (strict)."""
    return meta_sam2.module("sam2_image_predictor").SAM2ImagePredictor(meta_sam2.build(checkpoint))


@pytest.fixture(scope="module")
def predictor(checkpoint):
    model, info = load_sam2("sam2.1_hiera_tiny", checkpoint=str(checkpoint))
    assert info.image_size == 1024
    loaded = LoadedAdapter(
        model=model.eval(), preprocessing={}, label_map={}, metadata={}, model_info=info, path=checkpoint.parent
    )
    return Predictor(loaded, device="cpu")


@pytest.fixture(scope="module", params=list(SIZES))
def case(request, meta_predictor, predictor):
    """One image through both: Meta's predictions for every prompt, our embeddings and pixels."""
    width, height = SIZES[request.param]
    image = natural_image(height, width)
    meta_predictor.set_image(image)
    features = [*meta_predictor._features["high_res_feats"], meta_predictor._features["image_embed"]]
    meta = {}
    for kind in KINDS:
        for multimask in (False, True):
            args = prompts(kind, height, width)
            logits, iou, low_res = meta_predictor.predict(**args, multimask_output=multimask, return_logits=True)
            best = int(iou.argmax())
            meta[kind, multimask] = dict(args=args, iou=iou, low_res=low_res, best=best, logits=logits[best])
    unit = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255
    with torch.inference_mode():
        pixels = preprocess(torch.from_numpy(unit)[None], predictor.size)
        embeddings = predictor.embed(unit[None])
    return dict(
        size=request.param,
        height=height,
        width=width,
        unit=unit,
        meta=meta,
        meta_input=meta_predictor._transforms(image),
        meta_features=features,
        pixels=pixels,
        embeddings=embeddings,
    )


@pytest.mark.slow
def test_model_input_matches_meta(case):
    """uint8 -> /255 -> our resize and normalisation = Meta's ToTensor, Resize, Normalize."""
    diff = float((case["pixels"][0] - case["meta_input"]).abs().max())
    assert diff <= 1e-5, f"{case['size']}: model input differs from Meta's by up to {diff:.3g}"


@pytest.mark.slow
def test_image_embeddings_match_meta(case):
    for level, (ours, meta) in enumerate(zip(case["embeddings"], case["meta_features"])):
        assert_logits_close(ours, meta, f"{case['size']} embedding level {level} {tuple(meta.shape)}")


@pytest.mark.slow
@pytest.mark.parametrize("multimask", [False, True], ids=["one-mask", "three-masks"])
@pytest.mark.parametrize("kind", KINDS)
def test_logits_and_iou_match_meta(case, predictor, kind, multimask):
    meta = case["meta"][kind, multimask]
    args = ours_args(meta["args"])
    model_prompts = predictor.model_prompts(
        case["height"],
        case["width"],
        None if args["box"] is None else args["box"][None],
        None if args["points"] is None else args["points"][None],
        None if args["labels"] is None else args["labels"][None],
    )
    with torch.inference_mode():
        pred = decode(predictor.model, case["embeddings"], multimask, **model_prompts)
    what = f"{case['size']} {kind} multimask={multimask}"
    assert_logits_close(pred.low_res.clamp(-32, 32), meta["low_res"], f"{what} low-res logits")
    torch.testing.assert_close(
        pred.iou.reshape(-1), torch.from_numpy(meta["iou"]), rtol=0, atol=1e-5, msg=lambda m: f"{what} IoU: {m}"
    )
    # Final masks: the best candidate, upsampled to the image's size, > 0 (Meta: postprocess_masks).
    masks = Predictor.masks(pred, case["height"], case["width"])[0].numpy()
    logits = meta["logits"]
    assert_masks_agree(masks, logits, REL_TOL * max(1.0, float(np.abs(logits).max())), f"{what} mask")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow
def test_segment_matches_meta(case, predictor, kind, monkeypatch):
    """``Predictor.segment`` end to end (a lone point: three candidates, the best kept, as SAM2 advises)."""
    monkeypatch.setattr(predictor, "embed", lambda images: case["embeddings"])
    args = ours_args(prompts(kind, case["height"], case["width"]))
    mask = predictor.segment(case["unit"], **args)
    meta = case["meta"][kind, kind == "point"]
    logits = meta["logits"]
    assert mask.shape == (case["height"], case["width"]) and mask.any() and not mask.all()
    assert_masks_agree(mask, logits, REL_TOL * max(1.0, float(np.abs(logits).max())), f"{case['size']} {kind}")


# --- video -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_run(meta_sam2, checkpoint, tmp_path_factory):
    """A box on frame 0 of a 5-frame JPEG video, tracked by Meta's video predictor and by ``propagate``."""
    folder = tmp_path_factory.mktemp("frames")
    for t in range(VIDEO_FRAMES):  # Meta reads "<frame index>.jpg"
        Image.fromarray(natural_image(VIDEO_SIZE, VIDEO_SIZE, seed=1, t=t)).save(folder / f"{t:05d}.jpg", quality=95)
    box = np.round([0.3 * VIDEO_SIZE, 0.2 * VIDEO_SIZE, 0.7 * VIDEO_SIZE, 0.8 * VIDEO_SIZE]).astype(np.float32)

    meta = meta_sam2.build(checkpoint, video=True, overrides=video_overrides(VIDEO_SIZE))
    assert meta.fill_hole_area == BACKBONES["sam2"].fill_hole_area and meta.binarize_mask_from_pts_for_mem_enc
    state = meta.init_state(video_path=str(folder))
    meta.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box)
    meta_masks = {t: masks[0, 0].numpy() for t, _, masks in meta.propagate_in_video(state)}
    stored = state["output_dict_per_obj"][0]
    meta_steps = {**stored["cond_frame_outputs"], **stored["non_cond_frame_outputs"]}

    model, _ = load_sam2("sam2.1_hiera_tiny", video=True, checkpoint=str(checkpoint), image_size=VIDEO_SIZE)
    steps = {}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("prompt", "track"):
            original = getattr(memory.MemoryTracker, name)

            def recording(self, frame, *args, _original=original, **kwargs):
                steps[frame] = out = _original(self, frame, *args, **kwargs)
                return out

            patch.setattr(memory.MemoryTracker, name, recording)
        result = propagation.propagate(
            model.eval(), propagation.read_frames(folder), {0: propagation.SlicePrompt(boxes=box)}, stop_after=None
        )
    return dict(meta_masks=meta_masks, meta_steps=meta_steps, steps=steps, result=result)


@pytest.mark.slow
def test_video_tracking_matches_meta(video_run):
    """Per frame: our tracker's low-res logits (holes filled) and object scores = Meta's."""
    assert sorted(video_run["steps"]) == sorted(video_run["meta_steps"]) == list(range(VIDEO_FRAMES))
    for t in range(VIDEO_FRAMES):
        ours, meta = video_run["steps"][t], video_run["meta_steps"][t]
        low_res = ours.low_res.float()
        diff = float((low_res - meta["pred_masks"]).abs().max())
        assert diff <= VIDEO_ATOL, f"frame {t}: low-res logits differ from Meta's by up to {diff:.3g}"
        torch.testing.assert_close(ours.object_score.float(), meta["object_score_logits"], rtol=0, atol=VIDEO_ATOL)
        assert float(meta["object_score_logits"]) > 0 and 0.05 < float((meta["pred_masks"] > 0).float().mean()) < 0.95
        # Meta filled holes on this frame, so the comparison covers the hole filling too.
        assert (fill_holes(low_res, FILL_HOLE_AREA) == low_res).all() and (meta["pred_masks"] == 0.1).any()


@pytest.mark.slow
def test_video_masks_match_meta(video_run):
    masks = video_run["result"].masks[0]
    for t in range(VIDEO_FRAMES):
        assert_masks_agree(masks[t], video_run["meta_masks"][t], VIDEO_ATOL, f"frame {t}")


def test_video_prompt_mapped_as_meta_maps_it(meta_sam2):
    """Box corners (labels 2, 3) ahead of the clicks, scaled by ``size / W`` and ``size / H``, as
    ``SAM2VideoPredictor.add_new_points_or_box`` (the formula of ``SAM2Transforms.transform_coords``)."""
    height, width, size = 480, 640, 512
    box, points = (
        np.array([101.0, 57.0, 333.0, 401.0], np.float32),
        np.array([[[250.0, 240.0], [17.0, 3.0]]], np.float32),
    )
    ours = propagation.SlicePrompt(boxes=box, points=points, labels=[[1, 0]]).to_model(
        height, width, size, torch.device("cpu")
    )
    transforms = meta_sam2.module("utils.transforms").SAM2Transforms(resolution=size, mask_threshold=0.0)
    corners_then_clicks = torch.cat([torch.from_numpy(box).reshape(1, 2, 2), torch.from_numpy(points)], dim=1)
    meta = transforms.transform_coords(corners_then_clicks, normalize=True, orig_hw=(height, width))
    torch.testing.assert_close(ours.points, meta, rtol=0, atol=1e-4)
    assert ours.labels.tolist() == [[2, 3, 1, 0]]


def test_video_frames_as_meta_reads_them_at_model_size(meta_sam2, tmp_path):
    """Frames already at the model's side reach both models unchanged (PIL and we skip the resize)."""
    image = natural_image(64, 64, seed=2)
    Image.fromarray(image).save(tmp_path / "0.jpg", quality=95)
    meta, height, width = meta_sam2.module("utils.misc").load_video_frames(
        str(tmp_path), 64, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    frames = propagation.read_frames(tmp_path)
    ours = preprocess(torch.from_numpy(frames).float() / 255, 64)
    assert (height, width) == (64, 64)
    torch.testing.assert_close(ours, meta, rtol=0, atol=1e-6)


def test_video_frames_as_meta_reads_them_resized(meta_sam2, tmp_path):
    """Video frames are resized as 8-bit images with Pillow's bicubic filter, as Meta's video loader does."""
    for k, (height, width) in enumerate(((96, 128), (200, 150))):
        Image.fromarray(natural_image(height, width, seed=2 + k)).save(tmp_path / f"{k}.jpg", quality=95)
        meta, _, _ = meta_sam2.module("utils.misc").load_video_frames(
            str(tmp_path), 64, offload_video_to_cpu=True, compute_device=torch.device("cpu")
        )
        frames = torch.from_numpy(propagation.read_frames(tmp_path))
        ours = preprocess(resize_video_frames(frames, 64), 64)
        torch.testing.assert_close(ours, meta[: len(ours)], rtol=0, atol=1e-6)
        (tmp_path / f"{k}.jpg").unlink()


def test_upsampled_logits_as_meta_postprocesses_them(meta_sam2):
    """``upsample_logits`` = ``SAM2Transforms.postprocess_masks`` (256 -> the image's size directly)."""
    transforms = meta_sam2.module("utils.transforms").SAM2Transforms(resolution=1024, mask_threshold=0.0)
    low_res = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    for size in ((1536, 2048), (300, 200), (256, 256)):
        torch.testing.assert_close(
            upsample_logits(low_res, size), transforms.postprocess_masks(low_res, size), rtol=0, atol=0
        )
