import torch

from adapt.adapters import apply_adapter
from adapt.models.interactive import click_rounds
from adapt.models.primitives import decode, image_embeddings, preprocess
from adapt.models.sam2 import load_sam2


def _setup():
    model = apply_adapter(load_sam2("tiny")[0], {"kind": "lora", "rank": 4})
    image = torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    label = torch.zeros(2, 2, 128, 128)
    label[:, 0, 10:50, 10:50] = 1
    label[:, 1, 60:100, 70:120] = 1
    boxes = torch.tensor([[[10.0, 10, 49, 49], [70, 60, 119, 99]]] * 2)
    return model, image, {"label": label, "boxes": boxes}


def test_embeddings_match_sam2_and_carry_gradients():
    model, image, batch = _setup()
    pixels = preprocess(image)
    embeddings = image_embeddings(model, pixels)
    assert embeddings[-1].requires_grad  # get_image_embeddings would be no_grad
    ours = decode(model, embeddings, False, input_boxes=batch["boxes"]).low_res
    theirs = model(pixel_values=pixels, input_boxes=batch["boxes"], multimask_output=False).pred_masks
    torch.testing.assert_close(ours, theirs)


def test_each_round_adds_a_click_and_feeds_back_the_previous_logits(decode_calls):
    model, image, batch = _setup()
    embeddings = image_embeddings(model, preprocess(image))
    first = decode(model, embeddings, False, input_boxes=batch["boxes"])  # imported by name: not recorded
    seen = decode_calls
    rounds = click_rounds(model, embeddings, first, batch, rounds=3, seed=1)
    assert len(rounds) == 3 and rounds[0].low_res.shape == (2, 2, 1, 32, 32)
    previous = first.low_res[:, :, 0].reshape(4, 1, 32, 32)
    for index, (prompts, out) in enumerate(seen, start=1):
        assert prompts["input_points"].shape == (4, 1, index, 2)
        assert torch.equal(prompts["input_masks"], previous)  # the previous round's logits
        assert set(prompts["input_labels"].unique().tolist()) <= {0, 1, -10}
        previous = out.low_res[:, :, 0]


def test_gradient_flows_through_the_last_round_only_by_default():
    model, image, batch = _setup()
    embeddings = image_embeddings(model, preprocess(image))
    first = decode(model, embeddings, False, input_boxes=batch["boxes"])
    rounds = click_rounds(model, embeddings, first, batch, rounds=2)
    assert not rounds[0].low_res.requires_grad and rounds[1].low_res.requires_grad
    rounds = click_rounds(model, embeddings, first, batch, rounds=2, grad_all=True)
    assert rounds[0].low_res.requires_grad and rounds[1].low_res.requires_grad
