"""Registry-driven: every model family, on every data set's shape, gives finite logits and honest gradients."""

import pytest
import torch

from robustdeq.checkpoint import load_weights, save_checkpoint
from robustdeq.data import DATASETS
from robustdeq.deq import SolverSpec
from robustdeq.errors import RobustdeqError
from robustdeq.models import MODELS, create_model
from robustdeq.validate import check_model


@pytest.mark.parametrize("family", MODELS.names())
@pytest.mark.parametrize("dataset", DATASETS.names())
def test_family_outputs_logits_with_input_gradients(family: str, dataset: str) -> None:
    info = DATASETS.get(dataset)
    torch.manual_seed(0)
    model = create_model(family, info.shape, info.num_classes, SolverSpec())
    check_model(model, dataset)
    x = torch.rand(2, *info.shape, requires_grad=True)
    model(x).logsumexp(1).sum().backward()
    assert x.grad is not None and bool((x.grad.flatten(1).abs().amax(1) > 0).all())


@pytest.mark.parametrize("family", MODELS.names())
def test_checkpoint_round_trip_reproduces_outputs(family: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model(family, (1, 8, 8), 10, SolverSpec()).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
    save_checkpoint(model, tmp_path / "model.safetensors", {"family": family})
    torch.manual_seed(1)
    other = create_model(family, (1, 8, 8), 10, SolverSpec())
    load_weights(other, tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(other(x), before)
    wrong = create_model(family, (1, 8, 8), 10, SolverSpec(), channels=8)
    with pytest.raises(RobustdeqError, match="has shape"):
        load_weights(wrong, tmp_path / "model.safetensors")


def test_deq_cell_is_a_contraction() -> None:
    torch.manual_seed(0)
    model = create_model("deq", (1, 8, 8), 10, SolverSpec())
    cell = model.cell
    weight = cell.effective_weight().detach()
    # Power iteration on the true conv operator from a fresh start must agree with the bound.
    v = torch.randn(1, 16, 8, 8)
    for _ in range(200):
        v = torch.nn.functional.conv_transpose2d(torch.nn.functional.conv2d(v, weight, padding=1), weight, padding=1)
        v = v / v.norm()
    sigma = torch.nn.functional.conv2d(v, weight, padding=1).norm()
    assert float(sigma) <= 1.02 * cell.bound < 1.0  # the estimate approaches sigma from below


def test_unknown_family_and_setting_are_errors() -> None:
    with pytest.raises(RobustdeqError, match="known: deq, explicit"):
        create_model("resnet", (1, 8, 8), 10)
    with pytest.raises(RobustdeqError, match="unknown setting 'colour'"):
        create_model("deq", (1, 8, 8), 10, colour="red")


def test_model_check_rejects_probabilities_and_bad_shapes() -> None:
    class Softmax(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x.flatten(1)[:, :10], 1)

    class Wrong(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    with pytest.raises(RobustdeqError, match="probabilities"):
        check_model(Softmax(), "digits")
    with pytest.raises(RobustdeqError, match="output shape"):
        check_model(Wrong(), "digits")
