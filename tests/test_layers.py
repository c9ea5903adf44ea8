"""The import graph of ``adapt`` has no cycle between modules, and ``benchmarks/layers.py``, which
reads that graph, sees every kind of import: at module level, inside a function (with its
``lazy: start-up`` mark), under ``TYPE_CHECKING`` (never run: no cycle), relative, and upward
across the layers of a contract. ``lint-imports`` (CI) checks the layers themselves.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("layers_report", ROOT / "benchmarks" / "layers.py")
layers = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # its dataclasses look it up
_spec.loader.exec_module(layers)


def test_no_module_of_adapt_imports_itself_through_others():
    """A cycle between modules, even through an import inside a function, is refused."""
    graph = layers.build_graph(ROOT)
    assert len(graph.modules) > 100 and graph.imports
    assert graph.cycles("module") == []


def test_every_import_inside_a_function_is_marked_lazy_for_start_up():
    """An import inside a function hides a dependency from the reader: it is allowed only where it keeps a
    command's start-up light, and then its line says so (``lazy: start-up``)."""
    graph = layers.build_graph(ROOT)
    inside = [edge for edge in graph.imports if edge.placement != "module"]
    assert inside, "the graph reader sees imports inside functions"
    assert [f"{e.importer}:{e.line} -> {e.imported}" for e in inside if not e.lazy_mark] == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent("""
        [[tool.importlinter.contracts]]
        type = "layers"
        containers = ["adapt"]
        layers = ["top", "low : base"]
        ignore_imports = ["adapt.*.known -> adapt.top"]
    """)
    )
    for name, text in {"__init__.py": "", **files}.items():
        path = tmp_path / "adapt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_the_report_finds_cycles_and_back_edges_wherever_the_import_stands(tmp_path):
    root = _package(
        tmp_path,
        {
            "top.py": "from adapt import low\n",
            "low/__init__.py": "",
            "low/known.py": "def f():\n    from adapt.top import x  # lazy: start-up\n",
            "low/hidden.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import adapt.base\n",
            "base.py": "from .low import hidden\n",
            "low/loop.py": "def g():\n    import adapt.top\n",
        },
    )
    graph = layers.build_graph(root)
    arrows = {(e.importer, e.imported): (e.placement, e.lazy_mark) for e in graph.imports}
    assert arrows == {
        ("adapt.top", "adapt.low"): ("module", False),
        ("adapt.low.known", "adapt.top"): ("function", True),
        ("adapt.low.hidden", "adapt.base"): ("type-checking", False),
        ("adapt.base", "adapt.low.hidden"): ("module", False),
        ("adapt.low.loop", "adapt.top"): ("function", False),
    }
    back = {(e.importer, graph.is_ignored(e)) for e in graph.back_edges()}
    assert back == {("adapt.low.known", True), ("adapt.low.loop", False)}
    assert graph.cycles("module") == []  # the TYPE_CHECKING arrow does not run
    assert graph.cycles("package") == [["adapt.low", "adapt.top"]]
    counts = layers.summary(graph)
    assert (counts["back edges (upward imports)"], counts["back edges ignored by the contract"]) == (2, 1)

    (root / "adapt" / "low" / "hidden.py").write_text("import adapt.base\n")
    assert layers.build_graph(root).cycles("module") == [["adapt.base", "adapt.low.hidden"]]
