"""The package's shape, read from the source with ``ast``: three wings on one shared layer, no cycles.

The wings (server, client, bench) may use the shared top-level modules but not each other;
the shared layer uses no wing and no router; only the routers (``cli``, ``__main__``) reach
into the wings. Every ``import`` counts, including ones inside functions and under
``if TYPE_CHECKING:``, because a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable, Optional

import pytest

from conftest import REPO

PACKAGE = "groupchat"
WINGS = ("server", "client", "bench")
ROUTERS = frozenset({"groupchat.cli", "groupchat.__main__"})
SHARED_LAYER = frozenset({
    "groupchat", "groupchat.protocol", "groupchat.tls", "groupchat.errors",
    "groupchat.net", "groupchat.passwords",
})

Edge = tuple[str, str]


def module_name(path: Path, root: Path) -> str:
    """Dotted name of a source file; a package's ``__init__.py`` is named for the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path) -> dict[str, Path]:
    """Every module under ``root``, so that an import can be told apart from a name in a module."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def longest_known(name: str, known: Iterable[str]) -> Optional[str]:
    """The deepest known module that ``name`` is or lies inside, since ``a.b.func`` lives in ``a.b``."""
    parts = name.split(".")
    known = set(known)
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from, resolving leading dots."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{anchor}.{node.module}" if node.module else anchor


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Known modules that ``source`` imports explicitly, anywhere in the file; parents are not implied."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(node, module, is_package)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(hit for hit in (longest_known(t, known) for t in targets) if hit)
    found.discard(module)
    return found


def import_graph(root: Path) -> set[Edge]:
    """Every explicit import edge between modules of the package at ``root``."""
    modules = discover(root)
    known = set(modules)
    return {
        (name, target)
        for name, path in modules.items()
        for target in imports_of(path.read_text(encoding="utf-8"), name,
                                 path.name == "__init__.py", known)
    }


def wing_of(module: str) -> Optional[str]:
    """The wing a module belongs to (its package ``__init__`` included), or None outside the wings."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE and parts[1] in WINGS else None


def is_shared(module: str) -> bool:
    """Whatever is neither in a wing nor a router is shared, so a new top-level module is held to the rule."""
    return wing_of(module) is None and module not in ROUTERS


def wing_crossings(edges: Iterable[Edge]) -> list[str]:
    """Edges from one wing into another: the wings must only meet in the shared layer."""
    return sorted(f"{a} -> {b}" for a, b in edges
                  if wing_of(a) and wing_of(b) and wing_of(a) != wing_of(b))


def shared_leaks(edges: Iterable[Edge]) -> list[str]:
    """Edges from the shared layer up into a wing or a router, which would make it not shared."""
    return sorted(f"{a} -> {b}" for a, b in edges
                  if is_shared(a) and (wing_of(b) or b in ROUTERS))


def find_cycle(edges: Iterable[Edge]) -> Optional[list[str]]:
    """One import cycle as ``[a, b, ..., a]``, or None; searched in sorted order so it is repeatable."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(set(edges)):
        graph.setdefault(a, []).append(b)
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in graph.get(node, ()):
            if cycle := visit(nxt):
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start):
            return cycle
    return None


def layout_problems(edges: Iterable[Edge]) -> list[str]:
    """Everything wrong with an edge set, as lines for a failure message."""
    edges = set(edges)
    problems = [f"wing imports another wing: {e}" for e in wing_crossings(edges)]
    problems += [f"shared layer imports a wing or router: {e}" for e in shared_leaks(edges)]
    if cycle := find_cycle(edges):
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


@pytest.fixture(scope="module")
def edges() -> set[Edge]:
    return import_graph(REPO / PACKAGE)


def test_the_walk_finds_every_wing_the_shared_layer_and_real_edges(edges):
    modules = set(discover(REPO / PACKAGE))
    for wing in WINGS:
        assert any(wing_of(m) == wing and m != f"{PACKAGE}.{wing}" for m in modules), wing
    assert SHARED_LAYER <= modules
    assert ROUTERS <= modules
    assert ("groupchat.server.tcp", "groupchat.protocol") in edges
    assert len(edges) > 20


def test_no_wing_imports_another_wing(edges):
    crossings = wing_crossings(edges)
    assert not crossings, "wings must only meet in the shared layer:\n" + "\n".join(crossings)


def test_the_shared_layer_imports_no_wing_and_no_router(edges):
    leaks = shared_leaks(edges)
    assert not leaks, "the shared layer must not depend on a wing or the CLI:\n" + "\n".join(leaks)


def test_there_is_no_import_cycle(edges):
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_are_found_wherever_they_hide_and_resolved_to_modules():
    known = {"groupchat", "groupchat.protocol", "groupchat.errors", "groupchat.server",
             "groupchat.server.tcp", "groupchat.server.chat", "groupchat.client.terminal"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os, groupchat.errors\n"
        "from groupchat import __version__\n"
        "from groupchat.server import tcp\n"
        "from groupchat.protocol import encode_line\n"
        "from . import chat\n"
        "if TYPE_CHECKING:\n"
        "    from ..client.terminal import run_client\n"
        "def later():\n"
        "    from groupchat.server.chat import Chat\n"
    )
    found = imports_of(source, "groupchat.server.console", False, known)
    assert found == {"groupchat", "groupchat.errors", "groupchat.server.tcp",
                     "groupchat.protocol", "groupchat.server.chat", "groupchat.client.terminal"}
    assert imports_of("from . import tcp\n", "groupchat.server", True, known) == {
        "groupchat.server.tcp"}


def test_the_checker_reports_crossings_leaks_and_cycles_on_a_made_up_graph():
    bad = {
        ("groupchat.client.terminal", "groupchat.server.settings"),
        ("groupchat.protocol", "groupchat.cli"),
        ("groupchat.net", "groupchat.bench"),
        ("groupchat.server.a", "groupchat.server.b"),
        ("groupchat.server.b", "groupchat.server.a"),
        ("groupchat.cli", "groupchat.client.terminal"),
        ("groupchat.bench.runner", "groupchat.protocol"),
    }
    assert layout_problems(bad) == [
        "wing imports another wing: groupchat.client.terminal -> groupchat.server.settings",
        "shared layer imports a wing or router: groupchat.net -> groupchat.bench",
        "shared layer imports a wing or router: groupchat.protocol -> groupchat.cli",
        "import cycle: groupchat.server.a -> groupchat.server.b -> groupchat.server.a",
    ]
    fine = {("groupchat.cli", "groupchat.server.tcp"), ("groupchat.server.tcp", "groupchat.protocol")}
    assert layout_problems(fine) == []
