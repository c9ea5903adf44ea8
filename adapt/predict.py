"""``python -m adapt.predict``: segment files with an adapter, masks in the input's format.

::

    python -m adapt.predict adapter=user/sam2-ct-liver input=case.nii.gz output=mask.nii.gz \\
        prompt="box 40,30,90,70 slice=12"
    python -m adapt.predict adapter=outputs/demo/<run> input=tiles/ output=masks/ prompt="point 120,80"
    python -m adapt.predict adapter=... input=case.nii.gz output=mask.nii.gz prompt="from_mask=coarse.nii.gz"
    python -m adapt.predict adapter=<export dir> backend=onnx input=image.png output=mask.png prompt="box 40,30,90,70"

Prompts are in the input's pixel grid (``x`` = column, ``y`` = row; see ``adapt.inference.prompt_syntax``).
This module pairs inputs with outputs, refuses to overwrite, shows progress and writes each
mask with its input's geometry (``adapt.inference.io``); the model side -- intensities, prompt
mapping, propagation through a volume from one prompted slice, ``from_mask`` boxes on every
slice -- is ``adapt.inference.runner`` (``backend=onnx``: the same runner over an export's graphs,
``adapt.inference.onnx_backend``). A semantic adapter (``task=semantic``) takes no prompt and
writes every class's label value; with ``prompt=auto`` each connected component of its coarse
class map becomes a box prompt that the promptable decoder refines. Masks store labels as the
training card's label files do (its ``mask_values``, recorded in the adapter: 0/255 PNGs for a
0/255 card; NIfTI keeps the card's values); ``mask_values=ids`` writes the label ids as they are.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import hydra
import numpy as np
from omegaconf import DictConfig

from adapt.cli import command_line, register_cli_config, user_errors
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import for_path, mask_name, mask_suffixes, suffix
from adapt.data.formats.dicom import is_series
from adapt.data.headers import check_grids, check_headers, check_inputs_finite, check_labels_finite
from adapt.outputs import claimed
from adapt.errors import ConfigError, DataError
from adapt.guards import finite_stack
from adapt.hub.model_card import label_names
from adapt.inference.prompt_syntax import SYNTAX, Prompt, parse_prompt, quote_argv
from adapt.schema import validate
from adapt.storage import check_writable

if TYPE_CHECKING:
    from adapt.hub.loading import LoadedAdapter
    from adapt.inference.io import Scan, to_unit
    from adapt.inference.runner import Predictor, predict_scan

__all__ = ["Predictor", "plan_jobs", "predict_scan", "run", "to_unit"]
#: Names re-exported from the model side, imported on first use (``lazy: start-up``).
_LAZY = {"Predictor": "adapt.inference.runner", "predict_scan": "adapt.inference.runner", "to_unit": "adapt.inference.io"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adapt.predict' has no attribute {name!r}")

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One input and where its mask goes (``guide``: its from_mask file, if any)."""

    input: Path
    output: Path
    guide: Path | None = None


def _output_name(path: Path) -> str:
    return mask_name(for_path(path, writable=True).name, path.name)


def plan_jobs(input: str | Path, output: str | Path, prompt: Prompt | None, overwrite: bool = False) -> list[Job]:
    """Pair inputs with outputs (a folder of cases maps to a folder of masks, same names).

    Raises:
        DataError: the input is missing or holds nothing supported.
        ConfigError: an output exists (without ``overwrite``), or a folder input has a file output.
    """
    source, target = Path(input), Path(output)
    if not source.exists():
        raise DataError(f"input={source} does not exist")
    if source.is_dir() and not is_series(source):
        cases = sorted(p for p in source.iterdir() if (p.is_file() and _supported(p)) or is_series(p))
        if not cases:
            raise DataError(f"input={source} holds no NIfTI, DICOM series, PNG/JPEG or GeoTIFF")
        if (target.exists() and not target.is_dir()) or suffix(target) in mask_suffixes():
            raise ConfigError(f"input={source} is a folder of cases: output must be a folder, got {target}")
        jobs = [Job(p, target / _output_name(p)) for p in cases]
    else:
        into_dir = (target.is_dir() and not is_series(source)) or str(output).endswith(("/", "\\"))
        jobs = [Job(source, target / _output_name(source) if into_dir else target)]
    guide = prompt.from_mask if prompt else None
    for job in jobs:
        if guide is not None:
            job.guide = guide / job.input.name if guide.is_dir() and not is_series(guide) else guide
            if not job.guide.exists():
                raise DataError(f"from_mask: {job.guide} (the mask for {job.input.name}) does not exist")
    taken = [j.output for j in jobs if j.output.exists() and (j.output.is_file() or any(j.output.iterdir()))]
    if taken and not overwrite:
        shown = ", ".join(map(str, taken[:3])) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise ConfigError(f"output exists: {shown}; choose another output or pass overwrite=true")
    if any(j.output.resolve() == j.input.resolve() for j in jobs):
        raise ConfigError("output would replace the input; choose another output")
    for job in jobs:  # before the model is loaded: a wrong format or folder is found in seconds
        check_output(job)
    return jobs


def check_output(job: Job) -> None:
    """Refuse an output of another format than the input's mask, or in a folder that cannot be written.

    Raises:
        ConfigError: names the output, the format it must have and why.
    """
    kind = for_path(job.input, writable=True)
    wanted = kind.mask_suffixes
    if wanted and suffix(job.output) not in wanted:
        raise ConfigError(f"output={job.output}: the mask of {job.input.name} ({kind.name}) is written in the input's "
                          f"format and geometry, so it must end in {' or '.join(wanted)}")
    if not wanted and suffix(job.output) in mask_suffixes():
        raise ConfigError(f"output={job.output}: the mask of {kind.title} {job.input} is a folder as the input is; "
                          "give a folder")
    check_writable(job.output.parent if wanted else job.output, "output")


def _supported(path: Path) -> bool:
    try:
        for_path(path, writable=True)
        return True
    except DataError:
        return False


def foreground_value(loaded: LoadedAdapter, label: int | str | None) -> int:
    """The value written for the object: ``label`` (a name or a number), else the label of the
    adapter's (first) target, else its only foreground label, else 1."""
    names = label_names(loaded.label_map)
    if label is not None:
        if str(label).lstrip("-").isdigit():
            return int(label)
        if str(label) not in names:
            raise ConfigError(f"label={label!r} is not in the adapter's label map {names}")
        return names[str(label)]
    targets = [t for t in loaded.metadata.get("targets") or [] if t in names]
    if targets:
        return names[targets[0]]
    foreground = [v for v in names.values() if v != 0]
    return foreground[0] if len(foreground) == 1 else 1


def class_values(loaded: LoadedAdapter) -> np.ndarray:
    """Label values of a semantic adapter's class indices (0 = background, then its classes)."""
    names = label_names(loaded.label_map)
    classes = loaded.metadata.get("classes") or []
    return np.array([0] + [names.get(c, i) for i, c in enumerate(classes, start=1)], dtype=np.uint16)


def run(cfg: DictConfig) -> list[Path]:
    """Predict every input of the ``configs/predict.yaml`` config; returns the written paths."""
    from adapt.inference.io import drop_nodata, write_mask  # lazy: start-up
    from adapt.inference.onnx_backend import adapter_preprocessing, load_predictor  # lazy: start-up
    from adapt.inference.runner import FROM_MASK_FIX, predict_scan  # lazy: start-up

    validate(cfg, "predict")
    for key in ("adapter", "input", "output"):
        if not cfg.get(key):
            raise ConfigError(f"{key}= is required: python -m adapt.predict adapter=<repo or dir> "
                              "input=<file|folder> output=<file|folder> prompt=\"box x0,y0,x1,y1\"")
    auto = str(cfg.get("prompt") or "").strip() == "auto"
    prompt = parse_prompt(str(cfg.prompt)) if cfg.get("prompt") and not auto else None
    jobs = plan_jobs(cfg.input, cfg.output, prompt, overwrite=bool(cfg.overwrite))
    backend = str(cfg.get("backend") or "torch")
    check_inputs_finite([job.input for job in jobs], adapter_preprocessing(cfg.adapter, backend, cfg.get("revision")))
    check_labels_finite([job.guide for job in jobs if job.guide])
    check_headers([job.input for job in jobs] + [job.guide for job in jobs if job.guide])
    check_grids([(job.input, job.guide) for job in jobs if job.guide], role="from_mask", fix=FROM_MASK_FIX)
    predictor = load_predictor(cfg.adapter, backend, cfg.get("revision"),
                               cfg.get("device", "auto"), cfg.get("propagation", "auto"), int(cfg.get("fill_hole_area", 8)),
                               bool(cfg.get("allow_base_mismatch", False)))
    loaded = predictor.loaded
    if prompt is None and not predictor.promptless:
        why = "prompt=auto needs a semantic adapter (task=semantic) for its coarse masks" if auto else "prompt= is required"
        raise ConfigError(f"{why}: the adapter {cfg.adapter} is promptable, not semantic. {SYNTAX}")
    values = mask_values(loaded, prompt, cfg.get("label"), str(cfg.get("mask_values") or "card"))
    written = []
    for job in _progress(jobs):
        scan = read_input(job.input, loaded)
        guide = read_input(job.guide, loaded, label=True) if job.guide else None
        masks = drop_nodata(auto_scan(predictor, scan) if auto else predict_scan(predictor, scan, prompt, guide), scan)
        written.append(write_mask(values[masks.astype(np.int64)], scan, job.output))
    return written


def read_input(path: Path, loaded: LoadedAdapter, label: bool = False) -> Scan:
    """A file as ``predict`` reads it: on the grid the adapter was trained on (its slice axis and
    spacing), non-finite pixels refused or replaced as its card says (``adapt.app`` reads the same way)."""
    from adapt.inference.io import read_scan  # lazy: start-up

    scan = read_scan(path, int(loaded.preprocessing.get("slice_axis", 2)), loaded.preprocessing.get("spacing"), label=label)
    if not label:
        scan.pixels = finite_stack(scan.pixels, path, loaded.preprocessing)
    return scan


def mask_values(loaded: LoadedAdapter, prompt: Prompt | None, label: int | str | None = None,
                encoding: str = "card") -> np.ndarray:
    """The value written for each mask index: class values without a prompt, else ``[0, object value]``,
    stored as the adapter's card stores labels (its ``mask_values``: a 0/255 card gets 0/255 masks)
    unless ``encoding="ids"`` (the label ids as they are)."""
    ids = class_values(loaded) if prompt is None else np.array([0, foreground_value(loaded, label)], np.int64)
    return LabelEncoding.of_adapter(loaded.metadata, encoding).encode(ids)


def auto_scan(predictor: Predictor, scan: Any, batch_size: int = 8) -> np.ndarray:
    """``prompt=auto``: class indices ``[Z, H, W]`` from the semantic head's components, each
    refined as a box prompt by the promptable decoder (no ground truth, no user prompt)."""
    from adapt.evaluation.engine import Engine
    from adapt.inference.io import to_unit  # lazy: start-up

    return Engine(predictor, batch_size).auto(to_unit(scan, predictor.loaded.preprocessing))


def _progress(jobs: list[Job]) -> Iterator[Job]:
    if len(jobs) == 1:
        yield from jobs
        return
    from tqdm import tqdm

    yield from tqdm(jobs, desc="predict", unit="case")


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("predict"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    with user_errors(), claimed(cfg.get("output"), "output"):
        for path in run(cfg):
            print(f"wrote {path}")


if __name__ == "__main__":
    sys.argv = quote_argv(sys.argv)
    command_line(main, "predict")
