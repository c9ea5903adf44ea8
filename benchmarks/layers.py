"""The import graph of ``adapt``, read from the source: modules, imports, back edges, cycles.

``lint-imports`` says whether the layer contract holds; this report says how far the code is
from it and where. Every ``import`` statement of every module is read from the syntax tree
(``ast``), wherever it stands: at module level, inside a function (counted apart, with whether
its line says ``lazy: start-up``, the one reason the project allows), or under
``if TYPE_CHECKING:`` (never run, so left out of the cycles). Each module gets the layer of
``[tool.importlinter]`` in the checkout's ``pyproject.toml``; an import from a lower layer into
a higher one is a back edge, marked when the contract ignores it. Cycles are the strongly
connected components of more than one node, between modules and between the folders directly
under ``adapt/`` (a package and everything in it is one node). Imports written as strings
(``importlib.import_module("adapt.tasks.segmentation")``, a registry's ``"module:Class"``) are
not imports of the source and not counted, as ``lint-imports`` does not count them.

    python benchmarks/layers.py            # this checkout
    python benchmarks/layers.py /path/to/another/checkout --markdown
    python benchmarks/layers.py /path/to/an/older/checkout --contract .   # the old code, today's layers
"""

from __future__ import annotations

import argparse
import ast
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "adapt"
LAZY_MARK = "lazy: start-up"


@dataclass(frozen=True)
class Import:
    """One ``import`` statement's arrow from ``importer`` to ``imported`` (both modules of ``adapt``)."""

    importer: str
    imported: str
    line: int
    placement: str  # "module", "function" or "type-checking"
    lazy_mark: bool  # its line says ``lazy: start-up``


@dataclass
class Graph:
    """The modules of ``adapt``, its import statements, and the layer contract they are held to."""

    modules: list[str]
    imports: list[Import]
    layers: list[list[str]]
    ignored: list[str] = field(default_factory=list)

    def layer_of(self, module: str) -> int | None:
        """Index of ``module``'s layer, 0 at the top; ``None`` for a module the contract does not name."""
        for index, names in enumerate(self.layers):
            if any(module == f"{PACKAGE}.{n}" or module.startswith(f"{PACKAGE}.{n}.") for n in names):
                return index
        return None

    def is_ignored(self, edge: Import) -> bool:
        """Whether the contract's ``ignore_imports`` lists this arrow (``*`` stands for one name)."""
        for rule in self.ignored:
            left, right = (_pattern(side.strip()) for side in rule.split("->"))
            if left.fullmatch(edge.importer) and right.fullmatch(edge.imported):
                return True
        return False

    def back_edges(self) -> list[Import]:
        """Imports from a lower layer into a higher one."""
        edges = []
        for edge in self.imports:
            low, high = self.layer_of(edge.importer), self.layer_of(edge.imported)
            if low is not None and high is not None and high < low:
                edges.append(edge)
        return edges

    def cycles(self, level: str = "module") -> list[list[str]]:
        """Strongly connected components of more than one node among the imports that run.

        Args:
            level: ``"module"`` (each file a node) or ``"package"`` (each name directly under
                ``adapt``, a folder with all its modules, is one node).
        """
        node = (lambda m: m) if level == "module" else _top
        arrows: dict[str, set[str]] = {}
        for edge in self.imports:
            if edge.placement != "type-checking" and node(edge.importer) != node(edge.imported):
                arrows.setdefault(node(edge.importer), set()).add(node(edge.imported))
        return [sorted(c) for c in _components(arrows) if len(c) > 1]


def _pattern(rule: str) -> re.Pattern:
    return re.compile(r"\.".join(r"[^.]+" if part == "*" else re.escape(part) for part in rule.split(".")))


def _top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _components(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(arrows) | {n for targets in arrows.values() for n in targets})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(arrows.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(arrows.get(child, ())))))
            elif child in on_stack:
                low[current] = min(low[current], index[child])
    return found


def module_name(path: Path, source: Path) -> str:
    """``adapt/data/readers.py`` -> ``adapt.data.readers``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(source).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]) -> list[str]:
    """The modules of ``adapt`` an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = importer.split(".")[: len(importer.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in modules:  # ``import adapt.data.readers as r`` or an attribute of a package
            name = name.rpartition(".")[0]
        if name and name.split(".")[0] == PACKAGE and name != importer and name not in found:
            found.append(name)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(tree: ast.Module, importer: str, is_package: bool, lines: list[str], modules: set[str]) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, placement: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                text = "\n".join(lines[child.lineno - 1 : child.end_lineno])
                for target in _targets(child, importer, is_package, modules):
                    found.append(Import(importer, target, child.lineno, placement, LAZY_MARK in text))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if placement == "module" else placement)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), "type-checking")
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), placement)
            else:
                visit(child, placement)

    visit(tree, "module")
    return found


def read_contract(root: Path) -> tuple[list[list[str]], list[str]]:
    """The layers (top first, each a list of names under ``adapt``) and ignored imports of the
    first ``layers`` contract in ``root/pyproject.toml``; none when there is no such contract."""
    config = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {}).get("importlinter", {})
    for contract in config.get("contracts", []):
        if contract.get("type") == "layers":
            layers = [[name.strip() for name in re.split(r"[:|]", line)] for line in contract["layers"]]
            return layers, list(contract.get("ignore_imports", []))
    return [], []


def build_graph(root: Path = ROOT, contract: Path | None = None) -> Graph:
    """The import graph of the ``adapt`` package of the checkout at ``root``, held to the layer
    contract of ``contract`` (a checkout; default ``root`` itself)."""
    paths = sorted((root / PACKAGE).rglob("*.py"))
    names = {path: module_name(path, root) for path in paths}
    modules = set(names.values())
    imports: list[Import] = []
    for path, name in names.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        imports += _imports_of(tree, name, path.name == "__init__.py", text.splitlines(), modules)
    layers, ignored = read_contract(contract or root)
    return Graph(sorted(modules), imports, layers, ignored)


def summary(graph: Graph) -> dict[str, int]:
    """The counts of the report's table."""
    run = [e for e in graph.imports if e.placement != "type-checking"]
    inside = [e for e in run if e.placement == "function"]
    back = graph.back_edges()
    return {
        "modules": len(graph.modules),
        "import statements (adapt -> adapt)": len(graph.imports),
        "distinct module pairs": len({(e.importer, e.imported) for e in graph.imports}),
        "at module level": sum(e.placement == "module" for e in graph.imports),
        "inside functions": len(inside),
        "inside functions, marked lazy: start-up": sum(e.lazy_mark for e in inside),
        "under TYPE_CHECKING": sum(e.placement == "type-checking" for e in graph.imports),
        "back edges (upward imports)": len(back),
        "back edges ignored by the contract": sum(graph.is_ignored(e) for e in back),
        "back edges inside functions": sum(e.placement == "function" for e in back),
        "module cycles (SCC > 1)": len(graph.cycles("module")),
        "package cycles (SCC > 1)": len(graph.cycles("package")),
    }


def report(graph: Graph, markdown: bool = False) -> str:
    """The counts, the back edges and the cycles, as text or Markdown."""
    out = []
    counts = summary(graph)
    if markdown:
        out += ["| | count |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in counts.items()]
    else:
        width = max(map(len, counts))
        out += [f"{k:<{width}}  {v}" for k, v in counts.items()]
    out += ["", "back edges (importer:line -> imported; placement; lazy mark; ignored by the contract):"]
    for edge in sorted(graph.back_edges(), key=lambda e: (e.importer, e.line)):
        out.append(
            f"{'- ' if markdown else '  '}{edge.importer}:{edge.line} -> {edge.imported}; {edge.placement}"
            f"{'; lazy: start-up' if edge.lazy_mark else ''}{'; ignored' if graph.is_ignored(edge) else ''}"
        )
    for level in ("module", "package"):
        out += ["", f"{level} cycles:"]
        out += [f"{'- ' if markdown else '  '}{' <-> '.join(c)}" for c in graph.cycles(level)] or ["  none"]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="a checkout (default: this one)")
    parser.add_argument(
        "--contract",
        type=Path,
        help="the checkout whose pyproject.toml holds the layers "
        "(default: the one read), to compare two versions of the code under one contract",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    print(report(build_graph(args.root, args.contract), args.markdown))


if __name__ == "__main__":
    main()
