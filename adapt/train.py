"""``python -m adapt.train recipe=<name> [overrides]``: fine-tune SAM2 with an adapter.

``train(cfg)`` does the work and returns ``(metrics, objects)`` so notebooks and tests can
call it without a subprocess; ``main`` is the Hydra entry point that prints user errors
(missing model, missing data, bad option) as one clear message instead of a traceback.
The run's infrastructure lives in ``adapt.training``: the run folder (``run_dir``), the
checkpoint to resume from (``checkpoints``), the embedding cache (``cache_policy``), the
Trainer (``trainer``) and what a run leaves behind (``record``); the task comes from the
registry of ``adapt.tasks``. This module reads the config, builds, runs and reports.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from adapt.cli import command_line
from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
from adapt.exits import user_errors
from adapt.guards import check_weights
from adapt.outputs import RUN_FILES, Claim, claimed
from adapt.schema import validate
from adapt.tasks import MONITOR, task_class
from adapt.training.cache_policy import resolve_embedding_cache
from adapt.storage import check_writable
from adapt.training.run_dir import check_run_dir
from adapt.training.summary import print_summary
from adapt.training.trainer import build_trainer

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)


def _validate(trainer: L.Trainer, task: L.LightningModule, datamodule: Any) -> dict[str, float]:
    results = trainer.validate(task, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune, validate before and after, save the adapter, and summarise.

    Returns:
        ``(metrics, objects)``: the ``metrics.json`` content, and the ``task``,
        ``datamodule`` and ``trainer`` for interactive use.
    """
    from adapt.training.checkpoints import read_checkpoint, resolve_checkpoint  # lazy: start-up

    start = time.perf_counter()
    validate(cfg, "train")
    run_dir = check_writable(Path(cfg.out_dir), "hydra.run.dir")
    with claimed(run_dir, "hydra.run.dir", RUN_FILES) as output:  # one writer; a refusal leaves nothing
        check_run_dir(run_dir, cfg.overwrite, cfg.ckpt_path)
        init = _init_adapter(cfg)  # a warm start that does not fit is refused before data and model load
        ckpt = resolve_checkpoint(cfg.ckpt_path, run_dir)  # before minutes of loading
        resumed = read_checkpoint(ckpt) if ckpt else None
        return _train(cfg, run_dir, ckpt, resumed, output, start, init)


def _init_adapter(cfg: DictConfig) -> Any:
    """``init_adapter=``'s adapter, checked against the run's model, adapter and task (or ``None``)."""
    if not cfg.get("init_adapter"):
        return None
    from adapt.adapters.warm_start import resolve_init  # lazy: start-up

    adapter = OmegaConf.to_container(cfg.adapter, resolve=True)
    size = cfg.model.get("image_size")
    return resolve_init(str(cfg.init_adapter), str(cfg.model.name), adapter, str(cfg.task), size and int(size))


def _train(
    cfg: DictConfig,
    run_dir: Path,
    ckpt: str | None,
    resumed: dict[str, Any] | None,
    output: Claim,
    start: float,
    init: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train`` once the run directory is checked and claimed."""
    import lightning as L  # lazy: start-up

    from adapt.models.embedding_cache import namespace  # lazy: start-up
    from adapt.training.checkpoints import check_fits  # lazy: start-up
    from adapt.training.constraints import check_against_data  # lazy: start-up
    from adapt.training.record import run_metrics, save_run  # lazy: start-up

    run_dir.mkdir(parents=True, exist_ok=True)  # only once every check above has passed
    L.seed_everything(cfg.seed, workers=True)
    cache = resolve_embedding_cache(cfg)
    task_cls = task_class(cfg.task)
    # Data first: a missing dataset is reported before minutes of model loading.
    # The task builds its datamodule: slices by default, clips for task=propagation.
    datamodule = task_cls.build_datamodule(cfg.data, image_size=cfg.model.image_size, seed=cfg.seed)
    check_against_data(
        OmegaConf.to_container(cfg.trainer, resolve=True),
        len(datamodule.train_set),
        len(datamodule.val_set),
        datamodule.batch_size,
        datamodule.val_batch_size,
    )
    if init is not None:  # the data's channels are known now; the model is not loaded yet
        from adapt.adapters.warm_start import check_channels  # lazy: start-up

        check_channels(
            init, OmegaConf.to_container(cfg.adapter, resolve=True), datamodule.preprocessing.get("channels")
        )
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
    if init is not None:  # a new run from the adapter's weights (a resume's checkpoint replaces them below)
        from adapt.adapters.warm_start import load_init_weights  # lazy: start-up

        load_init_weights(task.model, init, task.model_info)
        log.info("adapter weights initialised from %s (%s)", init.source, init.path)
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

    metrics = run_metrics(
        cfg,
        task,
        datamodule,
        trainer.global_step,
        {"before": before, "after": after},
        (trainable, total),
        time.perf_counter() - start,
        run_dir,
        init.record() if init is not None else None,
    )
    # Every rank takes part: under FSDP this gathers the sharded weights (to rank 0).
    weights = trainer.strategy.lightning_module_state_dict()
    check_weights(
        {k: v for k, v in weights.items() if k in task.trainable_names()},
        run_dir / "adapter",
        "the run diverged, so no adapter was written; lower optim.lr or train in full precision "
        "(trainer.precision=32-true), then train again or resume from an earlier checkpoint (ckpt_path=)",
    )
    if trainer.is_global_zero:
        save_run(cfg, task, datamodule, weights, metrics, run_dir)
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
