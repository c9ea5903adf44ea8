"""The page's "Retrain": ``python -m adapt.train <the adapter's settings> init_adapter=<adapter> data.card=<card>``.

Once labels are saved, the adapter is trained again on the enlarged label set: a new run that starts
from the current adapter's weights (``init_adapter=``, ``adapt.adapters.warm_start``), not a resume.
The run must be the adapter's own settings, or the warm start refuses it, so the command repeats
them: the command-line overrides of the adapter's run (``<run>/.hydra/overrides.yaml``) when it has
one, else what its ``sam2_adapt.json`` records (recipe, base model, task, adapter options). The card
and data root are those the worklist was made from (``annotate.json``). The command is shown, so a
user can copy it and run it elsewhere; the page also starts it in the background with its output in
``<annotate out>/retrain-<time>.log``, never over an earlier log.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import yaml
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR, recipe_names
from adapt.errors import ConfigError

#: Keys of the adapter's run that the retrain sets itself (or must not repeat).
SET_HERE = ("init_adapter", "data.card", "data.root", "ckpt_path", "overwrite", "out_dir", "hydra.")


def _value(value: Any) -> str:
    """A value as a Hydra override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def recorded_overrides(metadata: Mapping[str, Any]) -> list[str]:
    """The overrides that rebuild an adapter's run from its ``sam2_adapt.json`` (no run folder at hand)."""
    spec = dict(metadata.get("adapter") or {})
    kind = str(spec.pop("kind", "lora"))
    spec.pop("task_modules", None)
    group = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "adapter" / f"{kind}.yaml"))
    overrides = [f"recipe={metadata['recipe']}"] if metadata.get("recipe") in recipe_names() else []
    model = metadata.get("model") or {}
    overrides += [f"model.name={(metadata.get('base_model') or {}).get('name') or model.get('name')}"]
    if model.get("image_size"):
        overrides.append(f"model.image_size={model['image_size']}")
    overrides += [f"task={metadata.get('task') or 'segmentation'}", f"adapter={kind}"]
    for key, value in spec.items():
        if key not in group:
            overrides.append(f"+adapter.{key}={_value(value)}")
        elif group[key] != value:
            overrides.append(f"adapter.{key}={_value(value)}")
    return overrides


def run_overrides(adapter: Path, metadata: Mapping[str, Any]) -> list[str]:
    """The adapter's run's own command-line overrides, less those the retrain sets; else ``recorded_overrides``."""
    for run in (adapter, adapter.parent):
        saved = run / ".hydra" / "overrides.yaml"
        if saved.is_file():
            given = yaml.safe_load(saved.read_text()) or []
            return [o for o in given if not str(o).lstrip("+~").startswith(SET_HERE)]
    return recorded_overrides(metadata)


def command(source: str, adapter: Path, metadata: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """``python -m adapt.train ... init_adapter=<source> data.card=<card> [data.root=<root>]``."""
    data = [f"data.card={record['card']}"] + ([f"data.root={record['root']}"] if record.get("root") else [])
    return [sys.executable, "-m", "adapt.train", *run_overrides(adapter, metadata), f"init_adapter={source}", *data]


def shown(argv: list[str]) -> str:
    """The command as a user types it (``python``, arguments quoted for a shell)."""
    return shlex.join(["python", *argv[1:]])


def start(argv: list[str], out: Path, cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
    """Start ``argv`` in the background (in ``cwd``, default the app's own folder, where ``outputs/`` goes), its
    output in ``out/retrain-<time>.log``; returns the process and the log.

    Raises:
        ConfigError: ``out`` cannot take the log.
    """
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    log = Path(out) / f"retrain-{stamp}.log"
    n = 1
    while log.exists():  # two starts in one second: never over an earlier log
        log, n = Path(out) / f"retrain-{stamp}-{n}.log", n + 1
    try:
        handle = log.open("x")
    except OSError as err:
        raise ConfigError(f"{log}: the retrain's log cannot be written ({err.strerror}); make {out} writable") from None
    with handle:
        # its own session: the run goes on when the page is stopped (Ctrl+C reaches the page's group only)
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    return process, log
