"""Intervals and paired tests against known values, and their invariants."""

import pytest

from robustdeq.leaderboard.stats import (
    holm,
    mcnemar,
    paired_counts,
    paired_difference,
    paired_phi,
    unpaired_difference,
    wilson,
)


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
    # 5 examples robust only under the first, none only under the second: Newcombe's interval
    # excludes 0 ([+0.3, +9.6] points), the exact McNemar p is 2 / 2^5 = 0.0625.
    first = [True] * 5 + [True] * 40 + [False] * 55
    second = [False] * 5 + [True] * 40 + [False] * 55
    d = paired_difference(first, second)
    assert (d.low, d.high) == pytest.approx((0.0033, 0.0962), abs=5e-5)
    assert d.low > 0 and d.p == pytest.approx(0.0625)
    assert d.verdict() == "inconclusive"
    from robustdeq.report.claims import INCONCLUSIVE, verdict

    assert verdict("higher", d.low, d.high, 0.05, d.p) == INCONCLUSIVE
    assert verdict("higher", d.low, d.high, 0.05, 0.01) == "supported"


# Newcombe RG (1998), "Improved confidence intervals for the difference between binomial proportions
# based on paired data", Stat. Med. 17:2635-2650, Table III: the 95% limits of method 10 for
# (b - c) / n at each of the paper's example tables (a, b, c, d) = the paper's (e, f, g, h), to the
# paper's 4 decimals (its z is 1.96; ours, 1.959964, moves no row by 1e-5). Taken from the table as
# transcribed, identically, in several independent open-source test suites (the paper itself was
# not at hand); the R package ratesci (Laud; pairbinci, method_RD = "MOVER_newc", moverbase =
# "wilson") reproduces the (20, 12, 2, 16) row in its own tests.
# Without the continuity correction of phi, 8 of the 18 rows come out different (e.g. (20, 12, 2, 16)
# gives [0.0618, 0.3242], the paper's method 8; (27, 0, 0, 27) a zero-width [0, 0]).
NEWCOMBE_1998_TABLE_III_METHOD_10 = {
    (36, 12, 2, 0): (0.0569, 0.3404),  # ad - bc = -24 < 0: phi uncorrected (negative)
    (20, 12, 2, 16): (0.0562, 0.3292),  # ad - bc = 296 > n/2 = 25: numerator 271
    (18, 12, 2, 18): (0.0562, 0.3290),
    (36, 14, 0, 0): (0.1528, 0.4167),  # a margin is 0: phi = 0
    (35, 14, 0, 1): (0.1461, 0.4175),  # ad - bc = 35 > 25: numerator 10
    (18, 14, 0, 18): (0.1441, 0.3963),
    (2, 97, 1, 0): (0.8721, 0.9854),
    (1, 97, 1, 1): (0.8736, 0.9850),  # computed 0.87367: the paper's last digit is cut, not rounded
    (0, 29, 1, 0): (0.6666, 0.9882),
    (2, 98, 0, 0): (0.9178, 0.9945),
    (1, 98, 0, 1): (0.9171, 0.9916),  # 0 <= ad - bc = 1 <= n/2 = 50: phi = 0 (uncorrected: 0.9174)
    (0, 30, 0, 0): (0.8395, 1.0),
    (54, 0, 0, 0): (-0.0664, 0.0664),
    (53, 0, 0, 1): (-0.0729, 0.0729),
    (30, 0, 0, 24): (-0.0358, 0.0358),
    (29, 0, 0, 25): (-0.0354, 0.0354),
    (28, 0, 0, 26): (-0.0352, 0.0352),
    (27, 0, 0, 27): (-0.0351, 0.0351),  # uncorrected phi = 1 would give [0, 0]
}


@pytest.mark.parametrize(("counts", "published"), sorted(NEWCOMBE_1998_TABLE_III_METHOD_10.items()))
def test_paired_interval_reproduces_newcombe_1998_table_iii(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    a, b, c, d = counts
    found = paired_counts(a, b, c, d)
    tolerance = 1e-4 if counts == (1, 97, 1, 1) else 5e-5  # 4 printed decimals: half a unit of the last
    assert found.estimate == pytest.approx((b - c) / (a + b + c + d))
    assert (found.low, found.high) == pytest.approx(published, abs=tolerance)
    outcomes = paired_difference(
        [True] * (a + b) + [False] * (c + d), [True] * a + [False] * b + [True] * c + [False] * d
    )
    assert (outcomes.low, outcomes.high) == pytest.approx((found.low, found.high))


def test_paired_interval_reproduces_fagerland_2014() -> None:
    """Fagerland, Lydersen & Laake (2014), "Recommended tests and confidence intervals for paired
    binomial proportions", Stat. Med. 33:2850-2875: the Bentur et al. (2009) airway table
    (1, 1, 7, 12), Newcombe's square-and-add (method 10) interval [-0.507, -0.026] (3 decimals), as
    quoted by the tests of the R package ratesci (pairbinci, MOVER_newc, "Fagerland use Newcombe's
    correlation-corrected method 10"). Here 0 <= ad - bc = 5 <= n/2 = 10.5, so phi = 0: the case the
    uncorrected phi (0.08) gets wrong ([-0.502, -0.036])."""
    found = paired_counts(1, 1, 7, 12)
    assert (found.low, found.high) == pytest.approx((-0.507, -0.026), abs=5e-4)


def test_phi_follows_newcombes_continuity_correction() -> None:
    # ad - bc > n/2: the numerator loses n/2. (20, 12, 2, 16): 320 - 24 = 296, n/2 = 25.
    assert paired_phi(20, 12, 2, 16) == pytest.approx(271 / (32 * 18 * 22 * 28) ** 0.5)
    # (2, 0, 0, 2): ad - bc = 4 > n/2 = 2: 2 / sqrt(2 * 2 * 2 * 2) = 0.5, where the uncorrected phi is 1.
    assert paired_phi(2, 0, 0, 2) == pytest.approx(0.5)
    # 0 <= ad - bc <= n/2: 0. (1, 98, 0, 1): ad - bc = 1, n/2 = 50; (1, 0, 0, 1): 1 = n/2.
    assert paired_phi(1, 98, 0, 1) == 0.0
    assert paired_phi(1, 0, 0, 1) == 0.0
    # ad - bc < 0: unchanged. (36, 12, 2, 0): -24.
    assert paired_phi(36, 12, 2, 0) == pytest.approx(-24 / (48 * 2 * 38 * 12) ** 0.5)
    # a margin of 0: 0.
    assert paired_phi(36, 14, 0, 0) == 0.0


def test_the_correction_widens_the_reviewers_table() -> None:
    # 40 examples right under both, 4 under the first alone, none under the second alone, 56 under
    # neither: without the correction [+0.17, +7.8] points, with it [-0.29, +8.3].
    found = paired_counts(40, 4, 0, 56)
    assert (100 * found.low, 100 * found.high) == pytest.approx((-0.29, 8.26), abs=0.005)
    assert found.p == pytest.approx(0.125)
    with pytest.raises(ValueError, match="negative"):
        paired_counts(1, -1, 0, 0)
