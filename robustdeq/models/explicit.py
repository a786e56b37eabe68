"""The explicit (non-DEQ) CNN baseline of similar size to the reference DEQ."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustdeq.deq import SolverSpec
from robustdeq.models.blocks import Head, stem_stride
from robustdeq.models.registry import MODELS


class ExplicitCNN(nn.Module):
    """x -> relu(stem(x)) -> ``depth`` x [relu(conv3x3)] -> head; forward cost ``depth`` blocks."""

    family = "explicit"

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, channels: int = 16, depth: int = 2) -> None:
        super().__init__()
        c, h, _ = in_shape
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.stem = nn.Conv2d(c, channels, 3, stride=stem_stride(h), padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth))
        self.head = Head(channels, num_classes)
        self.depth = depth
        self.block_evaluations = depth

    def forward(self, x: Tensor) -> Tensor:
        z = torch.relu(self.stem(x))
        for block in self.blocks:
            z = torch.relu(block(z))
        return self.head(z)


@MODELS.register("explicit")
def make_explicit(
    in_shape: tuple[int, int, int],
    num_classes: int,
    solver: SolverSpec | None = None,
    channels: int = 16,
    depth: int = 2,
) -> nn.Module:
    return ExplicitCNN(in_shape, num_classes, channels=channels, depth=depth)
