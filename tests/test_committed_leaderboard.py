"""The committed reference leaderboard is valid and shows what the README claims of it."""

from pathlib import Path

import pytest

from robustdeq.leaderboard import read_entries, table
from robustdeq.specs import find_protocol, list_defenses

FOLDER = Path(__file__).resolve().parent.parent / "leaderboards" / "digits-linf"


@pytest.fixture(scope="module")
def entries() -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["defense"]: e for e in read_entries(FOLDER)}


def test_one_entry_per_reference_defense_under_the_current_protocol(entries: dict) -> None:  # type: ignore[type-arg]
    assert set(entries) == set(list_defenses())
    protocol = find_protocol("digits-linf")
    for entry in entries.values():
        assert entry["protocol_hash"] == protocol.hash, "re-run `robustdeq bench`: the protocol changed"
        assert entry["n_examples"] == protocol.n_examples and not entry["provenance"]["reduced_budget"]
    table(list(entries.values()))  # renders: one protocol version


def test_reference_deqs_are_real_equilibrium_models(entries: dict) -> None:  # type: ignore[type-arg]
    for entry in entries.values():
        if entry["model_family"] not in ("deq", "lyadeq"):
            continue
        # Attacked under every gradient mode, and the doubled-solver check ran.
        assert {"pgd", "pgd@unroll", "pgd@phantom", "pgd@states"} <= set(entry["attacks"])
        assert {"clean-solver-2x", "pgd-solver-2x"} <= set(entry["checks"])
        if entry["model_family"] == "deq":
            assert "transfer" in entry["attacks"]  # from the explicit twin
        solver = entry["solver"]
        assert solver["settings"]["f_tol"] <= 1e-3 and solver["settings"]["f_stop_mode"] == "rel"
        assert solver["nonconverged_clean"] <= 0.01 and solver["nonconverged_adversarial"] <= 0.01
        assert solver["attack_grad_modes"] == ["ift"]


def test_adversarial_training_helps_and_autoattack_is_at_least_as_strong_as_pgd(entries: dict) -> None:  # type: ignore[type-arg]
    assert entries["deq-pgd-at"]["robust_accuracy"] > entries["deq-standard"]["robust_accuracy"] + 0.2
    assert entries["cnn-pgd-at"]["robust_accuracy"] > entries["cnn-standard"]["robust_accuracy"] + 0.2
    loop_flags = {"test_time_optimisation", "autoattack_dynamic_defense"}
    for entry in entries.values():
        assert entry["attacks"]["autoattack"] <= entry["attacks"]["pgd"]
        if "entropy_reduction" in entry["model_settings"]:
            # An inference-time loop is flagged by us and by AutoAttack (gradients in the forward).
            assert loop_flags <= set(entry["flags"])
            assert {"pgd+unroll", "pgd+skip"} <= set(entry["attacks"])
        else:
            assert not entry["flags"]
