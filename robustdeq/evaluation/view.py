"""The model as attacks see it: honest autograd wiring plus per-example warm starts for DEQs.

Attack libraries call ``model(x)`` on batches whose rows are perturbations of the examples
under attack, in any order and any subset. For a DEQ, :class:`AttackView` starts each row's
fixed-point solve from the last fixed point seen for the *same* example, which it recognises
by distance: a row belongs to example i when it lies within the threat model's ball around
example i's clean input, and around no other example's. Rows that match no example, or more
than one, start cold, so a state is never reused across examples. The same goes for the IFT
adjoint: the backward solve starts from the example's last adjoint. Inside the view the model's
equilibrium layer runs an attack session (:meth:`robustdeq.deq.Equilibrium.attack_session`):
every example stops at its own tolerance, so warm rows cost the few steps they need. The
fixed point is unique (the reference cells are contractions), so a warm start changes the
number of solver steps, not the solution beyond the solver tolerance. Verification of
adversarial examples never goes through this view: it always solves from a cold start with
the protocol's solver settings. A row equal to its example's clean input always starts cold,
so repeated calls on the clean inputs (AutoAttack's randomness check) give identical outputs
for a deterministic model, and a randomised one is still caught.

Given the examples' ``labels``, the view also *holds* broken examples: the first row at which
an example is misclassified (by a margin, :func:`_wrong_by_margin`) is remembered with its
logits and gets a zero gradient, and a later row equal to it (to ``HOLD_ATOL``) gets those
logits without a solve, again with a zero gradient; so a sign-gradient attack (PGD) stays on
the adversarial point it found instead of paying for more solves and possibly walking off it.
Only for attacks whose result is their last iterate (PGD); the held point is verified and
re-classified from a cold start like any other.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import cast

import torch
from torch import Tensor, nn

from robustdeq.deq import AttackSession, equilibria
from robustdeq.records.threat import VERIFY_ATOL, ThreatModel

# Bound on the (rows x anchors x features) distance tensor built at once when matching.
_MATCH_CHUNK = 1 << 24
# Matching first compares rows and examples on this many features (those that vary most across the
# examples): a distance over some features is a lower bound of the distance over all of them (L-inf
# and L2), so a pair apart by more than the radius there is apart; only the pairs left are compared
# in full. On the MNIST tier's deq-pgd-at under Square, 250 examples: 211 ms a call comparing every
# feature of every pair, 3 ms screened.
_SCREEN_FEATURES = 32
# A row within this (max-abs) distance of a held adversarial point is that point.
HOLD_ATOL = 1e-6
# An example is held once misclassified by this margin, relative to its largest |logit|.
HOLD_MARGIN = 1e-2


def supports_warm_start(model: nn.Module) -> bool:
    """One of robustdeq's own DEQ families (or a torchdeq model it adapted) that takes ``z_init`` and
    leaves its fixed point in ``last_state``. A submitted model never gets ``z_init``, whatever its
    signature: a call with it would differ from the calls verification makes, and a model could
    answer the two differently."""
    own = type(model).__module__.startswith("robustdeq.")
    return own and hasattr(model, "last_state") and "z_init" in inspect.signature(model.forward).parameters


def attack_model(model: nn.Module, anchors: Tensor, threat: ThreatModel) -> nn.Module:
    """What a training-time attack on ``anchors`` should call: a warm-starting view for a DEQ, else the
    model (also a DEQ whose forwards draw random solver budgets: a warm start would change what they reach)."""
    if supports_warm_start(model) and not any(layer.sampling for layer in equilibria(model)):
        return AttackView(model, anchors, threat)
    return model


class AttackView(nn.Module):
    """Wraps ``model`` for attacks on the examples ``anchors`` (N, ...) under ``threat``."""

    def __init__(
        self,
        model: nn.Module,
        anchors: Tensor,
        threat: ThreatModel,
        warm_start: bool = True,
        labels: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # Mirror the model's mode: attack libraries restore the mode they found on the view, and a
        # fresh nn.Module says "training", which would leave the model in training mode afterwards.
        self.train(model.training)
        self.threat = threat
        self.anchors = anchors.flatten(1)
        spread = self.anchors.var(0) if len(self.anchors) > 1 else self.anchors.new_zeros(self.anchors.shape[1])
        self.screen = spread.argsort(descending=True)[:_SCREEN_FEATURES]
        # Examples whose ball overlaps no other example's ball (centre distance > 2 eps).
        twice = self._match_all(self.anchors, self.anchors, 2 * (threat.eps + VERIFY_ATOL))
        self.isolated = twice >= 0
        self.warm_start = warm_start and supports_warm_start(model)
        self.cache: Tensor | None = None
        self.have = torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device)
        self.adjoints: Tensor | None = None
        self.have_adjoint = torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device)
        layers = equilibria(model)
        self.layer = layers[0] if len(layers) == 1 else None
        self.labels = labels
        self.held = _Memo(self.anchors)  # each example's first adversarial point (with labels)
        self.flags: list[str] = []  # nonfinite_logits / nonfinite_gradients, as the attack met them
        self.held_rows = 0
        self.warm_rows = 0
        self.cold_rows = 0

    def cold(self) -> AttackView:
        """This view without warm starts (every solve cold, with the batch solver), sharing its flags.
        A warm solve stops within the tolerance of the fixed point but lags towards the previous
        query's state; an attack whose points lie on the decision boundary (FAB: it minimises the
        perturbation) and decides by the logits there can keep a point the cold verification
        classifies correctly. On deq-pgd-at (91 digits) FAB-T alone left 57.1% robust cold and
        70.3% warm-started; at tolerance 1e-5, 55-56% either way. Square (1,000 queries) gave
        61.5% both ways; PGD and APGD follow the gradient's sign past the boundary."""
        view = AttackView(self.model, self.anchors, self.threat, warm_start=False)
        view.flags = self.flags
        return view

    def match(self, x: Tensor) -> Tensor:
        """Index (B,) of the unique example whose ball contains each row, or -1.

        Fast path: attack libraries mostly pass the examples in their order; row i inside the
        ball of example i, whose ball overlaps no other example's, is example i. Other rows are
        compared with every example.
        """
        rows = x.detach().flatten(1)
        radius = self.threat.eps + VERIFY_ATOL
        if len(rows) != len(self.anchors):
            return self._match_all(rows, self.anchors, radius)
        own = (self._distance(rows - self.anchors) <= radius) & self.isolated
        out = torch.where(own, torch.arange(len(rows), device=rows.device), -1)
        if not bool(own.all()):
            out[~own] = self._match_all(rows[~own], self.anchors, radius)
        return out

    def _distance(self, diff: Tensor) -> Tensor:
        return diff.abs().amax(-1) if self.threat.norm == "Linf" else diff.norm(dim=-1)

    def _match_all(self, rows: Tensor, anchors: Tensor, radius: float) -> Tensor:
        """Index of the unique row of ``anchors`` within ``radius`` of each row, or -1 (none or several):
        screened on a few features (``_SCREEN_FEATURES``), the pairs left compared on all of them."""
        near = self._pairwise(rows[:, self.screen], anchors[:, self.screen]) <= radius
        pairs = near.nonzero()
        per_chunk = max(1, _MATCH_CHUNK // max(1, rows.shape[1]))
        inside = torch.cat(
            [self._distance(rows[chunk[:, 0]] - anchors[chunk[:, 1]]) <= radius for chunk in pairs.split(per_chunk)]
            or [near.new_zeros(0)]
        )
        count = torch.zeros(len(rows), dtype=torch.long, device=rows.device).index_add_(0, pairs[:, 0], inside.long())
        found = torch.full((len(rows),), -1, dtype=torch.long, device=rows.device)
        hit = pairs[inside]
        found[hit[:, 0]] = hit[:, 1]
        return torch.where(count == 1, found, -1)

    def _pairwise(self, rows: Tensor, anchors: Tensor) -> Tensor:
        """(rows x anchors) distances, built in chunks of at most ``_MATCH_CHUNK`` differences."""
        per_chunk = max(1, _MATCH_CHUNK // max(1, len(anchors) * rows.shape[1]))
        starts = range(0, len(rows), per_chunk)
        chunks = [self._distance(rows[i : i + per_chunk, None, :] - anchors[None]) for i in starts]
        return torch.cat(chunks) if chunks else rows.new_zeros(0, len(anchors))

    def forward(self, x: Tensor) -> Tensor:
        idx = self.match(x) if self.warm_start or self.labels is not None else None
        reuse = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if idx is not None and self.labels is not None:
            reuse = self.held.lookup(x.detach().flatten(1), idx, HOLD_ATOL)
            self.held_rows += int(reuse.sum())
        if not bool(reuse.any()):
            logits = self._solve(x, idx)
        else:
            assert idx is not None and self.held.logits is not None
            logits = self.held.logits[idx.clamp_min(0)].clone()
            if not bool(reuse.all()):
                logits[~reuse] = self._solve(x[~reuse], idx[~reuse])
        if idx is not None and self.labels is not None:
            fresh = (idx >= 0) & ~reuse & ~self.held.have[idx.clamp_min(0)]
            broken = fresh & _wrong_by_margin(logits.detach(), self.labels[idx.clamp_min(0)])
            self.held.store(x.detach().flatten(1), idx, broken, logits)
            logits = torch.where((broken | reuse)[:, None], logits.detach(), logits)
        if not bool(torch.isfinite(logits.detach()).all()):
            self._flag("nonfinite_logits")
        if _needs_grad(x):
            # A model whose output is cut off from x (e.g. a detached fixed point) would crash
            # gradient attacks; this adds exactly zero, so they run, see a zero gradient, and the
            # zero-gradient check flags the entry.
            logits = logits + 0.0 * x.flatten(1).sum(1, keepdim=True)
            x.register_hook(self._check_gradient)
        return logits

    def _flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    def _check_gradient(self, grad: Tensor) -> None:
        """NaN or infinite input gradients leave an L-inf attack where it is (sign(NaN) = 0) and
        make an L2 attack's iterates invalid: the entry must say the attack was blind there."""
        if not bool(torch.isfinite(grad).all()):
            self._flag("nonfinite_gradients")

    def _solve(self, x: Tensor, idx: Tensor | None) -> Tensor:
        if self.warm_start and idx is not None:
            return self._warm_forward(x, idx)
        logits: Tensor = self.model(x)
        return logits

    def _warm_forward(self, x: Tensor, idx: Tensor) -> Tensor:
        matched = idx >= 0
        clean = matched.clone()
        clean[matched] = (x.detach().flatten(1)[matched] == self.anchors[idx[matched]]).all(1)
        starts = torch.where(clean, -1, idx)  # a clean input always starts cold
        z_init = self._gather(self.cache, self.have, starts)
        warm = int(self.have[starts[starts >= 0]].sum()) if z_init is not None else 0
        self.warm_rows += warm
        self.cold_rows += len(x) - warm

        def keep_adjoint(g: Tensor) -> None:
            if self.adjoints is None:
                self.adjoints = g.new_zeros(len(self.anchors), *g.shape[1:])
            self.adjoints[idx[matched]] = g[matched]
            self.have_adjoint[idx[matched]] = True

        session = AttackSession(self._gather(self.adjoints, self.have_adjoint, idx), keep_adjoint)
        with self.layer.attack_session(session) if self.layer is not None else nullcontext():
            logits: Tensor = self.model(x, z_init=z_init)
        state = cast(Tensor, self.model.last_state)
        if self.cache is None:
            self.cache = state.new_zeros(len(self.anchors), *state.shape[1:])
        self.cache[idx[matched]] = state[matched]
        self.have[idx[matched]] = True
        return logits

    @staticmethod
    def _gather(cache: Tensor | None, have: Tensor, idx: Tensor) -> Tensor | None:
        """Rows of ``cache`` for the matched rows that have one, zeros (a cold start) elsewhere."""
        known = idx >= 0
        known[known.clone()] = have[idx[known]]
        if cache is None or not bool(known.any()):
            return None
        out = cache.new_zeros(len(idx), *cache.shape[1:])
        out[known] = cache[idx[known]]
        return out


def _wrong_by_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Misclassified by a margin that a solver tolerance cannot overturn (1% of the largest logit).

    A warm-started solve and the cold one of the verification agree to the solver tolerance
    only; an example held right at the decision boundary could be re-classified correctly.
    """
    true = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return other - true > HOLD_MARGIN * logits.abs().amax(1)


def _needs_grad(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


class _Memo:
    """One remembered input row and its logits per example."""

    def __init__(self, anchors: Tensor) -> None:
        self.x = torch.zeros_like(anchors)
        self.logits: Tensor | None = None
        self.have = torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device)

    def lookup(self, rows: Tensor, idx: Tensor, atol: float) -> Tensor:
        """(B,) mask of the rows equal (to ``atol``, max-abs) to their example's remembered row."""
        out = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        known = (idx >= 0).nonzero().flatten()
        known = known[self.have[idx[known]]]
        if len(known):
            gap = (rows[known] - self.x[idx[known]]).abs().amax(1)
            out[known[gap <= atol]] = True
        return out

    def store(self, rows: Tensor, idx: Tensor, mask: Tensor, logits: Tensor) -> None:
        if not bool(mask.any()):
            return
        if self.logits is None:
            self.logits = logits.new_zeros(len(self.have), logits.shape[1])
        # An example that appears in two rows keeps one of them; either is a valid memory.
        self.x[idx[mask]] = rows[mask]
        self.logits[idx[mask]] = logits.detach()[mask]
        self.have[idx[mask]] = True
