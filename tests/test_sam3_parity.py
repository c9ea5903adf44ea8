"""Our SAM 3 tracker image path against Meta's own modules (``sam3==0.1.4``) on identical random weights.

Meta's ViT, dual ViTDet neck, prompt encoder and mask decoder are built at a small size with the
arguments Meta's builder gives them (``sam3_reference``), every tensor random; the weights are
mapped onto transformers' ``Sam3TrackerModel`` and loaded strictly. Then for images of two
sizes (the model's side, and a non-square one resized by ``preprocess``) and one and three
masks: the decoder's three embedding levels (ours: ``primitives.image_embeddings``; Meta: the
neck's SAM2-style levels without the lowest, ``conv_s0``/``conv_s1``, the no-memory embedding on
the last level) and the low-res logits and IoU of a box prompt (ours: ``primitives.decode``).

Largest differences measured (float32, 2-core CPU; relative to the largest magnitude, random
weights of std 0.2 giving activations in the tens): embeddings 1.5e-5, low-res logits 2.9e-5,
IoU 1e-6 absolute, at both sizes, one and three masks. transformers' own ``Sam3TrackerModel.forward(pixel_values=...)`` adds the
no-memory embedding to the neck's fourth level (scale 0.5) and then drops it, so the last level
it decodes lacks it; ``image_embeddings`` keeps the three levels Meta's tracker uses.
"""

from __future__ import annotations

import pytest
import sam3_reference
import torch
import transformers

from adapt.models.backbones import BACKBONES
from adapt.models.families import tiny_image_config
from adapt.models.primitives import decode, image_embeddings, pixel_stats, preprocess

SIZE = 112
REL_TOL = 1e-4  # measured: at most 2e-5 (random weights of std 0.2 give activations in the tens)


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def pair():
    meta = sam3_reference.build_meta_tracker_image(SIZE)
    config = tiny_image_config(BACKBONES["sam3_tracker"])  # Meta's builder fixes these decoder sizes
    config.mask_decoder_config.mlp_dim, config.mask_decoder_config.num_attention_heads = 2048, 8
    config.mask_decoder_config.iou_head_hidden_dim, config.prompt_encoder_config.mask_input_channels = 256, 16
    ours = transformers.Sam3TrackerModel(config).eval()
    ours.load_state_dict(sam3_reference.to_transformers(meta), strict=True)
    return meta, ours


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("shape", [(SIZE, SIZE), (90, 150)])
def test_image_path_matches_metas_tracker(pair, shape, multimask):
    meta, ours = pair
    image = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(1))
    pixels = preprocess(image, SIZE, **pixel_stats(ours))
    torch.testing.assert_close(
        pixels,
        (
            torch.nn.functional.interpolate(
                image, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True
            ).clamp(0, 1)
            - 0.5
        )
        / 0.5
        if shape != (SIZE, SIZE)
        else (image - 0.5) / 0.5,
    )  # Meta's Resize + Normalize(0.5, 0.5)
    box = torch.tensor([[20.0, 15.0, 80.0, 95.0]])
    levels, low_res, iou = sam3_reference.meta_image_path(meta, pixels, box, multimask)
    with torch.no_grad():
        embeddings = image_embeddings(ours, pixels)
        prediction = decode(ours, embeddings, multimask, input_boxes=box[None])
    for level, (a, b) in enumerate(zip(embeddings, levels)):
        assert a.shape == b.shape and relative(a, b) < REL_TOL, f"level {level}: {relative(a, b):.2e}"
    assert relative(prediction.low_res[0], low_res) < REL_TOL, f"logits {relative(prediction.low_res[0], low_res):.2e}"
    torch.testing.assert_close(prediction.iou[0], iou, rtol=0, atol=1e-5)
