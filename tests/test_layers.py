"""The package's imports run one way, down its layers (README, "Package layout"), with no loop.

Read from the source (every ``import`` statement, those inside functions too), so a new module must
be placed in a layer, and an import from a lower layer to a higher one, or a loop between modules,
fails here before it can settle in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "robustdeq"

# Lowest first. A module may import modules of its own layer or of lower layers.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("records", ("errors", "registry", "version", "records")),
    ("blocks", ("device", "distributed", "progress", "data", "threat", "deq", "models", "validate")),
    ("producers", ("training", "evaluation")),
    ("artefacts", ("checkpoint", "zoo")),
    ("readers", ("leaderboard", "report", "fidelity")),
    ("top", ("pipeline", "sweep", "challenge", "api", "cli", "__main__")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The package module an imported name lives in (``robustdeq.x.y.Name`` -> ``robustdeq.x.y``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "robustdeq":
            for alias in node.names:
                target = resolve(f"{node.module}.{alias.name}")
                found.add(target if target is not None else node.module)
        elif isinstance(node, ast.Import):
            found.update(t for a in node.names if a.name.split(".")[0] == "robustdeq" and (t := resolve(a.name)))
    found.discard(module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def layer(module: str) -> int:
    if module == "robustdeq":  # the package's facade, above everything
        return len(LAYERS)
    first = module.split(".")[1]
    for index, (_, names) in enumerate(LAYERS):
        if first in names:
            return index
    raise AssertionError(f"{module} is in no layer: place it in LAYERS (tests/test_layers.py) and the README")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_no_import_reaches_up_a_layer() -> None:
    upward = [
        f"{m} ({LAYERS[layer(m)][0]}) imports {d} ({LAYERS[layer(d)][0] if layer(d) < len(LAYERS) else 'facade'})"
        for m, deps in GRAPH.items()
        for d in deps
        if layer(d) > layer(m)
    ]
    assert not upward, upward


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_loop() -> None:
    loops = [g for g in strongly_connected(GRAPH) if len(g) > 1]
    assert not loops, loops


def test_the_loop_check_finds_a_loop() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"], ["d"]]


def test_the_records_import_no_compute() -> None:
    """Importing every record module (and the package root) loads neither torch nor numpy."""
    records = sorted(m for m in MODULES if layer(m) == 0)
    code = "import sys\n" + "".join(f"import {m}\n" for m in records)
    code += "heavy = sorted(m for m in ('torch', 'numpy', 'pandas', 'matplotlib') if m in sys.modules)\nprint(heavy)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
