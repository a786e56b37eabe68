"""Convex Lyapunov functions (Manek & Kolter 2019, arXiv 2001.06116) and the orthogonal head, shared
by the LyaDEQ families (:mod:`robustdeq.models.lyadeq`, :mod:`robustdeq.models.lyadeq_residual`)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from robustdeq.device import CPU


class _Softplus(torch.autograd.Function):
    """softplus(x) = log(1 + exp(x)), computed as relu(x) + log(1 + exp(-|x|)): torch's CPU softplus
    (and ``log1p``) runs a scalar loop, 4x the time of these vectorised operations on the ICNN's
    activations, and the two softplus layers were 37% of a LyaDEQ forward and backward. The
    absolute error stays at float32 round-off of values near 1 (measured: at most 5.3e-7 against
    float64 on N(0, 9) inputs, torch's own 5.2e-7); only the relative error of values below about
    1e-7 is larger, which V's sums of them do not see. The derivative is the exact sigmoid(x)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.abs().neg_().exp_().add_(1).log_().add_(x.clamp(min=0))  # in place: no autograd here

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * torch.sigmoid(x)


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), fast on the CPU (:class:`_Softplus`)."""
    return cast(Tensor, _Softplus.apply(x))


class InputConvexNet(nn.Module):
    """g(s): states (B, C, H, W) -> (B,), convex in s; a two-layer ICNN applied at every position.

    a1 = A1 s + b1, a2 = Wh softplus(a1) + A2 s + b2, g = sum over positions of w_out . softplus(a2).
    Wh and w_out are non-negative by construction (softplus of free parameters, divided by the
    width, as in Manek & Kolter's ICNN); softplus is convex and non-decreasing, so g is convex:
    a non-negative combination of convex functions, through a convex non-decreasing activation.
    All of it is trainable (``nn.Parameter``); ``scale`` sets g's size against V's quadratic term.
    """

    def __init__(self, channels: int, hidden: int, scale: float) -> None:
        super().__init__()
        bound = channels**-0.5
        self.hidden = hidden
        self.scale = scale
        # Built on the CPU (the model is moved afterwards), so the draws do not depend on the device.
        self.w_in = nn.Parameter((2 * torch.rand(2 * hidden, channels, device=CPU) - 1) * bound)  # A1, A2
        self.b_in = nn.Parameter((2 * torch.rand(2 * hidden, device=CPU) - 1) * bound)
        self.hidden_raw = nn.Parameter(torch.randn(hidden, hidden, device=CPU))
        self.out_raw = nn.Parameter(torch.randn(hidden, device=CPU))

    @property
    def w_hidden(self) -> Tensor:
        return F.softplus(self.hidden_raw) / self.hidden

    @property
    def w_out(self) -> Tensor:
        return F.softplus(self.out_raw) * (self.scale / self.hidden)

    def _preactivations(self, s: Tensor) -> tuple[Tensor, Tensor]:
        # Channels-last, so every layer is one small matrix product over all positions; A1 and A2
        # apart, so that a1 is contiguous (the elementwise activations are 3x slower on a strided
        # slice of one product).
        h, s_last = self.hidden, s.permute(0, 2, 3, 1)
        a1 = F.linear(s_last, self.w_in[:h], self.b_in[:h])
        return a1, F.linear(softplus(a1), self.w_hidden) + F.linear(s_last, self.w_in[h:], self.b_in[h:])

    def forward(self, s: Tensor) -> Tensor:
        _, a2 = self._preactivations(s)
        return (softplus(a2) @ self.w_out).sum((1, 2))

    def value_and_grad(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """g(s) (B,) and its gradient in s (B, C, H, W), in closed form (differentiable in the
        weights and in s, so the projection that uses it trains V and is attacked exactly)."""
        a1, a2 = self._preactivations(s)
        w_out = self.w_out
        g2 = torch.sigmoid(a2) * w_out
        g1 = torch.sigmoid(a1) * (g2 @ self.w_hidden)
        grad = torch.cat([g1, g2], -1) @ self.w_in
        return (softplus(a2) @ w_out).sum((1, 2)), grad.permute(0, 3, 1, 2)


class LyapunovFunction(nn.Module):
    """V(s) = g(s) - g(0) - grad g(0) . s + eps |s|^2 (B,), g an :class:`InputConvexNet`.

    The first three terms are g's Bregman divergence from the origin: non-negative and zero at
    s = 0 because g is convex, and convex in s (g minus an affine function). So V is convex,
    V(0) = 0 and V(s) >= eps |s|^2: its only minimum is the origin. Manek & Kolter (2019) write
    V = rehu(g(s) - g(0)) + eps |s|^2 instead; that V is just eps |s|^2 wherever g(s) < g(0),
    which at initialisation held for every digit's DEQ state, so g received no gradient at all
    and could not be learned. The Bregman form has the same minimum and convexity and always
    depends on g. g(0) and grad g(0) are recomputed at every call, so this holds while g trains.
    """

    def __init__(self, channels: int, hidden: int, eps: float, scale: float) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError("lyapunov_eps must be positive")
        self.icnn = InputConvexNet(channels, hidden, scale)
        self.eps = eps

    def origin(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """g(0) and grad g(0) for states shaped like ``like``: they depend on the weights only, so
        a trajectory computes them once and passes them to every :meth:`value_and_grad`."""
        return self.icnn.value_and_grad(torch.zeros_like(like[:1]))

    def forward(self, s: Tensor, origin: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """V(s) (B,) (``origin``: :meth:`origin`, else computed here)."""
        return self._value(self.icnn(s), s, self.origin(s) if origin is None else origin)

    def value_and_grad(self, s: Tensor, origin: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """V(s) (B,) and grad V(s) (B, C, H, W), in closed form."""
        origin = self.origin(s) if origin is None else origin
        g, dg = self.icnn.value_and_grad(s)
        return self._value(g, s, origin), dg - origin[1] + 2 * self.eps * s

    def _value(self, g: Tensor, s: Tensor, origin: tuple[Tensor, Tensor]) -> Tensor:
        """V(s) = g(s) - g(0) - grad g(0) . s + eps |s|^2, from g(s)."""
        g0, dg0 = origin
        flat = s.flatten(1)
        return g - g0 - (dg0.flatten(1) * flat).sum(1) + self.eps * flat.pow(2).sum(1)


class OrthogonalHead(nn.Module):
    """pool to 4x4 -> orthogonal fully connected layer Q (square; Q Q^T = I by construction, torch's
    ``parametrizations.orthogonal``) -> ReLU -> linear classifier; without Q: pool -> linear.

    ``unconstrained`` (with ``orthogonal`` off) puts a plain square linear layer of the same shape in
    Q's place (pool -> linear -> ReLU -> linear): the ablation arm that has the orthogonal layer's size
    and parameter count but no constraint, so that orthogonality is not confounded with capacity."""

    def __init__(self, channels: int, num_classes: int, orthogonal: bool, unconstrained: bool = False) -> None:
        super().__init__()
        if orthogonal and unconstrained:
            raise ValueError("orthogonal and unconstrained_layer exclude each other: one square layer or the other")
        self.pool = nn.AdaptiveAvgPool2d(4)
        features = channels * 16
        self.orthogonal = orthogonal
        self.fc: nn.Module | None = None
        if orthogonal:
            self.fc = parametrizations.orthogonal(nn.Linear(features, features))
        elif unconstrained:
            self.fc = nn.Linear(features, features)
        self.classifier = nn.Linear(features, num_classes)

        self._frozen: tuple[tuple[int, ...], Tensor] | None = None  # (parameter versions, Q) in eval mode

    def forward(self, z: Tensor) -> Tensor:
        features = self.pool(z).flatten(1)
        if self.fc is not None:
            features = torch.relu(F.linear(features, self._weight(), cast(Tensor, self.fc.bias)))
        out: Tensor = self.classifier(features)
        return out

    def _weight(self) -> Tensor:
        """The square layer's weight: an unconstrained layer's own, or Q. Q's parametrisation computes
        a 256x256 matrix exponential per call (39 ms, and its backward more: 40% of a forward and
        backward on 50 digits); in eval mode Q is computed once per version of its parameters and
        reused without a graph to them (attacks need input gradients only; training runs in train
        mode and always gets the parametrisation's)."""
        assert self.fc is not None
        if self.training or not self.orthogonal:
            return cast(Tensor, self.fc.weight)
        versions = tuple(p._version for p in self.fc.parameters())
        if self._frozen is None or self._frozen[0] != versions:
            with torch.no_grad():
                self._frozen = (versions, cast(Tensor, self.fc.weight).clone())
        return self._frozen[1]
