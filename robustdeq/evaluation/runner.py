"""Run a protocol on a trained model: clean accuracy, every attack, per-example worst case, checks."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.config import Table
from robustdeq.data import Split
from robustdeq.deq import equilibria
from robustdeq.evaluation.attacks import ATTACKS
from robustdeq.evaluation.view import AttackView
from robustdeq.progress import Progress
from robustdeq.specs import ProtocolSpec

# A DEQ whose solver misses its tolerance on more than this fraction of inputs is flagged.
NONCONVERGENCE_THRESHOLD = 0.01


@dataclass
class SolverReport:
    """Convergence of the forward solver, on clean inputs and on the verified adversarial ones."""

    nonconverged_clean: float
    nonconverged_adversarial: float
    mean_steps_clean: float
    mean_steps_adversarial: float
    spectral_radius: float


@dataclass
class EvalResult:
    """Per-example outcomes (all (N,) tensors) and what the entry needs from them."""

    indices: Tensor
    clean_correct: Tensor
    attack_correct: dict[str, Tensor]
    robust: Tensor
    attack_settings: dict[str, dict[str, Any]]
    flags: list[str]
    forward_cost: float | None
    solver: SolverReport | None
    seconds: float
    zero_gradient_fraction: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        return fraction(self.clean_correct)

    @property
    def robust_accuracy(self) -> float:
        return fraction(self.robust)

    def attack_accuracies(self) -> dict[str, float]:
        return {name: fraction(c) for name, c in self.attack_correct.items()}


def fraction(mask: Tensor) -> float:
    """Share of True in a bool mask, as an exact Python ratio (no float32 round-off in entries)."""
    return int(mask.sum()) / len(mask) if len(mask) else 0.0


def select_subset(protocol: ProtocolSpec, test: Split, n_examples: int | None = None) -> Tensor:
    """Indices of the protocol's test examples: the first n, or n from a seeded permutation."""
    n = min(n_examples or protocol.n_examples, len(test))
    if protocol.subset_seed is None:
        return torch.arange(n)
    return torch.randperm(len(test), generator=torch.Generator().manual_seed(protocol.subset_seed))[:n]


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Cold-start eval-mode predictions, per-example solver convergence and steps (None if explicit)."""
    preds, converged, steps = [], [], []
    layers = equilibria(model)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            preds.append(model(x[start : start + batch_size]).argmax(1))
            stats = [layer.last_stats for layer in layers if layer.last_stats is not None]
            if stats:
                converged.append(torch.stack([s.converged for s in stats]).all(0))
                steps.append(torch.stack([s.nstep for s in stats]).sum(0))
    if not layers or not converged:
        return torch.cat(preds), None, None
    return torch.cat(preds), torch.cat(converged), torch.cat(steps)


def zero_gradient_fraction(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250) -> float:
    """Fraction of examples whose eval-mode input gradient of the cross-entropy is exactly zero.

    A DEQ whose fixed point is detached from its input (torchdeq in eval mode, used naively)
    gives zero gradients everywhere; gradient attacks then fail silently.
    """
    if len(y) == 0:
        return 0.0
    model.eval()
    zero = 0
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size].clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xb), y[start : start + batch_size], reduction="sum")
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
        zero += len(xb) if grad is None else int((grad.flatten(1).abs().amax(1) == 0).sum())
    return zero / len(y)


def spectral_radius(model: nn.Module, x: Tensor) -> float:
    """Mean over ``x`` of the largest |eigenvalue| of J_f(z*), summed over equilibrium layers."""
    layers = equilibria(model)
    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(layer.measure_spectral_radius())
        with torch.no_grad():
            model(x)
    radii = [layer.last_stats.spectral_radius for layer in layers if layer.last_stats is not None]
    return float(torch.stack([r for r in radii if r is not None]).sum(0).mean()) if radii else 0.0


def evaluate(
    model: nn.Module,
    protocol: ProtocolSpec,
    test: Split,
    n_examples: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Evaluate ``model`` under ``protocol`` on its test subset.

    Each attack runs on every clean-correct example; its adversarial examples are verified
    and re-classified with a cold-start forward. An example is robust only if it is correct
    clean and after every attack.
    """
    progress = progress or Progress.quiet()
    start_time = time.perf_counter()
    model.eval()
    idx = select_subset(protocol, test, n_examples)
    x, y = test.x[idx], test.y[idx]
    bs = protocol.batch_size
    flags: list[str] = []

    layers = equilibria(model)
    for layer in layers:
        layer.counters.reset()
    pred, conv_clean, steps_clean = _predict(model, x, bs)
    forward_cost: float | None
    if layers:
        forward_cost = sum(layer.counters.forward_example_evals for layer in layers) / len(y)
    else:
        forward_cost = float(getattr(model, "block_evaluations", 0)) or None
    clean_correct = pred == y
    correct_idx = torch.nonzero(clean_correct).flatten()

    zero_frac = zero_gradient_fraction(model, x[correct_idx], y[correct_idx], bs)
    if zero_frac > 0:
        flags.append("zero_gradients")

    robust = clean_correct.clone()
    attack_correct: dict[str, Tensor] = {}
    attack_settings: dict[str, dict[str, Any]] = {}
    conv_adv: list[Tensor] = []
    steps_adv: list[Tensor] = []
    for spec in protocol.attacks:
        label = spec.name if spec.name not in attack_correct else f"{spec.name}-{len(attack_correct) + 1}"
        table = Table(spec.settings, f"protocol {protocol.id} attack {label}")
        attack = ATTACKS.get(spec.name)(protocol.threat, table, protocol.seed, bs)
        survived = clean_correct.clone()
        if len(correct_idx):
            view = AttackView(model, x[correct_idx], protocol.threat, protocol.warm_start)
            out = attack(view, x[correct_idx], y[correct_idx], progress)
            adv_pred, adv_conv, adv_steps = _predict(model, out.x_adv, bs)
            survived[correct_idx] = adv_pred == y[correct_idx]
            if adv_conv is not None and adv_steps is not None:
                conv_adv.append(adv_conv[out.valid])
                steps_adv.append(adv_steps[out.valid])
            flags.extend(f for f in out.flags if f not in flags)
        attack_correct[label] = survived
        attack_settings[label] = {"name": spec.name, **attack.settings()}
        robust &= survived

    solver = None
    if conv_clean is not None and steps_clean is not None:
        adv_c = torch.cat(conv_adv) if conv_adv else torch.ones(0, dtype=torch.bool)
        adv_s = torch.cat(steps_adv) if steps_adv else torch.zeros(0)
        solver = SolverReport(
            nonconverged_clean=fraction(~conv_clean),
            nonconverged_adversarial=fraction(~adv_c),
            mean_steps_clean=float(steps_clean.float().mean()),
            mean_steps_adversarial=float(adv_s.float().mean()) if len(adv_s) else 0.0,
            spectral_radius=spectral_radius(model, x[:bs]),
        )
        if max(solver.nonconverged_clean, solver.nonconverged_adversarial) > NONCONVERGENCE_THRESHOLD:
            flags.append("solver_nonconvergence")

    return EvalResult(
        indices=idx,
        clean_correct=clean_correct,
        attack_correct=attack_correct,
        robust=robust,
        attack_settings=attack_settings,
        flags=flags,
        forward_cost=forward_cost,
        solver=solver,
        seconds=time.perf_counter() - start_time,
        zero_gradient_fraction=zero_frac,
    )
