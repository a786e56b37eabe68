"""--device: one resolver, every model, recipe, solver and attack follows it; clear errors.

The tests that take ``device`` run once per device present (conftest): on a GPU machine
``ROBUSTDEQ_TEST_DEVICE=cuda python -m pytest -q -m device`` exercises the CUDA paths.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.data import load
from robustdeq.deq import SolverSpec, equilibria
from robustdeq.device import describe, resolve
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation import evaluate
from robustdeq.evaluation.runner import budget_kind
from robustdeq.models import MODELS, create_model
from robustdeq.pipeline import Budget, TrainedModel, load_splits, make_entry, train_defense
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec, find_defense
from robustdeq.records.protocol import load_protocol

EVERY_ATTACK = """
id = "device-digits"
version = 1
dataset = "digits"

[threat_model]
norm = "Linf"
eps = 0.2

[subset]
n_examples = 12

[evaluation]
batch_size = 8
seed = 0
warm_start = true

[eps_sweep]
eps = [0.1, 1.0]

[[attacks]]
name = "pgd"
steps = 3
step_size = 0.05
grad_modes = ["ift", "unroll", "phantom", "states"]

[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce", "apgd-t", "fab-t", "square"]
n_iter = 3
n_queries = 10

[[attacks]]
name = "transfer"
steps = 3
step_size = 0.05

[[attacks]]
name = "square"
n_queries = 10

[checks]
more_iterations = "pgd"
solver_budget = "pgd"
"""


def test_resolver_accepts_the_documented_forms_and_refuses_the_rest() -> None:
    assert resolve("cpu") == torch.device("cpu")
    assert resolve(" CPU ") == torch.device("cpu")
    assert resolve(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve("auto").type == expected and resolve(None).type == expected
    for bad in ("gpu", "cuda:x", "cuda:-1", "tpu", "cuda:0:1"):
        with pytest.raises(RobustdeqError, match="unknown device"):
            resolve(bad)
    if not torch.cuda.is_available():
        for wanted in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(RobustdeqError, match="CUDA is not available"):
                resolve(wanted)
    else:
        with pytest.raises(RobustdeqError, match="only"):
            resolve(f"cuda:{torch.cuda.device_count()}")


COMMANDS = {
    "bench": ["bench", "--defenses", "cnn-standard"],
    "train": ["train", "cnn-standard"],
    "evaluate": ["evaluate", "no-such-checkpoint"],
    "submit": ["submit", "examples/mlp-submission"],
    "sweep": ["sweep", "wtm-standard", "--depth", "2"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_device_is_a_one_line_error_and_nothing_is_written(command: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [*COMMANDS[command], "--out", str(out)]
    bad = ["tpu"] if torch.cuda.is_available() else ["tpu", "cuda", "cuda:1"]
    for device in bad:
        result = CliRunner().invoke(app, [*args, "--device", device])
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "device" in lines[0], result.output
        assert not out.exists()


def _on(model: torch.nn.Module, device: torch.device) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(t.device.type == device.type for t in tensors)


@pytest.mark.parametrize("family", MODELS.names())
def test_every_family_runs_forward_and_backward_on_the_device(family: str, device: str) -> None:
    target = resolve(device)
    torch.manual_seed(0)
    model = create_model(family, (1, 8, 8), 10, SolverSpec()).to(target).eval()
    assert _on(model, target)
    x = torch.rand(3, 1, 8, 8, device=target, requires_grad=True)
    logits = model(x)
    assert logits.device.type == target.type
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    assert grad.device.type == target.type and bool(torch.isfinite(grad).all())
    assert bool((grad.flatten(1).abs().amax(1) > 0).all())


# One reference defense per recipe and family: explicit PGD-AT, TRADES, JIIO, random intermediate
# states, federated, entropy reduction (a loop at inference), LyaDEQ, weight-tied.
DEFENSES = (
    "cnn-pgd-at",
    "deq-trades",
    "deq-jiio",
    "deq-ris-pgd-at",
    "fed-deq-quality-pgd-at",
    "deq-pgd-at-er",
    "lyadeq-pgd-at",
    "wtm-standard",
)


@pytest.mark.parametrize("name", DEFENSES)
def test_every_recipe_trains_and_every_attack_runs_on_the_device(name: str, device: str, tmp_path: Path) -> None:
    target = resolve(device)
    protocol_path = tmp_path / "device-digits.toml"
    protocol_path.write_text(EVERY_ATTACK)
    protocol = load_protocol(protocol_path)
    defense = find_defense(name)
    if defense.train.recipe == "federated":
        defense = dataclasses.replace(defense, train=dataclasses.replace(defense.train, epochs=1))
    train, test = load_splits(protocol, None, False)
    budget = Budget(epochs=1, train_subset=48)
    result, record = train_defense(defense, protocol, train, budget, None, test, target)
    model = result.model
    assert _on(model, target)
    ev = evaluate(model, protocol, test)
    trained = TrainedModel(model, record, result.seconds, federated=result.federated)
    entry = make_entry(defense, protocol, trained, ev, budget)
    assert entry["provenance"]["device"] == describe(target)
    assert entry["provenance"]["device"]["type"] == target.type
    assert 0.0 <= entry["robust_accuracy"] <= entry["clean_accuracy"]
    assert {"pgd", "autoattack", "square", "pgd-6steps"} <= set(entry["attacks"])
    if equilibria(model):
        assert {"pgd@unroll", "pgd@phantom", "pgd@states"} <= set(entry["attacks"])
        assert "transfer" in entry["attacks"] or not hasattr(model, "explicit_twin")
        # the doubled-budget check: the solver's, or the readout's for a model read out after a fixed budget
        assert f"pgd-{budget_kind(model)}-2x" in entry["checks"]
    assert [p["eps"] for p in entry["eps_sweep"]["points"]] == [0.1, 1.0]
    json.dumps(entry)  # plain JSON: no tensors leaked into the entry


def test_digits_model_built_on_cpu_and_moved_equals_cpu_model() -> None:
    """Models are built on the CPU and moved: the initial weights do not depend on the device."""
    spec = DefenseSpec("x", "x", ModelSpec("deq", {"channels": 8}), TrainSpec(), SolverSpec())
    from robustdeq.training import build_model

    torch.manual_seed(0)
    first = build_model(spec, "digits", "cpu")
    torch.manual_seed(0)
    second = build_model(spec, "digits", None)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a.to("cpu"), b.to("cpu")), name
    assert load("digits", "test").x.device.type == "cpu"
