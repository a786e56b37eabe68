"""Deliberately broken models: each must be caught by a flag, and its worst-case robust accuracy
must not exceed what a correct attack on the unbroken model (same weights) achieves."""

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from robustdeq.data import Split, load
from robustdeq.deq import SolverSpec
from robustdeq.evaluation import evaluate
from robustdeq.models.deq import DEQClassifier
from robustdeq.records.protocol import load_protocol

PROTOCOL = """
id = "broken-models"
version = 1
dataset = "digits"

[threat_model]
norm = "Linf"
eps = 0.2

[subset]
n_examples = 32

[evaluation]
batch_size = 32
seed = 0
warm_start = true

[[attacks]]
name = "pgd"
steps = 10
step_size = 0.05

[[attacks]]
name = "transfer"
steps = 10
step_size = 0.05

[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce", "square"]
n_iter = 10
n_queries = 50
"""

SLACK = 0.07  # two of the 32 examples


class Detached(DEQClassifier):
    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        super().forward(x, z_init)
        assert self.last_state is not None
        return self.head(self.last_state)  # the fixed point, cut off from x


class Randomised(DEQClassifier):
    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        logits = super().forward(x, z_init)
        return logits + 1e-3 * torch.randn_like(logits)


class Probabilities(DEQClassifier):
    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        return torch.softmax(super().forward(x, z_init), dim=1)


class Quantised(DEQClassifier):
    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        return super().forward(torch.round(x * 4) / 4, z_init)  # round: zero gradient everywhere


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protocol") / "broken-models.toml"
    path.write_text(PROTOCOL)
    return path


def build(cls: type[DEQClassifier], weights: dict[str, Tensor], solver: SolverSpec | None = None) -> nn.Module:
    model = cls((1, 8, 8), 10, solver or SolverSpec())
    model.load_state_dict(weights)
    return model.eval()


@pytest.fixture(scope="module")
def correct(weights: dict[str, Tensor], protocol: Path) -> float:
    """Robust accuracy of the unbroken DEQ under the same protocol."""
    result = evaluate(build(DEQClassifier, weights), load_protocol(protocol), load("digits", "test"))
    assert not result.flags
    return result.robust_accuracy


@pytest.mark.parametrize(
    ("cls", "flag"),
    [
        (Detached, "zero_gradients"),
        (Randomised, "autoattack_randomized_output"),
        (Probabilities, "autoattack_softmax_output"),
        (Quantised, "zero_gradients"),
    ],
)
def test_broken_model_is_flagged_and_brought_down(
    cls: type[DEQClassifier], flag: str, weights: dict[str, Tensor], protocol: Path, correct: float
) -> None:
    result = evaluate(build(cls, weights), load_protocol(protocol), load("digits", "test"))
    assert flag in result.flags
    assert result.robust_accuracy <= correct + SLACK
    assert result.robust_accuracy < result.clean_accuracy - 0.3


def test_blind_gradients_are_brought_down_by_the_transfer_attack(weights: dict[str, Tensor], protocol: Path) -> None:
    result = evaluate(build(Quantised, weights), load_protocol(protocol), load("digits", "test"))
    accs = result.attack_accuracies()
    assert accs["transfer"] < accs["pgd"] - 0.3  # PGD sees zero gradients; the explicit twin does not


def test_non_converging_solver_is_flagged(weights: dict[str, Tensor], protocol: Path, correct: float) -> None:
    model = build(DEQClassifier, weights, SolverSpec(f_max_iter=3, b_max_iter=3))
    result = evaluate(model, load_protocol(protocol), load("digits", "test"))
    assert "solver_nonconvergence" in result.flags
    assert result.solver is not None and result.solver.nonconverged_clean > 0.5
    assert result.robust_accuracy < result.clean_accuracy - 0.3


class MeanThreshold(nn.Module):
    """Two classes by the sign of mean(x) - 0.5: moving every pixel by eps shifts the mean by eps."""

    def forward(self, x: Tensor) -> Tensor:
        s = 10.0 * (x.flatten(1).mean(1, keepdim=True) - 0.5)
        return torch.cat([s, -s], dim=1)


def test_suite_breaks_every_input_when_an_adversarial_example_always_exists(protocol: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    # Pixels in [0.3, 0.7], so no pixel is stuck at the box; |mean - 0.5| < 0.2 = eps for every input.
    x = 0.3 + 0.4 * torch.rand(64, 1, 8, 8, generator=generator)
    model = MeanThreshold()
    with torch.no_grad():
        y = model(x).argmax(1)
    assert bool(((x.flatten(1).mean(1) - 0.5).abs() < 0.2).all())
    result = evaluate(model, load_protocol(protocol), Split(x, y))
    assert result.clean_accuracy == 1.0
    assert result.robust_accuracy == 0.0
    assert result.attack_accuracies()["pgd"] == 0.0
