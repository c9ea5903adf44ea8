"""Rules between the trainer's keys and the data, checked once the cases are indexed.

The schema (``adapt.schema``) checks each key alone when the config is composed; some values
are only wrong for a given dataset: ``trainer.val_check_interval=30`` on an epoch of 8
batches, a ``limit_train_batches`` fraction that leaves no batch, gradients accumulated over
more batches than an epoch has. Lightning finds the first two only when ``fit`` starts -- after
the model has loaded and the "before" validation has run -- and answers with its own
traceback; the third it accepts silently, stepping once per epoch. Here they are found right
after the data is indexed, before the model loads, and refused together (exit 2) with the key,
its value, the data's number and the fix. A run that would stop at ``max_epochs`` long before
its ``max_steps`` is not wrong, but is said (a warning).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from adapt.errors import ConfigError

log = logging.getLogger(__name__)


def world_size(trainer: Mapping[str, Any]) -> int:
    """Processes that share the training set: ``devices × num_nodes`` when both are counts, else 1.

    With ``devices=auto`` or a list the count is unknown here; 1 gives the most batches per
    process, so a rule checked against it never refuses a valid run.
    """
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0 and isinstance(nodes, int):
        return devices * nodes
    return 1


def limited(batches: int, limit: Any) -> int:
    """Batches left by a ``limit_*_batches`` value (``None``: all; a float: that share; an int: at most that)."""
    if limit is None:
        return batches
    if isinstance(limit, float):
        return int(batches * limit)
    return min(batches, int(limit))


def epoch_batches(samples: int, batch_size: int, ranks: int) -> int:
    """Batches of one epoch on one process: the sampler gives each of ``ranks`` ``ceil(samples / ranks)``."""
    return math.ceil(math.ceil(samples / ranks) / batch_size)


def check_against_data(
    trainer: Mapping[str, Any], train_samples: int, val_samples: int, batch_size: int, val_batch_size: int
) -> None:
    """Refuse trainer settings that the indexed data cannot honour.

    Args:
        trainer: the ``trainer`` config node, resolved.
        train_samples, val_samples: samples (slices or clips) of the training and validation sets.
        batch_size, val_batch_size: ``data.batch_size`` and ``data.val_batch_size``.

    Raises:
        ConfigError: every problem, one per line: the key, its value, the data's number, the fix.
    """
    ranks = world_size(trainer)
    where = f" per process ({ranks} processes)" if ranks > 1 else ""
    full = epoch_batches(train_samples, batch_size, ranks)
    data = f"{train_samples} training samples in batches of data.batch_size={batch_size}"
    overfit = trainer.get("overfit_batches") or 0
    limit_key, limit = (
        ("overfit_batches", overfit) if overfit else ("limit_train_batches", trainer.get("limit_train_batches"))
    )
    batches = limited(full, limit)
    problems = []
    if batches == 0 and limit:
        problems.append(
            f"trainer.{limit_key}={limit} leaves no training batch of the {full} an epoch has{where} "
            f"({data}); use at least {1 / full:.3g} or a number of batches"
        )
    val_limit = trainer.get("limit_val_batches")
    val_full = epoch_batches(val_samples, val_batch_size, ranks) if val_samples else 0
    if isinstance(val_limit, float) and val_limit > 0 and val_full and limited(val_full, val_limit) == 0:
        problems.append(
            f"trainer.limit_val_batches={val_limit} leaves no validation batch of {val_full}{where} "
            f"({val_samples} validation samples, data.val_batch_size={val_batch_size}); "
            f"use at least {1 / val_full:.3g}, a number of batches, or 0 for no validation"
        )
    interval, every_epoch = trainer.get("val_check_interval"), trainer.get("check_val_every_n_epoch")
    if (
        isinstance(interval, int)
        and not isinstance(interval, bool)
        and every_epoch is not None
        and batches
        and interval > batches
    ):
        problems.append(
            f"trainer.val_check_interval={interval} is larger than an epoch: {batches} training "
            f"batches{where} ({data}); give at most {batches}, a fraction of an epoch (e.g. 0.5), or "
            "trainer.check_val_every_n_epoch=null to count the interval in steps across epochs"
        )
    if isinstance(interval, float) and every_epoch is None:
        problems.append(
            f"trainer.val_check_interval={interval} is a fraction of an epoch, but "
            "trainer.check_val_every_n_epoch=null counts the interval in steps; give a number of "
            f"steps (e.g. trainer.val_check_interval={max(1, int(interval * batches))}) or "
            "trainer.check_val_every_n_epoch=1"
        )
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    if batches and accumulate > batches:
        problems.append(
            f"trainer.accumulate_grad_batches={accumulate} is larger than an epoch: {batches} "
            f"training batches{where} ({data}), so each optimizer step would average one epoch, not "
            f"{accumulate} batches; give at most {batches}, or lower data.batch_size"
        )
    if problems:
        head = (
            "a trainer setting does not fit the data"
            if len(problems) == 1
            else f"{len(problems)} trainer settings do not fit the data"
        )
        raise ConfigError(
            f"{head} (change it on the command line, e.g. key=value, or in the recipe):\n  - " + "\n  - ".join(problems)
        )
    _say_early_stop(trainer, batches, accumulate)


def _say_early_stop(trainer: Mapping[str, Any], batches: int, accumulate: int) -> None:
    """Warn when ``max_epochs`` ends the run well before its ``max_steps``."""
    max_steps, max_epochs = trainer.get("max_steps") or -1, trainer.get("max_epochs")
    if max_steps <= 0 or max_epochs in (None, -1) or not batches:
        return
    reachable = max_epochs * math.ceil(batches / accumulate)
    if reachable < max_steps:
        log.warning(
            "trainer.max_epochs=%d ends the run after about %d optimizer steps, before trainer.max_steps=%d "
            "(an epoch is %d batches); pass trainer.max_epochs=-1 to train by steps alone",
            max_epochs,
            reachable,
            max_steps,
            batches,
        )
