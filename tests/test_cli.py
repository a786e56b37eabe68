"""The CLI end to end with typer's CliRunner, on tiny budgets."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.pipeline import load_trained

runner = CliRunner()

TINY = ["--epochs", "1", "--train-subset", "200", "--quiet"]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "command",
    [["bench"], ["train"], ["evaluate"], ["leaderboard"], ["report"], ["submit"], ["data"], ["data", "list"],
     ["data", "download"]],
)  # fmt: skip
def test_every_command_has_help(command: list[str]) -> None:
    code, out = run(*command, "--help")
    assert code == 0
    assert "Usage" in out and len(out.strip().splitlines()) > 5


def numbers(folder: Path) -> dict[str, tuple[float, float, dict[str, float]]]:
    out = {}
    for path in sorted(folder.glob("*.json")):
        e = json.loads(path.read_text())
        out[e["defense"]] = (e["clean_accuracy"], e["robust_accuracy"], e["attacks"])
    return out


def test_bench_writes_entries_and_tables_and_is_deterministic(tiny_protocol: Path, tmp_path: Path) -> None:
    args = ["bench", "--protocol", str(tiny_protocol), "--defenses", "cnn-standard,deq-pgd-at", *TINY]
    code, out = run(*args, "--out", str(tmp_path / "a"))
    assert code == 0, out
    folder = tmp_path / "a" / "tiny-digits"
    assert sorted(p.name for p in folder.iterdir()) == [
        "cnn-standard.json", "cnn-standard.safetensors", "deq-pgd-at.json", "deq-pgd-at.safetensors",
        "leaderboard.csv", "leaderboard.html", "leaderboard.md",
    ]  # fmt: skip
    assert (tmp_path / "a" / "zoo.json").is_file()
    entry = json.loads((folder / "deq-pgd-at.json").read_text())
    assert entry["provenance"]["training"]["recipe"] == "pgd_at"
    assert entry["provenance"]["training"]["recipe_settings"]["eps"] == 0.2
    assert entry["solver"]["settings"]["f_solver"] == "anderson"
    assert "reduced_budget" in entry["flags"]
    assert "cnn-standard" in out and "robust %" in out  # the terminal summary
    code, _ = run(*args, "--out", str(tmp_path / "b"))
    assert code == 0
    assert numbers(folder) == numbers(tmp_path / "b" / "tiny-digits")


def test_bench_on_mnist_from_data_dir(shared_data: Path, tmp_path: Path) -> None:
    code, out = run(
        "bench", "--protocol", "mnist-linf-0.3", "--data-dir", str(shared_data), "--defenses", "cnn-standard",
        "--n-examples", "8", "--out", str(tmp_path), *TINY,
    )  # fmt: skip
    assert code == 0, out
    entry = json.loads((tmp_path / "mnist-linf-0.3" / "cnn-standard.json").read_text())
    assert entry["dataset"] == "mnist" and entry["n_examples"] == 8


def test_missing_data_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    code, out = run("bench", "--protocol", "mnist-linf-0.3", "--data-dir", "/nonexistent", "--out", str(tmp_path))
    assert code == 1
    assert out.strip().startswith("error:") and "--download" in out
    assert len(out.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--defenses", "nope"], "unknown defense 'nope'"),
        (["bench", "--protocol", "nope"], "unknown protocol 'nope'"),
        (["leaderboard", "/nonexistent"], "no such leaderboard folder"),
        (["evaluate", "/nonexistent"], "no checkpoint there"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args: list[str], message: str) -> None:
    code, out = run(*args)
    assert code == 1 and message in out


def test_train_evaluate_leaderboard_report(tiny_protocol: Path, tmp_path: Path) -> None:
    code, out = run("train", "deq-standard", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs"), *TINY)
    assert code == 0, out
    ckpt = tmp_path / "runs" / "tiny-digits" / "deq-standard"
    assert (ckpt / "model.safetensors").is_file()
    code, out = run("evaluate", str(ckpt), "--protocol", str(tiny_protocol), "--out", str(tmp_path / "lb"), "--quiet")
    assert code == 0, out
    assert (tmp_path / "lb" / "tiny-digits" / "deq-standard.json").is_file()
    lb2 = str(tmp_path / "lb2")
    code, out = run("evaluate", str(ckpt), "--protocol", str(tiny_protocol), "--out", lb2, "--eps-sweep", "0.3,0.1")
    assert code == 1 and "--eps-sweep" in out and not (tmp_path / "lb2" / "tiny-digits" / "deq-standard.json").exists()
    code, out = run(
        "evaluate", str(ckpt), "--protocol", str(tiny_protocol), "--out", lb2, "--eps-sweep", "0.05,0.3", "--quiet"
    )
    assert code == 0, out
    entry = json.loads((tmp_path / "lb2" / "tiny-digits" / "deq-standard.json").read_text())
    assert [p["eps"] for p in entry["eps_sweep"]["points"]] == [0.05, 0.3]
    (tmp_path / "lb" / "tiny-digits" / "leaderboard.md").unlink()
    code, out = run("leaderboard", str(tmp_path / "lb"))
    assert code == 0 and (tmp_path / "lb" / "tiny-digits" / "leaderboard.md").is_file()
    code, out = run("report", str(tmp_path / "lb"), "--out", str(tmp_path / "report"))
    assert code == 0, out
    assert (tmp_path / "report" / "tiny-digits-accuracy.png").stat().st_size > 1000
    assert "data:image/png;base64," in (tmp_path / "report" / "report.html").read_text()


def test_submit_validates_before_training(tmp_path: Path) -> None:
    code, out = run("submit", str(tmp_path / "missing"), "--out", str(tmp_path / "lb"))
    assert code == 1 and "no such defense folder" in out
    folder = tmp_path / "mine"
    folder.mkdir()
    code, out = run("submit", str(folder), "--out", str(tmp_path / "lb"))
    assert code == 1 and "missing manifest" in out
    (folder / "defense.toml").write_text('name = "x"\n[model]\nfamily = "resnet9000"\n[train]\n')
    code, out = run("submit", str(folder), "--out", str(tmp_path / "lb"))
    assert code == 1 and "unknown model family 'resnet9000'" in out
    assert not (tmp_path / "lb").exists()


def test_data_list_shows_embedded_digits() -> None:
    code, out = run("data", "list")
    assert code == 0 and "digits" in out and "embedded" in out


def test_sweep_writes_one_entry_per_point_and_the_report_plots_each_knob(tiny_protocol: Path, tmp_path: Path) -> None:
    code, out = run(
        "sweep", "wtm-pgd-at", "--depth", "2,3", "--density", "0.5,1.0", "--width", "8",
        "--protocol", str(tiny_protocol), "--out", str(tmp_path / "sweeps"), *TINY,
    )  # fmt: skip
    assert code == 0, out
    folder = tmp_path / "sweeps" / "tiny-digits"
    ids = sorted(p.stem for p in folder.glob("*.json"))
    assert ids == [
        "wtm-pgd-at-l2-w8-d0.5", "wtm-pgd-at-l2-w8-d1", "wtm-pgd-at-l3-w8-d0.5", "wtm-pgd-at-l3-w8-d1",
    ]  # fmt: skip
    entry = json.loads((folder / "wtm-pgd-at-l3-w8-d0.5.json").read_text())
    assert entry["model_settings"]["depth"] == 3 and entry["model_settings"]["density"] == 0.5
    assert entry["forward_cost"] == 3.0
    # the point's checkpoint carries the point's settings, not the manifest's (depth 12, 16 channels)
    defense, trained = load_trained(folder / "wtm-pgd-at-l3-w8-d0.5.safetensors")
    assert defense.model.settings["depth"] == 3 and defense.model.settings["channels"] == 8
    assert defense.name == entry["defense_name"] and defense.name.endswith("(l3, w8, d0.5)")
    code, out = run("report", str(tmp_path / "sweeps"), "--out", str(tmp_path / "report"))
    assert code == 0, out
    assert (tmp_path / "report" / "tiny-digits-knobs.png").stat().st_size > 1000
    assert "tiny-digits-knobs.png" in (tmp_path / "report" / "report.md").read_text()


def test_sweep_rejects_bad_values_before_training(tmp_path: Path) -> None:
    code, out = run("sweep", "wtm-pgd-at", "--density", "0.5,2.0", "--out", str(tmp_path))
    assert code == 1 and "density must be in (0, 1]" in out
    code, out = run("sweep", "wtm-pgd-at", "--depth", "two", "--out", str(tmp_path))
    assert code == 1 and "--depth must be comma-separated ints" in out
    assert not any(tmp_path.iterdir())
