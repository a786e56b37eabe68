import shutil
from pathlib import Path

import pytest

from robustdeq.errors import RobustdeqError
from robustdeq.models import MODELS
from robustdeq.records.defense import list_defenses, load_defense
from robustdeq.records.paths import DEFENSES_DIR
from robustdeq.records.protocol import find_protocol, list_protocols, load_protocol
from robustdeq.training import RECIPES


def test_reference_defenses_load() -> None:
    names = list_defenses(DEFENSES_DIR)
    assert {"deq-standard", "deq-pgd-at", "cnn-standard", "cnn-pgd-at"} <= set(names)
    for name in names:
        spec = load_defense(DEFENSES_DIR / name)
        assert spec.model.family in MODELS
        assert spec.train.recipe in RECIPES


def test_suites_split_the_reference_defenses(tmp_path: Path) -> None:
    core, extended = list_defenses(DEFENSES_DIR, "core"), list_defenses(DEFENSES_DIR, "extended")
    assert {"deq-pgd-at", "cnn-pgd-at", "lyadeq-pgd-at"} <= set(core)
    assert {"lyadeq-standard", "fed-deq-quality", "deq-pgd-at-er"} <= set(extended)
    assert sorted(core + extended) == list_defenses(DEFENSES_DIR, "all") == list_defenses(DEFENSES_DIR)
    with pytest.raises(RobustdeqError, match="unknown suite"):
        list_defenses(DEFENSES_DIR, "nightly")
    folder = tmp_path / "odd"
    folder.mkdir()
    manifest = (DEFENSES_DIR / "deq-standard" / "defense.toml").read_text()
    (folder / "defense.toml").write_text('suite = "nightly"\n' + manifest)
    with pytest.raises(RobustdeqError, match="suite must be one of core, extended"):
        load_defense(folder)


def test_shipped_protocols_load() -> None:
    assert {"digits-linf", "mnist-linf-0.3", "mnist-l2-2.0", "cifar10-linf-8-255", "cifar10-l2-0.5"} <= set(
        list_protocols()
    )
    for name in list_protocols():
        spec = find_protocol(name)
        assert spec.hash and spec.attacks
    mnist = find_protocol("mnist-l2-2.0")
    assert (mnist.threat.norm, mnist.threat.eps) == ("L2", 2.0)
    cifar = find_protocol("cifar10-linf-8-255")
    assert cifar.threat.eps == pytest.approx(8 / 255)


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "d"
    folder.mkdir(exist_ok=True)
    (folder / "defense.toml").write_text(text)
    return folder


def test_manifest_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(RobustdeqError, match="missing manifest"):
        load_defense(tmp_path)
    with pytest.raises(RobustdeqError, match="malformed TOML"):
        load_defense(write(tmp_path, "name = "))
    with pytest.raises(RobustdeqError, match="missing field 'name'"):
        load_defense(write(tmp_path, "[model]\nfamily='deq'\n[train]\n"))
    base = 'name = "x"\n[model]\nfamily = "deq"\n[train]\nepochs = 1\n'
    with pytest.raises(RobustdeqError, match="unknown field 'colour'"):
        load_defense(write(tmp_path, 'colour = "red"\n' + base))
    with pytest.raises(RobustdeqError, match="'epochs' must be int"):
        load_defense(write(tmp_path, base.replace("epochs = 1", 'epochs = "1"')))
    with pytest.raises(RobustdeqError, match="f_solver must be one of"):
        load_defense(write(tmp_path, base + '[solver]\nf_solver = "newton"\n'))


def test_protocol_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'version = 1\ndataset = "digits"\n[threat_model]\nnorm = "L3"\neps = 0.1\n[subset]\nn_examples = 5\n'
    )
    with pytest.raises(RobustdeqError, match="norm must be one of"):
        load_protocol(path)
    with pytest.raises(RobustdeqError, match="unknown protocol 'nope'"):
        find_protocol("nope")


def test_every_reference_defense_has_a_fidelity_record_and_the_page_is_current() -> None:
    from robustdeq.fidelity import PAGE_PATH, render_page

    for name in list_defenses(DEFENSES_DIR):
        fidelity = load_defense(DEFENSES_DIR / name).fidelity
        assert fidelity is not None and fidelity.title
        assert all(d.kind in ("cpu-budget", "unknown-in-paper", "our-choice") for d in fidelity.deviations)
    assert PAGE_PATH.read_text() == render_page(), "run `robustdeq fidelity` to render docs/fidelity.md"


def test_the_readme_table_of_reference_defenses_is_the_manifests(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from robustdeq.cli import app
    from robustdeq.fidelity import README_PATH, readme_methods, render_methods

    block = render_methods()
    assert readme_methods(README_PATH) == block, "run `robustdeq fidelity` to render the README's table of methods"
    rows = [line for line in block.splitlines() if line.startswith("| [`")]
    assert len(rows) == len(list_defenses(DEFENSES_DIR))
    ris = next(r for r in rows if r.startswith("| [`deq-ris-pgd-at`]"))
    assert "random intermediate states after 1..8 solver steps" in ris
    er = next(r for r in rows if r.startswith("| [`deq-pgd-at-er`]"))
    assert "4 rounds x (2 cell steps + 10 sign steps of 0.05), radius 0.2" in er

    # A changed manifest changes the block, and `robustdeq fidelity` rewrites only the block.
    defenses = tmp_path / "defenses"
    shutil.copytree(DEFENSES_DIR / "deq-ris-pgd-at", defenses / "deq-ris-pgd-at")
    manifest = defenses / "deq-ris-pgd-at" / "defense.toml"
    manifest.write_text(manifest.read_text().replace("max_steps = 8", "max_steps = 6"))
    readme = tmp_path / "README.md"
    readme.write_text("before\n\n<!-- methods:start -->\nstale\n<!-- methods:end -->\n\nafter\n")
    args = [
        "fidelity",
        "--out",
        str(tmp_path / "fidelity.md"),
        "--readme",
        str(readme),
        "--defenses-dir",
        str(defenses),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert text.startswith("before\n\n<!-- methods:start -->") and text.endswith("<!-- methods:end -->\n\nafter\n")
    assert "1..6 solver steps" in text and "stale" not in text and text.count("| [`") == 1
    readme.write_text("no markers\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "needs one <!-- methods:start --> line" in result.output


def test_a_reference_defense_without_fidelity_or_with_an_unknown_field_is_a_one_line_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from robustdeq.cli import app

    manifest = (DEFENSES_DIR / "cnn-standard" / "defense.toml").read_text()
    bare = manifest[: manifest.index("\n# What the paper did")] + "\n"
    defenses = tmp_path / "defenses"
    (defenses / "mine").mkdir(parents=True)
    (defenses / "mine" / "defense.toml").write_text(bare)
    args = ["bench", "--defenses-dir", str(defenses), "--out", str(tmp_path / "lb"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "needs a [fidelity] record" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "lb").exists()
    (defenses / "mine" / "defense.toml").write_text(
        manifest.replace('venue = "robustdeq baseline"', 'venue = "x"\ncolour = "red"')
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "unknown field 'colour'" in result.output
    # A user submission may omit the record.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "defense.toml").write_text(bare)
    assert load_defense(tmp_path / "sub").fidelity is None
