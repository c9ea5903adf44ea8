"""Generators of faults for the generated fault tests (``tests/test_generated_*.py``).

Nothing here is a hand list of keys: the keys of every command come from ``adapt.schema.SCHEMAS``
(walked through nested sections and every adapter kind), the faults of a key from its type and its
``rule`` metadata (bounds, choices, custom checks), so a key added to the schema is faulted by the
same tests the day it is added. Values are drawn by hypothesis strategies and written as command-line
overrides, so the command sees exactly what a user's typing gives it (Hydra's own parser).

The number of examples is bounded for CI (fixed seeds, ``derandomize=True``); set
``SAM2_ADAPT_FAULTS=deep`` for a local run with ten times the examples and fresh random seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conftest import ModelLoaded, forbid_model_loads  # noqa: F401 (one tripwire for every fault test)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

DEEP = os.environ.get("SAM2_ADAPT_FAULTS", "ci") == "deep"
RESERVED = {"true", "false", "null", "none", "nan", "inf", "yes", "no", "on", "off", "all", "auto"}


def fault_settings(examples: int) -> settings:
    """CI: ``examples`` drawn from fixed seeds; ``SAM2_ADAPT_FAULTS=deep``: ten times as many, random seeds."""
    return settings(
        max_examples=examples * (10 if DEEP else 1),
        derandomize=not DEEP,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --------------------------------------------------------------------------- values


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10).filter(lambda s: s not in RESERVED)
identifiers = st.builds(lambda w: f"bogus_{w}", words)
mappings = st.dictionaries(words, st.integers(0, 9), min_size=1, max_size=2)
nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])


def render(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted so that ``'1'`` stays text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


# --------------------------------------------------------------------------- keys of the schema


@dataclass(frozen=True)
class Key:
    """One key of a command's config: its dotted name, type, ``rule`` metadata and the overrides
    that make its section exist (``adapter=<kind>`` for an adapter kind's options)."""

    command: str
    name: str
    annotation: Any
    meta: Any
    base: tuple[str, ...] = ()

    @property
    def parent(self) -> str:
        return self.name.rpartition(".")[0]

    def __str__(self) -> str:
        return f"{self.command}:{' '.join(self.base) + ' ' if self.base else ''}{self.name}"


def schema_keys(command: str) -> list[Key]:
    """Every leaf key of ``command``'s schema (``adapt.schema.SCHEMAS``), sections walked."""
    from adapt.schema import ADAPTER_SCHEMAS, SCHEMAS, Train

    keys: list[Key] = []

    def walk(schema: type, prefix: str, base: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            if schema is Train and f.name == "adapter":
                seen: set[type] = set()
                for kind, kind_schema in ADAPTER_SCHEMAS.items():
                    if kind_schema not in seen:
                        seen.add(kind_schema)
                        walk(kind_schema, "adapter.", (f"adapter={kind}",))
                continue
            section = next((o for o in _options(hints[f.name]) if dataclasses.is_dataclass(o)), None)
            if section is not None:
                walk(section, f"{prefix}{f.name}.", base)
            else:
                keys.append(Key(command, f"{prefix}{f.name}", hints[f.name], f.metadata, base))

    walk(SCHEMAS[command], "", ())
    return keys


def _options(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return typing.get_args(annotation)
    return (annotation,)


# --------------------------------------------------------------------------- faults of a key


@dataclass(frozen=True)
class Fault:
    """A drawn fault: the override to give (``key=value`` or ``+parent.bogus=1``) and the key the
    message must name."""

    kind: str
    override: str
    names: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.override}"


def _bounded(meta: Any) -> list[st.SearchStrategy]:
    """Values outside ``ge``/``gt``/``le``/``lt``, and off a ``multiple_of``."""
    out = []
    integer = meta.get("integer", False)
    step = st.integers(1, 1000) if integer else st.floats(1e-3, 1e3)
    for name, sign in (("ge", -1), ("gt", -1), ("le", 1), ("lt", 1)):
        bound = meta.get(name)
        if bound is None:
            continue
        if name in ("gt", "lt"):
            out.append(st.just(bound))  # the open bound itself
        out.append(step.map(lambda d, b=bound, s=sign: (int(b) if integer else b) + s * d))
    if meta.get("multiple_of"):
        m, low = meta["multiple_of"], meta.get("ge") or 1
        out.append(st.integers(1, 20).map(lambda k, m=m, low=low: int(low) + k * m + 1))
    return out


def key_faults(key: Key) -> dict[str, st.SearchStrategy]:
    """Strategies of the faults that apply to ``key``, by kind (values, not yet overrides)."""
    options = [o for o in _options(key.annotation) if o is not type(None)]
    nullable = type(None) in _options(key.annotation) or key.annotation is Any
    numeric = [o for o in options if o in (int, float)]
    faults: dict[str, st.SearchStrategy] = {"empty": st.just(""), "mapping": mappings}
    if numeric and str not in options:
        faults["wrong type"] = words
    if bool in options and not numeric and str not in options:
        faults["wrong type"] = st.one_of(words, st.integers(2, 9))
    if options == [str] or (str in options and not numeric and bool not in options and not key.meta.get("choices")):
        faults["wrong type"] = st.lists(words, min_size=2, max_size=3)
    if float in options:
        faults["not finite"] = nonfinite
    if not nullable:
        faults["null"] = st.just(None)
    if key.meta.get("choices"):
        faults["unknown choice"] = words
    bounded = _bounded({**key.meta, "integer": int in options and float not in options})
    if bounded and numeric:
        faults["out of range"] = st.one_of(*bounded)
    return faults


def fault_kinds(key: Key) -> list[str]:
    """The kinds of fault that apply to ``key`` (``key_faults``), and an unknown key beside it."""
    return sorted(key_faults(key)) + ["unknown neighbour"]


@st.composite
def fault_of(draw: Callable, key: Key, kind: str | None = None) -> Fault:
    """One fault of ``key`` of ``kind`` (drawn when ``None``): a bad value, or an unknown key beside it."""
    faults = key_faults(key)
    kind = kind or draw(st.sampled_from(fault_kinds(key)))
    if kind == "unknown neighbour":
        name = draw(identifiers)
        neighbour = f"{key.parent}.{name}" if key.parent else name
        return Fault(kind, f"+{neighbour}=1", neighbour)
    value = draw(faults[kind])
    return Fault(kind, f"++{key.name}={render(value)}", key.name)


def names_key(message: str, name: str) -> bool:
    """Whether one problem line of the message is about ``name`` (``  - name=...`` / ``name: ...``),
    or Hydra's refusal names it."""
    lines = [line.strip() for line in message.splitlines()]
    return (
        any(line.startswith((f"- {name}=", f"- {name}:", f"- {name} ")) for line in lines)
        or (f"'{name}'" in message or f" {name}=" in message or f"{name}:" in message)
        and "does not compose" in message
    )


# --------------------------------------------------------------------------- running an entry point


def run_entry(action: Callable[[], Any]) -> tuple[Any, str]:
    """``action`` as a command line runs it: ``(exit status, stderr + stdout)``; a traceback from a
    bug propagates (the test then fails with it)."""
    out = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try:
            result = action()
            code = result if isinstance(result, int) else 0
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue()


def argv_of(*args: str) -> Callable[[], None]:
    """A context in which ``sys.argv`` is ``["adapt", *args]``."""

    @contextlib.contextmanager
    def context():
        saved = sys.argv
        sys.argv = ["adapt", *args]
        try:
            yield
        finally:
            sys.argv = saved

    return context


# --------------------------------------------------------------------------- no model past the door
