"""Attacks inside training: PGD and the steepest-ascent direction of a threat model's norm.

The threat model itself (the ball, projection, verification) is a record:
:class:`robustdeq.records.threat.ThreatModel`, re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.device import CPU
from robustdeq.records.threat import ThreatModel as ThreatModel


def steepest_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit size in ``norm``: sign (Linf) or grad / |grad|_2 (L2)."""
    if norm == "Linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j - z_y per example (B,): positive where the example is misclassified."""
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(1) - logits.gather(1, y[:, None]).squeeze(1)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    start: Tensor | None = None,
    loss: str = "ce",
) -> Tensor:
    """Madry et al. PGD on the cross-entropy (``loss = "ce"``, used inside adversarial training) or on
    the margin max_{j != y} z_j - z_y (``"margin"``, Carlini & Wagner 2017).

    Linf: sign steps; L2: normalised-gradient steps. The model's current mode is kept (the
    trainer puts it in eval mode, so a DEQ gives its attack-time gradient). The random start is
    drawn from ``start`` (U[0, 1) numbers shaped like ``x``) when given, else from ``generator`` (a CPU
    generator; the numbers are moved to ``x``'s device).
    Returns the last iterate, detached.
    """
    x = x.detach()
    if random_start:
        if start is None:  # drawn on the CPU, so the draws do not depend on the device
            start = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=CPU)
        uniform = start.to(x.device)
        noise = uniform * 2 - 1
        if threat.norm == "Linf":
            x_adv = x + threat.eps * noise
        else:
            x_adv = x + threat.eps * noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = threat.project(x_adv, x)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        objective = F.cross_entropy(logits, y) if loss == "ce" else margin(logits, y).sum()
        (grad,) = torch.autograd.grad(objective, x_adv)
        with torch.no_grad():
            x_adv = threat.project(x_adv + step_size * steepest_direction(grad, threat.norm), x)
    return x_adv.detach()
