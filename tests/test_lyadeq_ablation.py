"""benchmarks/lyadeq_ablation.py: an arm's cached entry is reused only with the protocol, manifest and code it
was computed with (the ablation itself is run by hand, not here)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

from robustdeq.records.defense import load_defense
from robustdeq.records.protocol import find_protocol
from tests.conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
ARM = "lyadeq-unconstrained-only-standard"


def module() -> ModuleType:
    return load_benchmark("lyadeq_ablation")


def test_every_arm_folder_is_run_and_the_new_arm_is_among_them() -> None:
    ablation = module()
    assert "unconstrained-only" in ablation.ARMS
    for recipe in ablation.RECIPES:
        for arm in ablation.ARMS:
            assert load_defense(REPO / "benchmarks" / "ablations" / f"lyadeq-{arm}-{recipe}").id


def test_a_cached_arm_entry_is_reused_only_with_its_protocol_manifest_and_code(tmp_path: Path) -> None:
    ablation = module()
    protocol = find_protocol("digits-linf")
    folder = tmp_path / "ablations" / ARM
    folder.mkdir(parents=True)
    manifest = (REPO / "benchmarks" / "ablations" / ARM / "defense.toml").read_text()
    (folder / "defense.toml").write_text(manifest)
    out = tmp_path / "out"
    (out / protocol.id).mkdir(parents=True)
    # A valid entry of this protocol stands in for the arm's (only its key matters here).
    shutil.copy(REPO / "leaderboards" / protocol.id / "lyadeq-standard.json", out / protocol.id / f"{ARM}.json")
    code = ablation.code_hash()
    defense = load_defense(folder)

    assert ablation.cached_entry(out, defense, protocol, code) is None  # no key: an entry from an older script
    ablation.remember(out, defense, protocol, code)
    cached = ablation.cached_entry(out, defense, protocol, code)
    assert cached is not None and cached["protocol_hash"] == protocol.hash

    # A changed manifest (one more epoch) invalidates it; so does a comment, and so does other code.
    (folder / "defense.toml").write_text(manifest.replace("epochs = 15", "epochs = 16"))
    assert ablation.cached_entry(out, load_defense(folder), protocol, code) is None
    (folder / "defense.toml").write_text(manifest + "# a note\n")
    assert ablation.cached_entry(out, load_defense(folder), protocol, code) is None
    (folder / "defense.toml").write_text(manifest)
    assert ablation.cached_entry(out, load_defense(folder), protocol, code) is not None
    assert ablation.cached_entry(out, load_defense(folder), protocol, "0" * 64) is None


def test_the_code_hash_follows_the_modules_that_build_train_and_evaluate_the_model(tmp_path: Path) -> None:
    ablation = module()
    package = tmp_path / "robustdeq"
    shutil.copytree(REPO / "robustdeq", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = ablation.code_hash(package)
    assert before == ablation.code_hash()
    reader = package / "leaderboard" / "render.py"
    reader.write_text(reader.read_text() + "\n# a reader: not part of an arm's entry\n")
    assert ablation.code_hash(package) == before
    model = package / "models" / "lyapunov.py"
    model.write_text(model.read_text().replace("features = channels * 16", "features = channels * 16  # edited"))
    assert ablation.code_hash(package) != before
