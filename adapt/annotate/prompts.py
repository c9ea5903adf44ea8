"""Where each unlabelled case's prompt comes from, decided before a model is loaded.

In this order:

* a row of the prompts file (``prompts=<csv>``, columns ``case`` and ``prompt``, the prompt in
  ``python -m adapt.predict``'s syntax, ``adapt.inference.prompt_syntax``): ``box``/``point`` prompts
  (``prompt``; on a volume followed through it from ``slice=K``), or ``from_mask=<partial label>``:
  on a volume, its labelled slices are the prompts SAM2's memory propagates through the rest
  (``propagation``; ``propagation=boxes`` adapters chain boxes instead), on a 2D image a box around it
  (``from_mask``). A relative ``from_mask`` path is taken relative to the prompts file;
* a semantic adapter (``task=semantic``) and ``prompt=auto`` (the default): each component of its
  coarse class map refined by a box prompt, as ``predict prompt=auto`` does (``auto``).

A case with neither is refused, naming the cases and both ways to prompt them. The worklist records
the source of every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from adapt.data.sources import Case
from adapt.data.tables import read_rows
from adapt.errors import ConfigError
from adapt.inference.prompt_syntax import SYNTAX, Prompt, parse_prompt
from adapt.inference.user_files import check_prompt_fits

SOURCES = ("prompt", "from_mask", "propagation", "auto")


@dataclass
class CasePlan:
    """One unlabelled case, its prompt (``None`` for ``auto``) and where the prompt came from."""

    case: Case
    source: str
    prompt: Prompt | None = None


def read_prompts(path: str | Path, cases: Sequence[Case], slice_axis: int = 2) -> dict[str, Prompt]:
    """Case id -> parsed prompt from a ``case,prompt`` CSV (a case may also be named by its image's file name),
    each checked against its image's header (``adapt.inference.user_files.check_prompt_fits``) before a model is loaded.

    Raises:
        ConfigError: the file is missing or lacks the columns (``adapt.data.tables.read_rows``), a row names no
            unlabelled case or a case named on an earlier row, a prompt does not parse or does not fit its image
            (the row is named), or a ``from_mask`` file is missing.
    """
    path = Path(path)
    fix = f"write a CSV with columns case,prompt, one row per case (prompt as in python -m adapt.predict: {SYNTAX})"
    if not path.is_file():
        raise ConfigError(f"prompts={path}: no such file; {fix}")
    rows = read_rows(path, ("case", "prompt"), f"prompts={path}", fix)
    if not rows:
        raise ConfigError(f"prompts={path}: holds no prompt row; {fix}")
    ids = {c.id: c for c in cases} | {Path(c.image).name: c for c in cases}
    out, lines = {}, {}
    for line, row in enumerate(rows, start=2):
        name = row["case"]
        if name not in ids:
            raise ConfigError(
                f"prompts={path}, line {line}: case {name!r} is not an unlabelled case of the card "
                f"(those are: {sorted(c.id for c in cases)[:8]})"
            )
        case = ids[name]
        if case.id in lines:
            raise ConfigError(
                f"prompts={path}, lines {lines[case.id]} and {line}: case {case.id} is prompted twice; keep one row "
                'per case (the boxes and points of its object in one prompt, joined by ";")'
            )
        lines[case.id] = line
        try:
            prompt = parse_prompt(row["prompt"])
            check_prompt_fits(prompt, Path(case.image), slice_axis)
        except ConfigError as err:
            raise ConfigError(f"prompts={path}, line {line} (case {case.id}): {err}") from None
        if prompt.from_mask is not None:
            prompt.from_mask = prompt.from_mask if prompt.from_mask.is_absolute() else path.parent / prompt.from_mask
            if not prompt.from_mask.exists():
                raise ConfigError(f"prompts={path}, line {line}: from_mask file {prompt.from_mask} does not exist")
        out[case.id] = prompt
    return out


def plan(cases: Sequence[Case], prompts: dict[str, Prompt], semantic: bool, volume: dict[str, bool]) -> list[CasePlan]:
    """The prompt source of every case (see the module doc); ``volume``: case id -> whether it is 3D.

    Raises:
        ConfigError: cases without a prompt and an adapter that is not semantic.
    """
    plans, missing = [], []
    for case in cases:
        prompt = prompts.get(case.id)
        if prompt is None:
            (plans.append(CasePlan(case, "auto")) if semantic else missing.append(case.id))
        elif prompt.from_mask is not None:
            plans.append(CasePlan(case, "propagation" if volume[case.id] else "from_mask", prompt))
        else:
            plans.append(CasePlan(case, "prompt", prompt))
    if missing:
        raise ConfigError(
            f"no prompt for the unlabelled case(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}: "
            "the model is promptable, not semantic. Give prompts=<csv with columns case,prompt> "
            f"({SYNTAX}), or an adapter trained with task=semantic (prompt=auto)"
        )
    return plans
