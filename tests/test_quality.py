"""ruff and mypy stay clean: run as part of the test suite so CI enforces them."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


SOURCES = [d for d in ("robustdeq", "tests", "benchmarks") if (REPO / d).is_dir()]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", *SOURCES)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", *SOURCES)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy() -> None:
    result = run("mypy", "robustdeq", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


# torch functions that create a tensor from nothing: without ``device=`` they land on the CPU.
FACTORIES = {
    "arange", "empty", "eye", "full", "linspace", "ones", "rand", "randint", "randn", "randperm", "tensor",
    "zeros", "as_tensor", "Generator", "logspace", "empty_strided", "normal", "bernoulli", "multinomial",
}  # fmt: skip
DEVICE_WORDS = ("cpu", "cuda", "mps", "xla")
RESOLVER = REPO / "robustdeq" / "device.py"


def device_problems(source: str, name: str) -> list[str]:
    """Tensor factories called without ``device=`` and device literals, in one module's source."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name) and base.id == "torch" and node.func.attr in FACTORIES:
                # torch.Generator(CPU) passes the device positionally.
                given = {k.arg for k in node.keywords} | (
                    {"device"} if node.func.attr == "Generator" and node.args else set()
                )
                if "device" not in given:
                    problems.append(f"{name}:{node.lineno}: torch.{node.func.attr}(...) without device=")
            if node.func.attr in ("cuda", "cpu") and not node.args:
                problems.append(f"{name}:{node.lineno}: .{node.func.attr}() moves to a fixed device")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            head = node.value.strip().lower().split(":")[0]
            if head in DEVICE_WORDS and len(node.value) <= 12:
                problems.append(f"{name}:{node.lineno}: device literal {node.value!r}")
    return problems


def test_device_scan_catches_factories_without_device_and_literals() -> None:
    bad = 'import torch\nx = torch.zeros(3)\ny = torch.ones(3, device=z.device)\nw = q.cuda()\nd = "cuda:0"\n'
    found = device_problems(bad, "m.py")
    assert found == [
        "m.py:2: torch.zeros(...) without device=",
        "m.py:4: .cuda() moves to a fixed device",
        "m.py:5: device literal 'cuda:0'",
    ]


def test_every_tensor_factory_names_its_device_and_only_the_resolver_names_devices() -> None:
    problems = []
    for path in sorted((REPO / "robustdeq").rglob("*.py")):
        if path == RESOLVER:
            continue
        problems += device_problems(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)
