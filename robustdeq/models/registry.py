"""The model-family registry: ``family name -> factory(in_shape, num_classes, solver, **settings)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from robustdeq.deq import SolverSpec
from robustdeq.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model family")


def create_model(
    family: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    solver: SolverSpec | None = None,
    **settings: Any,
) -> nn.Module:
    """Build a registered model family; unknown settings are a :class:`RobustdeqError`."""
    import inspect

    from robustdeq.errors import RobustdeqError

    factory = MODELS.get(family)
    params = inspect.signature(factory).parameters
    fixed = ("in_shape", "num_classes", "solver")
    for key in settings:
        if key not in params or key in fixed:
            known = ", ".join(name for name in params if name not in fixed)
            raise RobustdeqError(f"model family {family!r}: unknown setting {key!r} (its settings: {known})")
    try:
        return factory(in_shape=in_shape, num_classes=num_classes, solver=solver, **settings)
    except (TypeError, ValueError) as exc:
        raise RobustdeqError(f"model family {family!r}: {exc}") from None
