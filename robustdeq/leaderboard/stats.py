"""Uncertainty of accuracies measured on n examples, and paired comparisons of two entries.

- :func:`wilson`: the Wilson score interval of a proportion (Wilson 1927), 95% by default. It
  stays inside [0, 1] and is not degenerate at 0 or n successes, unlike the normal interval.
- :func:`mcnemar`: the exact McNemar test (two-sided) of two classifiers evaluated on the same
  examples: under "equally accurate", each of the b + c discordant examples is equally likely to
  favour either, so the p-value is a binomial tail of Binomial(b + c, 1/2).
- :func:`paired_difference` (from outcomes) and :func:`paired_counts` (from the 2x2 counts): the
  difference of two paired proportions with Newcombe's interval for paired data (Stat. Med.
  17:2635-2650, 1998, method 10), built from the two Wilson intervals and the correlation of the
  pairs, with the paper's continuity correction of that correlation (:func:`paired_phi`).
- :func:`unpaired_difference`: the same for independent samples (Newcombe, Stat. Med.
  17:873-890, 1998, method 10); conservative when the examples are in fact shared.
- :func:`holm`: Holm's (1979) step-down adjustment of several p-values (family-wise error).

``docs/statistics.md`` explains how the tables and the claims use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (low, high) of ``successes`` out of ``n`` (``(0, 1)`` when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided(k: int, n: int) -> float:
    """Two-sided p-value of k successes in n trials under p = 1/2 (doubled smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts: ``only_first`` examples right for
    the first classifier alone, ``only_second`` for the second alone."""
    return binomial_two_sided(only_first, only_first + only_second)


@dataclass(frozen=True)
class Difference:
    """first - second, with its 95% interval; ``p`` the two-sided p-value (McNemar when paired)."""

    estimate: float
    low: float
    high: float
    p: float
    paired: bool

    def verdict(self, alpha: float = 0.05) -> str:
        """``higher`` / ``lower`` when the interval excludes 0 and the test agrees (p < alpha), else
        ``inconclusive``: Newcombe's interval and the exact test can disagree at the margin, and a
        direction is claimed only when both show it."""
        if self.p >= alpha:
            return "inconclusive"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "inconclusive"


def paired_phi(a: int, b: int, c: int, d: int) -> float:
    """The correlation of the pairs in Newcombe's method 10, with the paper's continuity correction.

    ``a``: both right, ``b``: first only, ``c``: second only, ``d``: neither (the paper's e, f, g,
    h). The phi coefficient ``(ad - bc) / sqrt((a+b)(c+d)(a+c)(b+d))`` (0 when a margin is 0) with
    its numerator ``ad - bc`` replaced by ``max(ad - bc - n/2, 0)`` when ``ad > bc`` and left as it
    is when ``ad <= bc`` (Newcombe 1998, Stat. Med. 17:2635-2650, method 10). The
    correction shrinks a positive correlation, which would otherwise narrow the interval too much
    at small counts (e.g. to zero width at b = c = 0).
    """
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    numerator: float = a * d - b * c
    if numerator > 0:
        numerator = max(numerator - (a + b + c + d) / 2, 0.0)
    return numerator / math.sqrt(margins)


def paired_counts(a: int, b: int, c: int, d: int, z: float = Z95) -> Difference:
    """Newcombe's method-10 interval for p1 - p2 = (b - c) / n from the paired 2x2 counts (``a``: both
    right, ``b``: first only, ``c``: second only, ``d``: neither), with the exact McNemar p."""
    if min(a, b, c, d) < 0:
        raise ValueError("paired counts must not be negative")
    n = a + b + c + d
    if n == 0:
        return Difference(0.0, -1.0, 1.0, 1.0, True)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    phi = paired_phi(a, b, c, d)
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    diff = p1 - p2
    return Difference(diff, max(-1.0, diff - delta), min(1.0, diff + epsilon), mcnemar(b, c), True)


def paired_difference(first: list[bool], second: list[bool], z: float = Z95) -> Difference:
    """Newcombe's method-10 interval for p1 - p2 on the same examples (:func:`paired_counts`), with
    the exact McNemar p."""
    if len(first) != len(second):
        raise ValueError("paired outcomes must have the same length")
    both = sum(x and y for x, y in zip(first, second, strict=True))
    only_first = sum(x and not y for x, y in zip(first, second, strict=True))
    only_second = sum(y and not x for x, y in zip(first, second, strict=True))
    neither = len(first) - both - only_first - only_second
    return paired_counts(both, only_first, only_second, neither, z)


def unpaired_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> Difference:
    """Newcombe's interval for p1 - p2 from independent samples; p from the pooled two-proportion z-test."""
    p1, p2 = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (k1 + k2) / (n1 + n2) if n1 + n2 else 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) if n1 and n2 else 0.0
    p = math.erfc(abs(d) / se / math.sqrt(2)) if se > 0 else (1.0 if d == 0 else 0.0)
    return Difference(d, max(-1.0, low), min(1.0, high), p, False)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (each is compared with alpha directly)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
