"""The typed schema of every command's config, checked once, right after Hydra composes it.

Hydra rejects unknown command-line keys and unknown group choices; it does not know that
``optim.lr`` must be positive, that ``data.batch_size=0`` cannot batch, that
``model.image_size`` must be a positive side or that ``adapter.rank=0`` adds nothing. Left
to the libraries, such values fail minutes later inside peft, Lightning or torch, with
messages that blame something else. Here each config group is a dataclass whose field types
and ``rule`` metadata (ranges, choices, multiples, custom checks) say what is valid;
``validate(cfg, command)`` walks the composed config against it and raises one
``ConfigError`` listing every problem with its key, its value and what is valid.

Choices are typed here only for the Hub command's actions (``HUB_ACTIONS``, words of the command
line itself): every other list lives once, in a light module of the code that implements it
(``adapt.adapters.kinds``, ``adapt.tasks``, ``adapt.transforms.shift_table``, the ``names``
modules of ``models``, ``transforms``, ``data``, ``inference`` and ``training``), below the
schema's layer, so a new choice is one edit there and the door still answers before torch loads.

It runs right after composition for ``train`` (a Hydra callback, ``adapt.training.run_dir.Preflight``,
before Hydra creates or writes the run directory) and first thing in ``train(cfg)``,
``evaluate(cfg)``, ``predict.run(cfg)`` and ``hub.run(cfg)``, so in-process calls get the
same checks as the command line.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from adapt.adapters.kinds import KINDS, PLACEMENTS, in_blocks, named, with_options
from adapt.data.names import (
    EVALUATION_SPLITS,
    CACHE_MODES,
    MASK_PROMPT,
    OBJECT_MODES,
    OUTPUT_CHOICES,
    PROMPT_FRAME_MODES,
    REQUIRE_MODES,
)
from adapt.errors import AdaptError, ConfigError, not_one_of
from adapt.inference.names import BACKENDS, EXPORT_FORMATS, PROMPTS, PROPAGATION_MODES, QUANTIZE
from adapt.inference.names import PRECISIONS as EVAL_PRECISIONS
from adapt.models.backbones import backbone_of
from adapt.models.names import (
    DIRECTIONS,
    EMBEDDING_CACHE_DTYPES,
    EMBEDDING_CACHE_MODES,
    HUB_IDS,
    INPUT_CHANNEL_MODES,
    OFFLINE_FALLBACKS,
    TARGET_PRESETS,
    TINY_MODELS,
)
from adapt.tasks import CLICK_GRAD, EVALUATED, PIXEL_LOSSES, TASKS
from adapt.training.names import LOGGERS
from adapt.transforms.names import PROMPT_KINDS
from adapt.transforms.shift_table import SHIFTS

log = logging.getLogger(__name__)

MISSING = object()
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: Lightning's values of ``trainer.precision`` and ``trainer.accelerator`` (its Trainer takes more forms).
PRECISIONS = (
    "32-true",
    "32",
    "bf16-mixed",
    "bf16-true",
    "bf16",
    "16-mixed",
    "16-true",
    "16",
    "64-true",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def rule(
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
    multiple_of: int | None = None,
    check: Callable[[Any], str | None] | None = None,
    hint: str = "",
) -> Any:
    """A schema field: the bounds, choices or custom ``check`` (returns a problem or ``None``) of a value.

    Bounds and choices apply to each element of a list.
    """
    return field(
        default=None,
        metadata={
            "ge": ge,
            "gt": gt,
            "le": le,
            "lt": lt,
            "choices": choices,
            "multiple_of": multiple_of,
            "check": check,
            "hint": hint,
        },
    )


# --------------------------------------------------------------------------- custom checks


def _model_name(name: Any) -> str | None:
    """A preset, ``tiny``, an existing local folder or a Hub id; a path-like name that is not there is refused."""

    text = str(name)
    if text in HUB_IDS or text in TINY_MODELS or text.startswith("random:"):
        return None
    path = Path(text).expanduser()
    if path.exists():
        return None if path.is_dir() else f"{path} is a file; give the folder of a saved SAM2 (config.json + weights)"
    if text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") != 1 or not HUB_ID.match(text):
        return (
            "no such local folder, and not a Hub id (user/name); give an existing folder, a Hub id such as "
            f"facebook/sam2.1-hiera-tiny, or a preset: model={'|'.join([*HUB_IDS, *TINY_MODELS])}"
        )
    return None


def _existing_file(value: Any) -> str | None:
    path = Path(str(value)).expanduser()
    if not path.is_file():
        return f"no such file ({path.absolute()}); give the path of an existing file"
    return None


def _checkpoint_file(value: Any) -> str | None:
    from adapt.guards import torch_file_problem  # lazy: start-up

    problem = _existing_file(value)
    if problem is None and (problem := torch_file_problem(value)) is not None:
        problem += "; give a Meta-format .pt file saved with torch.save (e.g. MedSAM2_latest.pt)"
    return problem


def _device(value: Any) -> str | None:
    text = str(value)
    if not DEVICE.match(text):
        return "must be auto, cpu, cuda, cuda:N or mps"
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible here; use device=cpu (or auto)"
        if ":" in text and int(text.split(":")[1]) >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
    return None


def _accelerator(value: Any) -> str | None:
    text = str(value)
    if text not in ACCELERATORS:
        return f"must be one of {list(ACCELERATORS)}"
    if text in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible here; use trainer.accelerator=cpu (or trainer=cpu)"
    return None


def _devices(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1)):
        return None
    if isinstance(value, str) and re.fullmatch(r"-1|\d+(,\d+)*,?", value.strip()) and value.strip() != "0":
        return None
    if isinstance(value, (list, ListConfig)) and value and all(isinstance(v, int) and v >= 0 for v in value):
        return None
    return "must be auto, a number of devices >= 1 (-1: all), or a list of device indices"


def _strategy(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, (Mapping, DictConfig)) and "_target_" in value):
        return None
    return "must be a strategy name (auto, ddp, ...) or a mapping with _target_"


def _interval(value: Any) -> str | None:
    """``val_check_interval``: a fraction of an epoch in (0, 1] or a number of steps >= 1."""
    if (
        isinstance(value, float)
        and 0 < value <= 1
        or isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 1
    ):
        return None
    return "must be a fraction of an epoch in (0, 1] or a number of training steps >= 1"


def _limit(value: Any) -> str | None:
    """``limit_*_batches`` / ``overfit_batches``: null, a fraction in [0, 1] or a number of batches."""
    if value is None or isinstance(value, float) and 0 <= value <= 1 or isinstance(value, int) and value >= 0:
        return None
    return "must be null, a fraction in [0, 1] or a number of batches >= 0"


def _adapter_targets(value: Any) -> str | None:
    if isinstance(value, str) or (
        isinstance(value, (list, ListConfig)) and value and all(isinstance(v, str) for v in value)
    ):
        return None

    return f"must be a non-empty list of presets {sorted(TARGET_PRESETS)} or module-name regexes"


def _blocks(value: Any) -> str | None:
    if value is None or isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    if isinstance(value, (list, ListConfig)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        return None
    return "must be null (every block), N >= 1 (the last N blocks) or a list of block indices >= 0"


def _clicks(value: Any) -> str | None:
    if value is None or str(value).lower() in ("off", "none", "false", "0", "[]"):
        return None
    values = list(value) if isinstance(value, (list, ListConfig)) else [value]
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        return None
    return "must be a list of click counts >= 1 (e.g. clicks=[1,3,5,10]) or off"


def _save_masks(value: Any) -> str | None:
    if str(value) == "all" or isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    if isinstance(value, (list, ListConfig)) and all(isinstance(v, str) for v in value):
        return None
    return "must be a number of cases >= 0, all, or a list of case ids"


def _train_cases(value: Any) -> str | None:
    if value is None or value == "all" or isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return "must be all (or null) or a number of training cases (patients) >= 1"


def _shift(value: Any) -> str | None:
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, ListConfig)) else [0]
    if all(isinstance(n, str) and (n in SHIFTS or n in ("all", "none")) for n in names):
        return None
    return f"must be null, all, or one or a list of {list(SHIFTS)}"


def _severity(value: Any) -> str | None:
    values = list(value) if isinstance(value, (list, ListConfig)) else [value]
    if values and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 5 for v in values):
        return None
    return "must be a severity or a list of severities from 0 (none) to 5"


def _label(value: Any) -> str | None:
    return (
        None
        if value is None or isinstance(value, (int, str)) and not isinstance(value, bool)
        else "must be a label value (a number) or a label name"
    )


# --------------------------------------------------------------------------- train


@dataclass
class Model:
    name: str = rule(check=_model_name)
    revision: str | None = rule()
    checkpoint: str | None = rule(check=_checkpoint_file, hint="a Meta-format .pt file")
    image_size: int = rule(
        ge=56,
        hint="e.g. 1024 (SAM2's own), 512 or 256; a side the backbone's trunk cannot take "
        "is mapped to the nearest it can (multiples of 64; 14 for the SAM 3 tracker)",
    )
    offline_fallback: str = rule(choices=OFFLINE_FALLBACKS)
    gradient_checkpointing: bool = rule()


@dataclass
class Lora:
    kind: str = rule(choices=with_options("lora"))
    rank: int = rule(ge=1, hint="e.g. 8")
    alpha: float = rule(gt=0, hint="e.g. 2 x rank")
    dropout: float = rule(ge=0, lt=1)
    targets: Any = rule(check=_adapter_targets)
    blocks: Any = rule(check=_blocks)
    modules_to_save: list[str] | None = rule()
    task_modules: list[str] | None = rule()
    input_channels: str = rule(choices=INPUT_CHANNEL_MODES)


@dataclass
class Bottleneck:
    kind: str = rule(choices=with_options("bottleneck"))
    reduction: int = rule(ge=1, hint="hidden width = block width / reduction")
    placement: list[str] = rule(choices=PLACEMENTS)
    blocks: Any = rule(check=_blocks)
    mlp_scale: float = rule(gt=0)
    task_modules: list[str] | None = rule()
    input_channels: str = rule(choices=INPUT_CHANNEL_MODES)


@dataclass
class Partial:
    kind: str = rule(choices=with_options("partial"))
    modules: list[str] | None = rule()
    blocks: Any = rule(
        check=lambda v: (
            f"must be null: adapter={'|'.join(with_options('partial'))} adds no layers to "
            f"the Hiera blocks (adapter.blocks is an option of {named(in_blocks())})"
        )
    )
    task_modules: list[str] | None = rule()
    input_channels: str = rule(choices=INPUT_CHANNEL_MODES)


#: The options section that each ``Kind.options`` (``adapt.adapters.kinds``) names, by its class name in lower case.
ADAPTER_SECTIONS = {section.__name__.lower(): section for section in (Lora, Bottleneck, Partial)}
ADAPTER_SCHEMAS = {name: ADAPTER_SECTIONS[kind.options] for name, kind in KINDS.items()}


@dataclass
class Prompt:
    kind: str = rule(choices=(*PROMPT_KINDS, MASK_PROMPT))
    jitter: float = rule(ge=0, lt=1, hint="outward box noise, a fraction of the box side")
    num_positive: int = rule(ge=0)
    num_negative: int = rule(ge=0)
    seed: int | None = rule()


@dataclass
class Clip:
    length: int = rule(ge=1)
    require: str = rule(choices=REQUIRE_MODES)
    prompt_frames: str = rule(choices=PROMPT_FRAME_MODES)
    num_prompt_frames: int = rule(ge=1)
    stride: int = rule(ge=1)
    val_clips_per_case: int = rule(ge=1)


@dataclass
class Data:
    card: str = rule()
    root: str | None = rule()
    batch_size: int = rule(ge=1)
    val_batch_size: int = rule(ge=1)
    num_workers: int = rule(ge=0)
    augment: bool = rule()
    device_transforms: bool = rule()
    objects: str = rule(choices=OBJECT_MODES)
    empty_share: float = rule(ge=0, lt=1)
    cache: str = rule(choices=CACHE_MODES)
    cache_dir: str | None = rule()
    prepare_workers: int | None = rule(ge=1)
    early_start: bool = rule()
    shards: str | None = rule()
    skip_bad_cases: bool = rule()
    val_max_slices_per_case: int | None = rule(ge=1)
    train_cases: Any = rule(check=_train_cases)
    prompt: Prompt = rule()
    clip: Clip | None = rule()


@dataclass
class Trainer:
    accelerator: str = rule(check=_accelerator)
    devices: Any = rule(check=_devices)
    num_nodes: int = rule(ge=1)
    strategy: Any = rule(check=_strategy)
    precision: str | int = rule(choices=PRECISIONS + (16, 32, 64))
    max_epochs: int = rule(ge=-1)
    max_steps: int = rule(ge=-1)
    accumulate_grad_batches: int = rule(ge=1)
    gradient_clip_val: float | None = rule(ge=0)
    log_every_n_steps: int = rule(ge=1)
    val_check_interval: Any = rule(check=_interval)
    check_val_every_n_epoch: int | None = rule(ge=1)
    limit_train_batches: Any = rule(check=_limit)
    limit_val_batches: Any = rule(check=_limit)
    overfit_batches: Any = rule(check=_limit)
    num_sanity_val_steps: int = rule(ge=-1)
    deterministic: bool | str | None = rule()
    benchmark: bool | None = rule()


@dataclass
class Logger:
    kind: str = rule(choices=LOGGERS)
    project: str | None = rule()
    entity: str | None = rule()
    offline: bool | None = rule()
    tags: list[str] | None = rule()


@dataclass
class Optim:
    lr: float = rule(gt=0, hint="e.g. 1e-4")
    weight_decay: float = rule(ge=0)
    warmup_steps: int = rule(ge=0)
    max_warmup_fraction: float = rule(gt=0, le=1)
    min_lr_ratio: float = rule(ge=0, le=1)


@dataclass
class Progress:
    lines: bool | str = rule(check=lambda v: None if v in (True, False, "auto") else "must be auto, true or false")
    every_s: float = rule(gt=0)


@dataclass
class EmbeddingCache:
    mode: str = rule(choices=EMBEDDING_CACHE_MODES)
    directory: str = rule()
    dtype: str = rule(choices=EMBEDDING_CACHE_DTYPES)
    namespace: str | None = rule()


@dataclass
class Prompts:
    iterations: int = rule(ge=0)
    grad: str = rule(choices=CLICK_GRAD)
    seed: int = rule()
    direction: str = rule(choices=DIRECTIONS)


@dataclass
class Loss:
    dice: float = rule(ge=0)
    pixel_term: float = rule(ge=0)
    pixel: str = rule(choices=PIXEL_LOSSES)
    iou: float = rule(ge=0)
    presence: float = rule(ge=0)


@dataclass
class Train:
    name: str = rule()
    task: str = rule(choices=tuple(sorted(TASKS)))
    seed: int = rule()
    validate_before: bool = rule()
    ckpt_path: str | None = rule()
    init_adapter: str | None = rule()
    overwrite: bool = rule()
    compile: bool | str = rule()
    out_dir: str = rule()
    model: Model = rule()
    adapter: Any = rule()  # by kind: ADAPTER_SCHEMAS
    data: Data = rule()
    trainer: Trainer = rule()
    logger: Logger = rule()
    optim: Optim = rule()
    progress: Progress = rule()
    embedding_cache: EmbeddingCache = rule()
    prompts: Prompts = rule()
    loss: Loss = rule()


# --------------------------------------------------------------------------- evaluate, predict, hub


@dataclass
class EvaluateData:
    card: str | None = rule()
    root: str | None = rule()


@dataclass
class Evaluate:
    adapter: str | None = rule()
    revision: str | None = rule()
    allow_base_mismatch: bool = rule()
    model: str | None = rule()
    image_size: int | None = rule(ge=56)
    compare: str | None = rule()
    data: EvaluateData = rule()
    split: str = rule(choices=EVALUATION_SPLITS)
    task: str = rule(choices=EVALUATED)
    prompt: str | None = rule(choices=PROMPTS)
    seed: int = rule()
    jitter: float = rule(ge=0, lt=1)
    num_points: int = rule(ge=1)
    components: bool = rule()
    clicks: Any = rule(check=_clicks)
    min_area: int = rule(ge=0)
    nsd_tolerance_mm: float = rule(gt=0)
    batch_size: int = rule(ge=1)
    precision: str | int = rule(choices=(*EVAL_PRECISIONS, 32))
    device: str = rule(check=_device)
    backend: str = rule(choices=BACKENDS)
    save_masks: Any = rule(check=_save_masks)
    mask_values: str = rule(choices=OUTPUT_CHOICES)
    fill_hole_area: int | None = rule(ge=0)
    shift: Any = rule(check=_shift)
    severity: Any = rule(check=_severity)
    in_domain: bool | str = rule()
    in_domain_root: str | None = rule()
    out: str | None = rule()
    overwrite: bool = rule()


@dataclass
class Predict:
    adapter: str | None = rule()
    revision: str | None = rule()
    allow_base_mismatch: bool = rule()
    input: str | None = rule()
    output: str | None = rule()
    prompt: str | None = rule()
    label: Any = rule(check=_label)
    mask_values: str = rule(choices=OUTPUT_CHOICES)
    overwrite: bool = rule()
    device: str = rule(check=_device)
    backend: str = rule(choices=BACKENDS)
    propagation: str = rule(choices=PROPAGATION_MODES)
    fill_hole_area: int | None = rule(ge=0)


#: ``python -m adapt.hub <action>``: the Hub command's actions (``adapt.hub.share.run``). The one
#: choice list kept here: the hub package sits above the schema's layer, and these are words of
#: the command line itself.
HUB_ACTIONS = ("push", "pull")


@dataclass
class Hub:
    action: str | None = rule(choices=HUB_ACTIONS)
    adapter: str | None = rule()
    repo_id: str | None = rule(check=lambda v: None if HUB_ID.match(str(v)) else "must be of the form user/name")
    revision: str | None = rule()
    private: bool = rule()
    merge: bool = rule()
    out_dir: str | None = rule()
    overwrite: bool = rule()
    dry_run: bool = rule()
    space_app: bool = rule()
    commit_message: str | None = rule()


@dataclass
class Export:
    adapter: str | None = rule()
    revision: str | None = rule()
    allow_base_mismatch: bool = rule()
    format: str = rule(choices=EXPORT_FORMATS)
    quantize: str = rule(choices=QUANTIZE)
    out: str | None = rule()
    overwrite: bool = rule()
    check: bool = rule()


@dataclass
class App:
    adapter: str | None = rule()
    revision: str | None = rule()
    allow_base_mismatch: bool = rule()
    backend: str = rule(choices=BACKENDS)
    device: str = rule(check=_device)
    propagation: str = rule(choices=PROPAGATION_MODES)
    fill_hole_area: int | None = rule(ge=0)
    out_dir: str = rule()
    mask_values: str = rule(choices=OUTPUT_CHOICES)
    host: str = rule()
    port: int = rule(ge=1, le=65535)
    share: bool = rule()
    worklist: str | None = rule(check=_existing_file)


@dataclass
class Annotate:
    action: str = rule(choices=("run", "calibrate", "save"))
    adapter: str | None = rule()
    revision: str | None = rule()
    allow_base_mismatch: bool = rule()
    model: str | None = rule()
    data: EvaluateData = rule()
    prompts: str | None = rule(check=_existing_file)
    out: str | None = rule()
    overwrite: bool = rule()
    accept_dice: float = rule(gt=0, le=1)
    split: str = rule(choices=("train", "val", "test", "all"))
    seed: int = rule()
    device: str = rule(check=_device)
    propagation: str = rule(choices=("auto", "memory", "boxes"))
    fill_hole_area: int | None = rule(ge=0)
    worklist: str | None = rule(check=_existing_file)
    cases: str = rule()


SCHEMAS = {
    "train": Train,
    "evaluate": Evaluate,
    "predict": Predict,
    "hub": Hub,
    "export": Export,
    "app": App,
    "annotate": Annotate,
}
#: Keys a composed config may hold beside the schema's (Hydra's own).
HYDRA_KEYS = {"hydra", "defaults"}


# --------------------------------------------------------------------------- the walker


def validate(cfg: DictConfig | Mapping[str, Any], command: str) -> None:
    """Check ``cfg`` against the schema of ``command`` (``train``, ``evaluate``, ``predict``, ``hub``).

    Raises:
        ConfigError: every problem found, one per line: key, value, what is valid.
    """
    problems: list[str] = []
    _walk(cfg, SCHEMAS[command], "", problems, top=True)
    if command == "train":
        problems += _train_extras(cfg)
    if problems:
        head = "the config has a problem" if len(problems) == 1 else f"the config has {len(problems)} problems"
        raise ConfigError(
            f"{head} (change it on the command line, e.g. key=value, or in the recipe):\n  - " + "\n  - ".join(problems)
        )
    if command == "train":
        card = _training_card(cfg)
        if card is not None:
            card.require_facts()  # a card drafted by `adapt.data init` names its licence and citation first


def _walk(node: Any, schema: type, prefix: str, problems: list[str], top: bool = False) -> None:
    if not isinstance(node, (Mapping, DictConfig)):
        problems.append(f"{prefix.rstrip('.')}={_show(node)} must be a mapping of options")
        return
    hints = _hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    other_kinds = {f.name for kind in ADAPTER_SCHEMAS.values() for f in dataclasses.fields(kind)}
    for key in node.keys():
        if key in fields or (top and key in HYDRA_KEYS) or schema is Trainer:
            continue
        if schema in ADAPTER_SCHEMAS.values() and key in other_kinds:  # a recipe's options after adapter=<other kind>
            log.warning(
                "%s%s is an option of another adapter kind; adapter=%s ignores it", prefix, key, _get(node, "kind")
            )
            continue
        problems.append(f"{prefix}{key}: unknown key; valid keys are {sorted(fields)}")
    if schema is Trainer:
        problems += _trainer_keys(node, prefix)
    for name, spec in fields.items():
        value = _get(node, name)
        if value is MISSING:
            continue
        key = f"{prefix}{name}"
        if name == "adapter" and schema is Train:
            kind = _get(value, "kind") if isinstance(value, (Mapping, DictConfig)) else None
            if not isinstance(kind, str) or kind not in ADAPTER_SCHEMAS:
                problems.append(f"adapter.kind={_show(kind)} is not one of {sorted(ADAPTER_SCHEMAS)}")
            else:
                _walk(value, ADAPTER_SCHEMAS[kind], "adapter.", problems)
            continue
        problem = _check(value, hints[name], spec.metadata)
        if problem == "nested":
            _walk(value, _dataclass_of(hints[name]), f"{key}.", problems)
        elif problem:
            joint = " " if problem.startswith(("must ", "is not ", "is empty")) else ": "
            problems.append(f"{key}={_show(value)}{joint}{problem}")


@functools.lru_cache(maxsize=None)
def _hints(schema: type) -> dict[str, Any]:
    """A section's field types, evaluated once (``from __future__ import annotations`` makes them text)."""
    return typing.get_type_hints(schema)


def _get(node: Any, key: str) -> Any:
    """``node[key]`` resolved; ``MISSING`` when absent, when ``node`` is no section (so ``_get(_get(cfg, "a"),
    "b")`` reads ``a.b`` whatever ``a`` holds), or when it needs Hydra's runtime (``${hydra:...}``)."""
    try:
        if isinstance(node, DictConfig):
            if key not in node:
                return MISSING
            value = node[key]
            return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        return node.get(key, MISSING) if isinstance(node, Mapping) else MISSING
    except Exception:  # an interpolation only Hydra's runtime can resolve: checked where it is used
        return MISSING


def _dataclass_of(annotation: Any) -> type | None:
    for option in _options(annotation):
        if dataclasses.is_dataclass(option):
            return option
    return None


def _options(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _check(value: Any, annotation: Any, meta: Mapping[str, Any]) -> str | None:
    """The problem with ``value`` (``"nested"``: a section to walk), or ``None``."""
    options = _options(annotation)
    if value is None:
        return None if type(None) in options or annotation is Any else "must be set (it is null)"
    if isinstance(value, str) and not value.strip():  # `key=` on the command line: never a path, name or choice
        return "is empty" + ("; give a value, or null for none" if type(None) in options else "; give a value")
    if isinstance(value, float) and not math.isfinite(value):  # `key=inf`/`nan` pass every bound test
        return "must be a finite number"
    if any(dataclasses.is_dataclass(o) for o in options):
        return "nested"
    if annotation is not Any and not any(_is(value, o) for o in options):
        return f"must be {' or '.join(_describe(o) for o in options if o is not type(None))}"
    elements = list(value) if isinstance(value, (list, ListConfig)) else [value]
    for element in elements:
        problem = _bounds(element, meta)
        if problem:
            return problem
    if meta.get("check"):
        return meta["check"](value)
    return None


def _is(value: Any, kind: Any) -> bool:
    if kind is Any:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if typing.get_origin(kind) is list:
        (inner,) = typing.get_args(kind) or (Any,)
        return isinstance(value, (list, ListConfig)) and all(_is(v, inner) for v in value)
    return kind is type(None) and value is None


def _describe(kind: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    if kind in names:
        return names[kind]
    if typing.get_origin(kind) is list:
        (inner,) = typing.get_args(kind) or (Any,)
        return f"a list of {_describe(inner).removeprefix('an ').removeprefix('a ')} values"
    return "null" if kind is type(None) else str(kind)


def _bounds(value: Any, meta: Mapping[str, Any]) -> str | None:
    hint = f" ({meta['hint']})" if meta.get("hint") else ""
    choices = meta.get("choices")
    if choices is not None:
        allowed = choices() if callable(choices) else choices
        if value not in allowed:
            return f"{not_one_of(allowed)}{hint}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for name, test, sign in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            bound = meta.get(name)
            if bound is not None and not test(value, bound):
                return f"must be {sign} {bound}{_range(meta)}{hint}"
        if meta.get("multiple_of") and value % meta["multiple_of"]:
            return f"must be a multiple of {meta['multiple_of']}{hint}"
    return None


def _range(meta: Mapping[str, Any]) -> str:
    low = f"[{meta['ge']}" if meta.get("ge") is not None else f"({meta['gt']}" if meta.get("gt") is not None else None
    high = f"{meta['le']}]" if meta.get("le") is not None else f"{meta['lt']})" if meta.get("lt") is not None else None
    return f", valid range {low}, {high}" if low and high else ""


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) else str(value)


def _trainer_keys(node: Any, prefix: str) -> list[str]:
    """Keys under ``trainer`` must be Lightning ``Trainer`` options (it would fail on them later)."""
    known = trainer_options()
    ours = {"logger", "callbacks", "default_root_dir", "plugins"}  # built by adapt.train
    problems = []
    for key in node.keys():
        if key in ours:
            problems.append(
                f"{prefix}{key}: set by sam2-adapt itself (logger=csv|wandb; callbacks and the run dir are fixed)"
            )
        elif key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            problems.append(
                f"{prefix}{key}: not an option of Lightning's Trainer" + (f"; did you mean {close}?" if close else "")
            )
    return problems


@functools.lru_cache(maxsize=1)
def trainer_options() -> frozenset[str]:
    """The parameters of Lightning's ``Trainer``, read from its source file without importing it.

    ``import lightning`` takes seconds (torch, torchmetrics); the door checks ``trainer.*`` keys
    before that, so the signature is parsed with ``ast`` (the import is the fallback).
    """
    spec = importlib.util.find_spec("lightning")
    source = Path(spec.submodule_search_locations[0]) / "pytorch" / "trainer" / "trainer.py" if spec else None
    if source is not None and source.is_file():
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == "Trainer":
                init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
                arguments = init.args.args + init.args.kwonlyargs
                return frozenset(a.arg for a in arguments) - {"self"}
    import inspect

    import lightning as L  # lazy: start-up (only where the source file is not found)

    return frozenset(inspect.signature(L.Trainer.__init__).parameters) - {"self"}


def _training_card(cfg: Any) -> Any:
    """The data card a training config names, or ``None`` when it does not load (the data module then
    reports why, as before any schema check existed)."""
    from adapt.data.cards import load_card  # lazy: start-up

    data = _get(cfg, "data")
    card = _get(data, "card") if isinstance(data, (Mapping, DictConfig)) else MISSING
    if card is MISSING or card is None:
        return None
    try:
        return load_card(str(card))
    except AdaptError:
        return None


def _train_cases_bound(cfg: Any) -> list[str]:
    """``data.train_cases`` <= the card's training patients (counted when the data is there: a missing
    dataset is the data module's error, with how to get it)."""
    from adapt.data.sources import data_root, list_cases  # lazy: start-up
    from adapt.data.splits import split_cases  # lazy: start-up

    data = _get(cfg, "data")
    count = _get(data, "train_cases") if isinstance(data, (Mapping, DictConfig)) else MISSING
    card = _training_card(cfg) if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else None
    if card is None:
        return []
    try:
        root = _get(data, "root")
        cases = split_cases(
            list_cases(card, data_root(card, None if root is MISSING else root)), card.split, f"data card {card.path}"
        )["train"]
    except AdaptError:
        return []
    total = len({c.group for c in cases})
    if count > total:
        return [
            f"data.train_cases={count} must be <= {total}, the number of training cases (patients) of data card "
            f"{card.path} (or all)"
        ]
    return []


#: Options that only a task through SAM2's memory (``TaskSupport.memory``) reads: a recipe of such a task with
#: ``task=`` of another would otherwise fail on them after the data loads, or drop them without a word.
MEMORY_TASK_KEYS = ("loss.presence", "prompts.direction", "data.clip")


def _task_fits(cfg: Any) -> list[str]:
    """The options and the data card against ``task=``: memory options (``MEMORY_TASK_KEYS``, the
    ``memory`` LoRA preset) with a task that has no memory, correction clicks with one that has, and a
    task through memory on a 2D card."""
    task = _get(cfg, "task")
    if not isinstance(task, str) or task not in TASKS:
        return []  # the walker named it
    problems = []
    memory = TASKS[task].memory
    if not memory:
        for key in MEMORY_TASK_KEYS:
            section, name = key.split(".")
            if _get(_get(cfg, section), name) is not MISSING:
                problems.append(
                    f"{key} is an option of task=propagation (SAM2's memory), which task={task} does not read "
                    f"(a recipe of task=propagation?): choose task=propagation, or drop it with ~{key}"
                )
        targets = _get(_get(cfg, "adapter"), "targets")
        if isinstance(targets, list) and "memory" in targets:
            problems.append(
                f"adapter.targets={targets} holds memory, but task={task} builds SAM2's image model, which has no "
                "memory layers: choose task=propagation, or leave memory out of adapter.targets"
            )
    iterations = _get(_get(cfg, "prompts"), "iterations")
    if memory and isinstance(iterations, int) and iterations > 0:
        problems.append(
            f"prompts.iterations={iterations} (correction clicks) applies to task=segmentation; task={task} "
            "prompts once per clip: set prompts.iterations=0"
        )
    card = _training_card(cfg) if memory else None
    try:
        if card is not None:
            card.require_volumes(f"task={task}")
    except ConfigError as err:
        problems.append(str(err))
    return problems


def _backbone_packages(cfg: Any) -> list[str]:
    """The packages ``model.name``'s backbone needs beyond the core install (EdgeTAM's timm), looked for
    without importing them: a missing one is named before the data and the model load, not after."""
    name = _get(_get(cfg, "model"), "name")  # MISSING where model is no section
    if not isinstance(name, str):
        return []
    row = backbone_of(name)
    missing = [p for p in row.packages if importlib.util.find_spec(p) is None]
    return (
        [
            f"model.name={name}: {row.title} needs {', '.join(missing)}, which is not installed; "
            f"pip install 'sam2-adapt[{row.extra}]'"
        ]
        if missing
        else []
    )


def _train_extras(cfg: Any) -> list[str]:
    """Rules that tie two keys together."""
    problems = _train_cases_bound(cfg) + _task_fits(cfg) + _backbone_packages(cfg)
    clip = _get(_get(cfg, "data"), "clip")
    if isinstance(clip, (Mapping, DictConfig)):
        frames, length = _get(clip, "num_prompt_frames"), _get(clip, "length")
        if isinstance(frames, int) and isinstance(length, int) and frames > length:
            problems.append(f"data.clip.num_prompt_frames={frames} must be <= data.clip.length ({length})")
    return problems
