"""``python -m adapt.predict``: segment files with an adapter, masks in the input's format.

::

    python -m adapt.predict adapter=user/sam2-ct-liver input=case.nii.gz output=mask.nii.gz \\
        prompt="box 40,30,90,70 slice=12"
    python -m adapt.predict adapter=outputs/demo/<run> input=tiles/ output=masks/ prompt="point 120,80"
    python -m adapt.predict adapter=... input=case.nii.gz output=mask.nii.gz prompt="from_mask=coarse.nii.gz"

Prompts are in the input's pixel grid (``x`` = column, ``y`` = row; see ``adapt.prompt_syntax``)
and are mapped to the model's grid here; masks come back at the input's size and are written
with its geometry (``adapt.predict_io``). For a volume, one box or point on one slice is
propagated through the volume; ``from_mask`` gives a box on every slice the mask covers.
The intensity preprocessing recorded with the adapter is applied first, as in training.
A semantic adapter (``task=semantic``) takes no prompt and writes every class's label value.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from adapt.errors import AdaptError, ConfigError, DataError
from adapt.hub import register_cli_config
from adapt.loading import LoadedAdapter, load_adapter
from adapt.model_card import label_names
from adapt.models.interactive import base_model, decode, image_embeddings
from adapt.models.semantic import ATTRIBUTE as CLASS_PROMPTS
from adapt.models.semantic import class_logits
from adapt.models.sam2 import preprocess
from adapt.predict_io import Scan, is_dicom_series, kind_of, mask_path, read_scan, suffix, write_mask
from adapt.prompt_syntax import SYNTAX, Prompt, parse_prompt, quote_argv
from adapt.transforms.prompts import box_from_mask

log = logging.getLogger(__name__)


def _window(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip(pixels, lo, hi) - lo) / max(hi - lo, 1e-6)


def to_unit(scan: Scan, preprocessing: dict[str, Any]) -> np.ndarray:
    """Pixels ``[Z, C, H, W]`` in [0, 1] as the adapter saw them in training.

    Reads the recorded preprocessing (top level or under ``intensity``): ``bands`` (channels
    to keep), then ``window`` (fixed range, e.g. a CT window in HU) or ``percentiles`` (per
    channel over the whole scan). Without one: /255 (or /65535) for PNG/JPEG, 0.5-99.5
    percentiles for volumes, 2-98 per band for GeoTIFF.
    """
    spec = {**preprocessing, **(preprocessing.get("intensity") or {})}
    pixels = scan.pixels
    if spec.get("bands") is not None:
        bands = list(spec["bands"])
        if max(bands) >= pixels.shape[1]:
            raise DataError(f"{scan.path}: the adapter uses bands {bands}, the file has {pixels.shape[1]}")
        pixels = pixels[:, bands]
    window = spec.get("window") or spec.get("range")
    if window is not None:
        return _window(pixels, float(window[0]), float(window[1])).astype(np.float32)
    if scan.kind in ("png", "jpeg") and spec.get("percentiles") is None:
        return np.clip(pixels / scan.geometry["max_value"], 0, 1).astype(np.float32)
    lo, hi = spec.get("percentiles") or ((2, 98) if scan.kind == "geotiff" else (0.5, 99.5))
    out = np.empty_like(pixels)
    for c in range(pixels.shape[1]):
        p_lo, p_hi = np.percentile(pixels[:, c], [lo, hi])
        out[:, c] = _window(pixels[:, c], p_lo, p_hi)
    return out


class Predictor:
    """An adapted SAM2 that segments one object in 2D images given prompts in image pixels."""

    def __init__(self, loaded: LoadedAdapter, device: str = "auto"):
        self.loaded = loaded
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model = loaded.model.to(self.device).eval()
        self.size = int(loaded.model_info.image_size)

    def _to_model(self, xy: np.ndarray, height: int, width: int) -> np.ndarray:
        """Pixel coordinates of an ``H x W`` image to the model's square grid (pixel centres)."""
        scale = np.array([self.size / width, self.size / height] * (xy.shape[-1] // 2), dtype=np.float32)
        return (xy + 0.5) * scale - 0.5

    @torch.inference_mode()
    def segment(self, image: np.ndarray, box: np.ndarray | None = None, points: np.ndarray | None = None,
                labels: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask ``[H, W]`` of the object a box and/or points select in ``image`` ``[C, H, W]``.

        A single point without a box is ambiguous: SAM2's three candidates are computed and the
        one with the highest predicted IoU is kept.
        """
        _, height, width = image.shape
        pixels = preprocess(torch.from_numpy(image)[None].to(self.device), self.size)
        prompts: dict[str, torch.Tensor] = {}
        if box is not None:
            prompts["input_boxes"] = torch.from_numpy(self._to_model(np.asarray(box, np.float32), height, width)).view(1, 1, 4).to(self.device)
        if points is not None and len(points):
            xy = self._to_model(np.asarray(points, np.float32), height, width)
            prompts["input_points"] = torch.from_numpy(xy).view(1, 1, -1, 2).to(self.device)
            prompts["input_labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.long).view(1, 1, -1).to(self.device)
        multimask = box is None and points is not None and len(points) == 1
        pred = decode(self.model, image_embeddings(self.model, pixels), multimask=multimask, **prompts)
        best = int(pred.iou[0, 0].argmax())
        logits = pred.low_res[0, 0, best][None, None].float()
        return (F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0, 0] > 0).cpu().numpy()

    @property
    def promptless(self) -> bool:
        """Whether the adapter carries class prompts (``task=semantic``) and needs no prompt."""
        return hasattr(base_model(self.model), CLASS_PROMPTS)

    @torch.inference_mode()
    def classify(self, image: np.ndarray) -> np.ndarray:
        """Class indices ``[H, W]`` (0 = background) of a semantic adapter, without a prompt."""
        _, height, width = image.shape
        pixels = preprocess(torch.from_numpy(image)[None].to(self.device), self.size)
        logits = class_logits(self.model, image_embeddings(self.model, pixels)).float()
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits[0].argmax(0).cpu().numpy()


def propagate(predictor: Predictor, images: np.ndarray, start: int, first: np.ndarray) -> np.ndarray:
    """Follow an object from slice ``start`` through a volume, one neighbour at a time.

    Each slice is prompted with the box of its neighbour's mask and the walk stops in each
    direction at the first empty mask -- the slice-by-slice fallback used until SAM2's memory
    propagation is available for prediction.
    """
    masks = np.zeros((len(images), *first.shape), dtype=bool)
    masks[start] = first
    for step in (-1, 1):
        k = start + step
        while 0 <= k < len(images) and masks[k - step].any():
            masks[k] = predictor.segment(images[k], box=box_from_mask(masks[k - step]))
            k += step
    return masks


def predict_scan(predictor: Predictor, scan: Scan, prompt: Prompt | None, guide: Scan | None = None) -> np.ndarray:
    """Masks ``[Z, H, W]`` of the prompted object (boolean), or class indices without a prompt.

    Args:
        predictor: the adapted model.
        scan: the input.
        prompt: a parsed prompt; ``from_mask`` prompts need ``guide``, the mask file read as a
            scan. ``None`` for a semantic adapter: every slice gets a class index map.
    """
    images = to_unit(scan, predictor.loaded.preprocessing)
    if prompt is None:
        return np.stack([predictor.classify(image) for image in images])
    if prompt.from_mask is not None:
        if guide is None or guide.shape != scan.shape:
            raise DataError(f"from_mask={prompt.from_mask}: shape {guide.shape if guide else None} differs "
                            f"from the input's {scan.shape} ({scan.path}); it must be a mask of the same image")
        select = guide.pixels[:, 0] == prompt.mask_label if prompt.mask_label is not None else guide.pixels[:, 0] != 0
        masks = np.zeros(scan.shape, dtype=bool)
        for k in np.flatnonzero(select.any(axis=(1, 2))):
            masks[k] = predictor.segment(images[k], box=box_from_mask(select[k]))
        return masks
    k = prompt.slice if scan.is_volume else 0
    if scan.is_volume and k is None:
        raise ConfigError(f"{scan.path} is a volume of {scan.shape[0]} slices: add slice=K to the prompt "
                          "(e.g. prompt=\"box 40,30,90,70 slice=12\"), or use from_mask=<file>")
    if not scan.is_volume and prompt.slice not in (None, 0):
        raise ConfigError(f"{scan.path} is a 2D image: slice={prompt.slice} does not apply")
    if not 0 <= k < scan.shape[0]:
        raise ConfigError(f"prompt slice={k} is outside {scan.path} (slices 0..{scan.shape[0] - 1})")
    prompt.check_inside(scan.shape[2], scan.shape[1])
    first = predictor.segment(images[k], prompt.box, prompt.points, prompt.point_labels)
    if not scan.is_volume:
        return first[None]
    return propagate(predictor, images, k, first)


@dataclass
class Job:
    """One input and where its mask goes (``guide``: its from_mask file, if any)."""

    input: Path
    output: Path
    guide: Path | None = None


def _output_name(path: Path) -> str:
    return mask_path(kind_of(path), path.name)


def plan_jobs(input: str | Path, output: str | Path, prompt: Prompt | None, overwrite: bool = False) -> list[Job]:
    """Pair inputs with outputs (a folder of cases maps to a folder of masks, same names).

    Raises:
        DataError: the input is missing or holds nothing supported.
        ConfigError: an output exists (without ``overwrite``), or a folder input has a file output.
    """
    source, target = Path(input), Path(output)
    if not source.exists():
        raise DataError(f"input={source} does not exist")
    if source.is_dir() and not is_dicom_series(source):
        cases = sorted(p for p in source.iterdir() if (p.is_file() and _supported(p)) or is_dicom_series(p))
        if not cases:
            raise DataError(f"input={source} holds no NIfTI, DICOM series, PNG/JPEG or GeoTIFF")
        if (target.exists() and not target.is_dir()) or suffix(target) in (".png", ".nii", ".nii.gz", ".tif", ".tiff"):
            raise ConfigError(f"input={source} is a folder of cases: output must be a folder, got {target}")
        jobs = [Job(p, target / _output_name(p)) for p in cases]
    else:
        into_dir = (target.is_dir() and not is_dicom_series(source)) or str(output).endswith(("/", "\\"))
        jobs = [Job(source, target / _output_name(source) if into_dir else target)]
    guide = prompt.from_mask if prompt else None
    for job in jobs:
        if guide is not None:
            job.guide = guide / job.input.name if guide.is_dir() and not is_dicom_series(guide) else guide
            if not job.guide.exists():
                raise DataError(f"from_mask: {job.guide} (the mask for {job.input.name}) does not exist")
    taken = [j.output for j in jobs if j.output.exists() and (j.output.is_file() or any(j.output.iterdir()))]
    if taken and not overwrite:
        shown = ", ".join(map(str, taken[:3])) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise ConfigError(f"output exists: {shown}; choose another output or pass overwrite=true")
    if any(j.output.resolve() == j.input.resolve() for j in jobs):
        raise ConfigError("output would replace the input; choose another output")
    return jobs


def _supported(path: Path) -> bool:
    try:
        kind_of(path)
        return True
    except DataError:
        return False


def foreground_value(loaded: LoadedAdapter, label: int | str | None) -> int:
    """The value written for the object: ``label`` (a name or a number), else the adapter's
    only foreground label, else 1."""
    names = label_names(loaded.label_map)
    if label is not None:
        if str(label).lstrip("-").isdigit():
            return int(label)
        if str(label) not in names:
            raise ConfigError(f"label={label!r} is not in the adapter's label map {names}")
        return names[str(label)]
    foreground = [v for v in names.values() if v != 0]
    return foreground[0] if len(foreground) == 1 else 1


def class_values(loaded: LoadedAdapter) -> np.ndarray:
    """Label values of a semantic adapter's class indices (0 = background, then its classes)."""
    names = label_names(loaded.label_map)
    classes = loaded.metadata.get("classes") or []
    return np.array([0] + [names.get(c, i) for i, c in enumerate(classes, start=1)], dtype=np.uint16)


def run(cfg: DictConfig) -> list[Path]:
    """Predict every input of the ``configs/predict.yaml`` config; returns the written paths."""
    for key in ("adapter", "input", "output"):
        if not cfg.get(key):
            raise ConfigError(f"{key}= is required: python -m adapt.predict adapter=<repo or dir> "
                              "input=<file|folder> output=<file|folder> prompt=\"box x0,y0,x1,y1\"")
    prompt = parse_prompt(str(cfg.prompt)) if cfg.get("prompt") else None
    jobs = plan_jobs(cfg.input, cfg.output, prompt, overwrite=bool(cfg.overwrite))
    loaded = load_adapter(cfg.adapter, revision=cfg.get("revision"), video=False)
    predictor = Predictor(loaded, cfg.get("device", "auto"))
    if prompt is None and not predictor.promptless:
        raise ConfigError(f"prompt= is required: the adapter {cfg.adapter} is promptable, not semantic. {SYNTAX}")
    values = class_values(loaded) if prompt is None else np.array([0, foreground_value(loaded, cfg.get("label"))], np.uint16)
    slice_axis = int(loaded.preprocessing.get("slice_axis", 2))
    written = []
    for job in _progress(jobs):
        scan = read_scan(job.input, slice_axis)
        guide = read_scan(job.guide, slice_axis) if job.guide else None
        masks = predict_scan(predictor, scan, prompt, guide)
        written.append(write_mask(values[masks.astype(np.int64)], scan, job.output))
    return written


def _progress(jobs: list[Job]) -> Iterator[Job]:
    if len(jobs) == 1:
        yield from jobs
        return
    from tqdm import tqdm

    yield from tqdm(jobs, desc="predict", unit="case")


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("predict"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    try:
        for path in run(cfg):
            print(f"wrote {path}")
    except AdaptError as err:
        print(f"\nsam2-adapt: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = quote_argv(sys.argv)
    main()
