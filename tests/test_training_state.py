"""The per-epoch training state saves what a model holds, views included (LyaDEQ's orthogonal head at
MNIST size keeps a non-contiguous parametrization base, which safetensors refuses as it is)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustdeq.training.resume import TrainingState


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 5).t())  # a non-contiguous view, as a parametrization can hold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_a_non_contiguous_parameter_is_saved_and_restored(tmp_path: Path) -> None:
    model = Transposed()
    assert not model.weight.is_contiguous()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 5)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(1)
    state = TrainingState(tmp_path / "state.safetensors", key="k")
    state.save(1, model, optimizer, {"shuffle": generator}, final_loss=0.5)

    again = Transposed()
    restored = torch.optim.Adam(again.parameters(), lr=0.1)
    epochs, loss = TrainingState(tmp_path / "state.safetensors", key="k").restore(
        again, restored, {"shuffle": torch.Generator()}
    )
    assert (epochs, loss) == (1, 0.5)
    assert torch.equal(again.weight, model.weight)
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
