"""A DEQ built the way torchdeq's documentation shows (get_deq, apply_norm, reset_norm); nothing from robustdeq.

z* = tanh(W z* + U x), W a weight-normalised 3x3 convolution, solved by torchdeq's Anderson
solver; the head pools z* and applies a linear layer. robustdeq calls
make_model(in_shape=..., num_classes=..., **settings).

In eval mode torchdeq returns a fixed point without a gradient; robustdeq adapts such a model
before attacking it (robustdeq/deq/torchdeq_adapter.py), so its attacks get the exact implicit
gradient.
"""

import torch
from torch import nn
from torchdeq import apply_norm, get_deq, reset_norm


class TanhDEQ(nn.Module):
    def __init__(self, in_channels: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.inject = nn.Conv2d(in_channels, width, 3, padding=1)
        self.cell = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.head = nn.Linear(width * 16, num_classes)
        apply_norm(self.cell, "weight_norm")
        self.deq = get_deq(f_solver="anderson", f_max_iter=30, f_tol=1e-4, f_stop_mode="rel", ift=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reset_norm(self.cell)
        u = self.inject(x)

        def f(z: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.cell(z) + u)

        z_out, _ = self.deq(f, torch.zeros_like(u))
        pooled = nn.functional.adaptive_avg_pool2d(z_out[-1], 4)
        return self.head(pooled.flatten(1))


def make_model(in_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> nn.Module:
    return TanhDEQ(in_shape[0], width, num_classes)
