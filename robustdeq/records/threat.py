"""The threat model of a protocol: an L-inf or L2 ball of radius eps around each input, in the box [0, 1].

A record (``[threat_model]`` in a protocol) with the geometry every attack and check shares:
distance, projection and verification of adversarial examples. The geometry is written with tensor
methods only, so this module imports no compute library: it works on whatever tensors it is given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError, model_validator

from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import Record, one_line

if TYPE_CHECKING:
    from torch import Tensor

NORMS = ("Linf", "L2")

# Slack for float32 round-off when checking |delta| <= eps.
VERIFY_ATOL = 1e-5


class ThreatModel(Record):
    """An ``norm`` ball of radius ``eps`` around each input, intersected with the box [0, 1]."""

    norm: Literal["Linf", "L2"]
    eps: float

    def __init__(self, norm: str, eps: float) -> None:
        try:
            super().__init__(**{"norm": norm, "eps": eps})
        except ValidationError as exc:
            raise RobustdeqError(one_line(exc, "threat model")) from None

    @model_validator(mode="after")
    def _positive(self) -> ThreatModel:
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be positive, got {self.eps}")
        if self.norm == "Linf" and self.eps > 1:
            raise ValueError(
                f"L-inf eps {self.eps:g} is above 1, the width of the [0, 1] box (at 1 it is the whole box)"
            )
        return self

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
        finite = flat.isfinite().all(1)
        in_box = (flat >= 0.0).all(1) & (flat <= 1.0).all(1)
        within = self.distance(x_adv.nan_to_num(), x) <= self.eps + VERIFY_ATOL
        return finite & in_box & within


def box_diameter(norm: str, numel: int) -> float:
    """The largest distance between two inputs in [0, 1]^numel: 1 under L-inf, sqrt(numel) under L2. An eps
    above it adds nothing to the ball and is refused."""
    return 1.0 if norm == "Linf" else math.sqrt(numel)


def check_eps_within_box(norm: str, eps: list[float], numel: int, what: str) -> None:
    """A one-line error when any of ``eps`` exceeds the box's diameter for inputs of ``numel`` values."""
    bound = box_diameter(norm, numel)
    too_large = [e for e in eps if e > bound + 1e-12]
    if too_large:
        raise RobustdeqError(
            f"{what}: {norm} eps {', '.join(f'{e:g}' for e in too_large)} above {bound:g}, the diameter of the "
            f"[0, 1] box for {numel} input values ({'1' if norm == 'Linf' else 'sqrt of the number of values'})"
        )
