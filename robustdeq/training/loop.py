"""The epoch loop every training recipe runs in (centralised, and each federated client)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustdeq import distributed
from robustdeq.deq import regularisation
from robustdeq.device import CPU
from robustdeq.records.defense import TrainSpec
from robustdeq.training.base import BatchNoise, Recipe


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

    Under torchrun the model is wrapped in DistributedDataParallel and every process takes its
    contiguous share of each global batch (:func:`robustdeq.distributed.rows`): the batches, their
    order and the global batch size are those of a single process. Each process's mean loss is
    weighted by its share of the batch, so DDP's average of the gradients is the gradient of the
    batch's mean loss even when the shares differ (a last batch not divisible by the number of
    processes); a process with no rows runs one row at weight zero. Recipes draw their noise for
    the whole batch (:class:`~robustdeq.training.recipes.BatchNoise`), so each example gets the
    numbers a single process would give it.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    shuffle = torch.Generator(CPU).manual_seed(stream)
    attack_rng = torch.Generator(CPU).manual_seed(stream + 1)
    n_batches = (len(y) + spec.batch_size - 1) // spec.batch_size
    final_loss = float("nan")
    world = distributed.world_size()
    net = model if world == 1 else distributed.data_parallel(model)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=shuffle, device=CPU).to(y.device)
        for b in range(n_batches):
            idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            rows = distributed.rows(len(idx))
            share = (rows.stop - rows.start) / len(idx)
            if share == 0:
                rows = slice(0, 1)
            mine = idx[rows]
            loss = recipe.loss(net, x[mine], y[mine], BatchNoise(attack_rng, len(idx), rows))
            penalty = regularisation(model)
            if penalty is not None:
                loss = loss + penalty
            optimizer.zero_grad(set_to_none=True)
            (loss if world == 1 else loss * (world * share)).backward()
            optimizer.step()
            final_loss = float(loss.detach()) if world == 1 else float(loss.detach()) * share
            advance(1)
    if world > 1 and epochs * n_batches > 0:  # the last batch's mean loss over every process
        final_loss = sum(distributed.all_gather_object(final_loss))
    return final_loss
