"""Generated config faults: every key of every command, faulted from the schema itself.

``tests/fault_gen.py`` walks ``adapt.schema.SCHEMAS`` for the keys (a key added there is faulted
here without a new row) and draws, from each key's type and ``rule``, a wrong type, a value out of
range or not finite, an empty value, null where a value is needed, an unknown choice, or an unknown
key beside it. Three depths:

* every key, every kind of fault, against the schema (``validate`` on the composed config, the
  override applied as Hydra's parser reads it): fast, exhaustive over keys;
* drawn keys and faults through each command's entry point in-process (``adapt.cli.command_line``
  with ``sys.argv``, Hydra included): exit status 2, the key named, no traceback, no run folder or
  output written, no model loaded;
* ``python -m adapt.data``'s commands and options, from its own table of options;
* a handful as real subprocesses.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_gen import (
    Fault,
    argv_of,
    fault_kinds,
    fault_of,
    fault_settings,
    forbid_model_loads,
    names_key,
    render,
    run_entry,
    schema_keys,
)
from hydra import compose, initialize, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from adapt.conf import CONFIG_DIR, register_recipes, register_resolvers
from adapt.errors import ConfigError
from adapt.schema import SCHEMAS

register_resolvers()
register_recipes()

COMMANDS = sorted(SCHEMAS)
#: Where each command's entry point lives; the test below fails for a command added without a row.
ENTRY = {
    "train": "adapt.train",
    "evaluate": "adapt.evaluate",
    "predict": "adapt.predict",
    "hub": "adapt.hub.share",
    "export": "adapt.export.__main__",
    "app": "adapt.app.__main__",
    "annotate": "adapt.annotate.command",
}
#: The key a command writes to (a refused command must leave it absent) and the base of its command line.
OUTPUT = {
    "train": "hydra.run.dir",
    "evaluate": "out",
    "predict": "output",
    "hub": "out_dir",
    "export": "out",
    "app": "out_dir",
    "annotate": "out",
}
TRAIN_BASE = ("model=tiny", "trainer.accelerator=cpu")
KEYS = [key for command in COMMANDS for key in schema_keys(command)]
PARSER = OverridesParser.create()


@functools.cache
def composed(command: str, base: tuple[str, ...]):
    """The command's config as Hydra composes it from ``base`` (cached; copied per use)."""
    if command == "train":
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=[*TRAIN_BASE, *base])
    from adapt.cli import register_cli_config

    with initialize(version_base="1.3", config_path=None):
        return compose(register_cli_config(command), overrides=list(base))


@functools.cache
def resolved(command: str, base: tuple[str, ...]) -> dict:
    """``composed`` as plain data, each value resolved where it can be without Hydra's runtime (the schema
    reads a ``DictConfig`` and a mapping alike; plain data keeps thousands of checks fast)."""

    def plain(node):
        if not OmegaConf.is_dict(node):
            return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_list(node) else node
        out = {}
        for name in node:
            try:
                out[name] = plain(node[name])
            except Exception:  # ${hydra:...}: only Hydra's runtime resolves it; the schema skips it too
                continue
        return out

    return plain(composed(command, base))


def apply(cfg: dict, override: str) -> dict:
    """``cfg`` with one ``+key=``/``++key=`` override applied as Hydra applies it (its parser's value)."""
    parsed = PARSER.parse_overrides([override])[0]
    cfg = copy.deepcopy(cfg)
    *parents, leaf = parsed.key_or_group.split(".")
    node = cfg
    for name in parents:
        if not isinstance(node.get(name), dict):
            node[name] = {}  # a section that is null or absent, as ++ creates it
        node = node[name]
    node[leaf] = parsed.value()
    return cfg


def test_every_command_has_an_entry_and_an_output():
    assert set(ENTRY) == set(SCHEMAS) == set(OUTPUT)
    assert len(KEYS) >= 150  # the walk reaches nested sections and every adapter kind


@pytest.mark.parametrize("key", KEYS, ids=str)
@given(data=st.data())
@fault_settings(3)
def test_every_fault_of_every_key_is_refused_by_the_schema(key, data):
    """Each example draws one value of every kind of fault that applies to the key."""
    from adapt.schema import validate

    for kind in fault_kinds(key):
        fault = data.draw(fault_of(key, kind), label=kind)
        cfg = apply(resolved(key.command, key.base), fault.override)
        with pytest.raises(ConfigError) as raised:
            validate(cfg, key.command)
        assert names_key(str(raised.value), fault.names), f"{fault}: {raised.value}"


# --------------------------------------------------------------------------- through the entry points


@pytest.fixture
def no_model(monkeypatch):
    forbid_model_loads(monkeypatch)


def command_argv(command: str, tmp: Path, key_base: tuple[str, ...], override: str) -> list[str]:
    """The command line: the command's base, the output in ``tmp``, the fault last."""
    base = [*TRAIN_BASE, f"out_dir={tmp / 'run'}"] if command == "train" else []
    return [*base, *key_base, f"{OUTPUT[command]}={tmp / 'written'}", override]


def run_command(command: str, argv: list[str]):
    from adapt.cli import command_line

    module = importlib.import_module(ENTRY[command])
    config_dir = CONFIG_DIR if command == "train" else None
    if command == "hub":
        argv = [a for a in argv if not a.startswith(("push", "pull"))]
    with argv_of(*argv)():
        return run_entry(lambda: command_line(module.main, command, config_dir))


@pytest.mark.parametrize("command", COMMANDS)
@given(data=st.data())
@fault_settings(4)
def test_a_fault_given_to_the_command_line_ends_in_exit_2_naming_the_key(
    command, data, tmp_path_factory, no_model, monkeypatch
):
    tmp = tmp_path_factory.mktemp(command)
    monkeypatch.chdir(tmp)
    key = data.draw(st.sampled_from([k for k in KEYS if k.command == command]), label="key")
    fault = data.draw(fault_of(key), label="fault")
    if fault.override.startswith("++") and _has(composed(command, key.base), key.name):
        fault = Fault(fault.kind, fault.override[2:], fault.names)  # the key is in the config: as a user types it
    if fault.kind == "unknown neighbour" and data.draw(st.booleans(), label="without +"):
        fault = Fault(fault.kind, fault.override[1:], fault.names)  # Hydra's own refusal (check_composes)
    code, message = run_command(command, command_argv(command, tmp, key.base, fault.override))
    assert code == 2, f"{fault}: exit {code}\n{message[-3000:]}"
    assert "Traceback" not in message and "sam2-adapt: " in message, message[-3000:]
    assert names_key(message, fault.names), f"{fault}: {message[-2000:]}"
    assert not (tmp / "written").exists() and not (tmp / "run").exists(), sorted(p.name for p in tmp.iterdir())


def _has(cfg, dotted: str) -> bool:
    """Whether the composed config holds ``dotted`` (interpolations left unresolved)."""
    node = OmegaConf.to_container(cfg, resolve=False)
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --------------------------------------------------------------------------- python -m adapt.data


def data_faults() -> list[tuple[str, list[str], list[str]]]:
    """``(name, argv, what the message names)``: for every command of ``adapt.data.__main__.OPTIONS``,
    an unknown option, an option without ``=``; for every option, the faults of its kind."""
    from adapt.data.__main__ import OPTION_FAULTS, OPTIONS

    rows = [
        ("no command", [], ["init", "check"]),
        ("unknown command", ["bogus"], ["bogus"]),
        ("init: no folder", ["init"], ["folder"]),
        ("init: folder missing", ["init", "/nonexistent-folder"], ["/nonexistent-folder"]),
    ]
    for command, options in OPTIONS.items():
        base = {"init": ["/nonexistent-folder"], "cards": []}.get(command, ["card=ct_phantom"])
        rows.append((f"{command}: unknown option", [command, *base, "bogus=1"], ["bogus"]))
        rows.append((f"{command}: not key=value", [command, *base, "bogus"], ["bogus"]))
        for option, kind in options.items():
            first = [a for a in base if not a.startswith(f"{option}=")]
            for value in OPTION_FAULTS[kind]:
                rows.append((f"{command}: {option}={value!r}", [command, *first, f"{option}={value}"], [option]))
    return rows


DATA_FAULTS = data_faults()


@pytest.mark.parametrize("name, argv, names", DATA_FAULTS, ids=[r[0] for r in DATA_FAULTS])
def test_data_command_faults_end_in_exit_2_naming_the_option(name, argv, names, tmp_path, monkeypatch):
    from adapt.data.__main__ import main

    monkeypatch.chdir(tmp_path)
    code, message = run_entry(lambda: main(argv))
    assert code == 2, f"exit {code}: {message[-2000:]}"
    assert "Traceback" not in message and "sam2-adapt: " in message
    for text in names:
        assert text in message, (text, message[-2000:])
    assert not list(tmp_path.iterdir()), "a refused command wrote files"


# --------------------------------------------------------------------------- real command lines


SUBPROCESS = [  # (module, argv given to it, the key named): one Hydra command with groups, one without, adapt.data
    (
        "adapt.train",
        ["model=tiny", "optim.lr=inf", "+data.prompt.bogus_kind=1"],
        ["optim.lr", "data.prompt.bogus_kind"],
    ),
    ("adapt.export", ["quantize=int4"], ["quantize"]),
    ("adapt.data", ["check", "card=ct_phantom", "bogus=1"], ["bogus"]),
]


@pytest.mark.slow
def test_real_command_lines_exit_2_naming_the_key(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    runs = [
        (
            module,
            names,
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    module,
                    *argv,
                    *([f"hydra.run.dir={tmp_path / 'run'}"] if module == "adapt.train" else []),
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for module, argv, names in SUBPROCESS
    ]
    for module, names, process in runs:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, (module, out[-1000:], err[-2000:])
        assert "Traceback" not in err and all(name in err for name in names), (module, err[-2000:])
    assert not list(tmp_path.iterdir())


def test_render_round_trips_through_hydra():
    for value in ["abc", "", ["ab", "cd"], {"ab": 1}, None, 3, -2.5, True]:
        assert PARSER.parse_overrides([f"k={render(value)}"])[0].value() == value
