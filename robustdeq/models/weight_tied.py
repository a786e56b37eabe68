"""Weight-tied models with distinct sparse masks (Song, Majumder, Lin, "Revisiting Implicit Models: Sparsity
Trade-offs Capability in Weight-tied Model for Vision Tasks", arXiv 2307.08013; no venue found).

The explicit, unrolled relative of the reference DEQ: the *same* block z -> relu(W z + U x)
(the same :class:`ContractiveConv` W, the same injection U and head) applied a fixed
``depth`` = L times from z0 = 0 and trained by ordinary backpropagation through all L
applications; no solver, no implicit gradient.

Capacity from sparsity: application l uses W * m_l, where m_l is its own fixed binary mask of
``density`` d over W's entries (exactly round(d * numel) ones, drawn once from ``mask_seed``;
kept as a buffer, so it is saved and loaded with the weights). The shared dense W receives the
sum of the masked gradients. ``density = 1`` means no masks: L plain calls of the block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustdeq.deq import SolverSpec
from robustdeq.device import CPU
from robustdeq.models.blocks import ContractiveConv, Head, stem_stride
from robustdeq.models.registry import MODELS


def draw_masks(shape: tuple[int, ...], depth: int, density: float, seed: int) -> Tensor:
    """``depth`` distinct binary masks (depth, *shape) with exactly round(density * numel) ones each."""
    if not 0.0 < density <= 1.0:
        raise ValueError("density must be in (0, 1]")
    numel = 1
    for n in shape:
        numel *= n
    ones = max(1, round(density * numel))
    generator = torch.Generator(CPU).manual_seed(seed)
    masks: list[Tensor] = []
    while len(masks) < depth:
        mask = torch.zeros(numel, device=CPU)
        mask[torch.randperm(numel, generator=generator, device=CPU)[:ones]] = 1.0
        # Distinct by construction; a repeat (possible only for tiny blocks) is drawn again.
        if ones == numel or not any(torch.equal(mask, m) for m in masks):
            masks.append(mask)
    return torch.stack(masks).view(depth, *shape)


class WeightTiedClassifier(nn.Module):
    """x (B, C, H, W) in [0, 1] -> logits: z_{l+1} = relu((W * m_l) z_l + U x), l < L, then the head."""

    family = "weight_tied"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        channels: int = 16,
        depth: int = 8,
        density: float = 1.0,
        mask_seed: int = 0,
        bound: float = 0.9,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        c, h, w = in_shape
        s = stem_stride(h)
        self.inject = nn.Conv2d(c, channels, 3, stride=s, padding=1)
        self.state_shape = (channels, (h - 1) // s + 1, (w - 1) // s + 1)
        self.cell = ContractiveConv(channels, self.state_shape[1:], bound)
        self.head = Head(channels, num_classes)
        self.depth = depth
        self.density = density
        self.block_evaluations = depth
        self.masks: Tensor
        self.register_buffer("masks", draw_masks(tuple(self.cell.weight.shape), depth, density, mask_seed))

    def layer_weights(self) -> list[Tensor]:
        """The weight each of the L applications uses: W_eff * m_l."""
        weight = self.cell.effective_weight()
        return [weight * mask for mask in self.masks]

    def forward(self, x: Tensor) -> Tensor:
        u = self.inject(x)
        z = x.new_zeros(x.shape[0], *self.state_shape)
        for weight in self.layer_weights():
            z = torch.relu(self.cell(z, weight) + u)
        return self.head(z)


@MODELS.register("weight_tied")
def make_weight_tied(
    in_shape: tuple[int, int, int],
    num_classes: int,
    solver: SolverSpec | None = None,
    channels: int = 16,
    depth: int = 8,
    density: float = 1.0,
    mask_seed: int = 0,
    bound: float = 0.9,
) -> nn.Module:
    return WeightTiedClassifier(in_shape, num_classes, channels, depth, density, mask_seed, bound)
