"""Threat models: the perturbation ball, projection onto it, and verification of adversarial examples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.device import CPU
from robustdeq.errors import RobustdeqError

NORMS = ("Linf", "L2")

# Slack for float32 round-off when checking |delta| <= eps.
VERIFY_ATOL = 1e-5


@dataclass(frozen=True)
class ThreatModel:
    """An ``norm`` ball of radius ``eps`` around each input, intersected with the box [0, 1]."""

    norm: str
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise RobustdeqError(f"threat model: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not self.eps > 0:
            raise RobustdeqError(f"threat model: eps must be positive, got {self.eps}")

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-example distance (B,) in this norm."""
        delta = (x_adv - x).flatten(1)
        return delta.abs().amax(1) if self.norm == "Linf" else delta.norm(dim=1)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Nearest point of the ball (Linf) or radial shrink (L2), then clip to [0, 1]."""
        delta = x_adv - x
        if self.norm == "Linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
        return (x + delta).clamp(0.0, 1.0)

    def verify(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Bool (B,): finite, inside [0, 1] and within eps (+ float slack) of ``x``."""
        flat = x_adv.flatten(1)
        finite = torch.isfinite(flat).all(1)
        in_box = (flat >= 0.0).all(1) & (flat <= 1.0).all(1)
        within = self.distance(torch.nan_to_num(x_adv), x) <= self.eps + VERIFY_ATOL
        return finite & in_box & within


def steepest_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit size in ``norm``: sign (Linf) or grad / |grad|_2 (L2)."""
    if norm == "Linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


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
) -> Tensor:
    """Madry et al. PGD on the cross-entropy, used inside adversarial training.

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
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = threat.project(x_adv + step_size * steepest_direction(grad, threat.norm), x)
    return x_adv.detach()
