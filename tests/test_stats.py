"""Intervals and paired tests against known values, and their invariants."""

import pytest

from robustdeq.leaderboard.stats import holm, mcnemar, paired_difference, unpaired_difference, wilson


def test_wilson_interval_known_values() -> None:
    # 46 of 100: the textbook Wilson interval (0.3656, 0.5573); never outside [0, 1] at the edges.
    assert wilson(46, 100) == pytest.approx((0.365608, 0.557351), abs=1e-6)
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    low, high = wilson(207, 450)  # 46% of the 450 test digits: about +-4.6 points
    assert high - low == pytest.approx(0.0912, abs=1e-3)


def test_exact_mcnemar_known_values() -> None:
    # 10 discordant examples one way, 2 the other: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12.
    assert mcnemar(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar(5, 5) == 1.0 and mcnemar(0, 0) == 1.0
    assert mcnemar(0, 6) == pytest.approx(2 / 64)


def test_holm_adjustment_known_values() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5]


def test_paired_difference_is_antisymmetric_and_matches_the_unpaired_one_without_correlation() -> None:
    first = [True] * 30 + [False] * 10 + [True] * 5 + [False] * 55
    second = [True] * 30 + [True] * 10 + [False] * 5 + [False] * 55
    d = paired_difference(first, second)
    e = paired_difference(second, first)
    assert d.estimate == pytest.approx(-0.05) and e.estimate == pytest.approx(0.05)
    assert (d.low, d.high) == pytest.approx((-e.high, -e.low))
    assert d.p == pytest.approx(mcnemar(5, 10)) and d.verdict() == "inconclusive"
    # A 2x2 table with zero correlation (phi = 0): the paired interval is the independent one.
    a = [True] * 25 + [True] * 25 + [False] * 25 + [False] * 25
    b = [True] * 25 + [False] * 25 + [True] * 25 + [False] * 25
    paired, unpaired = paired_difference(a, b), unpaired_difference(50, 100, 50, 100)
    assert (paired.low, paired.high) == pytest.approx((unpaired.low, unpaired.high))
    # Identical outcomes: no difference, p = 1; a clear win: interval above zero.
    same = paired_difference(a, a)
    assert same.estimate == 0 and same.p == 1.0 and same.low <= 0 <= same.high
    win = paired_difference([True] * 60 + [False] * 40, [True] * 30 + [False] * 70)
    assert win.verdict() == "higher" and win.p < 1e-6


def test_a_direction_needs_the_interval_and_the_exact_test() -> None:
    # 4 examples robust only under the first, none only under the second: Newcombe's interval
    # excludes 0, the exact McNemar p is 0.125.
    first = [True] * 4 + [True] * 40 + [False] * 56
    second = [False] * 4 + [True] * 40 + [False] * 56
    d = paired_difference(first, second)
    assert d.low > 0 and d.p == pytest.approx(0.125)
    assert d.verdict() == "inconclusive"
    from robustdeq.report.claims import INCONCLUSIVE, verdict

    assert verdict("higher", d.low, d.high, 0.05, d.p) == INCONCLUSIVE
    assert verdict("higher", d.low, d.high, 0.05, 0.01) == "supported"
