"""The epoch loop every training recipe runs in (centralised, and each federated client)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustdeq.deq import regularisation
from robustdeq.specs import TrainSpec
from robustdeq.training.recipes import Recipe


def run_epochs(
    model: nn.Module,
    recipe: Recipe,
    x: Tensor,
    y: Tensor,
    spec: TrainSpec,
    epochs: int,
    stream: int,
    advance: Callable[[int], None],
) -> float:
    """``epochs`` passes of Adam over (x, y) in shuffled batches; returns the last batch loss.

    ``stream`` seeds the shuffling (``stream``) and the recipe's attack randomness
    (``stream + 1``); centralised training uses the manifest's seed.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    shuffle = torch.Generator().manual_seed(stream)
    attack_rng = torch.Generator().manual_seed(stream + 1)
    n_batches = (len(y) + spec.batch_size - 1) // spec.batch_size
    final_loss = float("nan")
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=shuffle)
        for b in range(n_batches):
            idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            loss = recipe.loss(model, x[idx], y[idx], attack_rng)
            penalty = regularisation(model)
            if penalty is not None:
                loss = loss + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            final_loss = float(loss.detach())
            advance(1)
    return final_loss
