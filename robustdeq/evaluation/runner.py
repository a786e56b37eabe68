"""Run a protocol on a trained model: clean accuracy, every attack, per-example worst case, checks."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq import distributed
from robustdeq.data import Split
from robustdeq.deq import equilibria, grad_mode, solver_budget
from robustdeq.device import CPU
from robustdeq.device import of as device_of
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation.attacks import ATTACKS
from robustdeq.evaluation.state import EvalState, evaluation_key
from robustdeq.evaluation.view import AttackView
from robustdeq.models.entropy import LOOP_GRADIENTS, EntropyReduced
from robustdeq.progress import Progress
from robustdeq.records.outcomes import encode_outcomes
from robustdeq.records.protocol import AttackSpec, ProtocolSpec
from robustdeq.records.threat import box_diameter
from robustdeq.threat import ThreatModel

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
    residual_trace_clean: list[float]
    residual_trace_adversarial: list[float]


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
    checks: dict[str, float] = field(default_factory=dict)  # accuracies of the [checks] re-runs
    eps_sweep: list[tuple[float, float]] = field(default_factory=list)  # (eps, robust accuracy)
    resumed_batches: int = 0  # attack batches taken from a saved state instead of re-run
    batch_size: int = 0  # the attack batch size the records were computed with
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # every attack batch's record
    attack_seconds: dict[str, float] = field(default_factory=dict)  # wall time per attack run (this process)
    # The defense's own paper's evaluation (outside the worst case): label -> (accuracy, settings).
    paper_evaluation: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def outcomes(self) -> dict[str, Any]:
        """The entry's compact ``per_example`` object (:mod:`robustdeq.records.outcomes`)."""
        attacks = {name: c.tolist() for name, c in self.attack_correct.items()}
        return encode_outcomes(self.indices.tolist(), self.clean_correct.tolist(), self.robust.tolist(), attacks)

    def per_example(self) -> dict[str, Any]:
        """The per-example outcomes as JSON data: test-set indices, clean and robust correctness,
        each attack's correctness, and every attack batch's record (adversarial labels, validity,
        solver steps and residual traces) under its name ``<norm>:<eps>/<attack>/<first position>``."""
        return {
            "batch_size": self.batch_size,
            "indices": self.indices.tolist(),
            "clean_correct": self.clean_correct.tolist(),
            "robust": self.robust.tolist(),
            "attacks": {name: c.tolist() for name, c in self.attack_correct.items()},
            "batches": self.records,
        }

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
        return torch.arange(n, device=CPU)
    generator = torch.Generator(CPU).manual_seed(protocol.subset_seed)
    return torch.randperm(len(test), generator=generator, device=CPU)[:n]


@dataclass
class Prediction:
    """Cold-start eval-mode predictions (N,), with per-example solver outcomes for DEQs; on the CPU.

    ``labels`` is -1 where the logits are not finite (never a correct prediction: a NaN cannot make
    an example robust). ``converged`` (N,) bool, ``steps`` (N,) solver steps, ``trace`` (N, T)
    relative residual after each solver step; all None for explicit models.
    """

    labels: Tensor
    converged: Tensor | None = None
    steps: Tensor | None = None
    trace: Tensor | None = None

    def select(self, mask: Tensor) -> Prediction:
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[mask]

        return Prediction(self.labels[mask], pick(self.converged), pick(self.steps), pick(self.trace))


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Prediction:
    # Always in eval mode: a training-mode forward would also refine the spectral-norm estimate,
    # so later predictions would come from a slightly different model.
    model.eval()
    labels, converged, steps, traces = [], [], [], []
    layers = equilibria(model)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            for layer in layers:  # only this forward's solves count (a model may skip its solver)
                layer.last_stats = None
            logits = model(x[start : start + batch_size])
            finite = torch.isfinite(logits).all(1)
            labels.append(torch.where(finite, logits.argmax(1), -1).to(CPU))
            stats = [layer.last_stats for layer in layers if layer.last_stats is not None]
            if stats:
                converged.append(torch.stack([s.converged for s in stats]).all(0).to(CPU))
                steps.append(torch.stack([s.nstep for s in stats]).sum(0).to(CPU))
                # torchdeq's column 0 is a placeholder before the first step; traces of several
                # layers are added up.
                traces.append(torch.stack([s.rel_trace[:, 1:] for s in stats]).sum(0).to(CPU))
    if not converged:
        return Prediction(torch.cat(labels))
    return Prediction(torch.cat(labels), torch.cat(converged), torch.cat(steps), torch.cat(traces))


@dataclass
class Verifier:
    """Classifies inputs the way the evaluation counts them.

    Every call builds a fresh instance of the model (``fresh``: rebuilt from its checkpoint by the
    pipeline, else a copy of the model taken before its first forward), with the solver settings
    of the model it stands for (so the ``[checks]`` solver-budget re-run applies): nothing an
    attack's queries left in the attacked object can answer for it. A randomised model
    (``votes`` > 1) is classified ``votes`` times: an example counts as correct when a majority
    of the forwards classify it correctly (the label kept is then its true label, else the most
    frequent wrong one)."""

    fresh: Callable[[], nn.Module]
    votes: int = 1

    def instance(self, like: nn.Module) -> nn.Module:
        model = self.fresh().eval()
        sources = equilibria(like)  # none when ``like`` is a Stateless stand-in
        for source, target in zip(sources, equilibria(model) if sources else [], strict=True):
            target.spec = source.spec
        budget = getattr(like, "readout_budget", None)
        if budget is not None:  # the [checks] re-run at twice a fixed readout budget
            model.readout_budget = budget
        return model

    def predict(self, like: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Prediction:
        model = self.instance(like)
        if self.votes == 1:
            return _predict(model, x, batch_size)
        draws = [_predict(model, x, batch_size) for _ in range(self.votes)]
        labels = torch.stack([d.labels for d in draws])  # (votes, N); -1 where the logits were not finite
        truth = y.to(CPU)
        right = (labels == truth).sum(0) * 2 > self.votes
        wrong = labels.masked_fill(labels == truth, -1)
        classes = int(wrong.max().clamp_min(0)) + 1
        counts = F.one_hot(wrong.clamp_min(0), classes).masked_fill((wrong < 0)[..., None], 0).sum(0)
        most_wrong = torch.where(counts.amax(1) > 0, counts.argmax(1), -1)  # -1: no finite wrong label
        first = draws[0]
        return Prediction(torch.where(right, truth, most_wrong), first.converged, first.steps, first.trace)


class Stateless(nn.Module):
    """Answers every call with a fresh instance (what a stateful model is attacked through: nothing
    it saw in an earlier query can answer a later one)."""

    def __init__(self, fresh: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fresh = fresh
        self.anchor = nn.Parameter(torch.zeros(0, device=CPU), requires_grad=False)  # the device for torchattacks

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fresh().eval()(x)
        return out


def snapshot(model: nn.Module) -> Callable[[], nn.Module]:
    """A fresh-instance factory for a model given as an object: copies of it as it is now."""
    pristine = copy.deepcopy(model)
    return lambda: copy.deepcopy(pristine)


# Logits of one input may differ by this much (relative to the largest |logit|) between batches:
# float32 reductions depend on the batch size. A DEQ solved batch-wide stops when the whole batch
# has converged, so its logits may move by up to STATE_SLACK times its forward tolerance.
LOGIT_SLACK = 1e-5
STATE_SLACK = 10.0
CHECK_EXAMPLES = 32


def model_checks(fresh: Callable[[], nn.Module], x: Tensor, threat: ThreatModel) -> tuple[bool, bool]:
    """(randomised, stateful) for the model ``fresh`` builds, on the first examples of ``x``.

    Randomised: one instance's two forwards on the same inputs differ. Stateful (checked on
    deterministic models only): on fresh instances, the same examples give other logits in
    another order or split into two batches, or an instance that first saw the examples and
    other points within eps of them answers new points within eps otherwise than one that saw
    nothing (a model that caches what it sees). Logits count as equal within
    :data:`LOGIT_SLACK` (plus :data:`STATE_SLACK` times the forward tolerance for a DEQ).
    """
    xb = x[:CHECK_EXAMPLES]
    if len(xb) < 2:
        return False, False

    def logits(model: nn.Module, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            out: Tensor = model(inputs)
        return out

    model = fresh().eval()
    first = logits(model, xb)
    if not torch.equal(first, logits(model, xb)):
        return True, False
    tolerance = LOGIT_SLACK + STATE_SLACK * max((layer.spec.f_tol for layer in equilibria(model)), default=0.0)
    generator = torch.Generator(CPU).manual_seed(0)

    def near(inputs: Tensor) -> Tensor:
        noise = 2 * torch.rand(inputs.shape, generator=generator, device=CPU).to(inputs.device) - 1
        return threat.project(inputs + threat.eps * noise, inputs)

    order = torch.randperm(len(xb), generator=generator, device=CPU).to(xb.device)
    shuffled = torch.empty_like(first)
    shuffled[order] = logits(fresh().eval(), xb[order])
    split = fresh().eval()
    half = len(xb) // 2
    halves = torch.cat([logits(split, xb[:half]), logits(split, xb[half:])])
    probe = near(xb)
    seen = fresh().eval()
    logits(seen, xb)
    logits(seen, near(xb))
    after = logits(seen, probe)
    before = logits(fresh().eval(), probe)
    scale = first.abs().amax().clamp_min(1.0)
    differ = [
        (a - b).abs().amax() > tolerance * scale for a, b in ((shuffled, first), (halves, first), (after, before))
    ]
    return False, any(bool(d) for d in differ)


def _mean_trace(traces: list[Tensor]) -> list[float]:
    """Mean relative residual per solver step over every example, rounded for the entry."""
    if not traces:
        return []
    return [float(f"{v:.4g}") for v in torch.cat(traces).mean(0).tolist()]


def gradient_health(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250) -> tuple[float, float]:
    """(zero, non-finite): the fractions of examples whose eval-mode input gradient of the
    cross-entropy is exactly zero, and whose gradient holds a NaN or an infinity.

    A DEQ whose fixed point is detached from its input (torchdeq in eval mode, used naively)
    gives zero gradients everywhere; gradient attacks then fail silently. A NaN gradient leaves an
    L-inf attack where it is (sign(NaN) = 0) and makes an L2 attack's iterates invalid.
    """
    if len(y) == 0:
        return 0.0, 0.0
    model.eval()
    zero = nonfinite = 0
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size].clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xb), y[start : start + batch_size], reduction="sum")
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            zero += len(xb)
            continue
        flat = grad.flatten(1)
        finite = torch.isfinite(flat).all(1)
        nonfinite += int((~finite).sum())
        zero += int(((flat.abs().amax(1) == 0) & finite).sum())
    return zero / len(y), nonfinite / len(y)


def zero_gradient_fraction(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 250) -> float:
    """Fraction of examples whose eval-mode input gradient of the cross-entropy is exactly zero."""
    return gradient_health(model, x, y, batch_size)[0]


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


@dataclass
class SuiteResult:
    robust: Tensor
    attack_correct: dict[str, Tensor]
    attack_settings: dict[str, dict[str, Any]]
    adversarial: list[Prediction]
    flags: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per attack run, this process


def run_suite(
    model: nn.Module,
    protocol: ProtocolSpec,
    threat: ThreatModel,
    attacks: tuple[AttackSpec, ...],
    x: Tensor,
    y: Tensor,
    clean_correct: Tensor,
    progress: Progress,
    state: EvalState | None = None,
    verifier: Verifier | None = None,
    eot: int = 1,
    twin_depth: int | None = None,
) -> SuiteResult:
    """Run each attack on the clean-correct examples, batch by batch; verify, re-classify cold (on a
    fresh instance, :class:`Verifier`), take the worst case. Each batch's outcome is recorded in
    ``state`` and reused when resuming. ``eot`` > 1 (a randomised model): the attacks' randomised
    variants (:meth:`Attack.randomized`: expectation over ``eot`` draws, AutoAttack's rand version).
    ``twin_depth``: the depth of the model's explicit twin for the transfer attack (:func:`twin_depth`).

    Under torchrun only the batches ``state`` deals to this rank are attacked; the others count as
    placeholders (nothing survived, nothing valid), so the result is meaningful only once the
    records of every rank are merged and the suite is run again over them (:func:`evaluate`)."""
    state = state or EvalState(None, "")
    verifier = verifier or Verifier(snapshot(model))
    bs = protocol.batch_size
    correct_idx = torch.nonzero(clean_correct).flatten()
    robust = clean_correct.clone()
    result = SuiteResult(robust, {}, {}, [], [])
    for spec in attacks:
        where = f"protocol {protocol.id} attack {spec.key}"
        attack = ATTACKS.get(spec.name)(threat, spec.settings, protocol.seed, bs, where)
        if eot > 1:
            attack = attack.randomized(eot)
        attack.twin_depth = twin_depth
        if not attack.applies(model):
            continue
        for mode, loop, base in _runs(spec, model):
            label = base if base not in result.attack_correct else f"{base}-{len(result.attack_correct) + 1}"
            shown = label if threat == protocol.threat else f"{label} @ eps={threat.eps:g}"
            survived = clean_correct.clone()
            with progress.task(f"  {shown}", total=len(correct_idx)) as advance:
                for start in range(0, len(correct_idx), bs):
                    batch = correct_idx[start : start + bs]
                    name = f"{threat.norm}:{threat.eps!r}/{label}/{start}"
                    here = state.runs_here(name)
                    record = state.get(name)
                    if record is None and not here:
                        record = _placeholder(len(batch))  # another rank's batch, gathered afterwards
                    elif record is None:
                        began = time.perf_counter()
                        xb, yb = x[batch.to(x.device)], y[batch.to(y.device)]
                        # Hold an example once it looks broken only where the attack's logits are
                        # the ones verification classifies (the fixed point's; not the averaged
                        # intermediate states or the unrolled or damped steps of other modes).
                        holds = protocol.warm_start and attack.holds_broken and mode in (None, "ift") and eot == 1
                        view = AttackView(model, xb, threat, protocol.warm_start, yb if holds else None)
                        with grad_mode(model, mode) if mode else nullcontext(), loop_gradient(model, loop):
                            out = attack(view, xb, yb, offset=start)
                        adv = verifier.predict(model, out.x_adv, yb, bs)
                        record = _record(adv, yb.to(CPU), out.valid.to(CPU), [*out.flags, *view.flags])
                        state.put(name, record)
                        spent = time.perf_counter() - began
                        result.seconds[label] = result.seconds.get(label, 0.0) + spent
                    survived[batch] = torch.tensor(record["survived"], dtype=torch.bool, device=CPU)
                    valid = torch.tensor(record["valid"], dtype=torch.bool, device=CPU)
                    result.adversarial.append(_prediction(record).select(valid))
                    result.flags.extend(f for f in record["flags"] if f not in result.flags)
                    advance(len(batch))
            result.attack_correct[label] = survived
            result.attack_settings[label] = {
                "name": spec.name,
                **attack.settings(),
                **({"grad": mode} if mode else {}),
                **({"loop_gradient": loop} if loop else {}),
            }
            robust &= survived
    return result


def own_loop_gradients(model: nn.Module) -> tuple[str, ...]:
    """The loop gradients robustdeq attacks its own inference-time loop with (entropy reduction:
    BPDA, through the loop, and the plain DEQ's gradient), the first being the default of single-run
    attacks. Only robustdeq's own loop family gets them: what any other model declares
    (:func:`declared_loop_gradients`) never replaces them."""
    return LOOP_GRADIENTS if type(model) is EntropyReduced else ()


def declared_loop_gradients(model: nn.Module) -> tuple[str, ...]:
    """Loop gradients a model of another family declares (``loop_gradients`` and ``loop_gradient_mode``):
    each becomes one more run of every multi-mode attack, beside the runs through its forward pass as
    it is written; a declared mode is at most an extra attack, never the one the others are dropped for."""
    if own_loop_gradients(model) or not callable(getattr(model, "loop_gradient_mode", None)):
        return ()
    return tuple(str(m) for m in getattr(model, "loop_gradients", ()))


def _runs(spec: AttackSpec, model: nn.Module) -> list[tuple[str | None, str | None, str]]:
    """(gradient mode or None, loop gradient or None, result name) for each run of ``spec`` on ``model``.

    robustdeq's own inference-time loop (:func:`own_loop_gradients`) runs each multi-mode attack
    once more per further loop gradient, named ``<name>+<loop gradient>``; single-mode attacks use
    its default (BPDA). A loop another model declares runs each multi-mode attack once more per
    declared mode, named ``<name>+declared-<mode>``, every other run going through the model as it is."""
    layers = equilibria(model)
    own, declared = own_loop_gradients(model), declared_loop_gradients(model)
    if spec.grad is not None or spec.loop is not None:  # one run, as a paper evaluated
        return [(spec.grad if layers else None, spec.loop if own else None, spec.key)]
    default = own[0] if own else None
    modes: tuple[str | None, ...] = spec.grad_modes if spec.grad_modes and layers else (None,)
    attack_grad = layers[0].spec.attack_grad if layers else None

    def name(mode: str | None) -> str:
        return spec.key if mode is None or mode == attack_grad else f"{spec.key}@{mode}"

    runs: list[tuple[str | None, str | None, str]] = [(mode, default, name(mode)) for mode in modes]
    if not spec.grad_modes:
        return runs
    runs += [(mode, loop, f"{name(mode)}+{loop}") for loop in own[1:] for mode in modes]
    runs += [(mode, loop, f"{name(mode)}+declared-{loop}") for loop in declared for mode in modes]
    return runs


@contextmanager
def loop_gradient(model: nn.Module, mode: str | None) -> Iterator[None]:
    """Inside the block, ``model``'s inference-time loop is differentiated as ``mode`` (None: as is)."""
    if mode is None:
        yield
        return
    with model.loop_gradient_mode(mode):  # type: ignore[operator]
        yield


# Attacks that use no gradient of the attacked model: compared against the white-box ones.
NON_WHITEBOX = {"transfer": "transfer_stronger_than_whitebox", "square": "square_stronger_than_whitebox"}


def run_checks(
    model: nn.Module,
    protocol: ProtocolSpec,
    suite: SuiteResult,
    x: Tensor,
    y: Tensor,
    clean_correct: Tensor,
    progress: Progress,
    state: EvalState | None,
    verifier: Verifier | None = None,
    eot: int = 1,
    twin_depth: int | None = None,
) -> dict[str, float]:
    """The protocol's ``[checks]`` (see :class:`robustdeq.records.protocol.Checks`): adds flags to ``suite``,
    the doubled-iterations attack to its worst case, and returns each re-run's accuracy."""
    checks = protocol.checks
    verifier = verifier or Verifier(snapshot(model))
    out: dict[str, float] = {}
    acc = {label: fraction(c) for label, c in suite.attack_correct.items()}

    def flag(name: str) -> None:
        if name not in suite.flags:
            suite.flags.append(name)

    # Only the gradient attacks: AutoAttack runs Square itself, so it is no white-box reference for Square.
    whitebox = [
        a for label, a in acc.items() if suite.attack_settings[label]["name"] not in (*NON_WHITEBOX, "autoattack")
    ]
    for label, accuracy in acc.items():
        kind = suite.attack_settings[label]["name"]
        if kind in NON_WHITEBOX and whitebox and accuracy < min(whitebox) - checks.margin:
            flag(NON_WHITEBOX[kind])

    if checks.more_iterations is not None:
        (spec,) = [a for a in protocol.attacks if a.key == checks.more_iterations][:1]
        steps = suite.attack_settings.get(spec.key, {}).get("steps")
        if steps is None:
            raise RobustdeqError(f"protocol {protocol.id} [checks] more_iterations: attack {spec.key} has no steps")
        label = f"{spec.key}-{2 * steps}steps"
        doubled = AttackSpec(spec.name, {**spec.settings, "steps": 2 * steps}, label=label)
        run = (progress, state, verifier, eot, twin_depth)
        extra = run_suite(model, protocol, protocol.threat, (doubled,), x, y, clean_correct, *run)
        suite.attack_correct.update(extra.attack_correct)
        suite.attack_settings.update(extra.attack_settings)
        suite.adversarial.extend(extra.adversarial)
        suite.flags.extend(f for f in extra.flags if f not in suite.flags)
        suite.seconds.update(extra.seconds)
        suite.robust &= extra.robust
        out[label] = fraction(extra.attack_correct[label])
        if out[label] < acc[spec.key] - checks.margin:
            flag("more_iterations_stronger")

    budget = budget_kind(model) if checks.solver_budget is not None else None
    if budget is not None:
        (spec,) = [a for a in protocol.attacks if a.key == checks.solver_budget][:1]
        label = f"{spec.key}-{budget}-2x"
        with doubled_budget(model, budget):
            clean = verifier.predict(model, x, y, protocol.batch_size).labels == y.to(CPU)
            rerun = AttackSpec(spec.name, spec.settings, label=label)
            run = (progress, state, verifier, eot, twin_depth)
            extra = run_suite(model, protocol, protocol.threat, (rerun,), x, y, clean, *run)
        suite.seconds.update(extra.seconds)
        out[f"clean-{budget}-2x"] = fraction(clean)
        out[label] = fraction(extra.attack_correct[label])
        moved = abs(out[f"clean-{budget}-2x"] - fraction(clean_correct)) > checks.margin
        if moved or abs(out[label] - acc[spec.key]) > checks.margin:
            flag(f"{budget}_budget_sensitive")
    return out


def budget_kind(model: nn.Module) -> str | None:
    """What the ``[checks] solver_budget`` re-run doubles on ``model``: ``readout`` for a model read out
    after a fixed budget (``readout_budget``: LyaDEQ's steps, the entropy loop's rounds), where the
    solver has nothing to converge; ``solver`` for a DEQ read at its equilibrium; None otherwise."""
    own = type(model).__module__.startswith("robustdeq.models.")  # a budget another model declares counts for nothing
    if own and getattr(model, "readout_budget", None) is not None:
        return "readout"
    return "solver" if equilibria(model) else None


@contextmanager
def doubled_budget(model: nn.Module, kind: str) -> Iterator[None]:
    """Inside the block, twice the solver iterations (``solver``) or twice the readout budget (``readout``);
    verification's fresh instances take it from ``model`` (:meth:`Verifier.instance`)."""
    if kind == "solver":
        with solver_budget(model, 2):
            yield
        return
    budget = int(model.readout_budget)  # type: ignore[arg-type]
    setattr(model, "readout_budget", 2 * budget)  # noqa: B010 (a property of the family, not a module member)
    try:
        yield
    finally:
        setattr(model, "readout_budget", budget)  # noqa: B010


def twin_depth(model: nn.Module, clean: Prediction) -> int:
    """How often the transfer attack's explicit twin applies the block: the model's own declared depth
    (``twin_depth``: the state a fixed-budget readout reads, e.g. LyaDEQ's steps), else the mean solver
    steps of its cold clean solves on the protocol's examples. Fixed once per evaluation, so it never
    depends on which attack ran before."""
    declared = getattr(model, "twin_depth", None)
    if declared is not None:
        return max(1, int(declared))
    if clean.steps is not None and len(clean.steps):
        return max(1, round(float(clean.steps.float().mean())))
    return max(1, int(getattr(model, "block_evaluations", 1) or 1))


def _record(adv: Prediction, y: Tensor, valid: Tensor, flags: list[str]) -> dict[str, Any]:
    """One attack batch as JSON data (exact: float32 values survive the round trip)."""
    if bool((adv.labels < 0).any()) and "nonfinite_logits" not in flags:
        flags = [*flags, "nonfinite_logits"]
    return {
        "survived": (adv.labels == y).tolist(),
        "labels": adv.labels.tolist(),
        "valid": valid.tolist(),
        "converged": None if adv.converged is None else adv.converged.tolist(),
        "steps": None if adv.steps is None else adv.steps.tolist(),
        "trace": None if adv.trace is None else adv.trace.tolist(),
        "flags": list(flags),
    }


def _placeholder(n: int) -> dict[str, Any]:
    """A record of ``n`` examples standing for a batch that another rank attacks."""
    return {"survived": [False] * n, "labels": [0] * n, "valid": [False] * n, "converged": None,
            "steps": None, "trace": None, "flags": []}  # fmt: skip


def _prediction(record: dict[str, Any]) -> Prediction:
    def tensor(key: str, dtype: torch.dtype) -> Tensor | None:
        return None if record[key] is None else torch.tensor(record[key], dtype=dtype, device=CPU)

    return Prediction(
        torch.tensor(record["labels"], dtype=torch.int64, device=CPU),
        tensor("converged", torch.bool),
        tensor("steps", torch.int64),
        tensor("trace", torch.float32),
    )


def scaled(spec: AttackSpec, factor: float) -> AttackSpec:
    """The attack at another eps (in the model's own gradient mode): an absolute ``step_size`` scales with eps."""
    if "step_size" not in spec.settings:
        return AttackSpec(spec.name, spec.settings)
    return AttackSpec(spec.name, {**spec.settings, "step_size": spec.settings["step_size"] * factor})


def sweep_flags(points: list[tuple[float, float]], n: int, numel: int, protocol: ProtocolSpec) -> list[str]:
    """Checks on the robust-accuracy-versus-eps curve (Carlini et al. 2019).

    ``eps_sweep_not_monotone``: accuracy rises with eps by more than one example;
    ``large_eps_above_chance``: at an eps that covers the whole [0, 1] box (Linf >= 1, L2 >=
    sqrt(#pixels)) accuracy stays above chance (10%) by more than 5 points.
    """
    flags = []
    for (_, low), (_, high) in zip(points, points[1:], strict=False):
        if high > low + 1.0 / n + 1e-12:
            flags.append("eps_sweep_not_monotone")
            break
    whole_box = box_diameter(protocol.threat.norm, numel)
    if any(eps >= whole_box and acc > 0.15 for eps, acc in points):
        flags.append("large_eps_above_chance")
    return flags


def _attack_all(
    model: nn.Module,
    protocol: ProtocolSpec,
    x: Tensor,
    y: Tensor,
    clean_correct: Tensor,
    progress: Progress,
    state: EvalState,
    paper: tuple[AttackSpec, ...],
    verifier: Verifier,
    eot: int,
    depth: int | None = None,
) -> tuple[SuiteResult, dict[str, float], list[tuple[float, float]], SuiteResult | None]:
    """The protocol's attacks, its ``[checks]``, its eps sweep, and a paper's own evaluation:
    (suite, check accuracies, sweep points, the paper's evaluation or None)."""
    run = (progress, state, verifier, eot, depth)
    suite = run_suite(model, protocol, protocol.threat, protocol.attacks, x, y, clean_correct, *run)
    checks = run_checks(model, protocol, suite, x, y, clean_correct, *run)
    sweep_points: list[tuple[float, float]] = []
    for eps in protocol.eps_sweep:
        threat = ThreatModel(protocol.threat.norm, eps)
        specs = tuple(
            scaled(a, eps / protocol.threat.eps) for a in protocol.attacks if a.key in protocol.eps_sweep_attacks
        )
        point = run_suite(model, protocol, threat, specs, x, y, clean_correct, *run)
        sweep_points.append((eps, fraction(point.robust)))
        suite.seconds["eps_sweep"] = suite.seconds.get("eps_sweep", 0.0) + sum(point.seconds.values())
    as_paper = None
    if protocol.paper_evaluations and paper:
        as_paper = run_suite(model, protocol, protocol.threat, paper, x, y, clean_correct, *run)
        suite.seconds.update(as_paper.seconds)
    return suite, checks, sweep_points, as_paper


def evaluate(
    model: nn.Module,
    protocol: ProtocolSpec,
    test: Split,
    n_examples: int | None = None,
    progress: Progress | None = None,
    state_path: Path | None = None,
    batch_size: int | None = None,
    paper: tuple[AttackSpec, ...] = (),
    fresh: Callable[[], nn.Module] | None = None,
) -> EvalResult:
    """Evaluate ``model`` under ``protocol`` on its test subset.

    Each attack runs on every clean-correct example; its adversarial examples are verified
    and re-classified with a cold-start forward. An example is robust only if it is correct
    clean and after every attack. With ``state_path``, every attack batch's outcome is saved
    there and a later call with the same model, protocol, batch size and subset resumes from it.
    ``batch_size`` replaces the protocol's (it is then recorded in every attack's settings):
    attack randomness is seeded per batch position, so results depend on it. ``paper``: the
    defense's own paper's evaluation (its fidelity record), run too when the protocol says
    ``paper_evaluations = true``, each attack on the clean-correct examples, outside the worst case.
    ``fresh`` builds a fresh instance of the model (the pipeline rebuilds it from its checkpoint;
    default: copies of ``model`` taken now): every clean and adversarial prediction that counts is
    made on one (:class:`Verifier`).

    Before any attack, the model is checked (:func:`model_checks`): a randomised model (two
    forwards on the same inputs differ) is flagged ``randomized_model`` and evaluated with the
    protocol's ``votes`` (majority over forwards) and ``eot_draws`` (expectation over
    transformation in every gradient attack, AutoAttack's rand version); a model whose outputs
    depend on more than its input (the order and composition of the batch, or points it saw
    before) is flagged ``stateful_model``.

    Under torchrun (:mod:`robustdeq.distributed`) every rank computes the clean forward, each
    attacks only the batches dealt to it, the batch records are gathered on every rank, and the
    suite is assembled from them exactly as a single process assembles its own: the result is
    identical to a single-process run with the same batch size (and torch threads per process).
    """
    progress = progress or Progress.quiet()
    start_time = time.perf_counter()
    model.eval()
    fresh = fresh or snapshot(model)
    overridden = batch_size is not None and batch_size != protocol.batch_size
    if batch_size is not None:
        protocol = dataclasses.replace(protocol, batch_size=batch_size)
    idx = select_subset(protocol, test, n_examples)
    device = device_of(model)  # the data follows the model
    x, y = test.x[idx].to(device), test.y[idx].to(device)
    bs = protocol.batch_size
    flags: list[str] = []
    key = evaluation_key(model, protocol.hash, idx, bs) if state_path else ""
    world = distributed.world_size()
    state = EvalState(state_path, key, distributed.rank(), world)

    randomized, stateful = model_checks(fresh, x, protocol.threat)
    flags += ["randomized_model"] if randomized else []
    flags += ["stateful_model"] if stateful else []
    if stateful:  # attacked through fresh instances, query by query
        anchor = Stateless(fresh).to(device)
        anchor.train(False)
        model = anchor
    verifier = Verifier(fresh, protocol.votes if randomized else 1)
    eot = protocol.eot_draws if randomized else 1
    counted = verifier.instance(model)
    layers = equilibria(counted)
    clean = _predict(counted, x, bs)
    depth = twin_depth(counted, clean)
    forward_cost: float | None
    if layers:
        forward_cost = sum(layer.counters.forward_example_evals for layer in layers) / len(y)
    else:
        forward_cost = float(getattr(model, "block_evaluations", 0)) or None
    if randomized:
        clean = verifier.predict(model, x, y, bs)
    clean_correct = clean.labels == y.to(CPU)  # outcomes are kept on the CPU, the data on the device
    if bool((clean.labels < 0).any()):
        flags.append("nonfinite_logits")
    correct_idx = torch.nonzero(clean_correct).flatten()

    on_device = correct_idx.to(device)
    zero_frac, nonfinite_frac = gradient_health(model, x[on_device], y[on_device], bs)
    if zero_frac > 0:
        flags.append("zero_gradients")
    if nonfinite_frac > 0:
        flags.append("nonfinite_gradients")

    if world == 1:
        everything = _attack_all(model, protocol, x, y, clean_correct, progress, state, paper, verifier, eot, depth)
        suite, checks, sweep_points, as_paper = everything
        resumed, records, seconds = state.resumed, state.batches, suite.seconds
    else:
        # this rank's batches only
        mine, *_ = _attack_all(model, protocol, x, y, clean_correct, progress, state, paper, verifier, eot, depth)
        seconds = mine.seconds
        gathered = distributed.all_gather_object((state.batches, state.resumed))
        merged = EvalState(None, key)
        for batches, _ in gathered:
            merged.batches.update(batches)
        quiet = Progress.quiet()
        everything = _attack_all(model, protocol, x, y, clean_correct, quiet, merged, paper, verifier, eot, depth)
        suite, checks, sweep_points, as_paper = everything
        resumed, records = sum(n for _, n in gathered), merged.batches
    if overridden:
        for settings in suite.attack_settings.values():
            settings["batch_size"] = bs
    flags.extend(f for f in suite.flags if f not in flags)
    adversarial = suite.adversarial
    flags.extend(f for f in sweep_flags(sweep_points, len(y), x[0].numel(), protocol) if f not in flags)

    solver = None
    if clean.converged is not None and clean.steps is not None and clean.trace is not None:
        adv_c = torch.cat(
            [a.converged for a in adversarial if a.converged is not None]
            or [torch.ones(0, dtype=torch.bool, device=CPU)]
        )
        adv_s = torch.cat([a.steps for a in adversarial if a.steps is not None] or [torch.zeros(0, device=CPU)])
        solver = SolverReport(
            nonconverged_clean=fraction(~clean.converged),
            nonconverged_adversarial=fraction(~adv_c),
            mean_steps_clean=float(clean.steps.float().mean()),
            mean_steps_adversarial=float(adv_s.float().mean()) if len(adv_s) else 0.0,
            spectral_radius=spectral_radius(verifier.instance(model), x[:bs]),
            residual_trace_clean=_mean_trace([clean.trace]),
            residual_trace_adversarial=_mean_trace([a.trace for a in adversarial if a.trace is not None]),
        )
        if max(solver.nonconverged_clean, solver.nonconverged_adversarial) > NONCONVERGENCE_THRESHOLD:
            flags.append("solver_nonconvergence")

    return EvalResult(
        indices=idx,
        clean_correct=clean_correct,
        attack_correct=suite.attack_correct,
        robust=suite.robust,
        attack_settings=suite.attack_settings,
        flags=flags,
        forward_cost=forward_cost,
        solver=solver,
        seconds=time.perf_counter() - start_time,
        zero_gradient_fraction=zero_frac,
        checks=checks,
        eps_sweep=sweep_points,
        resumed_batches=resumed,
        batch_size=bs,
        records=records,
        attack_seconds={label: round(s, 3) for label, s in seconds.items()},
        paper_evaluation=_paper_results(as_paper),
    )


def _paper_results(suite: SuiteResult | None) -> dict[str, tuple[float, dict[str, Any]]]:
    if suite is None:
        return {}
    return {label: (fraction(correct), suite.attack_settings[label]) for label, correct in suite.attack_correct.items()}
