"""SAM2 as two ONNX graphs: the image encoder, and the prompt encoder + mask decoder.

The graphs are traced from the same primitives the torch runner calls
(``adapt.models.primitives.image_embeddings`` and ``Sam2Model``'s decoder path), so an
export computes what ``Predictor`` computes:

* ``image_encoder.onnx``: ``pixels [B, 3, S, S]`` -- resized, 3 channels, ImageNet-normalised
  (``adapt.models.primitives.preprocess``) -- to the three embeddings the decoder needs:
  ``high_res_feats_0 [B, C0, S/4, S/4]``, ``high_res_feats_1 [B, C1, S/8, S/8]`` and
  ``image_embed [B, C, S/16, S/16]`` (no-memory embedding added, as for a single image).
  A model with a learned input projection (``adapt.models.channels``) takes ``image [B, C, S, S]``
  instead -- resized, in [0, 1], the card's C channels -- and the graph holds the projection to
  3 channels and the normalisation, so the learned weights travel with the export.
* ``prompt_decoder.onnx`` / ``prompt_decoder_multimask.onnx``: those embeddings plus one
  object's prompt per image as ``point_coords [B, N, 2]`` (model grid, ``x * S / W``) and
  ``point_labels [B, N]`` (int64) to ``low_res_masks [B, M, S/4, S/4]`` and ``iou_scores [B, M]``.
  ``N`` is dynamic. A box is two corner points labelled 2 (top-left) and 3 (bottom-right),
  as SAM2's prompt encoder embeds boxes; clicks are labelled 1 (object) and 0 (background);
  a padding point (label -1) is appended inside the graph, as SAM2 does. The single-mask
  graph (``M = 1``) keeps SAM2's fallback to the best of the three candidates when the mask is
  unstable; the multimask graph (``M = 3``) is for a lone click, as the runner chooses.

The legacy TorchScript exporter (``dynamo=False``) is used: it traces transformers' SAM2 at
torch 2.13 with dynamic batch and point axes; the wrappers are put in eval mode because the
exporter restores the wrapper's mode afterwards (a training-mode wrapper would leave SAM2 in
training mode, where its decoder skips the stability fallback). Its ``TracerWarning``s (Python
branches on shapes, which are constant for SAM2's fixed input side) and its constant-folding
notes are silenced while tracing: they describe the tracer, not the export.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from adapt.models.channels import input_projection
from adapt.models.primitives import base_model, image_embeddings, normalise, pixel_stats

OPSET = 17
ENCODER_FILE = "image_encoder.onnx"
DECODER_FILE = "prompt_decoder.onnx"
MULTIMASK_FILE = "prompt_decoder_multimask.onnx"
EMBEDDINGS = ("high_res_feats_0", "high_res_feats_1", "image_embed")
#: The encoder graph's input: normalised RGB pixels, or a projection model's resized C-channel image.
PIXELS, IMAGE = "pixels", "image"
PROMPTS = ("point_coords", "point_labels")
OUTPUTS = ("low_res_masks", "iou_scores")
#: Point labels of the decoder graphs (SAM2's point embeddings).
POINT_LABELS = {"background click": 0, "object click": 1, "box top-left": 2, "box bottom-right": 3, "padding": -1}


class ImageEncoder(nn.Module):
    """Normalised pixels ``[B, 3, S, S]`` -> the decoder's three image embeddings; with an input
    projection, the resized image ``[B, C, S, S]`` in [0, 1], projected and normalised (the backbone's
    mean/std) first."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.projection = input_projection(model)
        self.stats = pixel_stats(model)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.projection is not None:
            pixels = normalise(self.projection(pixels), **self.stats)
        return tuple(image_embeddings(self.model, pixels))


class PromptDecoder(nn.Module):
    """Embeddings + one object's points per image -> low-res logits and predicted IoU."""

    def __init__(self, model: nn.Module, multimask: bool):
        super().__init__()
        self.model, self.multimask = model, multimask

    def forward(
        self,
        feats_0: torch.Tensor,
        feats_1: torch.Tensor,
        embed: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            image_embeddings=[feats_0, feats_1, embed],
            input_points=coords[:, None],
            input_labels=labels[:, None],
            multimask_output=self.multimask,
        )
        return out.pred_masks[:, 0], out.iou_scores[:, 0]


def prompt_points(prompts: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The runner's decoder prompts (``Predictor.model_prompts``: ``input_boxes [B, 1, 4]``,
    ``input_points [B, 1, k, 2]``, ``input_labels [B, 1, k]``) as the graphs' ``point_coords [B, N, 2]``
    and ``point_labels [B, N]``: box corners first (labels 2, 3), then the clicks, as SAM2's own
    predictor orders them (the decoder's tokens are order-free)."""
    coords, labels = [], []
    if prompts.get("input_boxes") is not None:
        boxes = prompts["input_boxes"][:, 0].detach().float().cpu().numpy()
        coords.append(boxes.reshape(len(boxes), 2, 2))
        labels.append(np.tile(np.array([2, 3], np.int64), (len(boxes), 1)))
    if prompts.get("input_points") is not None:
        coords.append(prompts["input_points"][:, 0].detach().float().cpu().numpy())
        labels.append(prompts["input_labels"][:, 0].detach().cpu().numpy().astype(np.int64))
    if not coords:
        raise ValueError("a decoder prompt needs a box or points")
    return np.ascontiguousarray(np.concatenate(coords, 1), np.float32), np.ascontiguousarray(np.concatenate(labels, 1))


@contextlib.contextmanager
def quiet_tracer() -> Iterator[None]:
    """Silence the tracer's ``TracerWarning``s and the exporter's constant-folding notes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        yield


def export_graphs(model: nn.Module, out_dir: str | Path, opset: int = OPSET) -> dict[str, Path]:
    """Trace ``model`` (a SAM2 with its adapter merged or attached) into the three graphs.

    Returns:
        ``{"image_encoder": path, "decoder": path, "decoder_multimask": path}``.
    """
    sam = base_model(model).eval()
    size = int(sam.config.prompt_encoder_config.image_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = ImageEncoder(sam).eval()
    generator = torch.Generator().manual_seed(0)
    if encoder.projection is None:
        name, pixels = PIXELS, torch.randn(2, 3, size, size, generator=generator)
    else:
        name, pixels = IMAGE, torch.rand(2, int(encoder.projection.channels), size, size, generator=generator)
    batch = {name: {0: "batch"}, **{name: {0: "batch"} for name in EMBEDDINGS}}
    paths = {
        "image_encoder": out_dir / ENCODER_FILE,
        "decoder": out_dir / DECODER_FILE,
        "decoder_multimask": out_dir / MULTIMASK_FILE,
    }
    with torch.no_grad(), quiet_tracer():
        torch.onnx.export(
            encoder,
            (pixels,),
            str(paths["image_encoder"]),
            input_names=[name],
            output_names=list(EMBEDDINGS),
            dynamic_axes=batch,
            opset_version=opset,
            dynamo=False,
        )
        embeddings = encoder(pixels)
    coords = torch.tensor([[[0.1, 0.2], [0.6, 0.7], [0.4, 0.5]]]).repeat(2, 1, 1) * size
    labels = torch.tensor([[2, 3, 1]]).repeat(2, 1)
    axes = {
        **{name: {0: "batch"} for name in EMBEDDINGS},
        "point_coords": {0: "batch", 1: "points"},
        "point_labels": {0: "batch", 1: "points"},
        **{name: {0: "batch"} for name in OUTPUTS},
    }
    for key, multimask in (("decoder", False), ("decoder_multimask", True)):
        with torch.no_grad(), quiet_tracer():
            torch.onnx.export(
                PromptDecoder(sam, multimask).eval(),
                (*embeddings, coords, labels),
                str(paths[key]),
                input_names=[*EMBEDDINGS, *PROMPTS],
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    return paths
