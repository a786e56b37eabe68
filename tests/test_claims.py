"""The seed papers' claims: verdicts computed from entries, and they follow the entries."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import write_entry
from robustdeq.records.defense import list_defenses
from robustdeq.report import write_report
from robustdeq.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NO_DIFFERENCE,
    NOT_COMPARABLE,
    NOT_EVALUATED,
    SUPPORTED,
    Claim,
    assess,
    load_claims,
)
from tests.test_site import v1, v2


def claim(expected: str = "higher", measure: str = "robust", margin: float = 0.05) -> Claim:
    return Claim("c", "https://example.org", "A beats B", "p", "a", "b", measure, expected, margin)


def pair(robust_a: range, robust_b: range) -> dict[str, dict]:  # type: ignore[type-arg]
    return {"a": v2("a", robust_a), "b": v2("b", robust_b)}


def test_the_verdict_follows_the_entries() -> None:
    # 20 examples robust for a alone: clearly higher; the reverse: contradicted; 2 apart: inconclusive.
    assert assess(claim(), pair(range(60), range(40))).verdict == SUPPORTED
    assert assess(claim(), pair(range(40), range(60))).verdict == CONTRADICTED
    found = assess(claim(), pair(range(42), range(40)))
    assert found.verdict == INCONCLUSIVE and found.difference is not None and found.difference.paired
    assert found.difference.estimate == pytest.approx(0.02) and found.difference.p == pytest.approx(0.5)
    # "similar": the same outcomes support it, a 20-point gap contradicts it.
    assert assess(claim("similar"), pair(range(50), range(50))).verdict == SUPPORTED
    assert assess(claim("similar"), pair(range(30), range(60))).verdict == CONTRADICTED
    assert assess(claim("not-lower"), pair(range(70), range(50))).verdict == SUPPORTED


def test_missing_or_incomparable_entries_are_not_a_crash() -> None:
    only_a = {"a": v2("a", range(50))}
    found = assess(claim(), only_a)
    assert found.verdict == NOT_EVALUATED and "b" in found.note
    other = pair(range(60), range(40))
    other["b"]["protocol_hash"] = "cd" * 32
    assert assess(claim(), other).verdict == NOT_COMPARABLE
    # schema-1 entries: unpaired, and still a verdict
    unpaired = assess(claim(), {"a": v1("a", 0.8), "b": v1("b", 0.3)})
    assert unpaired.verdict == SUPPORTED and unpaired.difference is not None and not unpaired.difference.paired


def test_costs_compare_one_measurement_each_with_a_band() -> None:
    entries = pair(range(50), range(50))
    entries["a"]["provenance"]["train_seconds"] = 30.0
    entries["b"]["provenance"]["train_seconds"] = 90.0
    found = assess(claim("lower", "train_seconds", 0.1), entries)
    assert found.verdict == SUPPORTED and found.ratio == pytest.approx(1 / 3)
    entries["a"]["provenance"]["train_seconds"] = 95.0
    assert assess(claim("lower", "train_seconds", 0.1), entries).verdict == NO_DIFFERENCE
    entries["a"]["forward_cost"], entries["b"]["forward_cost"] = 20.0, 10.0
    assert assess(claim("lower", "forward_cost", 0.1), entries).verdict == CONTRADICTED


def test_the_shipped_claims_name_reference_defenses() -> None:
    claims = load_claims()
    known = set(list_defenses())
    assert {c.first for c in claims} | {c.second for c in claims} <= known
    assert {"digits-linf", "digits-l2"} == {c.protocol for c in claims}


def test_a_malformed_claims_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "claims.toml"
    path.write_text('[[claim]]\nid = "x"\npaper = ""\ntext = ""\nprotocol = "p"\nfirst = "a"\nsecond = "b"\n'
                    'measure = "speed"\nexpected = "higher"\n')  # fmt: skip
    with pytest.raises(RobustdeqError, match="measure 'speed'"):
        load_claims(path)


def test_the_report_states_each_claims_verdict(tmp_path: Path) -> None:
    claims = tmp_path / "claims.toml"
    claims.write_text('[[claim]]\nid = "x"\npaper = "https://example.org"\ntext = "A beats B"\nprotocol = "p"\n'
                      'first = "a"\nsecond = "b"\nmeasure = "robust"\nexpected = "higher"\n')  # fmt: skip
    for e in pair(range(60), range(40)).values():
        write_entry(tmp_path / "lb", e)
    write_report(tmp_path / "lb", tmp_path / "report", claims=claims)
    assert f"**{SUPPORTED}**" in (tmp_path / "report" / "report.md").read_text()
    worse = copy.deepcopy(v2("a", range(20)))
    write_entry(tmp_path / "lb", worse)
    write_report(tmp_path / "lb", tmp_path / "report", claims=claims)
    assert f"**{CONTRADICTED}**" in (tmp_path / "report" / "report.md").read_text()
