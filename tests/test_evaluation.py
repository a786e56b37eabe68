"""The protocol runner: worst case over attacks, verification, and the zero-gradient check."""

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustdeq.data import load
from robustdeq.deq import SolverSpec
from robustdeq.evaluation import ATTACKS, Attack, evaluate
from robustdeq.evaluation.runner import zero_gradient_fraction
from robustdeq.models.deq import DEQClassifier
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.records.protocol import load_protocol
from robustdeq.threat import ThreatModel
from robustdeq.training import train_model


def trained(family: str, epochs: int = 3) -> nn.Module:
    solver = SolverSpec() if family == "deq" else None
    spec = DefenseSpec(
        id=family, name=family, model=ModelSpec(family, {}), solver=solver,
        train=TrainSpec(epochs=epochs, lr=3e-3, train_subset=600),
    )  # fmt: skip
    return train_model(spec, "digits", load("digits", "train"), ThreatModel("Linf", 0.2)).model


class OutOfBall(Attack):
    """A broken attack: it 'succeeds' by leaving the eps-ball and the [0, 1] box."""

    name = "out-of-ball"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return (1.0 - x) * 3.0


@ATTACKS.register("test-out-of-ball")
def _make(threat: ThreatModel, settings: dict[str, Any], seed: int, batch_size: int, where: str) -> Attack:
    return OutOfBall(threat, seed, batch_size)


class DetachedDEQ(DEQClassifier):
    """What a naive wrapper around torchdeq gives in eval mode: a fixed point cut off from x."""

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            u = self.inject(x)
            weight = self.cell.effective_weight()
            z = self.equilibrium(lambda z: self.f(z, u, weight), torch.zeros(x.shape[0], *self.state_shape))
        return self.head(z)


def test_worst_case_over_attacks_on_a_deq(tiny_protocol: Path) -> None:
    torch.manual_seed(0)
    model = trained("deq")
    result = evaluate(model, load_protocol(tiny_protocol), load("digits", "test"))
    accs = result.attack_accuracies()
    assert set(accs) == {"pgd", "pgd@unroll", "transfer", "autoattack", "pgd-10steps"}
    assert result.robust_accuracy <= min(accs.values()) <= max(accs.values()) <= result.clean_accuracy
    # Per example: robust means correct clean and after every attack.
    expected = result.clean_correct.clone()
    for correct in result.attack_correct.values():
        expected &= correct
    assert torch.equal(result.robust, expected)
    assert set(result.checks) == {"pgd-10steps", "clean-solver-2x", "pgd-solver-2x"}
    assert result.attack_settings["pgd@unroll"]["grad"] == "unroll"
    assert result.robust_accuracy < result.clean_accuracy
    assert result.zero_gradient_fraction == 0.0 and "zero_gradients" not in result.flags
    assert result.solver is not None and result.solver.nonconverged_clean <= 0.01
    assert 0.0 < result.solver.spectral_radius < 1.0  # the cell is a contraction
    clean_trace, adv_trace = result.solver.residual_trace_clean, result.solver.residual_trace_adversarial
    assert clean_trace[-1] <= 1e-3 < clean_trace[0] and adv_trace and adv_trace[-1] <= 1e-3
    assert result.forward_cost is not None and result.forward_cost > 1


def test_invalid_adversarial_examples_never_count(tiny_protocol: Path, tmp_path: Path) -> None:
    text = tiny_protocol.read_text().split("[eps_sweep]")[0] + '[[attacks]]\nname = "test-out-of-ball"\n'
    path = tmp_path / "broken.toml"
    path.write_text(text)
    model = trained("explicit", epochs=2)
    result = evaluate(model, load_protocol(path), load("digits", "test"))
    assert "invalid_adversarial_examples" in result.flags
    assert result.robust_accuracy == result.clean_accuracy  # the broken attack broke nothing


def test_detached_fixed_point_is_caught(tiny_protocol: Path) -> None:
    torch.manual_seed(0)
    model = DetachedDEQ((1, 8, 8), 10, SolverSpec()).eval()
    x, y = load("digits", "test").x[:8], load("digits", "test").y[:8]
    assert zero_gradient_fraction(model, x, y) == 1.0
    honest = DEQClassifier((1, 8, 8), 10, SolverSpec()).eval()
    honest.load_state_dict(model.state_dict())
    assert zero_gradient_fraction(honest, x, y) == 0.0


@pytest.mark.parametrize("norm, eps", [("Linf", 0.2), ("L2", 1.0)])
def test_verification(norm: str, eps: float) -> None:
    threat = ThreatModel(norm, eps)
    x = torch.full((3, 1, 2, 2), 0.5)
    ok = threat.project(x + 10 * torch.randn_like(x), x)
    assert bool(threat.verify(ok, x).all())
    bad = ok.clone()
    bad[0, 0, 0, 0] = float("nan")
    bad[1] = x[1] + 0.9  # outside the ball
    bad[2, 0, 0, 0] = -0.01  # outside [0, 1]
    assert threat.verify(bad, x).tolist() == [False, False, False]


def test_detached_deq_is_flagged_by_the_runner(tiny_protocol: Path) -> None:
    torch.manual_seed(0)
    model = DetachedDEQ((1, 8, 8), 10, SolverSpec()).eval()
    result = evaluate(model, load_protocol(tiny_protocol), load("digits", "test"))
    assert result.zero_gradient_fraction == 1.0
    assert "zero_gradients" in result.flags
    assert "autoattack_zero_gradients" in result.flags


def test_eps_sweep_is_recorded_and_checked(tiny_protocol: Path) -> None:
    torch.manual_seed(0)
    model = trained("explicit", epochs=3)
    result = evaluate(model, load_protocol(tiny_protocol), load("digits", "test"))
    (eps_small, acc_small), (eps_box, acc_box) = result.eps_sweep
    assert (eps_small, eps_box) == (0.1, 1.0)
    assert acc_box <= acc_small and acc_box <= 0.15
    assert "eps_sweep_not_monotone" not in result.flags and "large_eps_above_chance" not in result.flags


def test_sweep_flags() -> None:
    from robustdeq.evaluation.runner import sweep_flags

    protocol = load_protocol(Path(__file__).resolve().parent.parent / "attacks" / "digits-linf.toml")
    assert sweep_flags([(0.1, 0.5), (0.2, 0.3), (1.0, 0.0)], 100, 64, protocol) == []
    assert sweep_flags([(0.1, 0.3), (0.2, 0.5)], 100, 64, protocol) == ["eps_sweep_not_monotone"]
    assert sweep_flags([(0.1, 0.3), (0.2, 0.31)], 100, 64, protocol) == []  # one example: noise
    assert sweep_flags([(0.2, 0.5), (1.0, 0.5)], 100, 64, protocol) == ["large_eps_above_chance"]


def test_evaluation_leaves_the_model_untouched(tiny_protocol: Path) -> None:
    """No attack may leave the model in training mode (which would refine its norm estimate)."""
    torch.manual_seed(0)
    model = trained("deq", epochs=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, load_protocol(tiny_protocol), load("digits", "test"))
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_papers_own_evaluation_runs_beside_the_protocol_outside_the_worst_case(tiny_protocol: Path) -> None:
    from robustdeq.records.protocol import AttackSpec

    torch.manual_seed(0)
    model = trained("deq", epochs=2)
    text = tiny_protocol.read_text().replace("seed = 0\n", "seed = 0\npaper_evaluations = true\n", 1)
    tiny_protocol.write_text(text)
    protocol = load_protocol(tiny_protocol)
    weak = AttackSpec("pgd", {"steps": 1, "step_size": 0.01}, label="paper:weak", grad="phantom", description="d")
    test = load("digits", "test")
    with_paper = evaluate(model, protocol, test, paper=(weak,))
    without = evaluate(model, protocol, test)
    assert with_paper.robust.tolist() == without.robust.tolist()  # not part of the worst case
    accuracy, settings = with_paper.paper_evaluation["paper:weak"]
    assert settings["grad"] == "phantom" and settings["steps"] == 1
    assert with_paper.robust_accuracy <= accuracy <= with_paper.clean_accuracy
    assert "paper:weak" not in with_paper.attack_correct and without.paper_evaluation == {}
