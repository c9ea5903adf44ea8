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
class map becomes a box prompt that the promptable decoder refines (``adapt.inference.engine.auto_scan``).
Files are read and masks valued as the app reads and values them (``adapt.inference.user_files``). Masks store labels as the
training card's label files do (its ``mask_values``, recorded in the adapter: 0/255 PNGs for a
0/255 card; NIfTI keeps the card's values); ``mask_values=ids`` writes the label ids as they are.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import hydra
import numpy as np
from omegaconf import DictConfig

from adapt.cli import command_line, register_cli_config, user_errors
from adapt.outputs import claimed
from adapt.errors import ConfigError, DataError
from adapt.data.headers import check_grids, check_headers, check_inputs_finite, check_labels_finite
from adapt.data.formats import for_path, header_channels, mask_name, mask_suffixes, suffix
from adapt.data.formats.dicom import is_series
from adapt.inference.prompt_syntax import SYNTAX, Prompt, parse_prompt, quote_argv
from adapt.schema import validate
from adapt.storage import check_writable

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
    replaced = [j.input for j in jobs if j.output.resolve() == j.input.resolve()]
    if replaced:  # before the overwrite rule: overwrite=true does not allow this either
        raise ConfigError(f"output={output} would replace the input {replaced[0]}; choose another output")
    _check_distinct(jobs, output)
    taken = [j.output for j in jobs if j.output.exists() and (j.output.is_file() or any(j.output.iterdir()))]
    if taken and not overwrite:
        shown = ", ".join(map(str, taken[:3])) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise ConfigError(f"output exists: {shown}; choose another output or pass overwrite=true")
    for job in jobs:  # before the model is loaded: a wrong format or folder is found in seconds
        check_output(job)
    return jobs


def _check_distinct(jobs: list[Job], output: str | Path) -> None:
    """Refuse two inputs whose masks get one name (``a.png`` and ``a.jpg``: both masks are ``a.png``), which
    would keep only the last one written.

    Raises:
        ConfigError: names both inputs and the mask file.
    """
    first: dict[Path, Path] = {}
    for job in jobs:
        other = first.setdefault(job.output.resolve(), job.input)
        if other != job.input:
            raise ConfigError(
                f"output={output}: the masks of {other.name} and {job.input.name} would both be written to "
                f"{job.output} (one would be lost); rename one of the inputs, or predict them into separate outputs"
            )


def check_output(job: Job) -> None:
    """Refuse an output of another format than the input's mask, or in a folder that cannot be written.

    Raises:
        ConfigError: names the output, the format it must have and why.
    """
    kind = for_path(job.input, writable=True)
    wanted = kind.mask_suffixes
    if wanted and suffix(job.output) not in wanted:
        raise ConfigError(
            f"output={job.output}: the mask of {job.input.name} ({kind.name}) is written in the input's "
            f"format and geometry, so it must end in {' or '.join(wanted)}"
        )
    if not wanted and suffix(job.output) in mask_suffixes():
        raise ConfigError(
            f"output={job.output}: the mask of {kind.title} {job.input} is a folder as the input is; give a folder"
        )
    check_writable(job.output.parent if wanted else job.output, "output")


def _supported(path: Path) -> bool:
    try:
        for_path(path, writable=True)
        return True
    except DataError:
        return False


def run(cfg: DictConfig) -> list[Path]:
    """Predict every input of the ``configs/predict.yaml`` config; returns the written paths."""
    from adapt.inference.engine import auto_scan  # lazy: start-up
    from adapt.inference.io import check_channel_count, drop_nodata, write_mask  # lazy: start-up
    from adapt.inference.onnx_backend import adapter_preprocessing, load_predictor  # lazy: start-up
    from adapt.inference.runner import FROM_MASK_FIX, predict_scan  # lazy: start-up
    from adapt.inference.user_files import check_prompt_fits, mask_values, read_input, slice_axis_of  # lazy: start-up

    validate(cfg, "predict")
    for key in ("adapter", "input", "output"):
        if not cfg.get(key):
            raise ConfigError(
                f"{key}= is required: python -m adapt.predict adapter=<repo or dir> "
                'input=<file|folder> output=<file|folder> prompt="box x0,y0,x1,y1"'
            )
    auto = str(cfg.get("prompt") or "").strip() == "auto"
    prompt = parse_prompt(str(cfg.prompt)) if cfg.get("prompt") and not auto else None
    jobs = plan_jobs(cfg.input, cfg.output, prompt, overwrite=bool(cfg.overwrite))
    backend = str(cfg.get("backend") or "torch")
    preprocessing = adapter_preprocessing(cfg.adapter, backend, cfg.get("revision"))
    for job in jobs:  # from the headers, before the model loads (to_unit checks the pixels again)
        if (found := header_channels(job.input)) is not None:
            check_channel_count(job.input, found, preprocessing)
        if prompt is not None and job.guide is None:
            check_prompt_fits(prompt, job.input, slice_axis_of(preprocessing))
    check_inputs_finite([job.input for job in jobs], preprocessing)
    check_labels_finite([job.guide for job in jobs if job.guide])
    check_headers([job.input for job in jobs] + [job.guide for job in jobs if job.guide])
    check_grids([(job.input, job.guide) for job in jobs if job.guide], role="from_mask", fix=FROM_MASK_FIX)
    predictor = load_predictor(
        cfg.adapter,
        backend,
        cfg.get("revision"),
        cfg.get("device", "auto"),
        cfg.get("propagation", "auto"),
        cfg.get("fill_hole_area"),
        bool(cfg.get("allow_base_mismatch", False)),
    )
    loaded = predictor.loaded
    if prompt is None and not predictor.promptless:
        why = (
            "prompt=auto needs a semantic adapter (task=semantic) for its coarse masks"
            if auto
            else "prompt= is required"
        )
        raise ConfigError(f"{why}: the adapter {cfg.adapter} is promptable, not semantic. {SYNTAX}")
    values = mask_values(loaded, prompt, cfg.get("label"), str(cfg.get("mask_values") or "card"))
    written = []
    for job in _progress(jobs):
        scan = read_input(job.input, loaded)
        guide = read_input(job.guide, loaded, label=True) if job.guide else None
        masks = drop_nodata(auto_scan(predictor, scan) if auto else predict_scan(predictor, scan, prompt, guide), scan)
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
    with user_errors(), claimed(cfg.get("output"), "output"):
        for path in run(cfg):
            print(f"wrote {path}")


if __name__ == "__main__":
    sys.argv = quote_argv(sys.argv)
    command_line(main, "predict")
