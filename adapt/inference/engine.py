"""The runner over batches of planes: many planes per forward, prompts in plane pixels.

``adapt.inference.runner.Predictor`` segments one plane per call, which suits files given by
a user; evaluation runs every slice of every case, so this engine encodes ``batch_size``
planes at once through the same runner's ``embed``, ``model_prompts``, ``decode`` and
``masks``, decodes all their prompts in one call, optionally continues with correction clicks
(``Predictor.correct``) and runs under ``torch.inference_mode`` with optional bf16 autocast.
It calls nothing of SAM2 itself: every model call is the runner's, so the ONNX backend's
``OnnxPredictor`` runs here as it runs in ``predict``. ``prompt=auto`` (``auto``, ``auto_scan``)
lives here because it needs batches: the semantic head's class map, each component refined as
a box prompt. It also times the model part alone, so throughput is the survey's FPS and not
file reading.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage

from adapt.inference.io import Scan, to_unit
from adapt.errors import ConfigError, check_choice
from adapt.inference.names import PRECISIONS
from adapt.inference.runner import Predictor
from adapt.transforms.prompts import box_from_mask


@dataclass
class PlanePrompts:
    """One object's prompt on each of ``B`` planes, in plane pixels (``x`` = column).

    Attributes:
        boxes: ``[B, 4]`` xyxy, or ``None``.
        points: ``[B, k, 2]``, or ``None``.
        labels: ``[B, k]`` (1 object, 0 background), with ``points``.
    """

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes if self.boxes is not None else self.points)

    def take(self, index: slice | np.ndarray) -> PlanePrompts:
        """The prompts of a subset of the planes."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return PlanePrompts(pick(self.boxes), pick(self.points), pick(self.labels))


class Engine:
    """The runner on batches of planes, timed.

    Args:
        predictor: the adapter on its image model (device, square size, coordinate mapping).
        batch_size: planes per forward.
        precision: ``"32"`` or ``"bf16"`` (autocast; logits are compared in float32).
    """

    def __init__(self, predictor: Predictor, batch_size: int = 8, precision: str = "32"):
        check_choice("precision", str(precision), PRECISIONS)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        self.predictor, self.batch_size, self.precision = predictor, int(batch_size), str(precision)
        self.device = predictor.device
        self.model_seconds, self.planes = 0.0, 0

    @contextlib.contextmanager
    def timed(self, planes: int) -> Iterator[None]:
        """Inference mode, autocast and a synchronised clock around a model call on ``planes`` planes."""
        cast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with torch.inference_mode(), cast:
            yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.model_seconds += time.perf_counter() - start
        self.planes += planes

    def chunks(self, count: int) -> Iterator[slice]:
        """Consecutive index ranges of at most ``batch_size`` planes."""
        for start in range(0, count, self.batch_size):
            yield slice(start, min(start + self.batch_size, count))

    def embed(self, images: np.ndarray) -> list[torch.Tensor]:
        """Image embeddings of planes ``[B, C, H, W]`` in [0, 1] (call inside ``timed``)."""
        return self.predictor.embed(images)

    def _model_prompts(self, prompts: PlanePrompts, height: int, width: int) -> dict[str, torch.Tensor]:
        return self.predictor.model_prompts(height, width, prompts.boxes, prompts.points, prompts.labels)

    def segment(
        self,
        images: np.ndarray,
        prompts: PlanePrompts,
        targets: np.ndarray | None = None,
        clicks: Sequence[int] = (),
        seed: int = 0,
        keys: Sequence[int] | None = None,
        owners: np.ndarray | None = None,
    ) -> dict[int, np.ndarray]:
        """Masks of prompted objects, after 0 and each requested number of clicks.

        Args:
            images: planes ``[P, C, H, W]`` in [0, 1].
            prompts: one prompt per object, in plane pixels.
            targets: ground truth ``[N, H, W]`` of each object; needed for correction clicks.
            clicks: numbers of correction clicks to report (e.g. ``(1, 3, 5, 10)``).
            seed: click seed; ``keys`` (one int per object) make each object's clicks reproducible.
            owners: the plane of each object (default: object ``i`` on plane ``i``); a plane with
                several objects is encoded once per batch.

        Returns:
            ``{clicks: bool [N, H, W]}``, always with ``0`` (the first prompt alone).
        """
        count, (height, width) = len(prompts), images.shape[-2:]
        owners = np.arange(count) if owners is None else np.asarray(owners)
        rounds = max(clicks, default=0)
        if rounds and targets is None:
            raise ConfigError("correction clicks need the ground truth (clicks=off for label-free runs)")
        keys = list(keys) if keys is not None else list(range(count))
        out = {k: np.zeros((count, height, width), dtype=bool) for k in (0, *clicks)}
        for part in self.chunks(count):
            chunk = prompts.take(part)
            model_prompts = self._model_prompts(chunk, height, width)
            planes, inverse = np.unique(owners[part], return_inverse=True)
            with self.timed(len(planes)):
                embeddings = self.embed(images[planes])
                if len(planes) < part.stop - part.start:
                    index = torch.from_numpy(inverse.reshape(-1)).to(self.device)
                    embeddings = [e[index] for e in embeddings]
                first = self.predictor.decode(embeddings, model_prompts)
                found = {0: first}
                if rounds:
                    later = self.predictor.correct(
                        embeddings, first, model_prompts, targets[part], rounds, seed, keys[part]
                    )
                    found.update({r: later[r - 1] for r in clicks})
                for k, pred in found.items():
                    out[k][part] = Predictor.masks(pred, height, width).cpu().numpy()
        return out

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Class indices ``[B, H, W]`` (0 = background) from a semantic adapter's class prompts
        (``Predictor.classify``, a batch at a time, so a long scan never holds every class's logits at once)."""
        count, _, height, width = images.shape
        out = np.zeros((count, height, width), dtype=np.int64)
        for part in self.chunks(count):
            with self.timed(part.stop - part.start):
                out[part] = self.predictor.classify(images[part])
        return out

    def auto(self, images: np.ndarray, min_area: int = 4) -> np.ndarray:
        """``prompt=auto``: class indices ``[B, H, W]`` with no prompt and no ground truth.

        The semantic head gives a coarse class map; every connected component of every class
        (at least ``min_area`` pixels) becomes a box prompt, and the promptable decoder
        segments it. A pixel claimed by several refined objects takes the class of the one with
        the highest logit; pixels no object claims are background.
        """
        coarse = self.classify(images)
        count, _, height, width = images.shape
        objects = [(b, c, box) for b in range(count) for c, box in component_boxes(coarse[b], min_area)]
        refined = np.zeros((count, height, width), dtype=np.int64)
        best = np.full((count, height, width), -np.inf, dtype=np.float32)
        for start in range(0, count, self.batch_size):
            batch = [o for o in objects if start <= o[0] < start + self.batch_size]
            if not batch:
                continue
            planes = np.array([o[0] - start for o in batch])
            prompts = self._model_prompts(PlanePrompts(boxes=np.stack([o[2] for o in batch])), height, width)
            with self.timed(0):
                embeddings = self.embed(images[start : start + self.batch_size])
                picked = [e[torch.from_numpy(planes).to(e.device)] for e in embeddings]
                logits = self.predictor.upsampled(self.predictor.decode(picked, prompts), height, width).cpu().numpy()
            for (plane, cls, _), logit in zip(batch, logits):
                wins = (logit > 0) & (logit > best[plane])
                refined[plane][wins], best[plane][wins] = cls, logit[wins]
        return refined


def auto_scan(predictor: Predictor, scan: Scan, batch_size: int = 8) -> np.ndarray:
    """``prompt=auto`` on a scan: class indices ``[Z, H, W]`` from the semantic head's components, each
    refined as a box prompt by the promptable decoder (no ground truth, no user prompt; ``Engine.auto``)."""
    return Engine(predictor, batch_size).auto(to_unit(scan, predictor.loaded.preprocessing))


def component_boxes(classes: np.ndarray, min_area: int = 4) -> list[tuple[int, np.ndarray]]:
    """``(class, box)`` of every connected component of every foreground class of a 2D class map."""
    boxes = []
    for cls in (int(c) for c in np.unique(classes) if c > 0):
        components, count = ndimage.label(classes == cls)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        boxes += [(cls, box_from_mask(components == i)) for i in range(1, count + 1) if sizes[i] >= min_area]
    return boxes
