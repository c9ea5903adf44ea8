"""The one model runner: a loaded adapter segments planes from prompts given in pixels.

``Predictor`` is the only code outside training that calls SAM2 to predict: image embeddings
(``embed``), the decoder (``decode``), correction clicks (``correct``), a semantic adapter's
class prompts (``class_logits``), and logits upsampled to the planes' size (``upsampled``,
``logits``) that ``masks`` and ``segment`` threshold at 0. ``python -m adapt.predict``, the app
and the export's check call it plane by plane; ``adapt.inference.engine`` drives the same
methods over batches of planes for evaluation and ``prompt=auto``. Pixels reach the model as
in training (``adapt.inference.io.read_scan`` + ``to_unit``, then ``adapt.models.primitives``);
prompts arrive in the stored pixel grid and are mapped onto the stack of planes the model
sees (``adapt.inference.io.VolumeView``) and then onto the model's square grid as SAM2 maps
them; logits come back at the planes' size through ``upsample_logits``. A volume prompted on
one slice is followed through the volume with SAM2's memory (``adapt.inference.propagation``); ``propagation=boxes`` instead chains boxes from
slice to slice with the image model, which needs no memory weights.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from adapt.data.geometry import check_same_grid
from adapt.adapters.loading import LoadedAdapter, load_adapter
from adapt.errors import AdaptError, ConfigError, DataError, check_choice
from adapt.inference.io import Scan, scan_grid, to_unit
from adapt.inference.names import PROPAGATION_MODES
from adapt.inference.prompt_syntax import Prompt, on_slice
from adapt.models.interactive import click_rounds
from adapt.models.channels import model_pixels
from adapt.models.backbones import holes_filled
from adapt.models.primitives import (
    Prediction,
    base_model,
    decode,
    image_embeddings,
    to_model_coords,
    upsample_logits,
)
from adapt.models.semantic import ATTRIBUTE as CLASS_PROMPTS
from adapt.models.semantic import class_logits
from adapt.transforms.prompts import box_from_mask
from adapt.transforms.slices import resize_label
from adapt.inference.propagation import SlicePrompt, propagate

log = logging.getLogger(__name__)


class Predictor:
    """An adapted SAM2 that segments one object per prompt in 2D planes (pixel coordinates).

    Args:
        loaded: the adapter on its image model (``load_adapter(..., video=False)``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...
        propagation: ``auto`` (memory when available, else boxes), ``memory`` or ``boxes``.
        fill_hole_area: hole filling of propagated masks (``adapt.models.postprocess``; 0 = off; ``None``:
            the backbone's reference value, ``Backbone.fill_hole_area``).
    """

    def __init__(
        self,
        loaded: LoadedAdapter,
        device: str = "auto",
        propagation: str = "auto",
        fill_hole_area: int | None = None,
    ):
        check_choice("propagation", propagation, PROPAGATION_MODES)
        self.loaded, self.propagation = loaded, propagation
        self.fill_hole_area = holes_filled(fill_hole_area, loaded.model_info.backbone)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.model = loaded.model.to(self.device).eval()
        self.size = int(loaded.model_info.image_size)
        self._video: torch.nn.Module | None = None

    def embed(self, images: np.ndarray) -> list[torch.Tensor]:
        """Image embeddings of planes ``[B, C, H, W]`` in [0, 1] (SAM2's resize and normalisation)."""
        pixels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        return image_embeddings(self.model, model_pixels(self.model, pixels, self.size))

    def model_prompts(
        self,
        height: int,
        width: int,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """One object's prompt per plane -- ``boxes [B, 4]``, ``points [B, k, 2]`` with ``labels [B, k]``
        in the pixels of ``H x W`` planes -- as the decoder's inputs on the model's grid."""
        out: dict[str, torch.Tensor] = {}
        if boxes is not None:
            xyxy = to_model_coords(np.asarray(boxes, np.float32).reshape(-1, 4), height, width, self.size)
            out["input_boxes"] = torch.from_numpy(xyxy)[:, None].to(self.device)
        if points is not None and np.size(points):
            xy = to_model_coords(np.asarray(points, np.float32), height, width, self.size)
            out["input_points"] = torch.from_numpy(xy).reshape(len(xy), 1, -1, 2).to(self.device)
            labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
            out["input_labels"] = labels.reshape(len(xy), 1, -1).to(self.device)
        return out

    @staticmethod
    def single_point(prompts: dict[str, torch.Tensor]) -> bool:
        """A lone point is ambiguous: SAM2 then returns three candidates (the best is kept)."""
        return "input_boxes" not in prompts and "input_points" in prompts and prompts["input_points"].shape[2] == 1

    def decode(self, embeddings: list[torch.Tensor], prompts: dict[str, torch.Tensor]) -> Prediction:
        """The prompt encoder and mask decoder on ``embeddings`` for ``prompts`` on the model's grid
        (``model_prompts``); a lone point gets SAM2's three candidates (``single_point``)."""
        return decode(self.model, embeddings, multimask=self.single_point(prompts), **prompts)

    @staticmethod
    def upsampled(prediction: Prediction, height: int, width: int) -> torch.Tensor:
        """Logits ``[B, H, W]`` (float32) of single-object predictions: the best candidate, upsampled."""
        return upsample_logits(prediction.best()[:, 0], (height, width))

    @staticmethod
    def masks(prediction: Prediction, height: int, width: int) -> torch.Tensor:
        """Boolean masks ``[B, H, W]`` of single-object predictions: the ``upsampled`` logits > 0."""
        return Predictor.upsampled(prediction, height, width) > 0

    @torch.inference_mode()
    def logits(
        self,
        images: np.ndarray,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, h, w]`` (float32) of one object per plane ``[B, C, H, W]`` in [0, 1], prompted
        as ``model_prompts`` takes it, upsampled to ``size`` (default ``H x W``: ``> 0`` is ``segment``'s
        mask; the decoder's own ``S/4`` side gives its low-resolution logits unchanged)."""
        _, _, height, width = images.shape
        prompts = self.model_prompts(height, width, boxes, points, labels)
        return self.upsampled(self.decode(self.embed(images), prompts), *(size or (height, width)))

    def segment(
        self,
        image: np.ndarray,
        box: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boolean mask ``[H, W]`` of the object a box and/or points select in ``image`` ``[C, H, W]``."""
        one = lambda a: None if a is None else np.asarray(a)[None]  # noqa: E731
        return (self.logits(image[None], one(box), one(points), one(labels))[0] > 0).cpu().numpy()

    def correct(
        self,
        embeddings: list[torch.Tensor],
        first: Prediction,
        prompts: dict[str, torch.Tensor],
        targets: np.ndarray,
        rounds: int,
        seed: int = 0,
        keys: Sequence[int] | None = None,
    ) -> list[Prediction]:
        """``rounds`` correction clicks after ``first`` (``adapt.models.interactive.click_rounds``: each
        click on the largest error of the previous mask against ``targets [N, H, W]``, resized to the
        model's side as training resizes its labels; the previous logits fed back as the mask prompt)."""
        label = (
            resize_label(torch.from_numpy(np.ascontiguousarray(targets)), self.size)[:, None].float().to(self.device)
        )
        batch = {
            "label": label,
            "boxes": prompts.get("input_boxes"),
            "points": prompts.get("input_points"),
            "point_labels": prompts.get("input_labels"),
        }
        return click_rounds(self.model, embeddings, first, batch, rounds, seed=seed, keys=keys)

    @property
    def promptless(self) -> bool:
        """Whether the adapter carries class prompts (``task=semantic``) and needs no prompt."""
        return hasattr(base_model(self.model), CLASS_PROMPTS)

    def class_logits(self, embeddings: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        """Class logits ``[B, K + 1, H, W]`` (float32; index 0 = background) of a semantic adapter's class prompts.

        Raises:
            ConfigError: the adapter has no semantic head.
        """
        if not self.promptless:
            raise ConfigError("this adapter has no semantic head (task=semantic): it needs a prompt per object")
        return upsample_logits(class_logits(self.model, embeddings), (height, width))

    @torch.inference_mode()
    def classify(self, images: np.ndarray) -> np.ndarray:
        """Class indices ``[B, H, W]`` (0 = background) of planes ``[B, C, H, W]``, without a prompt."""
        _, _, height, width = images.shape
        return self.class_logits(self.embed(images), height, width).argmax(1).cpu().numpy()

    def use_video_model(self, model: torch.nn.Module) -> None:
        """Propagate with ``model`` (zero-shot SAM2's own video model: there is no adapter to load it from)."""
        self._video = model.to(self.device).eval()

    def video_model(self) -> torch.nn.Module | None:
        """The adapter on ``Sam2VideoModel`` for memory propagation, or ``None`` to chain boxes."""
        if self.propagation == "boxes":
            return None
        if self._video is None:
            try:
                self._video = load_adapter(self.loaded.path, video=True).model.to(self.device).eval()
            except (AdaptError, OSError, ValueError) as err:
                if self.propagation == "memory":
                    raise
                log.warning("no memory model for this adapter (%s): chaining boxes instead", err)
                self.propagation = "boxes"
        return self._video


def chain_boxes(predictor: Predictor, images: np.ndarray, start: int, first: np.ndarray) -> np.ndarray:
    """Follow an object from slice ``start``: each slice is prompted with its neighbour's mask box.

    Each direction stops at the first empty mask (the object has ended).
    """
    masks = np.zeros((len(images), *first.shape), dtype=bool)
    masks[start] = first
    for step in (-1, 1):
        k = start + step
        while 0 <= k < len(images) and masks[k - step].any():
            masks[k] = predictor.segment(images[k], box=box_from_mask(masks[k - step]))
            k += step
    return masks


def view_prompt(scan: Scan, prompt: Prompt) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """The prompt's box, points and plane index on the scan's stack of planes.

    Raises:
        ConfigError: slice missing for a volume (or given for 2D), or a coordinate outside the image.
    """
    if not scan.is_volume:
        prompt.check_fits(scan.path, scan.shape[2], scan.shape[1], None)
        return prompt.box, prompt.points, 0
    prompt.check_fits(scan.path, *scan.view.extent())
    k = on_slice(prompt)
    to_view = lambda x, y: scan.view.to_view(x, y, k)[:2]  # noqa: E731
    box = None
    if prompt.box is not None:
        corners = np.array([to_view(*prompt.box[:2]), to_view(*prompt.box[2:])], np.float32)
        box = np.concatenate([corners.min(0), corners.max(0)])
    points = None if prompt.points is None else np.array([to_view(x, y) for x, y in prompt.points], np.float32)
    return box, points, scan.view.to_view(0, 0, k)[2]


def predict_scan(predictor: Predictor, scan: Scan, prompt: Prompt | None, guide: Scan | None = None) -> np.ndarray:
    """Masks ``[Z, H, W]`` of the prompted object (boolean), or class indices without a prompt.

    Args:
        predictor: the adapted model.
        scan: the input.
        prompt: a parsed prompt; ``from_mask`` prompts need ``guide``, the mask file read as a
            scan. ``None`` for a semantic adapter: every plane gets a class index map.
    """
    images = to_unit(scan, predictor.loaded.preprocessing)
    if prompt is None:
        return np.concatenate([predictor.classify(image[None]) for image in images])
    if prompt.from_mask is not None:
        _check_guide(scan, guide, prompt)
        select = guide.pixels[:, 0] == prompt.mask_label if prompt.mask_label is not None else guide.pixels[:, 0] != 0
        masks = np.zeros(scan.shape, dtype=bool)
        for k in np.flatnonzero(select.any(axis=(1, 2))):
            masks[k] = predictor.segment(images[k], box=box_from_mask(select[k]))
        return masks
    box, points, z = view_prompt(scan, prompt)
    video = predictor.video_model() if scan.is_volume else None
    if video is not None:
        slice_prompt = SlicePrompt(
            boxes=box,
            points=None if points is None else points[None],
            labels=None if points is None else prompt.point_labels[None],
        )
        return propagate(
            video, images, {z: slice_prompt}, device=predictor.device, fill_hole_area=predictor.fill_hole_area
        ).masks[0]
    first = predictor.segment(images[z], box, points, prompt.point_labels)
    return chain_boxes(predictor, images, z, first) if scan.is_volume else first[None]


#: What to do about a ``from_mask`` file on another grid than its input.
FROM_MASK_FIX = (
    "it must be a mask of this very image: resample it onto the image's grid (nearest neighbour), or give "
    "the mask that was drawn on this image"
)


def _check_guide(scan: Scan, guide: Scan | None, prompt: Prompt) -> None:
    """A from_mask file must be a mask of this very image: same grid, same placement."""
    if guide is None:
        raise DataError(f"from_mask={prompt.from_mask}: not readable as a mask of {scan.path}")
    check_same_grid(scan_grid(scan), scan_grid(guide), role="from_mask", fix=FROM_MASK_FIX)
