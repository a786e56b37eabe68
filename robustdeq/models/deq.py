"""The reference DEQ classifier (Bai, Kolter, Koltun 2019) on the shared equilibrium layer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustdeq.deq import Equilibrium, SolverSpec
from robustdeq.device import of as device_of
from robustdeq.models.blocks import ContractiveConv, Head, stem_stride
from robustdeq.models.registry import MODELS


class DEQClassifier(nn.Module):
    """x (B, C, H, W) in [0, 1] -> logits (B, classes) through z* = relu(W z* + U x).

    ``U`` is a 3x3 input-injection convolution (stride 2 for 28/32 px images), ``W`` a
    :class:`ContractiveConv` with operator norm at most ``bound``, so z* is unique and the
    solver converges. The head pools z* to 4x4 and applies a linear layer.
    """

    family = "deq"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        solver: SolverSpec | None = None,
        channels: int = 16,
        bound: float = 0.9,
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        self.in_shape = in_shape
        s = stem_stride(h)
        self.inject = nn.Conv2d(c, channels, 3, stride=s, padding=1)
        self.state_shape = (channels, (h - 1) // s + 1, (w - 1) // s + 1)
        self.cell = ContractiveConv(channels, self.state_shape[1:], bound)
        self.equilibrium = Equilibrium(solver)
        self.head = Head(channels, num_classes)
        self.last_state: Tensor | None = None

    def f(self, z: Tensor, u: Tensor, weight: Tensor) -> Tensor:
        """One application of the cell: relu(W z + u), with W = ``weight``."""
        return torch.relu(self.cell(z, weight) + u)

    def cell_transpose(self, z: Tensor, u: Tensor, weight: Tensor) -> Callable[[Tensor], Tensor]:
        """v -> J_f(z)^T v for f(z) = relu(W z + u): W^T (relu'(W z + u) * v), in closed form (the
        implicit backward solves apply it at every step; autograd's product is the same map)."""
        weight = weight.detach()
        with torch.no_grad():
            mask = (self.cell(z, weight) + u > 0).to(z.dtype)
        return lambda v: self.cell.transpose(mask * v, weight)

    def cell_function(self) -> Callable[[Tensor, Tensor], Tensor]:
        """(z, x) -> f(z, x), with the normalised weight computed once (for JIIO's joint solve)."""
        weight = self.cell.effective_weight()
        return lambda z, x: self.f(z, self.inject(x), weight)

    def explicit_twin(self, depth: int) -> nn.Module:
        """The explicit weight-tied model with this DEQ's block (same weights) applied ``depth`` times
        from z = 0, trained by nothing: the source of the transfer attack and the speed floor."""
        from robustdeq.models.weight_tied import WeightTiedClassifier

        channels = self.state_shape[0]
        twin = WeightTiedClassifier(self.in_shape, self.head.fc.out_features, channels, depth, density=1.0)
        missing, unexpected = twin.load_state_dict(self.state_dict(), strict=False)
        if missing != ["masks"] or unexpected:
            raise RuntimeError(f"explicit twin: block mismatch (missing {missing}, unexpected {unexpected})")
        return twin.to(device_of(self)).train(self.training)

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        """Logits; the solve starts from ``z_init`` (a warm start) or zeros.

        The fixed point (detached) is left in :attr:`last_state` for reuse as a warm start,
        and the solver statistics in ``self.equilibrium.last_stats``.
        """
        u = self.inject(x)
        weight = self.cell.effective_weight()  # once per forward: the norm estimate is not free
        z0 = x.new_zeros(x.shape[0], *self.state_shape) if z_init is None else z_init
        z = self.equilibrium(
            lambda z, u: self.f(z, u, weight), z0, inputs=u, linearize=lambda z, u: self.cell_transpose(z, u, weight)
        )
        self.last_state = z.detach()
        return self.head(z)


@MODELS.register("deq")
def make_deq(
    in_shape: tuple[int, int, int],
    num_classes: int,
    solver: SolverSpec | None = None,
    channels: int = 16,
    bound: float = 0.9,
) -> nn.Module:
    return DEQClassifier(in_shape, num_classes, solver, channels=channels, bound=bound)
