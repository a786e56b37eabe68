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
