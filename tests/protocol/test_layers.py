"""fedchain's imports follow the layers of docs/ARCHITECTURE.md, and only the tasks import torch.

    cli  ->  orchestrator, audit
         ->  protocol, config
         ->  fl, storage, chain
         ->  records, hashing, errors, types, _native
    tasks: loaded by name by the commands that train; the orchestrator may import
    ``fedchain.tasks.api`` (the Task interface), which imports no torch.

Every import counts, at module level or inside a function, absolute or relative.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fedchain

PACKAGE = Path(fedchain.__file__).resolve().parent

#: Each unit (a sub-package or a top-level module of fedchain) and its layer, lowest first.
LAYER = {
    "records": 0,
    "hashing": 0,
    "errors": 0,
    "types": 0,
    "fedchain": 0,  # the package's own __init__ (version, errors)
    "_native": 0,  # finding the C libraries the install built (fl's loops, storage's leaf reader)
    "fl": 1,
    "storage": 1,
    "chain": 1,
    "protocol": 2,
    "config": 2,  # reads files and the environment once; builds a chain.Signer from a key
    "orchestrator": 3,
    "audit": 3,
    "cli": 4,
    "flower": 4,  # the Flower adapter: on the outside, like the CLI (it drives the orchestrator)
    "__main__": 4,
}
#: Libraries that bring torch along.
TORCH = {"torch", "torchvision", "opacus", "peft", "transformers"}
#: Known violations, each with why it is left for now (a strict xfail: it fails once fixed).
KNOWN: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """Every module ``path`` imports (``from a import b`` yields ``a.b`` as well as ``a``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{a.name}" for a in node.names)


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fedchain":
        return None
    if len(parts) == 1:
        return "fedchain"
    if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists():
        return parts[1]
    return "fedchain"  # a name defined in fedchain/__init__.py


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _edges() -> dict[tuple[str, str], list[str]]:
    """``(from unit, to unit) -> [importing module: imported module]``."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in _files():
        source = _unit(_module_name(path))
        assert source is not None
        for module in _imports(path):
            target = _unit(module)
            if target is not None and target != source:
                edges.setdefault((source, target), []).append(f"{_module_name(path)}: {module}")
    return edges


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in _files()}
    assert units - {"tasks"} <= set(LAYER), units - set(LAYER)


@pytest.mark.parametrize(
    "edge",
    [
        pytest.param(edge, marks=pytest.mark.xfail(strict=True, reason=KNOWN[edge]) if edge in KNOWN else ())
        for edge in sorted(e for e in _edges() if "tasks" not in e)
    ],
    ids=lambda e: f"{e[0]}->{e[1]}",
)
def test_no_import_points_upward(edge: tuple[str, str]) -> None:
    source, target = edge
    assert LAYER[target] <= LAYER[source], _edges()[edge]


def test_no_cycle_between_units_of_one_layer() -> None:
    edges = [e for e in _edges() if "tasks" not in e and LAYER[e[0]] == LAYER[e[1]]]
    assert [(a, b) for a, b in edges if (b, a) in edges] == []
    assert ("audit", "orchestrator") not in _edges() and ("orchestrator", "audit") not in _edges()


def test_only_the_cli_imports_a_task_and_the_orchestrator_only_the_task_interface() -> None:
    wrong = []
    for (source, target), where in sorted(_edges().items()):
        if target != "tasks" or source in ("cli", "__main__"):
            continue
        for entry in where:
            imported = entry.split(": ", 1)[1]
            if source in ("orchestrator", "flower") and imported in ("fedchain.tasks.api", "fedchain.tasks"):
                # `from fedchain.tasks.api import X` also names the package (whose __init__ imports no torch)
                continue
            if source in ("orchestrator", "flower") and imported.startswith("fedchain.tasks.api."):
                continue
            wrong.append(entry)
    assert wrong == []
    above = {("tasks", t) for t in ("cli", "__main__", "orchestrator", "audit", "flower")}
    assert {e: w for e, w in _edges().items() if e in above} == {}  # a task is handed in, it reaches for nothing


def test_torch_is_imported_only_under_fedchain_tasks() -> None:
    outside = [
        f"{_module_name(p)}: {m}"
        for p in _files()
        if _unit(_module_name(p)) != "tasks"
        for m in _imports(p)
        if m.split(".")[0] in TORCH
    ]
    assert outside == []
    inside = [
        p for p in _files() if _unit(_module_name(p)) == "tasks" and any(m.split(".")[0] in TORCH for m in _imports(p))
    ]
    assert inside, "the shipped tasks train with torch; the test would not see an import"


def test_the_task_interface_and_its_package_import_no_torch() -> None:
    """What importing ``fedchain.tasks.api`` executes at module level: the package, api, and what they import."""
    seen: set[str] = set()
    todo = ["fedchain.tasks", "fedchain.tasks.api"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        path = PACKAGE.parent.joinpath(*parts)
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not file.exists():
            continue  # a name imported from a module, not a module
        for m in _imports(file, top_level_only=True):
            assert m.split(".")[0] not in TORCH, f"{name} imports {m}"
            if m.startswith("fedchain."):
                todo.append(m)
                # importing a.b.c runs a/__init__ and a/b/__init__ too
                pieces = m.split(".")
                todo.extend(".".join(pieces[:i]) for i in range(2, len(pieces)))
    assert "fedchain.tasks.api" in seen
