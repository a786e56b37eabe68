"""Example submission model: robustdeq calls make_model(in_shape=..., num_classes=..., **settings)."""

from torch import nn


def make_model(in_shape: tuple[int, int, int], num_classes: int, hidden: int = 64) -> nn.Module:
    """Images (B, C, H, W) in [0, 1] -> logits (B, num_classes); never softmax probabilities."""
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
