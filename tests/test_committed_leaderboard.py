"""The committed reference leaderboards are valid, their checkpoints are the ones the entries name,
and they show what the README claims of them."""

import json
import shutil
from pathlib import Path

import pytest

from robustdeq.checkpoint import sha256
from robustdeq.leaderboard import read_entries, render, table
from robustdeq.records.defense import find_defense, list_defenses
from robustdeq.records.protocol import find_protocol
from robustdeq.records.store import protocol_folders
from robustdeq.zoo import INDEX, list_models

ROOT = Path(__file__).resolve().parent.parent / "leaderboards"
FOLDER = ROOT / "digits-linf"
RENDERED = sorted([*protocol_folders(ROOT), *protocol_folders(ROOT / "sweeps")])  # every folder with tables


def read(protocol: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["defense"]: e for e in read_entries(ROOT / protocol)}


@pytest.fixture(scope="module")
def entries() -> dict[str, dict]:  # type: ignore[type-arg]
    return read("digits-linf")


@pytest.mark.parametrize("protocol", ["digits-linf", "digits-l2"])
def test_one_entry_per_reference_defense_under_the_current_protocol(protocol: str) -> None:
    expected = {d for d in list_defenses() if protocol in (find_defense(d).protocols or ("digits-linf",))}
    found = read(protocol)
    assert set(found) == expected
    spec = find_protocol(protocol)
    for entry in found.values():
        assert entry["protocol_hash"] == spec.hash, "re-run `robustdeq bench`: the protocol changed"
        assert entry["n_examples"] == spec.n_examples and not entry["provenance"]["reduced_budget"]
        assert len(entry["per_example"]["robust"]) == spec.n_examples
    table(list(found.values()))  # renders: one protocol version


def test_the_mnist_entries_are_full_evaluations_of_mnist_variants_under_the_current_protocol() -> None:
    """The MNIST tier lands entry by entry: each one committed is a full run (every test image of the
    protocol, nothing reduced) of a defense with an MNIST variant in its manifest."""
    spec = find_protocol("mnist-linf-0.3")
    found = read("mnist-linf-0.3")
    assert found, "the MNIST tier has no entry"
    for name, entry in found.items():
        assert "mnist" in find_defense(name).datasets, name
        assert entry["protocol_hash"] == spec.hash, f"{name}: re-run `robustdeq bench`: the protocol changed"
        assert entry["n_examples"] == spec.n_examples == 1000 and not entry["provenance"]["reduced_budget"]
        assert len(entry["per_example"]["robust"]) == spec.n_examples


def test_every_entry_ships_the_checkpoint_it_names_and_the_zoo_index_lists_them() -> None:
    models = list_models(root=ROOT)
    assert {(m.protocol, m.name) for m in models} >= {("digits-linf", d) for d in read("digits-linf")}
    for model in models:
        assert model.file is not None and model.file.is_file(), model.name
        assert sha256(model.file) == model.sha256, f"{model.name}: checkpoint and entry disagree"
    index = (ROOT / INDEX).read_text()
    for model in models:
        assert model.sha256 in index


def test_reference_deqs_are_real_equilibrium_models(entries: dict) -> None:  # type: ignore[type-arg]
    for entry in entries.values():
        if entry["model_family"] == "lyadeq":  # read out after a fixed budget, attacked by backpropagation
            assert entry["solver"] is None and "transfer" in entry["attacks"]
            assert {"clean-readout-2x", "pgd-readout-2x"} <= set(entry["checks"])  # twice LyaDEQ's steps
            continue
        if entry["model_family"] != "deq":
            continue
        # Attacked under every gradient mode, and the doubled-solver check ran.
        assert {"pgd", "pgd@unroll", "pgd@phantom", "pgd@states"} <= set(entry["attacks"])
        assert "transfer" in entry["attacks"]  # from the explicit twin
        if entry["model_settings"].get("entropy_reduction", {}).get("readout") == "early":
            assert entry["solver"] is None  # read out after the loop's cell steps: no solve to report
            assert {"clean-readout-2x", "pgd-readout-2x"} <= set(entry["checks"])  # its budget is the loop's
            continue
        assert {"clean-solver-2x", "pgd-solver-2x"} <= set(entry["checks"])
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
        elif entry["model_family"] == "lyadeq":
            # LyaDEQ reads its state out after K steps of dynamics that decay to V's minimum whatever the input
            # (docs/lyadeq.md): twice K moves its accuracy, which the informational flag says.
            assert entry["flags"] == ["readout_budget_sensitive"]
        else:
            assert not entry["flags"]


def test_a_zoo_checkpoint_reevaluates_to_its_committed_entry_example_by_example(tmp_path: Path) -> None:
    """Evaluation of a shipped checkpoint is exact: the cheapest one, under the full protocol."""
    from typer.testing import CliRunner

    from robustdeq.cli import app

    result = CliRunner().invoke(app, ["evaluate", "zoo:digits-linf/cnn-standard", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "reproduces" in result.output and "exactly" in result.output, result.output


def test_a_zoo_mnist_checkpoint_reevaluates_to_its_committed_entry(tmp_path: Path, shared_data: Path) -> None:
    """The same on MNIST (the canonical files in ../shared/data): the non-robust CNN, 1,000 test images."""
    from typer.testing import CliRunner

    from robustdeq.cli import app

    args = ["evaluate", "zoo:mnist-linf-0.3/cnn-standard", "--data-dir", str(shared_data), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "reproduces" in result.output and "exactly" in result.output, result.output


SWEEP = sorted((ROOT / "sweeps" / "digits-linf").glob("*.json"))


@pytest.mark.parametrize("path", SWEEP, ids=[p.stem for p in SWEEP])
def test_a_sweep_checkpoint_loads_as_its_grid_point_and_classifies_as_its_entry_says(path: Path) -> None:
    """A sweep point's checkpoint carries its own depth, width and density (not the manifest's), so
    it loads, builds that point's model and predicts the clean test examples its entry records."""
    import torch

    from robustdeq.data import load
    from robustdeq.pipeline import load_trained
    from robustdeq.records.outcomes import decode_indices, unbits

    entry = json.loads(path.read_text())
    defense, trained = load_trained(path.with_suffix(".safetensors"))
    assert defense.id == entry["defense"] and defense.name == entry["defense_name"]
    assert defense.model.settings == entry["model_settings"]
    test = load("digits", "test")
    index = torch.tensor(decode_indices(entry["per_example"]["indices"]))
    with torch.no_grad():
        correct = trained.model.eval()(test.x[index]).argmax(1) == test.y[index]
    assert correct.tolist() == unbits(entry["per_example"]["clean_correct"])


@pytest.mark.parametrize("folder", RENDERED, ids=[p.relative_to(ROOT).as_posix() for p in RENDERED])
def test_the_committed_tables_are_what_the_renderer_writes(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / folder.name
    copy.mkdir()
    for path in [*folder.glob("*.json"), *folder.glob("published.toml")]:  # entries, seed spread, published
        shutil.copy(path, copy / path.name)
    for written in render(read_entries(copy), copy):
        assert written.read_text() == (folder / written.name).read_text(), (
            f"re-render with: robustdeq leaderboard {folder.parent.relative_to(ROOT.parent)}"
        )


def test_the_committed_table_shows_the_training_seed_spread_and_its_protocol_version() -> None:
    text = (FOLDER / "leaderboard.md").read_text()
    assert "46.0 [36.6, 55.7]; seeds 0-2: 37.0-46.0, sd 4.7 (protocol v2) |" in text  # deq-pgd-at
    assert "54.0 [44.3, 63.4]; seeds 0-2: 43.0-54.0, sd 5.9 (protocol v2) |" in text  # cnn-pgd-at


def test_the_readme_tables_are_the_entries() -> None:
    """The README's leaderboard blocks are what `robustdeq leaderboard` renders from the committed entries."""
    from robustdeq.leaderboard.readme import block, readme_blocks

    blocks = readme_blocks(ROOT.parent / "README.md")
    assert "mnist-linf-0.3" in blocks
    for protocol, body in blocks.items():
        assert body == block(ROOT / protocol), f"run `robustdeq leaderboard`: the README's {protocol} table is stale"
