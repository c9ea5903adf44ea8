"""Where the names of a registry are typed outside it: an AST scan of ``adapt/``.

A registry (adapter kinds, metrics, shifts) holds its names once; a module that compares a
value with one of them, or lists two of them, repeats the registry and goes silently stale
when a row is added. ``retyped(names, home)`` finds such places, so a test can assert there
are none outside the registry's own folder or module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adapt"


def _strings(node: ast.AST, names: set[str]) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in names]


def retyped(names: set[str] | tuple[str, ...], home: tuple[str, ...], subject: str = "kind") -> list[str]:
    """``path:line: source`` of each place outside ``home`` (paths relative to ``adapt/``) that
    compares ``subject`` with one of ``names``, or holds two of them in one tuple, list, set or
    dict's keys."""
    names, found = set(names), []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(home):
            continue
        source = path.read_text()
        if not any(name in source for name in names):  # no constant can equal a name the text lacks
            continue
        for node in ast.walk(ast.parse(source)):
            collection = (
                node.keys
                if isinstance(node, ast.Dict)
                else node.elts
                if isinstance(node, (ast.Tuple, ast.List, ast.Set))
                else None
            )
            named = (
                _strings(ast.Tuple(elts=[k for k in collection if k is not None]), names)
                if collection is not None
                else []
            )
            compared = (
                isinstance(node, ast.Compare)
                and subject in (ast.get_source_segment(source, node) or "")
                and _strings(node, names)
            )
            if len(set(named)) >= 2 or compared:
                found.append(f"{relative}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found
