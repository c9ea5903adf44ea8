"""Our memory loop on the SAM 3 tracker against Meta's own tracker (``sam3==0.1.4``) on identical random weights.

Meta's ``Sam3TrackerPredictor`` is built at a small size (side 112, an 8 x 8 patch grid, decoder
width 128, 64 memory channels, 2 memory-attention layers) with the arguments Meta's
``build_tracker`` gives it, every tensor random (``sam3_video_reference``); its weights are mapped
onto transformers' ``Sam3TrackerVideoModel`` and loaded strictly. A 4-frame video (96 x 128,
moving shapes) is tracked from a box on frame 0 by Meta's demo API (``add_new_points_or_box``,
``propagate_in_video``) and by ``adapt.inference.propagation.propagate`` (our ``MemoryTracker``,
the loop SAM2 and EdgeTAM run too), with the same normalised pixels on both sides and no hole
filling (Meta's tracker is built with ``fill_hole_area=0``).

Compared per frame: the low-res logits and object score of the prompted frame (decoded without
memory) and of each tracked frame (memory attention over the prompted frame's and the previous
frames' memories and object pointers, then the decoder), the stored memories, and the masks at
the video's size. Largest absolute differences of the low-res logits measured (float32, 2-core
CPU, logits of magnitude 36 on the prompted frame and about 110 on the tracked ones, random weights
of std 0.2): 1.1e-3 on frame 0, 1.3e-3, 1.6e-3 and 1.2e-3 on frames 1-3; stored memories within
one bfloat16 step (both sides store them in bfloat16). Resizing the memory's mask logits before
the sigmoid, as transformers' ``_encode_new_memory`` does, instead of after it as Meta's mask
downsampler does, gave 5e-3 to 7e-3 on the tracked frames; ``VIDEO_ATOL`` sits between.

Stood in at test time only (``sam3_video_reference``): ``Tensor.cuda``/``Tensor.pin_memory`` (Meta
moves memories and pointer positions to CUDA unconditionally), the triton distance transform and
the training collator (imported, used only to sample correction clicks in training), torchvision's
``RoIAlign`` (the detector's). Not compared: Meta's frame loader (``sam3.model.io_utils``, which
imports torchvision and rounds pixels to float16, about 5e-4 of the [-1, 1] range; both sides get
our float32 pixels here); the memory selection of Meta's full SAM 3 video model
(``use_memory_selection``, off in the tracker its interactive predictor builds), which transformers
does not implement. Hole filling is compared as the commands default it (``fill_hole_area=null``:
the backbone row's value, 0 for the SAM 3 tracker, as Meta's ``build_tracker`` builds it; Meta's full
SAM 3 video model, not compared, fills regions of 16 pixels at the video's size).
"""

from __future__ import annotations

import pytest
import sam3_video_reference
import torch
from meta_reference import assert_masks_agree

SIZE, FRAMES, HEIGHT, WIDTH = sam3_video_reference.SMALL.size, 4, 96, 128
#: Low-res logits, absolute (measured at most 1.6e-3; the other order of resizing gives 5e-3 and more).
VIDEO_ATOL = 3e-3


@pytest.fixture(scope="module")
def runs():
    tracker, model = sam3_video_reference.build_pair(sam3_video_reference.SMALL)
    frames, box = sam3_video_reference.moving_video(FRAMES, HEIGHT, WIDTH)
    return sam3_video_reference.track_both(tracker, model, frames, box)


def test_video_tracking_matches_metas_tracker(runs):
    """Per frame: low-res logits, object score and stored memory = Meta's tracker's."""
    assert sorted(runs["steps"]) == sorted(runs["meta"]) == list(range(FRAMES))
    for t in range(FRAMES):
        ours, meta = runs["steps"][t], runs["meta"][t]
        diff = float((ours.low_res.float() - meta["pred_masks"]).abs().max())
        assert diff <= VIDEO_ATOL, f"frame {t}: low-res logits differ from Meta's by up to {diff:.3g}"
        torch.testing.assert_close(ours.object_score.float(), meta["object_score_logits"], rtol=0, atol=1e-4)
        assert float(meta["object_score_logits"]) > 0 and 0.05 < float((meta["pred_masks"] > 0).float().mean()) < 0.95
        stored = runs["memories"][t]["maskmem_features"].float()  # [HW, 1, C], bfloat16 as Meta's [1, C, h, w]
        theirs = meta["maskmem_features"].float().flatten(2).permute(2, 0, 1)
        step = float(theirs.abs().max()) * 2**-8  # half of bfloat16's spacing at the largest magnitude
        assert float((stored - theirs).abs().max()) <= 2 * step, f"frame {t}: memory differs from Meta's"


def test_video_masks_match_metas_tracker(runs):
    """Masks at the video's size: ours (``propagate``'s result) = Meta's wherever its logit is decided."""
    masks = runs["result"].masks[0]
    for t in range(FRAMES):
        assert masks[t].shape == (HEIGHT, WIDTH) and masks[t].any() and not masks[t].all()
        assert_masks_agree(masks[t], runs["meta_video"][t].numpy(), VIDEO_ATOL, f"frame {t}")
