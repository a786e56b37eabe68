"""The Python API: evaluate any model under a protocol, load the zoo's trained reference models.

    import robustdeq

    entry = robustdeq.evaluate(my_model, "digits-linf")         # any nn.Module: images in [0, 1] -> logits
    print(entry.clean_accuracy, entry.robust_accuracy, entry.flags)
    model = robustdeq.load_model("deq-pgd-at", "digits-linf")    # a trained reference defense, eval mode
    robustdeq.list_models()                                      # what the zoo holds

:func:`evaluate` applies the CLI's rules: the model check (logits of shape (batch, classes) on
inputs in [0, 1]), eval mode, torchdeq DEQ modules adapted for true input gradients, every
adversarial example verified, the per-example worst case over the protocol's attacks, every
check and flag. The :class:`Entry` it returns is a leaderboard entry (``to_json()``) without
training provenance (``provenance.training`` is null: robustdeq did not train the model); a
ranked entry comes from ``robustdeq submit``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdeq.data import load
from robustdeq.deq.torchdeq_adapter import from_torchdeq
from robustdeq.device import resolve as resolve_device
from robustdeq.errors import RobustdeqError
from robustdeq.evaluation.runner import EvalResult
from robustdeq.evaluation.runner import evaluate as run_protocol
from robustdeq.progress import Progress
from robustdeq.records.defense import DefenseSpec, ModelSpec, TrainSpec
from robustdeq.records.paths import ID_PATTERN
from robustdeq.records.protocol import ProtocolSpec, find_protocol
from robustdeq.records.store import write_entry
from robustdeq.validate import check_model
from robustdeq.zoo import ZooModel


class Entry:
    """One evaluation's leaderboard entry (``data``, the JSON object of ``docs/entry.md``) and, when
    it was just computed, the full per-example result (``result``)."""

    def __init__(self, data: dict[str, Any], result: EvalResult | None = None) -> None:
        self.data = data
        self.result = result

    @property
    def clean_accuracy(self) -> float:
        return float(self.data["clean_accuracy"])

    @property
    def robust_accuracy(self) -> float:
        """The per-example worst case over every attack of the protocol."""
        return float(self.data["robust_accuracy"])

    @property
    def attacks(self) -> dict[str, float]:
        """Each attack run's own accuracy."""
        return dict(self.data["attacks"])

    @property
    def flags(self) -> list[str]:
        return list(self.data["flags"])

    @property
    def solver(self) -> dict[str, Any] | None:
        """Solver settings and convergence, for robustdeq DEQs (and adapted torchdeq models)."""
        solver: dict[str, Any] | None = self.data["solver"]
        return solver

    @property
    def per_example(self) -> dict[str, Any]:
        """Compact per-example outcomes (:mod:`robustdeq.records.outcomes`)."""
        outcomes: dict[str, Any] = self.data["per_example"]
        return outcomes

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2) + "\n"

    def save(self, root: Path = Path("leaderboards")) -> Path:
        """Validate and write the entry to ``<root>/<protocol>/<defense>.json``."""
        return write_entry(root, self.data)

    def __repr__(self) -> str:
        return (
            f"Entry({self.data['defense']!r} under {self.data['protocol']}: clean {100 * self.clean_accuracy:.1f}%, "
            f"robust {100 * self.robust_accuracy:.1f}%, flags {self.flags})"
        )


def load_protocol(name: str) -> ProtocolSpec:
    """A protocol by id (``attacks/<id>.toml``) or path."""
    return find_protocol(name)


def evaluate(
    model: nn.Module,
    protocol: str | ProtocolSpec = "digits-linf",
    *,
    n_examples: int | None = None,
    device: str | torch.device | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    progress: bool = True,
    batch_size: int | None = None,
    name: str = "model",
    adapt_torchdeq: bool = True,
) -> Entry:
    """Run ``protocol`` on ``model`` (images (B, C, H, W) in [0, 1] -> logits) and return its entry.

    ``device`` (default: auto) is where the model is moved and attacked. ``n_examples`` evaluates the
    first N protocol examples only (the entry is flagged ``reduced_budget``); ``batch_size``
    replaces the protocol's attack batch size (recorded). ``name`` becomes the entry's defense id.
    ``adapt_torchdeq=False`` attacks torchdeq DEQ modules as they are (blind: flagged).
    """
    from robustdeq.pipeline import Budget, TrainedModel, make_entry

    spec = protocol if isinstance(protocol, ProtocolSpec) else find_protocol(protocol)
    if not ID_PATTERN.fullmatch(name):
        raise RobustdeqError(f"name {name!r} is not a plain lowercase name (a-z, 0-9, '-', '_', '.')")
    if not isinstance(model, nn.Module):
        raise RobustdeqError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = resolve_device(device)
    model = (from_torchdeq(model) if adapt_torchdeq else model).to(target)
    check_model(model, spec.dataset)
    test = load(spec.dataset, "test", data_dir, download)
    shown = Progress(enabled=progress)
    result = run_protocol(model, spec, test, n_examples, shown, None, batch_size)
    family = str(getattr(model, "family", "python"))
    defense = DefenseSpec(
        name, name, ModelSpec(family), TrainSpec(), description="a model passed to robustdeq.evaluate"
    )
    budget = Budget(n_examples=n_examples, batch_size=batch_size)
    trained = TrainedModel(model, None, 0.0, spec.dataset, spec.id)
    data = make_entry(defense, spec, trained, result, budget, None, f"robustdeq.evaluate(model, {spec.id!r})")
    return Entry(data, result)


def load_model(name: str, protocol: str | None = None, *, device: str | torch.device | None = None) -> nn.Module:
    """A trained reference model of the zoo (``list_models()``), in eval mode on ``device``.

    ``name`` is a defense id (``"deq-pgd-at"``) or ``"PROTOCOL/NAME"``; ``protocol`` narrows the
    search the same way; a defense with models under several protocols (the digits and the MNIST
    leaderboards) needs one. The checkpoint's SHA-256 is checked against its entry first."""
    from robustdeq.pipeline import load_trained

    _, trained = load_trained(f"zoo:{protocol + '/' if protocol else ''}{name}", device)
    return trained.model.eval()


def list_models(protocol: str | None = None) -> list[ZooModel]:
    """The zoo: every committed leaderboard entry with a checkpoint (optionally of one protocol)."""
    from robustdeq.zoo import list_models as zoo_models

    return zoo_models(protocol)
