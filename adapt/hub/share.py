"""Share adapters on the Hugging Face Hub, pull them back, and merge them for deployment.

::

    python -m adapt.hub push adapter=outputs/demo/<run> repo_id=user/sam2-ct-liver [private=true]
    python -m adapt.hub pull repo_id=user/sam2-ct-liver [revision=v1] [merge=true out_dir=DIR]

What is uploaded is the adapter in peft's layout, ``sam2_adapt.json`` (base model, revision and
weights fingerprint, data card and licence, preprocessing, label map, prompt protocol, metrics),
the adapter's copy of its data card (``data_card.yaml``), its ``calibration.json`` when it has one
(``python -m adapt.annotate calibrate``) and a model card generated from both
(``adapt.hub.model_card``). Shared files name no local path: the data root is dropped and
absolute paths become file names (``adapt.data.card_copy.public_metadata``). Loading onto the recorded base
lives in ``adapt.adapters.loading``. ``merge=true`` folds LoRA into the base weights and writes a
plain ``transformers`` model for deployment.
Every Hub call goes through an ``HfApi``-like client that tests replace with a local one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from adapt.adapters.kinds import kind_of
from adapt.annotate import CALIBRATION_FILE
from adapt.adapters.io import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, read_metadata
from adapt.cli import register_cli_config, user_errors
from adapt.data.card_copy import carried_card, copy_card, public_metadata, strip_paths
from adapt.errors import AdaptError, ConfigError
from adapt.adapters.loading import REPO_ID, LoadedAdapter, adapter_dir, check_base, default_api, load_adapter, resolve
from adapt.hub.model_card import render_card
from adapt.models.provenance import describe
from adapt.schema import HUB_ACTIONS, validate
from adapt.storage import check_writable
from adapt.outputs import claimed
from adapt.app.space import write_space_app

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
__all__ = ["LoadedAdapter", "check_base", "load_adapter", "merge_adapter", "pull", "push", "stage"]


def _empty_target(out_dir: Path, overwrite: bool, create: bool = True) -> Path:
    """``out_dir``, writable and empty (or ``overwrite``); created unless ``create=False`` (a check only)."""
    check_writable(out_dir, "out_dir")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ConfigError(f"out_dir={out_dir} exists and is not empty; choose another out_dir or pass overwrite=true")
    if create:
        out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def merge_adapter(
    loaded: LoadedAdapter,
    out_dir: str | Path,
    repo_id: str | None = None,
    overwrite: bool = False,
    public: bool = False,
) -> Path:
    """Fold the adapter into the base weights and save a plain ``transformers`` SAM2.

    ``public``: the folder is to be shared (``adapt.data.card_copy.public_metadata``: no local path).

    The result loads with ``load_sam2(out_dir)`` or ``Sam2Model.from_pretrained``, with no peft
    at inference. ``loaded.model`` is merged in place and should not be reused.

    Raises:
        ConfigError: the adapter adds layers (bottleneck) that cannot be folded into SAM2.
    """
    from peft import PeftModel

    spec = loaded.metadata.get("adapter") or {}
    kind = kind_of(spec)
    if (kind is not None and not kind.merges) or spec.get("task_modules"):
        added = (
            f"{kind.name} layers" if kind is not None and not kind.merges else f"task modules {spec['task_modules']}"
        )
        raise ConfigError(f"this adapter adds {added}, which a plain transformers SAM2 cannot hold; share it unmerged")
    model = loaded.model.merge_and_unload() if isinstance(loaded.model, PeftModel) else loaded.model
    out_dir = _empty_target(Path(out_dir), overwrite)
    model.save_pretrained(out_dir)
    metadata = {**(public_metadata(loaded.metadata) if public else loaded.metadata), "merged": True}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    copy_card(loaded.path, out_dir, public)
    render_card(metadata, repo_id or out_dir.name, merged=True, data_card=carried_card(loaded.path)).save(
        out_dir / CARD_FILE
    )
    return out_dir


def stage(
    adapter: str | Path,
    repo_id: str,
    out_dir: str | Path,
    merge: bool = False,
    overwrite: bool = False,
    space_app: bool = False,
) -> Path:
    """Write exactly what ``push`` uploads into ``out_dir``: adapter files (or merged model) + card,
    and with ``space_app`` an ``app.py`` (+ ``requirements.txt``) serving ``adapt.app``'s page for it.

    The adapter is loaded onto its base first, so what cannot be used is never uploaded.
    """
    source = adapter_dir(adapter)
    metadata = read_metadata(source)
    if not metadata:
        raise ConfigError(f"{source} has no {METADATA_FILE}; push adapters written by `python -m adapt.train`")
    if not (metadata.get("model") or {}).get("pretrained", True):
        log.warning("%s was trained on RANDOM base weights; the card says so", source)
    out_dir = _empty_target(Path(out_dir), overwrite, create=False)  # before the adapter is loaded
    loaded = load_adapter(source)  # an adapter that does not load on its base is never uploaded
    if merge:
        out_dir = merge_adapter(loaded, out_dir, repo_id, overwrite, public=True)
    else:
        out_dir = _empty_target(out_dir, overwrite)
        for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE):
            if not (source / name).exists():
                raise ConfigError(f"{source / name} is missing; re-save the adapter")
        shutil.copy2(source / WEIGHTS_FILE, out_dir / WEIGHTS_FILE)
        # peft records the base's local folder (base_model_name_or_path); shared files name no local path
        config = strip_paths(json.loads((source / CONFIG_FILE).read_text()))
        (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        (out_dir / METADATA_FILE).write_text(json.dumps(public_metadata(metadata), indent=2, default=str))
        copy_card(source, out_dir, public=True)
        render_card(public_metadata(metadata), repo_id, data_card=carried_card(source)).save(out_dir / CARD_FILE)
    if (
        source / CALIBRATION_FILE
    ).is_file():  # the accept/review flag's calibration (python -m adapt.annotate calibrate)
        shutil.copy2(source / CALIBRATION_FILE, out_dir / CALIBRATION_FILE)
    if space_app:
        write_space_app(out_dir, repo_id)
    return out_dir


def push(
    adapter: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    merge: bool = False,
    commit_message: str | None = None,
    api: Any = None,
    space_app: bool = False,
) -> Any:
    """Upload an adapter (or its merged model) with its model card; returns the commit info.

    The token comes from ``HF_TOKEN`` or ``hf auth login`` as usual for ``huggingface_hub``.
    """
    if not REPO_ID.match(repo_id):
        raise ConfigError(f"repo_id={repo_id!r} is not of the form user/name")
    if api is None:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise ConfigError("HF_HUB_OFFLINE=1 is set: pushing needs the network (unset it, or use dry_run=true)")
        api = default_api()
    with tempfile.TemporaryDirectory() as tmp:
        folder = stage(adapter, repo_id, Path(tmp) / "upload", merge=merge, space_app=space_app)
        try:
            api.create_repo(repo_id, private=private or None, exist_ok=True)  # None: the account's default
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                revision=revision,
                commit_message=commit_message or f"Upload sam2-adapt {'merged model' if merge else 'adapter'}",
            )
        except Exception as err:  # HTTP 401/403/404 and connection errors alike
            if isinstance(err, AdaptError):
                raise
            raise ConfigError(
                f"pushing to {repo_id} failed: {type(err).__name__}: {err}\n"
                "Check that you are logged in with write access (`hf auth login` or HF_TOKEN) and online."
            ) from None


def pull(
    repo_id: str,
    revision: str | None = None,
    out_dir: str | Path | None = None,
    merge: bool = False,
    overwrite: bool = False,
    api: Any = None,
) -> tuple[LoadedAdapter, Path | None]:
    """Download an adapter, load it onto its base (checking they fit) and optionally merge it.

    Returns:
        The loaded adapter and the merged model's folder (``None`` without ``merge``).
    """
    local = None
    if out_dir is not None and not merge:
        local = _empty_target(Path(out_dir), overwrite)
    loaded = load_adapter(resolve(repo_id, revision, api, local_dir=local))
    merged = (
        merge_adapter(loaded, out_dir or f"{Path(str(repo_id)).name}-merged", str(repo_id), overwrite)
        if merge
        else None
    )
    return loaded, merged


def run(cfg: DictConfig) -> Any:
    """Run one hub action from the ``configs/hub.yaml`` config."""
    validate(cfg, "hub")
    if cfg.action not in HUB_ACTIONS:
        raise ConfigError(
            f"action={cfg.action!r}: say what to do, e.g. `python -m adapt.hub push adapter=DIR repo_id=user/name`"
        )
    if cfg.action == "push":
        if not cfg.adapter or not cfg.repo_id:
            raise ConfigError("push needs adapter=<run or adapter dir> and repo_id=<user/name>")
        if cfg.dry_run:
            if not cfg.out_dir:
                raise ConfigError("dry_run=true writes the upload folder locally: pass out_dir=DIR")
            folder = stage(
                cfg.adapter,
                cfg.repo_id,
                cfg.out_dir,
                merge=cfg.merge,
                overwrite=cfg.overwrite,
                space_app=bool(cfg.get("space_app", False)),
            )
            print(f"would upload {sorted(p.name for p in folder.iterdir())} from {folder} to {cfg.repo_id}")
            return folder
        info = push(
            cfg.adapter,
            cfg.repo_id,
            cfg.private,
            cfg.revision,
            cfg.merge,
            cfg.commit_message,
            space_app=bool(cfg.get("space_app", False)),
        )
        print(f"pushed to {getattr(info, 'commit_url', None) or cfg.repo_id}")
        return info
    source = cfg.repo_id or cfg.adapter
    if not source:
        raise ConfigError("pull needs repo_id=<user/name> (or adapter=<dir>)")
    loaded, merged = pull(source, cfg.revision, cfg.out_dir, cfg.merge, cfg.overwrite)
    meta = loaded.metadata
    print(
        f"adapter {meta.get('adapter', {}).get('kind')} at {loaded.path}\n"
        f"base {describe(meta.get('base_fingerprint')) if meta.get('base_fingerprint') else loaded.model_info.name}, "
        f"image size {loaded.model_info.image_size}\n"
        f"labels {loaded.label_map}\npreprocessing {loaded.preprocessing}"
    )
    if merged:
        print(f"merged model written to {merged} (load it with load_sam2({str(merged)!r}))")
    return loaded


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("hub"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    with user_errors(), claimed(cfg.get("out_dir"), "out_dir"):
        run(cfg)
