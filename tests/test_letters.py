"""The compact letter display beside the rank groups: which entries a reader cannot tell apart."""

from __future__ import annotations

import random
from itertools import combinations
from pathlib import Path

import pytest

from robustdeq.leaderboard import read_entries
from robustdeq.leaderboard.ranking import compact_letters, letter, pairwise_different, rank_groups
from robustdeq.leaderboard.render import ranked
from robustdeq.leaderboard.stats import holm, mcnemar
from tests.test_site import v1, v2

REPO = Path(__file__).resolve().parent.parent


def shares(a: str, b: str) -> bool:
    return bool(set(a) & set(b))


def test_groups_and_letters_differ_on_a_chain() -> None:
    """A is robust on 50 examples, B on 45 of them, C on 40 of those: A-B and B-C each differ on 5
    examples all one way (exact McNemar p = 2 / 2^5 = 0.0625), A-C on 10 (p = 2 / 2^10).

    Rank groups: A's family is A-B, A-C, Holm-adjusted to 0.0625 and 0.0039: B joins A's group and
    C, significantly worse than A, starts the next one: 1-2, 1-2, 3. Letters: A and C differ; B
    differs from neither (B's own family, B-C: 0.0625), so B shares a letter with each: a, ab, b.
    The rank column alone would suggest that B and C can be told apart; the letters say they cannot.
    """
    a, b, c = v2("a", range(50)), v2("b", range(45)), v2("c", range(40))
    assert holm([mcnemar(5, 0), mcnemar(10, 0)]) == pytest.approx([0.0625, 4 / 1024])
    out = rank_groups([c, a, b])
    assert [(r.entry["defense"], r.rank, r.letters) for r in out] == [
        ("a", "1-2", "a"),
        ("b", "1-2", "ab"),
        ("c", "3", "b"),
    ]
    assert pairwise_different([a, b, c]) == {(0, 2)}


def test_a_groups_best_never_shares_a_letter_with_the_first_entry_of_the_next_group() -> None:
    # Groups 1-2 and 3-4; the cut is a test in the best entry's family, which the letters reuse.
    entries = [v2("a", range(60)), v2("b", range(55)), v2("c", range(30)), v2("d", range(28))]
    out = rank_groups(entries)
    assert [r.rank for r in out] == ["1-2", "1-2", "3-4", "3-4"]
    letters = {r.entry["defense"]: r.letters for r in out}
    assert shares(letters["a"], letters["b"]) and shares(letters["c"], letters["d"])
    assert not shares(letters["a"], letters["c"]) and not shares(letters["b"], letters["c"])


def test_unranked_entries_get_no_letters_and_unpaired_entries_are_compared_too() -> None:
    flagged = v2("flagged", range(90), flags=["zero_gradients"])
    out = rank_groups([v2("a", range(60)), v1("old", 0.59), v2("c", range(10)), flagged])
    letters = {r.entry["defense"]: r.letters for r in out}
    assert letters["flagged"] == "-"
    assert shares(letters["a"], letters["old"]) and not shares(letters["a"], letters["c"])


def test_compact_letters_share_a_letter_exactly_when_not_different() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 9)
        pairs = list(combinations(range(n), 2))
        different = {p for p in pairs if rng.random() < rng.choice((0.2, 0.5, 0.8))}
        letters = compact_letters(n, different)
        assert all(letters), (n, different, letters)  # every item has a letter
        for i, j in pairs:
            assert shares(letters[i], letters[j]) == ((i, j) not in different), (n, different, letters)
        assert letters[0].startswith("a")


def test_compact_letters_of_simple_relations() -> None:
    assert compact_letters(0, set()) == []
    assert compact_letters(3, set()) == ["a", "a", "a"]
    assert compact_letters(3, {(0, 1), (0, 2), (1, 2)}) == ["a", "b", "c"]
    assert compact_letters(4, {(0, 3)}) == ["a", "ab", "ab", "b"]
    # Piepho's sweep drops letters nothing needs: insert-and-absorb alone gives item 0 all four
    # letters (abcd, ab, cd, ac, bd); two of them already connect it to every other item.
    assert compact_letters(5, {(1, 2), (3, 4)}) == ["ab", "ac", "bd", "bc", "ad"]
    assert [letter(k) for k in (0, 25, 26, 51, 52)] == ["a", "z", "A", "Z", "[53]"]


def test_the_committed_table_shows_deq_jiio_and_deq_pgd_at_as_indistinguishable() -> None:
    """The reviewer's case: deq-jiio and deq-pgd-at differ on one example (45 robust under both, 0 under
    deq-jiio alone, 1 under deq-pgd-at alone, 54 under neither: p = 1)
    yet sit in rank groups 5-9 and 1-4, because cnn-pgd-at, the best of 1-4, is significantly better
    than deq-jiio. Their letters share one; cnn-pgd-at's and deq-jiio's share none."""
    groups, _ = ranked(read_entries(REPO / "leaderboards" / "digits-linf"))
    by_id = {r.entry["defense"]: r for r in groups}
    jiio, pgd_at, cnn = by_id["deq-jiio"], by_id["deq-pgd-at"], by_id["cnn-pgd-at"]
    assert jiio.rank != pgd_at.rank and cnn.rank == pgd_at.rank
    assert shares(jiio.letters, pgd_at.letters)
    assert not shares(jiio.letters, cnn.letters)
