"""Honest gradients for models built with torchdeq (Geng & Kolter 2023, arXiv 2310.18605).

A model that solves its fixed point with torchdeq (``self.deq = get_deq(...)`` and
``z_out, info = self.deq(f, z0)`` in its forward, the way torchdeq's documentation shows) gets
*no* input gradient in ``eval()`` mode: torchdeq's DEQ modules (``torchdeq.core.DEQBase``) solve
under ``torch.no_grad()`` and attach gradients only in training mode (``torchdeq/core.py``, the
``else`` branch of ``DEQIndexing.forward`` / ``DEQSliced.forward``). Attack libraries switch the
model to ``eval()``, so a white-box attack on such a model is blind.

:func:`from_torchdeq` replaces every torchdeq DEQ module inside a model by a
:class:`TorchDEQLayer`, which

- in training mode calls the user's module unchanged (training is the user's own);
- in eval mode calls the user's module to solve (so the fixed point, the solver, its settings and
  ``info`` are exactly the user's: the logits do not change), and then attaches robustdeq's
  attack-time gradient to that fixed point through an :class:`~robustdeq.deq.Equilibrium`: exact
  implicit differentiation (``ift``) by default, and ``unroll``, ``phantom``, ``states`` /
  ``state-<i>`` when an attack asks for them (:func:`robustdeq.deq.grad_mode`). The value returned
  stays the user's z*; only its gradient is attached.

The backward (adjoint) solve uses robustdeq's settings (Anderson, 40 iterations, relative
tolerance 1e-3, normalised per example), not the model's own ``b_*`` settings: a backward solver
chosen by the submitter is not trusted to give an attacker the true gradient. The forward cap
follows the model's eval-mode cap (``eval_f_max_iter``) and is passed to the module on every call,
so robustdeq's doubled-solver check (``solver_budget``) really doubles it.

The returned :class:`TorchDEQModel` wraps the model for robustdeq's warm starts: with exactly one
DEQ module it takes ``z_init`` (the state to start the solve from) and leaves the solved state in
``last_state``, like robustdeq's own DEQ families, so attacks warm-start it per example
(:class:`~robustdeq.evaluation.view.AttackView`). Its ``state_dict`` is the model's own (DEQ
modules hold no tensors), so checkpoints are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchdeq.core import DEQBase
from torchdeq.utils.layer_utils import deq_decorator

from robustdeq.deq.equilibrium import Equilibrium, SolverSpec, SolverStats

# torchdeq's solver functions (the module stores functions, not names) -> robustdeq's solver names;
# the plain fixed-point iteration without statistics is unrolled as fixed_point_iter.
_SOLVER_NAMES = {
    "anderson_solver": "anderson",
    "broyden_solver": "broyden",
    "fixed_point_iter": "fixed_point_iter",
    "simple_fixed_point_iter": "fixed_point_iter",
}


def _spec_of(inner: DEQBase) -> SolverSpec:
    """The forward settings of ``inner`` (eval-mode cap); robustdeq's own backward settings."""
    name = getattr(inner.f_solver, "__name__", "")
    settings = {
        "f_solver": _SOLVER_NAMES.get(name, "anderson"),
        "f_max_iter": int(inner.eval_f_max_iter),
        "f_tol": float(inner.f_tol),
        "f_stop_mode": str(inner.f_stop_mode),
        "anderson_lam": 1e-4,  # torchdeq's Anderson default, for the unroll / states re-solves
    }
    return SolverSpec.model_validate(settings)


class TorchDEQLayer(nn.Module):
    """Stands in for one torchdeq DEQ module (same call signature and return value); see the module
    docstring. ``next_init`` (set by :class:`TorchDEQModel`) replaces the next call's initial state."""

    def __init__(self, inner: DEQBase) -> None:
        super().__init__()
        self.inner = inner
        self.equilibrium = Equilibrium(_spec_of(inner))
        self.base_iter = int(inner.eval_f_max_iter)
        self.next_init: Tensor | None = None
        self.last_state: Tensor | None = None  # the solved state, flattened to (B, -1)

    def forward(
        self,
        func: Callable[..., Any],
        z_init: Any,
        solver_kwargs: Mapping[str, Any] | None = None,
        sradius_mode: bool = False,
        backward_writer: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> tuple[list[Any], Any]:
        if self.training:
            return self.inner(func, z_init, solver_kwargs, sradius_mode, backward_writer, **kwargs)
        layer = self.equilibrium

        def counted(*z: Any) -> Any:
            layer.counters.forward_evals += 1
            layer.counters.forward_example_evals += z[0].shape[0]
            return func(*z)

        start = self._start(z_init)
        options = dict(solver_kwargs or {})
        # The cap robustdeq's solver_budget may have scaled; relative to the model's own.
        asked = int(options.get("f_max_iter", self.base_iter))
        options["f_max_iter"] = max(1, round(asked * layer.spec.f_max_iter / max(1, self.base_iter)))
        with torch.no_grad():
            z_out, info = self.inner(counted, start, options, sradius_mode, backward_writer, **kwargs)
        # The user's own initial state (not a warm start): unrolled and intermediate-state
        # gradients start from it, as a cold solve of the user's model does.
        wrapped, cold = deq_decorator(func, z_init, no_stat=False)
        z_star = wrapped.list2vec(z_out[-1]) if isinstance(z_out[-1], (list, tuple)) else z_out[-1]
        layer.last_stats = _stats(info, layer.spec, len(z_star))
        self.last_state = z_star.detach().flatten(1)
        attached = layer(lambda v: wrapped(v), cold.detach(), z_star=z_star)  # z_star itself without autograd
        if not torch.is_grad_enabled():
            return z_out, info
        z = z_star.detach() + (attached - attached.detach())  # the user's value, robustdeq's gradient
        return [wrapped.vec2list(z)], info

    def _start(self, z_init: Any) -> Any:
        """The user's initial state, or the pending warm start reshaped into it (same batch only)."""
        pending, self.next_init = self.next_init, None
        if pending is None:
            return z_init
        if torch.is_tensor(z_init):
            return pending.view_as(z_init) if pending.numel() == z_init.numel() else z_init
        shapes = [t.shape for t in z_init]
        sizes = [int(torch.Size(s[1:]).numel()) for s in shapes]
        if pending.shape[0] != shapes[0][0] or pending.shape[1] != sum(sizes):
            return z_init
        return type(z_init)(part.reshape(s) for part, s in zip(pending.split(sizes, 1), shapes, strict=True))


def _stats(info: Mapping[str, Tensor], spec: SolverSpec, batch: int) -> SolverStats:
    residual = info["rel_lowest"] if spec.f_stop_mode == "rel" else info["abs_lowest"]
    return SolverStats(
        nstep=info["nstep"].detach().to(torch.int64).reshape(batch),
        abs_residual=info["abs_lowest"].detach().reshape(batch),
        rel_residual=info["rel_lowest"].detach().reshape(batch),
        converged=(residual <= spec.f_tol).detach().reshape(batch),
        rel_trace=info["rel_trace"].detach().reshape(batch, -1),
    )


class TorchDEQModel(nn.Module):
    """A torchdeq-built model with its DEQ modules adapted (module docstring); x -> the model's output.

    ``z_init`` / ``last_state`` (warm starts) are available when the model has exactly one DEQ
    module; the state is the module's, flattened to (B, -1)."""

    def __init__(self, model: nn.Module, layers: list[TorchDEQLayer]) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        if len(layers) == 1:
            self.last_state: Tensor | None = None

    def forward(self, x: Tensor, z_init: Tensor | None = None) -> Tensor:
        if len(self.layers) == 1:
            (layer,) = self.layers
            layer.next_init = z_init
            out: Tensor = self.model(x)
            layer.next_init = None
            self.last_state = layer.last_state
            return out
        result: Tensor = self.model(x)
        return result

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)


def uses_torchdeq(model: nn.Module) -> bool:
    """Whether ``model`` holds a torchdeq DEQ module that has not been adapted."""
    return any(isinstance(m, DEQBase) for m in model.modules()) and not isinstance(model, TorchDEQModel)


def from_torchdeq(model: nn.Module) -> nn.Module:
    """``model`` with every torchdeq DEQ module replaced (in place) by a :class:`TorchDEQLayer`,
    wrapped in a :class:`TorchDEQModel`; a model without one (or already adapted) is returned as is."""
    if isinstance(model, TorchDEQModel) or not uses_torchdeq(model):
        return model
    layers: list[TorchDEQLayer] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DEQBase):
                layer = TorchDEQLayer(child).train(child.training)
                setattr(parent, name, layer)
                layers.append(layer)
    return TorchDEQModel(model, layers).train(model.training)
