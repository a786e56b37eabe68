"""A killed evaluation resumes from its saved state and ends with the numbers of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from robustdeq.cli import app

RESUME_PROTOCOL = """
id = "resume-digits"
version = 1
dataset = "digits"

[threat_model]
norm = "Linf"
eps = 0.2

[subset]
n_examples = 64

[evaluation]
batch_size = 8
seed = 0

[eps_sweep]
eps = [0.1, 1.0]

[[attacks]]
name = "pgd"
steps = 10
step_size = 0.05

[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce", "square"]
n_iter = 20
n_queries = 100
"""


def evaluate_command(checkpoint: Path, protocol: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "robustdeq", "evaluate", str(checkpoint), "--protocol", str(protocol),
            "--out", str(out), "--quiet"]  # fmt: skip


def without_provenance(path: Path) -> dict:  # type: ignore[type-arg]
    entry = json.loads(path.read_text())
    entry.pop("provenance")
    return entry


def test_killed_evaluation_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    protocol = tmp_path / "resume-digits.toml"
    protocol.write_text(RESUME_PROTOCOL)
    train = ["train", "deq-pgd-at", "--protocol", str(protocol), "--out", str(tmp_path / "runs"), "--epochs", "1"]
    result = CliRunner().invoke(app, [*train, "--train-subset", "200", "--quiet"])
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "runs" / "resume-digits" / "deq-pgd-at"

    # Uninterrupted reference run.
    done = subprocess.run(evaluate_command(checkpoint, protocol, tmp_path / "a"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    # A run killed (SIGKILL: no chance to clean up) once some attack batches are saved.
    state = tmp_path / "b" / "resume-digits" / ".deq-pgd-at.state.json"
    proc = subprocess.Popen(evaluate_command(checkpoint, protocol, tmp_path / "b"), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and len(json.loads(state.read_text())["batches"]) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the evaluation finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    entry = tmp_path / "b" / "resume-digits" / "deq-pgd-at.json"
    assert not entry.exists() and state.is_file()
    saved = len(json.loads(state.read_text())["batches"])

    resumed = subprocess.run(evaluate_command(checkpoint, protocol, tmp_path / "b"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {saved} attack batches" in resumed.stderr.replace("\n", " ")
    assert without_provenance(entry) == without_provenance(tmp_path / "a" / "resume-digits" / "deq-pgd-at.json")
    assert not state.exists()
