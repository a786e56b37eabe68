"""The seed papers' claims: verdicts computed from entries, and they follow the entries."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.leaderboard import read_entries, write_entry
from robustdeq.records.defense import find_defense, list_defenses
from robustdeq.records.store import protocol_folders
from robustdeq.report import write_report
from robustdeq.report.claims import (
    BENCHMARK_RESULTS,
    CIRCULAR,
    CONTRADICTED,
    INCONCLUSIVE,
    INCONCLUSIVE_REPEATS,
    MIN_REPEATS,
    NO_DIFFERENCE,
    NOT_COMPARABLE,
    NOT_EVALUATED,
    NOT_MEASURED,
    SUPPORTED,
    Claim,
    assess,
    assess_all,
    load_claims,
    markdown_section,
    ratio_verdict,
    verdict,
)
from tests.test_site import v1, v2

REPO = Path(__file__).resolve().parent.parent


def claim(expected: str = "higher", measure: str = "robust", margin: float = 0.05, **sizes: Any) -> Claim:
    return Claim("c", "https://example.org", "A beats B", ("p",), "a", "b", measure, expected, margin, **sizes)


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


def test_a_robust_accuracy_flagged_as_an_overestimate_is_named_an_upper_bound_in_the_finding() -> None:
    entries = pair(range(60), range(40))
    entries["a"]["flags"] = ["autoattack_square_beats_whitebox", "readout_budget_sensitive"]
    found = assess(claim(), entries)
    assert found.verdict == SUPPORTED and found.upper_bounds == ("a",)
    assert "a is flagged autoattack_square_beats_whitebox, so its robust accuracy is probably too high" in found.note
    assert "readout_budget_sensitive" not in found.note  # informational: not an upper bound
    assert "⚠ upper bounds: a" in markdown_section([found])
    # clean accuracy is not what the flag doubts; an unflagged pair has no such note
    assert assess(claim(measure="clean"), entries).upper_bounds == ()
    assert assess(claim(), pair(range(60), range(40))).upper_bounds == ()


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


def test_a_forward_cost_is_one_count_each_compared_with_a_band() -> None:
    entries = pair(range(50), range(50))
    entries["a"]["forward_cost"], entries["b"]["forward_cost"] = 10.0, 30.0
    found = assess(claim("lower", "forward_cost", 0.1), entries)
    assert found.verdict == SUPPORTED and found.ratio is not None and found.ratio.estimate == pytest.approx(1 / 3)
    entries["a"]["forward_cost"] = 29.0
    assert assess(claim("lower", "forward_cost", 0.1), entries).verdict == NO_DIFFERENCE
    entries["a"]["forward_cost"] = 60.0
    assert assess(claim("lower", "forward_cost", 0.1), entries).verdict == CONTRADICTED
    # with a claimed size: 2x cheaper is not "about 3x cheaper" (0.33 x 1.2 = 0.40 or below)
    entries["a"]["forward_cost"] = 15.0
    found = assess(claim("lower", "forward_cost", 0.2, expected_ratio=0.33), entries)
    assert found.verdict == CONTRADICTED and "by less than claimed" in found.note
    entries["a"]["forward_cost"] = 11.0
    assert assess(claim("lower", "forward_cost", 0.2, expected_ratio=0.33), entries).verdict == SUPPORTED


@pytest.mark.parametrize(
    ("low", "high", "size", "expected"),
    [
        # "about 3x faster": r = 0.33, margin 0.2, so b = 0.396
        (0.30, 0.38, 0.33, SUPPORTED),  # the spread holds the claimed size, JIIO faster in every pairing
        (0.10, 0.20, 0.33, SUPPORTED),  # beyond the claimed size in the claimed direction
        (0.39, 0.95, 0.33, SUPPORTED),  # reaches b = 0.396
        (0.60, 0.90, 0.33, CONTRADICTED),  # faster, by less than claimed
        (0.87, 0.87, 0.33, CONTRADICTED),  # the reviewer's single 0.87, were it a sure measurement
        (1.05, 1.20, 0.33, CONTRADICTED),  # slower
        (0.30, 1.10, 0.33, INCONCLUSIVE_REPEATS),  # holds both the claimed size and no speed-up
        # "3x slower": r = 3, b = 2.5
        (2.6, 3.4, 3.0, SUPPORTED),
        (1.5, 2.0, 3.0, CONTRADICTED),
        (0.9, 2.8, 3.0, INCONCLUSIVE_REPEATS),
        # direction only, band 0.2 around 1
        (0.5, 0.7, None, SUPPORTED),
        (0.7, 0.9, None, NO_DIFFERENCE),
        (1.3, 1.5, None, CONTRADICTED),
    ],
)
def test_a_cost_claim_is_tested_against_its_size(low: float, high: float, size: float | None, expected: str) -> None:
    direction = "lower" if size is None or size < 1 else "higher"
    assert ratio_verdict(direction, low, high, 0.2, size) == expected


def test_an_accuracy_claim_with_a_size_is_tested_against_it() -> None:
    # "10 points more robust", margin 5 points: an interval entirely below +5 contradicts it.
    assert verdict("higher", 0.01, 0.04, 0.05, 0.01, size=0.10) == CONTRADICTED
    assert verdict("higher", -0.05, 0.02, 0.05, 0.5, size=0.10) == CONTRADICTED
    assert verdict("higher", 0.01, 0.06, 0.05, 0.01, size=0.10) == SUPPORTED  # reaches +5
    assert verdict("higher", -0.02, 0.12, 0.05, 0.3, size=0.10) == INCONCLUSIVE  # direction not shown
    assert verdict("lower", -0.04, -0.01, 0.05, 0.01, size=-0.10) == CONTRADICTED
    assert verdict("lower", -0.15, -0.03, 0.05, 0.01, size=-0.10) == SUPPORTED
    # on entries: a is robust on 20 more examples than b, claimed 30 more: [+12, +28] reaches 25
    found = assess(claim("higher", expected_difference=0.30), pair(range(60), range(40)))
    assert found.verdict == SUPPORTED and "+25.0 or beyond" in found.note
    found = assess(claim("higher", expected_difference=0.40), pair(range(60), range(40)))
    assert found.verdict == CONTRADICTED


def timings(folder: Path, first: list[float], second: list[float], **changes: Any) -> None:
    """A benchmarks/jiio_vs_pgd_at.py results file for defenses a and b under protocol p."""
    results = {
        name: {
            "defense": name,
            "recipe": "x",
            "seconds_per_epoch": sum(runs) / len(runs),
            "seconds_per_epoch_runs": runs,
        }
        for name, runs in (("a", first), ("b", second))
    }
    data = {"protocol": "p", "first": "a", "second": "b", "repeats": len(first), "results": results, **changes}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "timing.json").write_text(json.dumps(data))


def test_a_timing_claim_reads_repeated_timings_and_says_not_measured_without_them(tmp_path: Path) -> None:
    about_3x = claim("lower", "train_seconds", 0.2, expected_ratio=0.33, benchmark="timing.json")
    found = assess(about_3x, {}, tmp_path)
    assert found.verdict == NOT_MEASURED and "no benchmarks/results/timing.json" in found.note
    assert "--repeats 3 --protocol p --first a --second b" in found.note
    timings(tmp_path, [3.0, 3.1], [9.0, 9.2])  # two repeats
    found = assess(about_3x, {}, tmp_path)
    assert found.verdict == NOT_MEASURED and f"a verdict needs {MIN_REPEATS}" in found.note
    timings(tmp_path, [3.0, 3.1, 3.2], [9.0, 9.2, 9.1], protocol="q")
    assert "measured under 'q'" in assess(about_3x, {}, tmp_path).note
    (tmp_path / "timing.json").write_text(json.dumps({"protocol": "p", "results": {"jiio": {"seconds_per_epoch": 2}}}))
    assert "written before --repeats" in assess(about_3x, {}, tmp_path).note  # the committed file's old format

    timings(tmp_path, [3.0, 3.1, 3.2], [9.0, 9.2, 9.1])
    found = assess(about_3x, {}, tmp_path)
    assert found.verdict == SUPPORTED and found.ratio is not None and found.ratio.repeats == 3
    assert (found.ratio.low, found.ratio.high) == pytest.approx((3.0 / 9.2, 3.2 / 9.0))
    assert found.first == pytest.approx(3.1) and "3 interleaved timings each" in found.note
    timings(tmp_path, [6.0, 7.0, 8.0], [9.0, 9.2, 9.1])  # faster, by less than claimed
    found = assess(about_3x, {}, tmp_path)
    assert found.verdict == CONTRADICTED and "by less than claimed" in found.note
    timings(tmp_path, [3.0, 5.0, 10.0], [9.0, 9.2, 9.1])  # a loaded machine: the spread holds both
    assert assess(about_3x, {}, tmp_path).verdict == INCONCLUSIVE_REPEATS
    row = markdown_section([assess(about_3x, {}, tmp_path)]).splitlines()[-1]
    assert "about x0.33 (margin 0.2)" in row and "[3.00, 10.00]" in row and "x0.66 [0.33, 1.11]" in row


def test_a_circular_claim_shows_its_measurement_and_why_but_no_verdict() -> None:
    entries = pair(range(50), range(50))
    entries["a"]["forward_cost"], entries["b"]["forward_cost"] = 12.0, 12.0
    why = "a's depth is set to b's mean solver steps"
    found = assess(claim("lower", "forward_cost", 0.1, circular=why), entries)
    assert found.verdict == CIRCULAR and found.note == why and found.ratio is not None
    row = markdown_section([found]).splitlines()[-1]
    assert f"**{CIRCULAR}**" in row and why in row and "x1.00" in row


def test_the_shipped_claims_state_their_sizes_and_circularity() -> None:
    claims = {c.id: c for c in load_claims()}
    for jiio in ("jiio-cost", "jiio-l2-cost"):
        assert claims[jiio].expected_ratio == pytest.approx(0.33) and claims[jiio].benchmark is not None
    assert claims["weight-tied-cost"].circular and "12" in str(claims["weight-tied-cost"].circular)
    entries = {p.name: {e["defense"]: e for e in read_entries(p)} for p in protocol_folders(REPO / "leaderboards")}
    findings = {f.claim.id: f for f in assess_all(list(claims.values()), entries) if f.protocol == f.claim.protocols[0]}
    assert findings["weight-tied-cost"].verdict == CIRCULAR and findings["weight-tied-cost"].protocol == "digits-linf"
    results = json.loads((BENCHMARK_RESULTS / "jiio_vs_pgd_at.json").read_text())
    if "repeats" not in results:  # the committed single timing: no verdict until the repeats exist
        assert findings["jiio-cost"].verdict == NOT_MEASURED
    else:
        assert findings["jiio-cost"].verdict in (SUPPORTED, CONTRADICTED, INCONCLUSIVE_REPEATS)


def test_the_shipped_claims_name_reference_defenses() -> None:
    claims = load_claims()
    known = set(list_defenses())
    assert {c.first for c in claims} | {c.second for c in claims} <= known
    assert {"digits-linf", "digits-l2", "mnist-linf-0.3"} == {p for c in claims for p in c.protocols}


HEAD = '[[claim]]\nid = "x"\npaper = ""\ntext = ""\nprotocols = ["p"]\nfirst = "a"\nsecond = "b"\n'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('measure = "speed"\nexpected = "higher"\n', "measure 'speed'"),
        ('measure = "train_seconds"\nexpected = "lower"\n', "reads repeated timings"),
        ('measure = "forward_cost"\nexpected = "lower"\nbenchmark = "x.json"\n', "only a train_seconds claim"),
        ('measure = "forward_cost"\nexpected = "higher"\nexpected_ratio = 0.33\n', "contradicts expected"),
        ('measure = "robust"\nexpected = "higher"\nexpected_ratio = 0.33\n', "expected_ratio is for costs"),
        ('measure = "robust"\nexpected = "lower"\nexpected_difference = 0.1\n', "contradicts expected"),
        ('measure = "forward_cost"\nexpected = "lower"\nexpected_difference = -0.1\n', "is for accuracies"),
        ('measure = "robust"\nexpected = "higher"\ncircular = " "\n', "circular must say why"),
        ('measure = "robust"\nexpected = "higher"\nsize = 3\n', "unknown ['size']"),
    ],
)
def test_a_malformed_claims_file_names_the_problem(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "claims.toml"
    path.write_text(HEAD + body)
    with pytest.raises(RobustdeqError, match=re.escape(problem)):
        load_claims(path)


def test_the_report_states_each_claims_verdict(tmp_path: Path) -> None:
    claims = tmp_path / "claims.toml"
    claims.write_text('[[claim]]\nid = "x"\npaper = "https://example.org"\ntext = "A beats B"\nprotocols = ["p"]\n'
                      'first = "a"\nsecond = "b"\nmeasure = "robust"\nexpected = "higher"\n'
                      '[[claim]]\nid = "y"\npaper = "https://example.org"\ntext = "A is cheaper"\nprotocols = ["p"]\n'
                      'first = "a"\nsecond = "b"\nmeasure = "forward_cost"\nexpected = "lower"\n'
                      'circular = "the same cost by design"\n')  # fmt: skip
    for e in pair(range(60), range(40)).values():
        write_entry(tmp_path / "lb", e)
    write_report(tmp_path / "lb", tmp_path / "report", claims=claims, benchmarks=tmp_path / "none")
    assert f"**{SUPPORTED}**" in (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    assert f"<b>{CIRCULAR}</b></td><td>the same cost by design</td>" in html and "<th>note</th>" in html
    worse = copy.deepcopy(v2("a", range(20)))
    write_entry(tmp_path / "lb", worse)
    write_report(tmp_path / "lb", tmp_path / "report", claims=claims)
    assert f"**{CONTRADICTED}**" in (tmp_path / "report" / "report.md").read_text()


def two_protocols(**sizes: Any) -> Claim:
    return Claim("c", "https://example.org", "A beats B", ("p", "q"), "a", "b", "robust", "higher", 0.05, **sizes)


def test_a_claim_on_two_protocols_gets_a_verdict_on_each_and_no_entries_yet_is_not_a_crash() -> None:
    findings = assess_all([two_protocols()], {"p": pair(range(60), range(40))})
    assert [(f.protocol, f.verdict) for f in findings] == [("p", SUPPORTED), ("q", NOT_EVALUATED)]
    assert findings[1].note == "no entries yet under q" and findings[1].difference is None
    section = markdown_section(findings)
    header = next(line for line in section.splitlines() if line.startswith("| claim | first vs second | measure | p"))
    assert header == "| claim | first vs second | measure | p | q |"
    row = next(line for line in section.splitlines() if line.startswith("| [A beats B]"))
    assert row.endswith(f"| **{SUPPORTED}** +20.0 [+11.8, +27.6], p 1.91e-06 | **{NOT_EVALUATED}** no entries yet |")
    assert "### On p" in section and "### On q" in section
    # the second protocol's entries arrive: its own verdict, from its own entries
    findings = assess_all([two_protocols()], {"p": pair(range(60), range(40)), "q": pair(range(40), range(60))})
    assert [(f.protocol, f.verdict) for f in findings] == [("p", SUPPORTED), ("q", CONTRADICTED)]
    # one entry of the pair missing: named, as before
    only_a = assess_all([two_protocols()], {"q": {"a": v2("a", range(50))}})
    assert only_a[1].note == "no entry for b under q" and only_a[0].note == "no entries yet under p"


@pytest.mark.parametrize(
    ("protocols", "extra", "problem"),
    [
        ("[]", "", "protocols must be a list of protocol ids"),
        ('"p"', "", "protocols must be a list of protocol ids"),
        ('["p", "p"]', "", "protocols repeat"),
        ('["p", "q"]', 'benchmark = "t.json"\n', "a train_seconds claim names one protocol"),
    ],
)
def test_the_protocols_of_a_claim_are_checked(tmp_path: Path, protocols: str, extra: str, problem: str) -> None:
    measure = "train_seconds" if extra else "robust"
    path = tmp_path / "claims.toml"
    path.write_text(HEAD.replace('protocols = ["p"]', f"protocols = {protocols}")
                    + f'measure = "{measure}"\nexpected = "lower"\n' + extra)  # fmt: skip
    with pytest.raises(RobustdeqError, match=re.escape(problem)):
        load_claims(path)
    path.write_text(HEAD.replace("protocols = [", "protocol = [") + 'measure = "robust"\nexpected = "higher"\n')
    with pytest.raises(RobustdeqError, match=re.escape("unknown ['protocol'], missing ['protocols']")):
        load_claims(path)


MNIST_PAIRS = {
    "lyadeq-standard": ("lyadeq-standard", "deq-standard"),
    "lyadeq-trades": ("lyadeq-trades", "deq-trades"),
    "ris": ("deq-ris-pgd-at", "deq-pgd-at"),
    "entropy-reduction": ("deq-pgd-at-er", "deq-pgd-at"),
    "weight-tied-robust": ("wtm-pgd-at", "deq-pgd-at"),
    "weight-tied-clean": ("wtm-pgd-at", "deq-pgd-at"),
    "weight-tied-cost": ("wtm-pgd-at", "deq-pgd-at"),
    "jiio-robust": ("deq-jiio", "deq-pgd-at"),
}


def test_the_shipped_claims_test_the_mnist_tiers_pairs_on_digits_and_mnist() -> None:
    claims = {c.id: c for c in load_claims()}
    mnist = {i for i, c in claims.items() if "mnist-linf-0.3" in c.protocols}
    assert mnist == set(MNIST_PAIRS)
    for i, (first, second) in MNIST_PAIRS.items():
        assert (claims[i].first, claims[i].second) == (first, second)
        assert claims[i].protocols == ("digits-linf", "mnist-linf-0.3")
        for defense in (first, second):
            assert "mnist" in find_defense(defense).datasets, f"{defense} has no MNIST variant"
    trades = claims["lyadeq-trades"]
    assert (trades.paper, trades.measure, trades.expected) == ("https://arxiv.org/abs/2304.12707", "robust", "higher")
    digits = {e["defense"]: e for e in read_entries(REPO / "leaderboards" / "digits-linf")}
    assert {"lyadeq-trades", "deq-trades"} <= set(digits)
    found = {(f.claim.id, f.protocol): f for f in assess_all([trades], {"digits-linf": digits})}
    assert found["lyadeq-trades", "digits-linf"].difference is not None  # both digits entries: measured
    assert found["lyadeq-trades", "mnist-linf-0.3"].note == "no entries yet under mnist-linf-0.3"


def test_the_report_shows_the_mnist_verdicts_as_soon_as_the_entries_land(tmp_path: Path) -> None:
    """The shipped claims on a root with digits entries only, then with MNIST entries too."""
    root, out = tmp_path / "lb", tmp_path / "report"
    defenses = {d for pair_ in MNIST_PAIRS.values() for d in pair_}
    for defense in defenses:
        write_entry(root, v2(defense, range(50), protocol="digits-linf"))
    write_report(root, out, benchmarks=tmp_path / "none")
    md = (out / "report.md").read_text()
    assert "| claim | first vs second | measure | digits-linf | mnist-linf-0.3 | digits-l2 |" in md
    mnist = md.split("### On mnist-linf-0.3")[1].split("### On")[0]
    assert mnist.count("no entries yet under mnist-linf-0.3") == len(MNIST_PAIRS)
    html = (out / "report.html").read_text()
    assert "<h3>On mnist-linf-0.3</h3>" in html and f"<b>{NOT_EVALUATED}</b> no entries yet" in html
    for defense in defenses:
        write_entry(
            root, v2(defense, range(70) if defense == "lyadeq-trades" else range(50), protocol="mnist-linf-0.3")
        )
    write_report(root, out, benchmarks=tmp_path / "none")
    mnist = (out / "report.md").read_text().split("### On mnist-linf-0.3")[1].split("### On")[0]
    assert "no entries yet" not in mnist
    row = next(line for line in mnist.splitlines() if "lyadeq-trades vs deq-trades" in line)
    assert "+20.0 [" in row and f"**{SUPPORTED}**" in row


def test_a_circular_claim_without_entries_says_no_entries_yet() -> None:
    found = assess(claim("lower", "forward_cost", 0.1, circular="by design"), {})
    assert found.verdict == NOT_EVALUATED and found.note == "no entries yet under p"
