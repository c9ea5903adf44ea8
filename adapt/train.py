"""``python -m adapt.train recipe=<name> [overrides]``: fine-tune SAM2 with an adapter.

``train(cfg)`` does the work and returns ``(metrics, objects)`` so notebooks and tests can
call it without a subprocess; ``main`` is the Hydra entry point that prints user errors
(missing model, missing data, bad option) as one clear message instead of a traceback.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from adapt.cli import command_line, user_errors
from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
from adapt.errors import ConfigError
from adapt.guards import check_weights
from adapt.schema import validate
from adapt.outputs import RUN_FILES, Claim, claimed
from adapt.storage import check_writable
from adapt.tasks import MONITOR, TASKS
from adapt.training.summary import print_summary

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)


def task_class(name: str) -> type:
    """The LightningModule class registered under ``name``."""
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not one of {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_run_dir(run_dir: Path, overwrite: bool, ckpt_path: str | None) -> Path:
    """Refuse, without touching it, a run directory that holds a finished run (unless
    ``overwrite=true`` or resuming) or that cannot be written."""
    if (run_dir / "adapter").exists() and not overwrite and ckpt_path is None:
        raise ConfigError(
            f"{run_dir} already holds a trained adapter; choose another hydra.run.dir, "
            "resume with ckpt_path=last, or pass overwrite=true"
        )
    return check_writable(run_dir, "hydra.run.dir")


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ``last`` is ``<run_dir>/checkpoints/last.ckpt``.

    Lightning itself treats a missing ``last`` as "start from scratch" with a warning; a
    resume that silently restarts would waste the run, so both cases stop with the fix.
    """
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if str(ckpt_path) == "last" else Path(str(ckpt_path))
    if not path.is_file():
        where = f"ckpt_path={ckpt_path}: no checkpoint at {path}"
        if str(ckpt_path) == "last":
            raise ConfigError(f"{where}; resume inside the interrupted run's directory: "
                              "hydra.run.dir=<that run dir> ckpt_path=last (checkpoints are written at each validation)")
        raise ConfigError(f"{where}; give the path of an existing .ckpt file or ckpt_path=last")
    return str(path)


def build_trainer(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> L.Trainer:
    """A Lightning Trainer from the ``trainer`` group, with our logger, callbacks and atomic checkpoints."""
    import lightning as L  # lazy: start-up
    import torch  # lazy: start-up

    from adapt.training.callbacks import build_callbacks, build_logger  # lazy: start-up
    from adapt.training.checkpoints import AtomicCheckpointIO  # lazy: start-up
    from adapt.training.progress import progress_callback  # lazy: start-up

    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if str(options.get("precision")).startswith("16") and (
        options.get("accelerator") == "cpu" or not torch.cuda.is_available()
    ):
        log.warning("trainer.precision=%s needs a CUDA GPU; on the CPU Lightning trains in bf16-mixed instead "
                    "(pass trainer.precision=bf16-mixed or 32-true to choose explicitly)", options["precision"])
    if isinstance(options.get("strategy"), dict):  # e.g. FSDPStrategy with its options
        try:
            options["strategy"] = hydra.utils.instantiate(options["strategy"], _convert_="all")
        except InstantiationException as error:  # hydra wraps what the strategy raised
            if isinstance(error.__cause__, ConfigError):
                raise error.__cause__ from None
            raise ConfigError(f"trainer.strategy: {error}") from None
    callbacks = build_callbacks(run_dir)
    if options.get("enable_progress_bar", True):  # lines when stdout is a file, a bar in a terminal
        callbacks.append(progress_callback(OmegaConf.to_container(cfg.progress) if "progress" in cfg else None))
    return L.Trainer(
        default_root_dir=run_dir,
        logger=build_logger(cfg.logger, run_dir, cfg.name, resume_step),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **options,
    )


def resolve_embedding_cache(cfg: DictConfig) -> dict[str, Any]:
    """Turn ``embedding_cache.mode=auto`` into a mode; caching switches pixel augmentation off.

    Cached embeddings stand for the un-augmented image, so augmenting pixels would train on
    images the cache does not hold; the run says so instead of silently diverging.
    """
    from adapt.models.backbones import backbone_of
    from adapt.models.embedding_cache import encoder_is_frozen, prefix_cache_wanted  # lazy: start-up

    spec = OmegaConf.to_container(cfg.embedding_cache, resolve=True)
    adapter = OmegaConf.to_container(cfg.adapter, resolve=True)
    backbone = backbone_of(str(cfg.model.name))
    frozen = encoder_is_frozen(adapter) or prefix_cache_wanted(adapter, spec["mode"], cfg.data.get("augment"), backbone)
    if spec["mode"] == "auto":
        spec["mode"] = "memory" if frozen and cfg.task == "segmentation" else "off"
    if spec["mode"] != "off":
        if not frozen:
            raise ConfigError(f"embedding_cache.mode={spec['mode']} needs a frozen image encoder; "
                              f"adapter={adapter['kind']} trains it")
        if cfg.data.get("augment"):
            log.warning("frozen encoder: image embeddings are cached (%s), so pixel augmentation is OFF",
                        spec["mode"])
            cfg.data.augment = False
    return spec


def training_cases(datamodule: Any, setting: Any) -> dict[str, Any]:
    """How many patients the run trained and validated on, and which trained (``data.train_cases``).

    Only the cases actually used count: those skipped as bad (``data.skip_bad_cases=true``) are
    listed apart (``skipped_case_ids``), so a label-efficiency curve is drawn over the labelled
    cases that trained the adapter.
    """
    splits = getattr(datamodule, "splits", None)
    if not splits:
        return {}
    skipped = getattr(datamodule, "skipped", None) or {}
    used = {side: sorted({c.group for c in splits[side] if c.id not in set(skipped.get(side, ()))})
            for side in ("train", "val")}
    return {"train_cases": len(used["train"]), "val_cases": len(used["val"]),
            "train_cases_setting": "all" if setting is None else setting, "train_case_ids": used["train"],
            "skipped_case_ids": {side: sorted(ids) for side, ids in skipped.items()}}


def _validate(trainer: L.Trainer, task: L.LightningModule, datamodule: Any) -> dict[str, float]:
    results = trainer.validate(task, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune, validate before and after, save the adapter, and summarise.

    Returns:
        ``(metrics, objects)``: the ``metrics.json`` content, and the ``task``,
        ``datamodule`` and ``trainer`` for interactive use.
    """
    from adapt.training.checkpoints import read_checkpoint  # lazy: start-up

    start = time.perf_counter()
    validate(cfg, "train")
    run_dir = check_run_dir(Path(cfg.out_dir), cfg.overwrite, cfg.ckpt_path)
    with claimed(run_dir, "hydra.run.dir", RUN_FILES) as output:  # one writer; a refusal leaves nothing
        ckpt = resolve_checkpoint(cfg.ckpt_path, run_dir)  # before minutes of loading
        resumed = read_checkpoint(ckpt) if ckpt else None
        return _train(cfg, run_dir, ckpt, resumed, output, start)


def _train(cfg: DictConfig, run_dir: Path, ckpt: str | None, resumed: dict[str, Any] | None, output: Claim,
           start: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train`` once the run directory is checked and claimed."""
    import lightning as L  # lazy: start-up

    from adapt.adapters.io import save_adapter  # lazy: start-up
    from adapt.data.card_copy import CARD_FILE, RECORD_KEY, card_record, card_text  # lazy: start-up
    from adapt.data.sources import list_cases  # lazy: start-up
    from adapt.models.embedding_cache import namespace  # lazy: start-up
    from adapt.models.provenance import base_fingerprint  # lazy: start-up
    from adapt.training.checkpoints import check_fits  # lazy: start-up
    from adapt.training.constraints import check_against_data  # lazy: start-up

    run_dir.mkdir(parents=True, exist_ok=True)  # only once every check above has passed
    L.seed_everything(cfg.seed, workers=True)
    cache = resolve_embedding_cache(cfg)
    task_cls = task_class(cfg.task)
    # Data first: a missing dataset is reported before minutes of model loading.
    # The task builds its datamodule: slices by default, clips for task=propagation.
    datamodule = task_cls.build_datamodule(cfg.data, image_size=cfg.model.image_size, seed=cfg.seed)
    check_against_data(OmegaConf.to_container(cfg.trainer, resolve=True), len(datamodule.train_set),
                       len(datamodule.val_set), datamodule.batch_size, datamodule.val_batch_size)
    cache["namespace"] = namespace(OmegaConf.to_container(cfg.model, resolve=True), datamodule.preprocessing)
    task = task_cls(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        adapter=OmegaConf.to_container(cfg.adapter, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        prompts=OmegaConf.to_container(cfg.prompts, resolve=True),
        compile=cfg.compile,
        embedding_cache=cache,
        **task_cls.options_from_data(datamodule),
    )
    if resumed is not None:
        check_fits(resumed, ckpt, task.trainable_names())
    trainer = build_trainer(cfg, run_dir, resumed["global_step"] if resumed else None)
    if trainer.is_global_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainable, total = task.parameter_counts()
    log.info("trainable parameters: %s / %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    before = _validate(trainer, task, datamodule) if cfg.validate_before else {}
    output.keep()  # from here the run folder holds work to resume from: a later error leaves it
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt)
    after = _validate(trainer, task, datamodule)

    metrics = {
        "name": cfg.name,
        "model": task.model_info.to_dict(),
        "adapter": OmegaConf.to_container(cfg.adapter, resolve=True),
        "params": {"trainable": trainable, "total": total},
        "data": {"card": datamodule.card.name, "bad_cases": datamodule.num_bad_cases,
                 **training_cases(datamodule, cfg.data.get("train_cases"))},
        "monitor": MONITOR,
        "before": before,
        "after": after,
        "steps": trainer.global_step,
        "seconds": time.perf_counter() - start,
        "run_dir": str(run_dir),
    }
    # Every rank takes part: under FSDP this gathers the sharded weights (to rank 0).
    weights = trainer.strategy.lightning_module_state_dict()
    check_weights({k: v for k, v in weights.items() if k in task.trainable_names()}, run_dir / "adapter",
                  "the run diverged, so no adapter was written; lower optim.lr or train in full precision "
                  "(trainer.precision=32-true), then train again or resume from an earlier checkpoint (ckpt_path=)")
    if trainer.is_global_zero:
        save_adapter(
            task.model,
            dict(task.hparams.adapter),
            run_dir / "adapter",
            weights={name.removeprefix("model."): value for name, value in weights.items()},
            metadata={
                "base_model": {"name": task.model_info.name, "revision": task.model_info.revision},
                "model": task.model_info.to_dict(),
                "task": cfg.task,
                "recipe": cfg.name,
                "data_card": datamodule.card.name,
                RECORD_KEY: card_record(datamodule.card, datamodule.root, list_cases(datamodule.card, datamodule.root)),
                "base_fingerprint": base_fingerprint(task.model_info),
                "targets": list(datamodule.card.targets),
                "license": getattr(datamodule.card, "license", None),
                "preprocessing": datamodule.preprocessing,
                "label_map": datamodule.label_map,
                "mask_values": datamodule.card.mask_values,
                "classes": getattr(task, "classes", None),
                "prompt": OmegaConf.to_container(cfg.data.prompt, resolve=True),
                "metrics": after,
            },
            files={CARD_FILE: card_text(datamodule.card)},
        )
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print_summary(metrics)
    return metrics, {"task": task, "datamodule": datamodule, "trainer": trainer}


register_resolvers()
register_recipes()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the monitored metric for sweepers."""
    with user_errors():
        metrics, _ = train(cfg)
    return metrics["after"].get(MONITOR)


if __name__ == "__main__":
    command_line(main, "train", CONFIG_DIR)
