"""The epoch loop every training recipe runs in (centralised, and each federated client)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustdeq import distributed
from robustdeq.deq import regularisation
from robustdeq.device import CPU
from robustdeq.records.defense import TrainSpec
from robustdeq.training.base import BatchNoise, Recipe, ramped
from robustdeq.training.resume import TrainingState


def run_epochs(
    model: nn.Module,
    recipe: Recipe,
    x: Tensor,
    y: Tensor,
    spec: TrainSpec,
    epochs: int,
    stream: int,
    advance: Callable[[int], None],
    state: TrainingState | None = None,
) -> float:
    """``epochs`` passes of Adam over (x, y) in shuffled batches; returns the last batch loss.

    ``state``: resume after the epochs it holds, and save it after every epoch
    (:mod:`robustdeq.training.resume`).

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
    generators = {"shuffle": shuffle, "attack": attack_rng}
    warmup = spec.eps_warmup_epochs * n_batches  # batches over which the training attack's eps ramps up
    # before DDP wraps the model: it takes rank 0's weights, which every rank has just read
    done, reported = state.restore(model, optimizer, generators) if state is not None else (0, float("nan"))
    advance(done * n_batches)
    final_loss = float("nan")
    world = distributed.world_size()
    net = model if world == 1 else distributed.data_parallel(model)
    model.train()
    for epoch in range(done, epochs):
        order = torch.randperm(len(y), generator=shuffle, device=CPU).to(y.device)
        for b in range(n_batches):
            idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            rows = distributed.rows(len(idx))
            share = (rows.stop - rows.start) / len(idx)
            if share == 0:
                rows = slice(0, 1)
            mine = idx[rows]
            now = ramped(recipe, (epoch * n_batches + b + 1) / warmup) if warmup > 0 else recipe
            loss = now.loss(net, x[mine], y[mine], BatchNoise(attack_rng, len(idx), rows))
            penalty = regularisation(model)
            if penalty is not None:
                loss = loss + penalty
            optimizer.zero_grad(set_to_none=True)
            (loss if world == 1 else loss * (world * share)).backward()
            optimizer.step()
            final_loss = float(loss.detach()) if world == 1 else float(loss.detach()) * share
            advance(1)
        # the last batch's mean loss over every process
        reported = final_loss if world == 1 or n_batches == 0 else sum(distributed.all_gather_object(final_loss))
        if state is not None:
            state.save(epoch + 1, model, optimizer, generators, reported)
    return reported
