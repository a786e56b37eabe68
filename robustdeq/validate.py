"""Checks a model must pass before robustdeq spends any time training or attacking it."""

from __future__ import annotations

import torch
from torch import nn

from robustdeq.data import DATASETS
from robustdeq.device import CPU
from robustdeq.device import of as device_of
from robustdeq.errors import RobustdeqError


def check_model(model: nn.Module, dataset: str, n: int = 4) -> None:
    """Output shape (batch, classes), finite logits (not probabilities), inputs in [0, 1] accepted."""
    info = DATASETS.get(dataset)
    generator = torch.Generator(CPU).manual_seed(0)
    x = torch.rand(n, *info.shape, generator=generator, device=CPU)
    x[0] = 0.0
    x[1] = 1.0
    x = x.to(device_of(model))
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (Exception, SystemExit) as exc:  # a submitted model may raise anything, or call sys.exit
        raise RobustdeqError(f"model check: forward on inputs in [0, 1] raised {type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor):
        raise RobustdeqError(f"model check: output must be a tensor of logits, got {type(out).__name__}")
    if tuple(out.shape) != (n, info.num_classes):
        raise RobustdeqError(
            f"model check: output shape {tuple(out.shape)}, expected (batch, classes) = ({n}, {info.num_classes})"
        )
    if not bool(torch.isfinite(out).all()):
        raise RobustdeqError("model check: outputs are not finite (NaN or inf)")
    rows = out.sum(1)
    if bool(((out >= 0) & (out <= 1)).all()) and bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-4)):
        raise RobustdeqError(
            "model check: outputs look like probabilities (rows in [0, 1] summing to 1); return logits"
        )


def check_trainable(model: nn.Module, dataset: str, n: int = 2) -> None:
    """Training needs logits that depend on the parameters through autograd: a model that computes
    its output under ``torch.no_grad()``, detaches it or freezes every parameter fails here, before
    any training, instead of deep inside the first backward pass. The forward pass runs in eval mode
    on forked random states, so the training that follows is the same as without the check."""
    if not any(p.requires_grad for p in model.parameters()):
        raise RobustdeqError("model check: no parameter requires a gradient, so training cannot change the model")
    info = DATASETS.get(dataset)
    device = device_of(model)
    x = torch.rand(n, *info.shape, generator=torch.Generator(CPU).manual_seed(0), device=CPU).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if x.is_cuda else []), torch.enable_grad():
            out = model(x)
    except (Exception, SystemExit) as exc:  # a submitted model may raise anything, or call sys.exit
        raise RobustdeqError(f"model check: forward on inputs in [0, 1] raised {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise RobustdeqError(
            "model check: the output carries no gradient (computed under torch.no_grad() or detached?), "
            "so the model cannot be trained"
        )
