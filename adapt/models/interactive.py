"""SAM2 as an interactive segmenter: image embeddings once, then prompt → mask → click rounds.

The embeddings and the decoder call are ``adapt.models.primitives``'. ``click_rounds`` runs the iterative
correction protocol of SAM/SAM2 training: after each prediction a click goes to the
largest error region and the previous low-resolution logits are fed back as the mask
prompt. SAM2 takes one dense mask prompt per image, so objects are flattened to one
image-embedding copy each for the click rounds.
"""

from __future__ import annotations

import numpy as np
import torch

from adapt.models.primitives import Prediction, decode, upsample_logits
from adapt.transforms.clicks import correction_click
from adapt.transforms.prompts import prompt_rng


def next_clicks(
    pred: torch.Tensor, target: torch.Tensor, seed: int, round_index: int, keys: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """One correction click per object from full-resolution masks ``[K, H, W]``.

    A perfect object gets a padding point (label -10, ignored by SAM2's prompt encoder).
    """
    points = np.zeros((len(pred), 2), dtype=np.float32)
    labels = np.full(len(pred), -10, dtype=np.int64)
    pred_np, target_np = pred.cpu().numpy(), target.cpu().numpy()
    for i, (p, t) in enumerate(zip(pred_np, target_np)):
        click = correction_click(p, t, prompt_rng(seed, keys[i], round_index))
        if click is not None:
            points[i], labels[i] = click
    return points, labels


def click_rounds(
    model: torch.nn.Module,
    embeddings: list[torch.Tensor],
    first: Prediction,
    batch: dict[str, torch.Tensor],
    rounds: int,
    seed: int = 0,
    grad_all: bool = False,
    keys: list[int] | None = None,
) -> list[Prediction]:
    """``rounds`` correction rounds after the first prediction; returns one Prediction per round.

    Args:
        model: the (adapted) SAM2.
        embeddings: image embeddings of the batch (``image_embeddings``).
        first: the prediction from the initial prompt; its best mask (by predicted IoU) seeds round 1.
        batch: ``label`` ``[B, N, H, W]`` and the initial ``boxes``/``points``/``point_labels``.
        rounds: number of clicks to add.
        seed: click seed; ``keys`` (one int per object) make clicks reproducible per sample.
        grad_all: backpropagate through every round (default: only the last, as SAM2 trains).
    """
    target = batch["label"] > 0.5
    b, n = target.shape[:2]
    size = target.shape[-2:]
    keys = keys if keys is not None else list(range(b * n))
    flat_embeddings = [e.repeat_interleave(n, dim=0) for e in embeddings]
    box = batch.get("boxes")
    points = batch.get("points")
    labels = batch.get("point_labels")
    points = (
        points.reshape(b * n, 1, -1, 2) if points is not None else torch.zeros(b * n, 1, 0, 2, device=target.device)
    )
    labels = (
        labels.reshape(b * n, 1, -1)
        if labels is not None
        else torch.zeros(b * n, 1, 0, dtype=torch.long, device=target.device)
    )
    best = first.iou.argmax(dim=2)
    previous = first.low_res.gather(2, best[:, :, None, None, None].expand(-1, -1, 1, *first.low_res.shape[-2:]))
    previous = previous.reshape(b * n, 1, *first.low_res.shape[-2:])
    results = []
    for r in range(1, rounds + 1):
        full = upsample_logits(previous[:, 0], size) > 0
        click, click_label = next_clicks(full, target.reshape(b * n, *size), seed, r, keys)
        points = torch.cat([points, torch.from_numpy(click).to(points)[:, None, None]], dim=2)
        labels = torch.cat([labels, torch.from_numpy(click_label).to(labels)[:, None, None]], dim=2)
        track = grad_all or r == rounds
        with torch.set_grad_enabled(track and torch.is_grad_enabled()):
            prompts = {
                "input_points": points,
                "input_labels": labels,
                "input_masks": previous if track else previous.detach(),
            }
            if box is not None:
                prompts["input_boxes"] = box.reshape(b * n, 1, 4)
            pred = decode(model, flat_embeddings, multimask=False, **prompts)
        previous = pred.low_res[:, :, 0]
        results.append(Prediction(pred.low_res.reshape(b, n, 1, *pred.low_res.shape[-2:]), pred.iou.reshape(b, n, 1)))
    return results
