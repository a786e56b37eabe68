"""``bench --train-only``: train now, evaluate later (the MNIST tier trains before its evaluation code is
final): the first run writes no entry and keeps the finished training; the same command without the
flag evaluates that model without training it again."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from robustdeq.cli import app
from robustdeq.pipeline import training_state_file

runner = CliRunner()


def bench(out: Path, *extra: str) -> str:
    args = ["bench", "--defenses", "cnn-standard", "--epochs", "1", "--train-subset", "64", "--n-examples", "4"]
    result = runner.invoke(app, [*args, "--jobs", "1", "--out", str(out), "--force", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_only_keeps_the_training_and_the_next_run_evaluates_without_retraining(tmp_path: Path) -> None:
    said = bench(tmp_path, "--train-only")
    state = training_state_file(tmp_path, "digits-linf", "cnn-standard")
    assert state.is_file() and "without --train-only evaluates them" in said
    assert not (tmp_path / "digits-linf" / "cnn-standard.json").exists()

    said = bench(tmp_path)
    assert "resumed training of cnn-standard after epoch 1 of 1" in said
    assert (tmp_path / "digits-linf" / "cnn-standard.json").is_file() and not state.exists()
