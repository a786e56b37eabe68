"""Weight-tied models with distinct sparse masks (Song et al. 2023)."""

from pathlib import Path

import torch

from robustdeq.checkpoint import load_weights, save_checkpoint
from robustdeq.models import create_model
from robustdeq.models.weight_tied import WeightTiedClassifier, draw_masks


def make(**settings: object) -> WeightTiedClassifier:
    torch.manual_seed(0)
    model = create_model("weight_tied", (1, 8, 8), 10, **settings)  # type: ignore[arg-type]
    assert isinstance(model, WeightTiedClassifier)
    return model


def test_masks_are_distinct_have_the_density_and_come_from_the_seed() -> None:
    model = make(depth=6, density=0.3, mask_seed=7)
    masks = model.masks
    numel = masks[0].numel()
    assert masks.shape == (6, *model.cell.weight.shape)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    for mask in masks:
        assert abs(float(mask.sum()) - 0.3 * numel) <= 1
    flat = masks.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))
    assert torch.equal(draw_masks(tuple(model.cell.weight.shape), 6, 0.3, 7), masks)
    assert not torch.equal(draw_masks(tuple(model.cell.weight.shape), 6, 0.3, 8), masks)


def test_masks_survive_save_and_load(tmp_path: Path) -> None:
    model = make(depth=4, density=0.5, mask_seed=3).eval()
    save_checkpoint(model, tmp_path / "model.safetensors", {})
    other = make(depth=4, density=0.5, mask_seed=99)
    assert not torch.equal(other.masks, model.masks)
    load_weights(other, tmp_path / "model.safetensors")
    assert torch.equal(other.masks, model.masks)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_masked_weights_are_zero_in_the_forward_and_get_no_gradient() -> None:
    model = make(depth=3, density=0.25).eval()  # eval: the norm estimate stays fixed between calls
    for weight, mask in zip(model.layer_weights(), model.masks, strict=True):
        assert bool((weight[mask == 0] == 0).all())
    # The output is what the masked weights compute, step by step.
    x = torch.rand(2, 1, 8, 8)
    u = model.inject(x)
    z = torch.zeros(2, *model.state_shape)
    for weight in model.layer_weights():
        z = torch.relu(torch.nn.functional.conv2d(z, weight, padding=1) + u)
    assert torch.allclose(model(x), model.head(z))
    # Entries masked out in every application receive no gradient. (Shrink W below the norm bound
    # first: then the spectral scale is the constant 1 and cannot spread gradient to every entry.)
    with torch.no_grad():
        model.cell.weight.mul_(1e-3)
    assert float(model.cell.sigma().detach()) < model.cell.bound
    model.zero_grad()
    model(x).sum().backward()
    grad = model.cell.weight.grad
    assert grad is not None
    never_used = model.masks.sum(0) == 0
    assert bool(never_used.any()) and bool((grad[never_used] == 0).all())
    assert bool((grad[~never_used] != 0).any())


def test_without_masks_it_is_l_explicit_calls_of_the_deq_block() -> None:
    model = make(depth=5, density=1.0).eval()
    torch.manual_seed(0)
    deq = create_model("deq", (1, 8, 8), 10).eval()
    deq.load_state_dict({k: v for k, v in model.state_dict().items() if k != "masks"}, strict=True)
    x = torch.rand(4, 1, 8, 8)
    u = deq.inject(x)
    weight = deq.cell.effective_weight()
    z = torch.zeros(4, *deq.state_shape)
    for _ in range(5):
        z = deq.f(z, u, weight)
    assert torch.allclose(model(x), deq.head(z), atol=1e-6)
    assert model.block_evaluations == 5
