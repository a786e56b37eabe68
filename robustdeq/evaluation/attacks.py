"""Attacks as a small template: ``__call__`` does mode switching, batching and verification.

Subclasses implement :meth:`Attack.perturb`. Every adversarial example that comes back is
re-verified (finite, inside [0, 1], within eps); an example that fails verification is
replaced by its clean input, so a broken attack can never count as a success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustdeq.errors import RobustdeqError
from robustdeq.evaluation.view import AttackView
from robustdeq.progress import Progress
from robustdeq.records.parse import Settings, parse
from robustdeq.registry import Registry
from robustdeq.threat import ThreatModel, pgd


@dataclass
class AttackOutput:
    """Adversarial inputs (B, ...) with a bool mask (B,) of those that passed verification."""

    x_adv: Tensor
    valid: Tensor
    flags: list[str] = field(default_factory=list)


class Attack:
    """Base attack: subclasses set ``name`` and implement ``perturb``; settings come from the protocol."""

    name = "attack"
    # True when the attack's result per example is its last iterate and it moves along the
    # gradient only, so an :class:`AttackView` may hold an example at its first adversarial point.
    holds_broken = False

    def __init__(self, threat: ThreatModel, seed: int = 0, batch_size: int = 250) -> None:
        self.threat = threat
        self.seed = seed
        self.batch_size = batch_size
        self.flags: list[str] = []
        # The attacked model's explicit-twin depth, fixed by the runner before any attack
        # (robustdeq.evaluation.runner.twin_depth); only the transfer attack reads it.
        self.twin_depth: int | None = None

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}

    def applies(self, model: nn.Module) -> bool:
        """Whether the attack means anything for ``model`` (else the runner skips it)."""
        return True

    def randomized(self, draws: int) -> Attack:
        """The attack to run on a randomised model (expectation over ``draws`` forwards where it
        uses gradients); gradient-free attacks are their own randomised variant."""
        return self

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        progress: Progress | None = None,
        offset: int = 0,
    ) -> AttackOutput:
        """Attack ``x`` (B, C, H, W) with labels ``y`` in eval mode, batch by batch, and verify.

        Each batch is seeded with ``seed + offset + its start``: an example's attack randomness
        depends only on its position in the attacked set, so attacking the set in pieces (as a
        resumed evaluation does) gives the same result as attacking it at once.
        """
        self.flags = []
        progress = progress or Progress.quiet()
        was_training = model.training
        model.eval()
        pieces = []
        try:
            with progress.task(f"  {self.name}", total=len(y)) as advance:
                for start in range(0, len(y), self.batch_size):
                    xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
                    torch.manual_seed(self.seed + offset + start)
                    pieces.append(self.perturb(model, xb, yb).detach())
                    advance(len(yb))
        finally:
            model.train(was_training)
        x_adv = torch.cat(pieces) if pieces else x.clone()
        if x_adv.shape != x.shape:
            raise RobustdeqError(f"attack {self.name} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
        valid = self.threat.verify(x_adv, x)
        if not bool(valid.all()):
            self.flags.append("invalid_adversarial_examples")
        keep = valid.view(-1, *([1] * (x.dim() - 1)))
        x_adv = torch.where(keep, torch.nan_to_num(x_adv), x)
        return AttackOutput(x_adv, valid, list(self.flags))


class ExpectedLogits(nn.Module):
    """The mean of ``draws`` forwards of a randomised model: expectation over transformation (EOT,
    Athalye et al. 2018) for attacks that differentiate the logits."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        self.model = model
        self.draws = draws
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.model(x) for _ in range(self.draws)]).mean(0)


# (threat model, the protocol's settings of the attack, seed, batch size, where the settings are) -> attack
AttackFactory = Callable[[ThreatModel, Mapping[str, Any], int, int, str], Attack]
ATTACKS: Registry[AttackFactory] = Registry("attack")


class PGD(Attack):
    """PGD (Madry et al. 2018) from torchattacks (``PGD`` for Linf, ``PGDL2`` for L2) with restarts;
    with ``loss = "margin"`` the same iteration on the margin max_{j != y} z_j - z_y
    (:func:`robustdeq.threat.pgd`; torchattacks' PGD only knows the cross-entropy).

    Across restarts, each example keeps the first final iterate that the model misclassifies
    (else the last restart's).
    """

    name = "pgd"
    holds_broken = True

    def __init__(
        self,
        threat: ThreatModel,
        seed: int = 0,
        batch_size: int = 250,
        steps: int = 20,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        eot: int = 1,
        loss: str = "ce",
    ) -> None:
        super().__init__(threat, seed, batch_size)
        self.steps = steps
        self.step_size = step_size if step_size is not None else threat.eps / 4
        self.restarts = restarts
        self.random_start = random_start
        self.eot = eot
        self.loss = loss

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "steps": self.steps,
            "step_size": self.step_size,
            "restarts": self.restarts,
            "random_start": self.random_start,
        }
        if self.loss != "ce":
            out["loss"] = self.loss
        if self.eot > 1:
            out["eot_draws"] = self.eot
        return out

    def randomized(self, draws: int) -> Attack:
        return PGD(
            self.threat,
            self.seed,
            self.batch_size,
            self.steps,
            self.step_size,
            self.restarts,
            self.random_start,
            draws,
            self.loss,
        )

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        import torchattacks

        if self.eot > 1:
            model = ExpectedLogits(model, self.eot)

        cls = torchattacks.PGD if self.threat.norm == "Linf" else torchattacks.PGDL2
        attack = cls(model, eps=self.threat.eps, alpha=self.step_size, steps=self.steps, random_start=self.random_start)
        best = x.clone()
        fooled = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        for _ in range(self.restarts):
            if self.loss == "ce":  # torchattacks' PGD; it knows no other loss
                x_adv = attack(x, y)
            else:
                x_adv = pgd(model, x, y, self.threat, self.steps, self.step_size, self.random_start, loss=self.loss)
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            best[~fooled] = x_adv[~fooled]
            fooled |= wrong
        return best


class PGDSettings(Settings):
    """PGD's protocol settings (also those of the transfer attack's PGD); ``step_size`` defaults to eps / 4."""

    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: Literal["ce", "margin"] = "ce"


@ATTACKS.register("pgd")
def make_pgd(
    threat: ThreatModel, settings: Mapping[str, Any], seed: int, batch_size: int, where: str = "pgd"
) -> Attack:
    return PGD(threat, seed, batch_size, **parse(PGDSettings, settings, where).model_dump())


# AutoAttack's warnings (pyautoattack/checks.py) mapped to robustdeq flag names.
AUTOATTACK_FLAGS = {
    "randomized defense": "autoattack_randomized_output",
    "probability distribution": "autoattack_softmax_output",
    "zero gradient": "autoattack_zero_gradients",
    "Square Attack has decreased": "autoattack_square_beats_whitebox",
    "dynamic defense": "autoattack_dynamic_defense",
    "target classes": "autoattack_n_classes",
    "not possible to use": "autoattack_n_classes",
}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class AutoAttackSuite(Attack):
    """AutoAttack (Croce & Hein 2020) from ``pyautoattack``, the official code.

    ``version = "standard"``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000
    queries), 100 iterations each. ``version = "rand"`` (what a randomised model gets,
    :meth:`randomized`): APGD-CE and APGD-DLR with expectation over ``eot`` draws per gradient.
    ``version = "custom"`` takes ``attacks`` and may lower ``n_iter`` / ``n_queries`` (used by
    tests, never by a leaderboard protocol). AutoAttack's own reliability warnings become flags
    named ``autoattack_*``.
    """

    name = "autoattack"

    def __init__(
        self,
        threat: ThreatModel,
        seed: int = 0,
        batch_size: int = 250,
        version: str = "standard",
        attacks: tuple[str, ...] = (),
        n_iter: int | None = None,
        n_queries: int | None = None,
        eot: int = 1,
    ) -> None:
        super().__init__(threat, seed, batch_size)
        if version not in ("standard", "rand", "custom"):
            raise RobustdeqError(f"autoattack: version must be standard, rand or custom, got {version!r}")
        if version == "standard" and (attacks or n_iter or n_queries):
            raise RobustdeqError('autoattack: attacks, n_iter and n_queries need version = "custom"')
        if version == "custom" and not attacks:
            raise RobustdeqError('autoattack: version = "custom" needs a list of attacks')
        self.version = version
        self.attacks = attacks
        self.n_iter = n_iter
        self.n_queries = n_queries
        self.eot = eot

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.version == "custom":
            out.update(attacks=list(self.attacks), n_iter=self.n_iter, n_queries=self.n_queries)
        if self.eot > 1:
            out["eot_draws"] = self.eot
        return out

    def randomized(self, draws: int) -> Attack:
        version = "rand" if self.version == "standard" else self.version
        return AutoAttackSuite(
            self.threat, self.seed, self.batch_size, version, self.attacks, self.n_iter, self.n_queries, draws
        )

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        from pyautoattack import AutoAttack, checks

        # The official dynamic-defense check counts autograd calls seen in a forward pass in a
        # module-level dict that it never resets: after one model with a test-time loop, every
        # later model in the same process would be flagged too.
        for name in checks.funcs:
            checks.funcs[name] = 0
        kwargs: dict[str, Any] = {"norm": self.threat.norm, "eps": self.threat.eps, "seed": self.seed}
        if self.version == "custom":
            kwargs["attacks"] = list(self.attacks)
        adversary = AutoAttack(model, device=x.device, version=self.version, **kwargs)
        if self.n_iter is not None:
            for attack in (adversary.apgd, adversary.apgd_targeted, adversary.fab):
                attack.n_iter = self.n_iter
        if self.n_queries is not None:
            adversary.square.n_queries = self.n_queries
        if self.eot > 1:
            adversary.apgd.eot_iter = adversary.apgd_targeted.eot_iter = self.eot
        if isinstance(model, AttackView) and model.warm_start:
            # Warm starts for APGD (it follows the gradient's sign) and Square only. FAB's points lie
            # on the decision boundary, where a warm solve's lag (within the solver tolerance) can
            # disagree with the cold solve that verifies them: FAB, and the suite's own check of
            # each sub-attack's output, solve cold (AttackView.cold; FAB-T alone on deq-pgd-at,
            # 91 digits: 57.1% robust cold, 70.3% with FAB warm, 72.5% with both warm).
            cold = model.cold()
            adversary.model = adversary.fab.predict = cold
        logger = logging.getLogger("auto-attack")
        capture = _Capture()
        logger.addHandler(capture)
        propagate, logger.propagate = logger.propagate, False
        try:
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=self.batch_size)
        finally:
            logger.removeHandler(capture)
            logger.propagate = propagate
        for message in capture.messages:
            for needle, flag in AUTOATTACK_FLAGS.items():
                if needle in message and flag not in self.flags:
                    self.flags.append(flag)
        return x_adv


class AutoAttackSettings(Settings):
    """AutoAttack's protocol settings (see :class:`AutoAttackSuite`)."""

    version: Literal["standard", "rand", "custom"] = "standard"
    attacks: list[str] = []
    n_iter: int | None = None
    n_queries: int | None = None


@ATTACKS.register("autoattack")
def make_autoattack(
    threat: ThreatModel, settings: Mapping[str, Any], seed: int, batch_size: int, where: str = "autoattack"
) -> Attack:
    s = parse(AutoAttackSettings, settings, where)
    return AutoAttackSuite(threat, seed, batch_size, s.version, tuple(s.attacks), s.n_iter, s.n_queries)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside an :class:`~robustdeq.evaluation.view.AttackView` (or the model itself)."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) else model


class Transfer(Attack):
    """Transfer from the explicit twin: PGD on the weight-tied model with the DEQ's own block
    applied ``twin_depth`` times (set by the runner once per evaluation: the mean solver steps of
    the DEQ's cold clean solves, or the depth a fixed-budget readout declares; for LyaDEQ its own
    cell and head without the Lyapunov module, for its step budget), then the examples are tried on
    the DEQ. Needs no gradient of the DEQ, so it brings down DEQs whose gradient is
    broken (detached fixed points, non-differentiable steps inside the forward pass)."""

    name = "transfer"

    def __init__(self, threat: ThreatModel, seed: int = 0, batch_size: int = 250, **pgd: Any) -> None:
        super().__init__(threat, seed, batch_size)
        self.pgd = PGD(threat, seed, batch_size, **pgd)

    def settings(self) -> dict[str, Any]:
        return {"source": "explicit_twin", "depth": self.twin_depth, **self.pgd.settings()}

    def applies(self, model: nn.Module) -> bool:
        return hasattr(_unwrap(model), "explicit_twin")

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        deq = _unwrap(model)
        depth = self.twin_depth or int(getattr(deq, "block_evaluations", 1) or 1)
        twin = deq.explicit_twin(max(1, depth))  # type: ignore[operator]
        return self.pgd.perturb(twin.eval(), x, y)


@ATTACKS.register("transfer")
def make_transfer(
    threat: ThreatModel, settings: Mapping[str, Any], seed: int, batch_size: int, where: str = "transfer"
) -> Attack:
    return Transfer(threat, seed, batch_size, **parse(PGDSettings, settings, where).model_dump())


class Square(Attack):
    """Square (Andriushchenko et al. 2020), the black-box check, from ``pyautoattack`` on its own:
    score-based random search with ``n_queries`` queries, no gradient at all."""

    name = "square"

    def __init__(self, threat: ThreatModel, seed: int = 0, batch_size: int = 250, n_queries: int = 5000) -> None:
        super().__init__(threat, seed, batch_size)
        self.n_queries = n_queries

    def settings(self) -> dict[str, Any]:
        return {"n_queries": self.n_queries}

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        from pyautoattack.square import SquareAttack

        attack = SquareAttack(
            model,
            norm=self.threat.norm,
            eps=self.threat.eps,
            n_queries=self.n_queries,
            p_init=0.8,
            n_restarts=1,
            seed=self.seed,
            device=x.device,
        )
        with torch.no_grad():
            x_adv: Tensor = attack.perturb(x, y)
        return x_adv


class SquareSettings(Settings):
    n_queries: int = 5000


@ATTACKS.register("square")
def make_square(
    threat: ThreatModel, settings: Mapping[str, Any], seed: int, batch_size: int, where: str = "square"
) -> Attack:
    return Square(threat, seed, batch_size, n_queries=parse(SquareSettings, settings, where).n_queries)
