"""robustdeq: the adversarial-robustness benchmark for deep equilibrium and weight-tied models.

The Python API (``robustdeq/api.py``)::

    entry = robustdeq.evaluate(model, "digits-linf")   # any nn.Module, images in [0, 1] -> logits
    model = robustdeq.load_model("deq-pgd-at", "digits-linf")  # a trained reference defense from the zoo
    robustdeq.list_models(), robustdeq.load_protocol("digits-linf")
    robustdeq.from_torchdeq(model)                      # true eval-mode gradients for torchdeq DEQs

The names are loaded on first use (PEP 562), so importing a low layer of the package, such as the
records in ``robustdeq.records``, does not import the compute layers above it (README, "Package
layout").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robustdeq.version import __version__ as __version__

if TYPE_CHECKING:
    from robustdeq.api import Entry as Entry
    from robustdeq.api import evaluate as evaluate
    from robustdeq.api import list_models as list_models
    from robustdeq.api import load_model as load_model
    from robustdeq.api import load_protocol as load_protocol
    from robustdeq.deq.torchdeq_adapter import from_torchdeq as from_torchdeq
    from robustdeq.errors import RobustdeqError as RobustdeqError

_API = {
    "Entry": "robustdeq.api",
    "evaluate": "robustdeq.api",
    "list_models": "robustdeq.api",
    "load_model": "robustdeq.api",
    "load_protocol": "robustdeq.api",
    "from_torchdeq": "robustdeq.deq.torchdeq_adapter",
    "RobustdeqError": "robustdeq.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'robustdeq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
