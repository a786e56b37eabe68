"""The model as attacks see it: honest autograd wiring plus per-example warm starts for DEQs.

Attack libraries call ``model(x)`` on batches whose rows are perturbations of the examples
under attack, in any order and any subset. For a DEQ, :class:`AttackView` starts each row's
fixed-point solve from the last fixed point seen for the *same* example, which it recognises
by distance: a row belongs to example i when it lies within the threat model's ball around
example i's clean input, and around no other example's. Rows that match no example, or more
than one, start cold, so a state is never reused across examples. The fixed point is unique
(the reference cells are contractions), so a warm start changes the number of solver steps,
not the solution beyond the solver tolerance. Verification of adversarial examples never goes
through this view: it always solves from a cold start.
"""

from __future__ import annotations

import inspect
from typing import cast

import torch
from torch import Tensor, nn

from robustdeq.threat import VERIFY_ATOL, ThreatModel

# Bound on the (rows x anchors x features) distance tensor built at once when matching.
_MATCH_CHUNK = 1 << 24


def supports_warm_start(model: nn.Module) -> bool:
    """A DEQ family that takes ``z_init`` and leaves its fixed point in ``last_state``."""
    return hasattr(model, "last_state") and "z_init" in inspect.signature(model.forward).parameters


class AttackView(nn.Module):
    """Wraps ``model`` for attacks on the examples ``anchors`` (N, ...) under ``threat``."""

    def __init__(self, model: nn.Module, anchors: Tensor, threat: ThreatModel, warm_start: bool = True) -> None:
        super().__init__()
        self.model = model
        # Mirror the model's mode: attack libraries restore the mode they found on the view, and a
        # fresh nn.Module says "training", which would leave the model in training mode afterwards.
        self.train(model.training)
        self.threat = threat
        self.anchors = anchors.flatten(1)
        self.warm_start = warm_start and supports_warm_start(model)
        self.cache: Tensor | None = None
        self.have = torch.zeros(len(anchors), dtype=torch.bool)
        self.warm_rows = 0
        self.cold_rows = 0

    def match(self, x: Tensor) -> Tensor:
        """Index (B,) of the unique example whose ball contains each row, or -1."""
        rows = x.detach().flatten(1)
        per_chunk = max(1, _MATCH_CHUNK // max(1, len(self.anchors) * rows.shape[1]))
        out = []
        for start in range(0, len(rows), per_chunk):
            diff = rows[start : start + per_chunk, None, :] - self.anchors[None]
            dist = diff.abs().amax(-1) if self.threat.norm == "Linf" else diff.norm(dim=-1)
            inside = dist <= self.threat.eps + VERIFY_ATOL
            unique = inside.sum(1) == 1
            out.append(torch.where(unique, inside.float().argmax(1), torch.full_like(unique, -1, dtype=torch.long)))
        return torch.cat(out)

    def forward(self, x: Tensor) -> Tensor:
        if self.warm_start:
            logits = self._warm_forward(x)
        else:
            logits = self.model(x)
        if torch.is_grad_enabled() and x.requires_grad:
            # A model whose output is cut off from x (e.g. a detached fixed point) would crash
            # gradient attacks; this adds exactly zero, so they run, see a zero gradient, and the
            # zero-gradient check flags the entry.
            logits = logits + 0.0 * x.flatten(1).sum(1, keepdim=True)
        return logits

    def _warm_forward(self, x: Tensor) -> Tensor:
        idx = self.match(x)
        known = idx >= 0
        known[known.clone()] = self.have[idx[known]]
        z_init = None
        if self.cache is not None and bool(known.any()):
            z_init = torch.zeros(len(x), *self.cache.shape[1:], dtype=x.dtype)
            z_init[known] = self.cache[idx[known]]
        self.warm_rows += int(known.sum())
        self.cold_rows += int((~known).sum())
        logits: Tensor = self.model(x, z_init=z_init)
        state = cast(Tensor, self.model.last_state)
        if self.cache is None:
            self.cache = torch.zeros(len(self.anchors), *state.shape[1:], dtype=state.dtype)
        matched = idx >= 0
        self.cache[idx[matched]] = state[matched]
        self.have[idx[matched]] = True
        return logits
