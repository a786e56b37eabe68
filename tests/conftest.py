"""Shared fixtures: a tiny protocol and tiny budgets so the suite runs in minutes on 2 cores.

Device-dependent tests take a ``device`` argument and run once per device present: the CPU
always, CUDA when torch sees a GPU. ``ROBUSTDEQ_TEST_DEVICE=cuda python -m pytest -q`` runs them
on CUDA only (and fails if there is none); every such test carries the marker ``device``, so
``-m device`` selects them (``benchmarks/gpu_check.py`` does).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


TINY_PROTOCOL = """
id = "tiny-digits"
version = 1
dataset = "digits"
description = "Test protocol: few examples, short attacks."

[threat_model]
norm = "Linf"
eps = 0.2

[subset]
n_examples = 24

[evaluation]
batch_size = 16
seed = 0

[eps_sweep]
eps = [0.1, 1.0]
attacks = ["pgd"]

[[attacks]]
name = "pgd"
steps = 5
step_size = 0.05
grad_modes = ["ift", "unroll"]

[[attacks]]
name = "transfer"
steps = 5
step_size = 0.05

[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce", "apgd-t", "square"]
n_iter = 10
n_queries = 30

[checks]
more_iterations = "pgd"
solver_budget = "pgd"
"""


def devices_under_test() -> list[str]:
    forced = os.environ.get("ROBUSTDEQ_TEST_DEVICE")
    if forced:
        return [forced]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", devices_under_test())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture(autouse=True)
def _threads() -> None:
    # Two torch threads (CI's machine); ROBUSTDEQ_TEST_THREADS=1 while another job holds a core
    # (OpenMP threads spin on a taken core: a LyaDEQ training test took minutes instead of seconds).
    torch.set_num_threads(int(os.environ.get("ROBUSTDEQ_TEST_THREADS", "2")))


@pytest.fixture
def tiny_protocol(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-digits.toml"
    path.write_text(TINY_PROTOCOL)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("../shared/data (MNIST) is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def weights() -> dict[str, torch.Tensor]:
    """The weights of a small trained reference DEQ (3 epochs on 600 digits), trained once for the
    suites that build broken variants of it (tests/test_broken_models.py, tests/test_honesty.py)."""
    from robustdeq.data import load
    from robustdeq.deq import SolverSpec
    from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
    from robustdeq.threat import ThreatModel
    from robustdeq.training import train_model

    torch.manual_seed(0)
    spec = DefenseSpec(
        id="deq", name="deq", model=ModelSpec("deq", {}), solver=SolverSpec(),
        train=TrainSpec(epochs=3, lr=3e-3, train_subset=600),
    )  # fmt: skip
    model = train_model(spec, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model
    return {k: v.clone() for k, v in model.state_dict().items()}
