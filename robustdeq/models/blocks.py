"""Building blocks shared by the DEQ and explicit families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdeq.device import CPU


def stem_stride(height: int) -> int:
    """Stride of the input convolution: keep 8x8 digits at full resolution, halve 28/32 px images."""
    return 1 if height <= 16 else 2


class ContractiveConv(nn.Module):
    """3x3 convolution z -> W z whose operator norm is kept at most ``bound`` (< 1).

    The spectral norm is that of the convolution as a linear map on (C, H, W) tensors with
    zero padding, estimated by power iteration with ``conv2d`` and its adjoint
    ``conv_transpose2d`` (not the norm of the reshaped kernel matrix, which can be several
    times smaller). The weight is divided by max(1, sigma / bound). The power-iteration
    vector is a buffer, refined once per training forward and frozen in eval mode, so eval
    outputs are deterministic and checkpoints reproduce them. Power iteration approaches sigma
    from below, so the true norm can exceed ``bound`` slightly (about 1% right after
    initialisation); with bound 0.9 it stays well below 1. With a 1-Lipschitz activation
    the DEQ cell relu(W z + u(x)) is then a contraction: its fixed point exists, is unique,
    and every solver converges to it.
    """

    def __init__(self, channels: int, spatial: tuple[int, int], bound: float = 0.9) -> None:
        super().__init__()
        if not 0.0 < bound < 1.0:
            raise ValueError("bound must be in (0, 1)")
        self.bound = bound
        # Built on the CPU, so the initial draws do not depend on the device; the caller moves the model.
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3, device=CPU))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        u = torch.randn(1, channels, *spatial, device=CPU)
        self.u: Tensor
        self.register_buffer("u", u / u.norm())
        with torch.no_grad():
            for _ in range(100):
                self._power_step()

    def _power_step(self) -> None:
        v = F.conv2d(self.u, self.weight, padding=1)
        v = v / (v.norm() + 1e-12)
        u = F.conv_transpose2d(v, self.weight, padding=1)
        # Rebind rather than copy in place: graphs of earlier forwards may still hold the old u.
        self.u = u / (u.norm() + 1e-12)

    def sigma(self) -> Tensor:
        """Estimated operator norm (differentiable in the weight)."""
        if self.training:
            with torch.no_grad():
                self._power_step()
        return F.conv2d(self.u, self.weight, padding=1).norm()

    def effective_weight(self) -> Tensor:
        return self.weight / torch.clamp(self.sigma() / self.bound, min=1.0)

    def forward(self, z: Tensor, weight: Tensor | None = None) -> Tensor:
        """W z; pass ``weight=effective_weight()`` computed once when applying the cell many times."""
        return F.conv2d(z, self.effective_weight() if weight is None else weight, padding=1)

    @staticmethod
    def transpose(v: Tensor, weight: Tensor) -> Tensor:
        """W^T v, the adjoint of :meth:`forward` with the same ``weight``."""
        return F.conv_transpose2d(v, weight, padding=1)


class Head(nn.Module):
    """Classifier head: average-pool to 4x4, flatten, linear."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(channels * 16, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        return self.fc(self.pool(z).flatten(1))
