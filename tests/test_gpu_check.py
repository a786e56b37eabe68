"""benchmarks/gpu_check.py runs its CPU path in CI size, so the GPU check cannot rot between GPU runs."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_every_stage_on_the_cpu_and_writes_results(tmp_path: Path, shared_data: Path) -> None:
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--ci", "--out", str(tmp_path)]
    done = subprocess.run(
        [*command, "--data-dir", str(shared_data)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "gpu.json").read_text())
    stages = results["stages"]
    assert stages["tests"]["passed"], stages["tests"]["tail"]
    compared = stages["cpu-vs-device"]
    assert compared["compared"] and compared["n_examples"] == 8 and compared["differing_examples"] == []
    for defense in ("deq-pgd-at", "cnn-pgd-at"):
        record = stages["mnist"]["cpu"][defense]
        assert record["train_images_per_second"] > 0 and record["device"]["type"] == "cpu"
    zoo = stages["mnist-zoo"]["defenses"]["cnn-standard"]
    assert zoo["train"]["train_images_per_second"] > 0
    evaluated = zoo["evaluate"]
    assert evaluated["seconds_per_example"] > 0 and evaluated["device"]["type"] == "cpu"
    assert isinstance(evaluated["differing_from_committed"], list)
    page = (tmp_path / "gpu.md").read_text()
    assert "## 1. Device-parametrised tests" in page and "| deq-pgd-at | cpu |" in page
    assert "## 4. The zoo's MNIST checkpoints" in page and "| cnn-standard |" in page
