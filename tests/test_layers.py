"""The floor plan, enforced: which package may import which (read from the source with `ast`), no import circles,
and a training child that never loads a Kafka client."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("schemas", "streams", "agents")
KAFKA_CLIENTS = ("confluent_kafka", "aiokafka", "faust", "kafka", "mode")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in OURS for path in (ROOT / package).rglob("*.py")}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file, ours or not; `from a import b` names `a.b` when that is a module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.lineno, (f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES
                                    else node.module)


def ours(module: str) -> bool:
    return module.split(".")[0] in OURS


def within(*prefixes: str) -> Callable[[str], bool]:
    return lambda target: any(target == p or target.startswith(p + ".") for p in prefixes)


RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "schemas": (within("schemas"), "schemas imports nothing of ours"),
    "streams.state": (within("schemas", "streams.state"), "streams.state imports only schemas"),
    "streams.ml": (within("schemas", "streams.state", "streams.ml", "streams.settings", "streams.metrics"),
                   "streams.ml imports only streams.state, schemas, settings and metrics"),
    "streams": (lambda target: not within("agents")(target), "nothing under streams imports agents"),
}


def violations(layer: str) -> list[str]:
    allowed, rule = RULES[layer]
    found = []
    for module, path in sorted(MODULES.items()):
        if not within(layer)(module):
            continue
        for line, target in imports(path):
            if ours(target) and not allowed(target):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({rule})")
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    found = violations(layer)
    assert not found, "\n".join(found)


def import_graph() -> dict[str, set[str]]:
    return {module: {target for _, target in imports(path) if target in MODULES and target != module}
            for module, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def closure(start: str) -> set[str]:
    """Every module of ours that importing `start` can load (its imports, theirs, and their packages)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen or module not in MODULES:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # package __init__ files run first
        todo += [target for _, target in imports(MODULES[module]) if ours(target)]
    return seen


def test_the_training_child_imports_no_kafka_client() -> None:
    loaded = closure("streams.ml.training")
    offending = sorted(f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}" for m in loaded
                       for line, target in imports(MODULES[m]) if target.split(".")[0] in KAFKA_CLIENTS)
    assert not offending, "\n".join(offending)
    probe = ("import sys, streams.ml.training; "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {KAFKA_CLIENTS!r}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
