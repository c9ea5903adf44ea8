"""``python -m adapt.evaluate``: score an adapter (or zero-shot SAM2) on a data card's split.

::

    python -m adapt.evaluate adapter=outputs/demo/<run> split=val out=eval/demo
    python -m adapt.evaluate adapter=outputs/demo/<run> compare=none out=eval/gain   # vs zero-shot base
    python -m adapt.evaluate adapter=none model=sam2.1_hiera_tiny data.card=msd_liver out=eval/zs
    python -m adapt.evaluate adapter=<semantic run> prompt=auto out=eval/auto
    python -m adapt.evaluate adapter=<run> task=propagation prompt=box out=eval/memory

Writes ``cases.csv``, ``summary.json`` and ``masks/`` into ``out`` and prints a table (see
``docs/evaluation.md``). The work is in ``adapt.evaluation``; this module is the command line.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from adapt.cli import command_line, register_cli_config, user_errors
from adapt.outputs import claimed

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path=None, config_name=register_cli_config("evaluate"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors are printed without a traceback (exit code 2)."""
    from adapt.evaluation import evaluate  # lazy: start-up

    with user_errors(), claimed(cfg.get("out"), "out"):
        evaluate(cfg)


if __name__ == "__main__":
    command_line(main, "evaluate")
