"""What every command line shares: its Hydra config, and the door it passes before it runs.

``command_line`` composes the config once before Hydra runs the command, so that Hydra's own
refusals (an unknown group choice, a key that does not exist, a malformed override) are user
errors too, printed as one message with exit status 2 (``adapt.exits.user_errors``), not exit 1.

That first composition is also the door: ``command_line`` checks the composed config against
the schema, loads the data card it names and looks for the data folder
(``adapt.data.sources.check_data``) before the command's own module imports torch, Lightning or
transformers, so such a mistake is answered in about a second (``benchmarks/door.py``). Command
modules therefore import the heavy libraries inside the functions that use them (each such
import says ``lazy: start-up``). The door sits below the workflows that have command lines of
their own (``adapt.hub``, ``adapt.app``, ``adapt.export``) and above the schema and the data it
checks; the run folder's checks of ``adapt.train`` run in its Hydra callback
(``adapt.training.run_dir.Preflight``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from adapt.conf import CONFIG_DIR
from adapt.errors import ConfigError
from adapt.exits import user_errors

#: Config name -> the module a user runs, where they differ.
COMMANDS = {"hub": "hub push|pull"}


def register_cli_config(name: str) -> str:
    """Store ``configs/<name>.yaml`` in the ConfigStore and return its name for ``@hydra.main``.

    The command-line tools take ``adapter=<path>``, but ``configs/`` also holds the training
    group ``adapter/``; read from there, Hydra would take ``adapter=`` as a group choice. From
    the ConfigStore (``config_path=None``) no group is in reach and every key is a plain value.
    """
    ConfigStore.instance().store(name=name, node=OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    return name


def check_composes(config_name: str, overrides: list[str], config_dir: Path | None = None) -> DictConfig:
    """Compose ``config_name`` with ``overrides`` as Hydra will; its refusal as a ``ConfigError``.

    Args:
        config_dir: the config folder of a command whose config has groups (``adapt.train``);
            ``None`` for a command registered with ``register_cli_config``.

    Returns:
        The composed config (with its ``hydra`` node).

    Raises:
        ConfigError: Hydra's message (it lists the valid choices of a group) and the fix.
    """
    from hydra import compose, initialize, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    context = (
        initialize_config_dir(str(config_dir), version_base="1.3")
        if config_dir
        else initialize(version_base="1.3", config_path=None)
    )
    try:
        with context:
            return compose(config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err).split("\nConfig search path:")[0].strip()
        override = getattr(err, "override", None)  # a parse error names the override only sometimes
        if override and override not in text:
            text = f"{override}: {text}"
        raise ConfigError(
            f"the command line does not compose: {text}\nFix that override as said above; "
            f"python -m adapt.{COMMANDS.get(config_name, config_name)} --help lists the options"
        ) from None


def door(config_name: str, overrides: list[str], config_dir: Path | None = None) -> None:
    """Compose the command line, check it against the schema and check its data; light imports only.

    Raises:
        AdaptError: the first mistake found, as the command itself would report it.
    """
    from adapt.data.sources import check_data  # lazy: start-up (a Hydra flag such as --help needs neither)
    from adapt.schema import SCHEMAS, validate  # lazy: start-up

    cfg = check_composes(config_name, overrides, config_dir)
    if config_name in SCHEMAS:
        validate(cfg, config_name)
    data = cfg.get("data")
    if config_name in ("train", "evaluate", "annotate") and isinstance(data, DictConfig):
        # evaluate and annotate may take the data folder from the adapter: their own code looks for the data
        check_data(data.get("card"), data.get("root"), listed=config_name == "train")


#: Hydra's flags that print (help, the config, its info) and exit without running the command.
PRINT_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def _print_only(main: str, config_name: str, config_dir: Path | None) -> None:
    """Let Hydra answer a ``PRINT_FLAGS`` command line without importing the module of ``main``."""
    import hydra

    def never_called(cfg: DictConfig) -> None:
        raise AssertionError("Hydra ran a command for a flag that only prints")

    never_called.__module__ = main.split(":")[0]  # Hydra names the job after the command's module
    config_path = str(config_dir) if config_dir else None
    hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(never_called)()


def command_line(main: Callable[[], Any] | str, config_name: str, config_dir: Path | None = None) -> None:
    """Run a Hydra ``main`` from the command line, after the door (``door``) let its overrides in.

    ``main`` may be given as ``"module:function"``: it is imported once the door has passed, so a
    mistake is reported before that module's imports run. A command line with Hydra's own flags
    (``-m``, ``--cfg``, ``--help``, ...) goes to Hydra as is: sweeps do not compose as one config.
    """
    overrides = sys.argv[1:]
    if not any(arg.startswith("-") for arg in overrides):
        with user_errors():
            door(config_name, overrides, config_dir)
    if isinstance(main, str) and any(arg in PRINT_FLAGS for arg in overrides):
        _print_only(main, config_name, config_dir)
        return
    if isinstance(main, str):
        import importlib

        module, name = main.split(":")
        main = getattr(importlib.import_module(module), name)
    main()
