"""ruff and mypy stay clean: run as part of the test suite so CI enforces them."""

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
    result = run("mypy", "robustdeq")
    assert result.returncode == 0, result.stdout + result.stderr
