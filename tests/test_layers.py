"""The package layout holds: no import circle, no import of a higher layer, small modules.

Every import counts, also one inside a function; only those under
``if TYPE_CHECKING:`` do not (they never run). Read from the source with
``ast``, so the test needs no import of deskbot itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deskbot"

# Lowest first: a module may import its own layer and the ones before it.
LAYERS = (
    ("deskbot", "deskbot.sipuri", "deskbot.notices", "deskbot.failpoints", "deskbot.loglimit"),
    ("deskbot.settings",),
    ("deskbot.store",),
    ("deskbot.directory",),
    ("deskbot.senders",),
    ("deskbot.relay",),
    ("deskbot.sources",),
    ("deskbot.service",),
    ("deskbot.cli",),
)
MAX_TOP_LEVEL = 6
MAX_LINES = 600


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(n) for n in ast.walk(statement))
    return skipped


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The deskbot modules ``name`` imports, each resolved to the most specific module."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            wanted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            wanted = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in wanted:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for target in list(found):
        parts = target.split(".")
        found.update(
            ".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) != name
        )
    return found & set(known)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(name: str) -> int:
    for rank, members in enumerate(LAYERS):
        if name in members[1:] or (name == members[0] and rank == 0):
            return rank
        if rank > 0 and (name == members[0] or name.startswith(members[0] + ".")):
            return rank
    raise AssertionError(f"{name} is in no layer: add its package to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_another_in_a_circle() -> None:
    assert cycles(graph()) == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_the_top_level_holds_few_modules_and_no_module_is_long() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    "face", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("__init__.py"))
)
def test_every_package_face_costs_nothing_to_import(face: str) -> None:
    """A package's __init__ holds a docstring (and the version at the top): no import."""
    tree = ast.parse((PACKAGE / face).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: a planted circle and an upward import are found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    known = modules()
    source = "def f():\n    from deskbot.cli.commands import main\n"
    path = tmp_path / "planted.py"
    path.write_text(source)
    found = imports_of("deskbot.relay.planted", path, known)
    assert "deskbot.cli.commands" in found
    assert layer_of("deskbot.cli.commands") > layer_of("deskbot.relay.planted")
