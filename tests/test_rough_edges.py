"""What a new user meets with bad input (issue 24): one line on stderr, a non-zero exit, and
nothing written or half-written."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import robustdeq
from robustdeq.cli import app
from tests.conftest import TINY_PROTOCOL

runner = CliRunner()

COMMANDS = [
    ["bench"], ["train"], ["evaluate"], ["leaderboard"], ["report"], ["site"], ["submit"], ["sweep"], ["zoo"],
    ["fidelity"], ["challenge"],
    ["data"], ["data", "list"], ["data", "download"],
]  # fmt: skip


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def one_line_error(code: int, out: str, message: str) -> None:
    assert code == 1, out
    assert out.startswith("error: ") and len(out.strip().splitlines()) == 1, out
    assert message in out, out


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("command", COMMANDS)
def test_dash_h_is_help(command: list[str]) -> None:
    code, out = run(*command, "-h")
    assert code == 0, out
    assert out == run(*command, "--help")[1]


def test_version() -> None:
    code, out = run("--version")
    assert code == 0 and out.strip() == f"robustdeq {robustdeq.__version__}"


def test_help_texts_are_printed_verbatim() -> None:
    code, out = run("evaluate", "--help")
    assert code == 0
    assert "[eps_sweep]" in " ".join(out.split())  # rich markup ate it
    assert "…" not in out  # nor cut a help text short
    assert "leaderboard.html" in " ".join(run("leaderboard", "--help")[1].split())


def every_command() -> dict[str, Any]:
    """Every command of the CLI by its path (``data list``), walked from the application itself."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if path and not getattr(command, "commands", None):
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def test_one_grammar_no_braces_in_usage_lines_and_every_root_is_an_argument() -> None:
    commands = every_command()
    assert sorted(commands) == sorted(" ".join(c) for c in COMMANDS if c != ["data"])
    for path, command in commands.items():
        code, out = run(*path.split(), "--help")
        usage = out.split("\n\n", 1)[0]
        assert code == 0 and usage.startswith("Usage:") and "{" not in usage and "}" not in usage, (path, usage)
        roots = [p for p in command.params if p.name == "root"]
        assert all(p.param_type_name == "argument" for p in roots), path
    assert {path for path, c in commands.items() if any(p.name == "root" for p in c.params)} == {
        "leaderboard", "report", "site", "zoo", "challenge"
    }  # fmt: skip
    assert "--download" not in " ".join(run("data", "list", "--help")[1].split())


def test_every_protocol_option_takes_a_comma_list_and_repeats_alike() -> None:
    with_protocol = {path: c for path, c in every_command().items() if any(p.name == "protocol" for p in c.params)}
    assert sorted(with_protocol) == ["bench", "evaluate", "leaderboard", "report", "submit", "sweep", "train", "zoo"]
    forms = [["--protocol", "a,b"], ["--protocol", "a", "--protocol", "b"], ["--protocol", " a, b,", "--protocol", "a"]]
    for path, command in with_protocol.items():
        required = ["x" for p in command.params if p.required and p.param_type_name == "argument"]
        parsed = [command.make_context(path, [*required, *form]) for form in forms]
        assert [ctx.params["protocol"] for ctx in parsed] == [["a", "b"]] * len(forms), path
        assert command.make_context(path, required).params["protocol"] is None, path
    report = with_protocol["report"]
    assert report.make_context("report", ["--protocols", "a,b"]).params["protocols"] == ["a", "b"]  # the old name


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    code, out = run("train", "cnn-standard", "--epochs", "0", "--out", str(runs), "--quiet")
    assert code == 0, out
    return runs / "digits-linf" / "cnn-standard" / "model.safetensors"


def with_meta(checkpoint: Path, target: Path, **changes: Any) -> Path:
    with safe_open(str(checkpoint), framework="pt") as handle:
        header = handle.metadata()
    meta = json.loads(header["meta"]) | changes
    save_file(load_file(str(checkpoint)), str(target), metadata={**header, "meta": json.dumps(meta)})
    return target


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"training": "x"}, "meta.training: expected object"),
        ({"training": {}}, "meta.training: missing key 'recipe'"),
        ({"dataset": 3}, "meta.dataset: expected string"),
        ({"defense": "../x y"}, "metadata names defense '../x y', not a plain lowercase name"),
        ({"manifest": 5}, "meta.manifest: expected string"),
        ({"files": ["model.py"]}, "meta.files: expected object"),
        ({"files": {"model.py": 3}}, "meta.files.model.py: expected string"),
        ({"protocol": 7}, "meta.protocol: expected string"),
        ({"train_seconds": "abc"}, "meta.train_seconds: expected number"),
        ({"defense_path": 3}, "meta.defense_path: expected string"),
    ],
)
def test_a_damaged_checkpoint_is_a_one_line_error(
    checkpoint: Path, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    bad = with_meta(checkpoint, tmp_path / "bad.safetensors", **changes)
    code, out = run("evaluate", str(bad), "--out", str(tmp_path / "lb"), "--n-examples", "2", "--quiet")
    one_line_error(code, out, message)
    assert files_under(tmp_path / "lb") == [] and not (tmp_path / "x y.json").exists()


@pytest.mark.parametrize("sweep", ["inf", "0.1,1e309", "nan", "0.1,nan"])
def test_eps_sweep_must_be_finite(checkpoint: Path, tmp_path: Path, sweep: str) -> None:
    code, out = run("evaluate", str(checkpoint), "--out", str(tmp_path / "lb"), "--eps-sweep", sweep)
    one_line_error(code, out, "must be finite eps values")
    assert files_under(tmp_path / "lb") == []


def test_a_protocol_id_must_be_a_plain_name(tmp_path: Path) -> None:
    protocol = tmp_path / "p.toml"
    protocol.write_text('id = "../up"\nversion = 1\ndataset = "digits"\n[threat_model]\nnorm = "Linf"\neps = 0.1\n')
    code, out = run("bench", "--protocol", str(protocol), "--defenses", "cnn-standard", "--out", str(tmp_path / "lb"))
    one_line_error(code, out, "protocol id '../up' is not a plain lowercase name")
    assert not (tmp_path / "lb").exists()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in files_under(folder)}


def test_a_reduced_run_does_not_replace_a_full_entry_without_force(
    checkpoint: Path, tiny_protocol: Path, tmp_path: Path
) -> None:
    lb = tmp_path / "lb"
    evaluate = ["evaluate", str(checkpoint), "--protocol", str(tiny_protocol), "--out", str(lb), "--quiet"]
    code, out = run(*evaluate, "--n-examples", "4")
    assert code == 0, out
    path = lb / "tiny-digits" / "cnn-standard.json"
    entry = json.loads(path.read_text())
    entry["flags"].remove("reduced_budget")  # as if a full run had written it
    entry["provenance"]["reduced_budget"] = False
    path.write_text(json.dumps(entry))
    before = snapshot(lb)
    code, out = run(*evaluate, "--n-examples", "4")
    one_line_error(code, out, "is a full entry and this run is not (--n-examples 4 (the protocol says 24)")
    assert "pass --force" in out
    code, out = run(*evaluate)  # the checkpoint was trained for 0 epochs
    one_line_error(code, out, "this run is not (a checkpoint trained with a reduced budget)")
    bench = ["bench", "--defenses", "cnn-standard", "--protocol", str(tiny_protocol), "--out", str(lb)]
    code, out = run(*bench, "--epochs", "1", "--n-examples", "4", "--quiet")
    one_line_error(code, out, "this run is not (--epochs 1 (the manifest says")
    assert snapshot(lb) == before
    code, out = run(*evaluate, "--n-examples", "4", "--force")
    assert code == 0, out
    assert json.loads(path.read_text())["provenance"]["reduced_budget"]


def test_a_defense_named_twice_is_refused(tmp_path: Path) -> None:
    code, out = run("bench", "--defenses", "cnn-standard,cnn-standard", "--out", str(tmp_path / "lb"))
    one_line_error(code, out, "--defenses names 'cnn-standard' more than once")
    assert not (tmp_path / "lb").exists()


NO_GRAD_MODEL = """
import torch
from torch import nn
class Frozen(nn.Module):
    def __init__(self, n_in, num_classes):
        super().__init__()
        self.linear = nn.Linear(n_in, num_classes)
    def forward(self, x):
        with torch.no_grad():
            return self.linear(x.flatten(1))
def make_model(in_shape, num_classes):
    return Frozen(in_shape[0] * in_shape[1] * in_shape[2], num_classes)
"""


@pytest.mark.parametrize(
    "model, message",
    [
        ("import sys\nsys.exit(3)\n", "importing it raised SystemExit: 3"),
        ("import sys\ndef make_model(in_shape, num_classes):\n    sys.exit(4)\n", "make_model() raised SystemExit: 4"),
        (NO_GRAD_MODEL, "model check: the output carries no gradient"),
    ],
)
@pytest.mark.parametrize("command", ["submit", "train"])
def test_a_broken_model_py_is_a_one_line_error(tmp_path: Path, command: str, model: str, message: str) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "defense.toml").write_text('name = "m"\n[model]\nfactory = "model.py:make_model"\n[train]\nepochs = 1\n')
    (folder / "model.py").write_text(model)
    code, out = run(command, str(folder), "--out", str(tmp_path / "out"), "--quiet")  # an absolute path
    one_line_error(code, out, message)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_evaluate_says_that_re_running_resumes(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    module = importlib.import_module("robustdeq.cli.evaluate")  # the package's attribute is the command
    monkeypatch.setattr(module, "evaluate_and_write", interrupted)
    code, out = run("evaluate", str(checkpoint), "--out", str(tmp_path / "lb"), "--quiet")
    assert code == 130, out
    assert out.startswith("error: interrupted;") and len(out.strip().splitlines()) == 1, out
    assert ".cnn-standard.state.json" in out and "resumes" in out


def as_in_a_terminal() -> None:
    """SIGINT handled as in a terminal's foreground job, however the test run was started: a shell
    script's background job (``pytest ... &``) starts with SIGINT ignored, and its children inherit
    that, so Ctrl-C would never reach them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def long_bench(protocol: Path, tmp_path: Path) -> list[str]:
    """``bench --jobs 2`` of a quick defense beside one that trains for minutes."""
    return [
        sys.executable, "-m", "robustdeq", "bench", "--defenses", "cnn-standard,deq-pgd-at", "--jobs", "2",
        "--protocol", str(protocol), "--epochs", "200", "--out", str(tmp_path / "lb"), "--quiet",
    ]  # fmt: skip


def session_processes(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid`` (from /proc: Linux only)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_ctrl_c_during_bench_jobs_2_stops_every_worker_with_one_line(tiny_protocol: Path, tmp_path: Path) -> None:
    command = long_bench(tiny_protocol, tmp_path)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=as_in_a_terminal
    )
    deadline = time.monotonic() + 300
    while len(session_processes(process.pid)) < 3 and time.monotonic() < deadline:  # the parent and 2 workers
        time.sleep(0.5)
    time.sleep(5)  # the workers import torch and start training
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = process.communicate(timeout=300)
    lines = [line for line in stderr.decode().strip().splitlines() if not line.endswith(": started")]
    assert process.returncode == 130, lines
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), lines
    deadline = time.monotonic() + 30
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert session_processes(process.pid) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_a_killed_bench_jobs_2_stops_like_ctrl_c_without_leaked_semaphores(tiny_protocol: Path, tmp_path: Path) -> None:
    """SIGTERM to the parent alone (what `timeout` and batch schedulers send): workers stopped, one line, and
    no resource_tracker warning about leaked semaphores at exit."""
    process = subprocess.Popen(
        long_bench(tiny_protocol, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while len(session_processes(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(5)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    text = stderr.decode()
    lines = [line for line in text.strip().splitlines() if not line.endswith(": started")]
    assert process.returncode == 130 and "leaked" not in text and "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), lines
    deadline = time.monotonic() + 30
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert session_processes(process.pid) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_ctrl_c_after_one_defense_finished_still_stops_bench(tiny_protocol: Path, tmp_path: Path) -> None:
    command = long_bench(tiny_protocol, tmp_path)
    log = tmp_path / "stderr.txt"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True, preexec_fn=as_in_a_terminal
        )
        deadline = time.monotonic() + 300
        while "(1/2 done)" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "(1/2 done)" in log.read_text() and process.poll() is None
        time.sleep(2)
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    lines = log.read_text().strip().splitlines()
    assert process.returncode == 130, lines
    assert lines[-1].startswith("error: interrupted"), lines
    # with --jobs 2 as with one, each defense is seen starting, and the finished one with its time and numbers
    assert {"cnn-standard under tiny-digits: started", "deq-pgd-at under tiny-digits: started"} <= set(lines), lines
    (finished,) = [line for line in lines if "(1/2 done)" in line]
    assert finished.startswith("cnn-standard under tiny-digits: done in ") and "robust" in finished, lines


@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_an_empty_leaderboard_folder_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    (tmp_path / "lb" / "digits-linf").mkdir(parents=True)
    extra = ["--out", str(tmp_path / "report")] if command == "report" else []
    code, out = run(command, str(tmp_path / "lb"), *extra)
    one_line_error(code, out, "no entries")
    assert files_under(tmp_path) == []


def test_a_failed_download_is_one_line_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets as tvd

    class Offline:  # what torchvision does without a network: folders made, a partial file, mirrors printed
        def __init__(self, root: str, download: bool, **kwargs: Any) -> None:
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            (raw / "train-images-idx3-ubyte.gz.part").write_bytes(b"\0")
            print("Downloading https://...\nFailed to download (trying next):\n<urlopen error>")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a, got:\n<urlopen error>")

    monkeypatch.setattr(tvd, "MNIST", Offline)
    kept = tmp_path / "data" / "mine.txt"
    kept.parent.mkdir()
    kept.write_text("there before")
    code, out = run("data", "download", "mnist", "--data-dir", str(tmp_path / "data"))
    one_line_error(code, out, "could not download mnist")
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == ["mine.txt"]
    code, out = run("data", "download", "mnist", "--data-dir", str(tmp_path / "new"))
    one_line_error(code, out, "Error downloading train-images-idx3-ubyte.gz")
    assert not (tmp_path / "new").exists()


def test_a_report_that_fails_part_way_leaves_its_folder_as_it_was(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent / "leaderboards"
    good, bad = tmp_path / "lb" / "digits-l2", tmp_path / "lb" / "digits-linf"  # rendered in this order
    good.mkdir(parents=True)
    bad.mkdir()
    (good / "deq-pgd-at-l2.json").write_text((repo / "digits-l2" / "deq-pgd-at-l2.json").read_text())
    (bad / "deq-pgd-at.json").write_text('{"schema_version": 2')
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("the previous report")
    code, text = run("report", str(tmp_path / "lb"), "--out", str(out))
    assert code == 1 and text.startswith("error: ") and len(text.strip().splitlines()) == 1, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lb", "report"]
    assert [p.name for p in out.iterdir()] == ["report.md"] and (out / "report.md").read_text() == "the previous report"


def test_two_files_of_one_defense_are_refused_not_shown_twice(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent / "leaderboards" / "digits-l2"
    folder = tmp_path / "lb" / "digits-l2"
    folder.mkdir(parents=True)
    text = (repo / "deq-pgd-at-l2.json").read_text()
    (folder / "deq-pgd-at-l2.json").write_text(text)
    (folder / "deq-pgd-at-l2 (copy).json").write_text(text)
    code, out = run("leaderboard", str(tmp_path / "lb"))
    one_line_error(code, out, "'deq-pgd-at-l2 (copy).json' and 'deq-pgd-at-l2.json' are both entries of defense")
    assert sorted(p.name for p in folder.iterdir()) == ["deq-pgd-at-l2 (copy).json", "deq-pgd-at-l2.json"]


def test_a_misspelt_recipe_is_named_as_such(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "mlp-submission"
    folder = tmp_path / "typo"
    folder.mkdir()
    for name in ("defense.toml", "model.py"):
        (folder / name).write_text((example / name).read_text().replace('recipe = "pgd_at"', 'recipe = "pgd-at"'))
    code, out = run("train", str(folder), "--out", str(tmp_path / "runs"))
    one_line_error(code, out, "unknown training recipe 'pgd-at' (known: ")
    assert "pgd_at" in out and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("threat", "sweep", "message"),
    [
        ('norm = "Linf"\neps = 100', "[0.1, 1.0]", "L-inf eps 100 is above 1"),
        ('norm = "Linf"\neps = 0.2', "[0.1, 1.5]", "Linf eps 1.5 above 1"),
        ('norm = "L2"\neps = 9.0', "[0.5]", "L2 eps 9 above 8, the diameter of the [0, 1] box for 64 input values"),
    ],
)
def test_an_eps_beyond_the_box_is_refused_before_any_work(
    tmp_path: Path, threat: str, sweep: str, message: str
) -> None:
    """L-inf eps above 1 or an L2 eps above sqrt(number of values) reaches no more than the whole box."""
    text = TINY_PROTOCOL.replace('norm = "Linf"\neps = 0.2', threat).replace("eps = [0.1, 1.0]", f"eps = {sweep}")
    path = tmp_path / "wide.toml"
    path.write_text(text)
    out_dir = tmp_path / "lb"
    code, out = run("bench", "--defenses", "cnn-standard", "--protocol", str(path), "--out", str(out_dir), "--quiet")
    one_line_error(code, out, message)
    assert files_under(out_dir) == []


def test_a_misspelt_model_argument_is_one_line_listing_the_parameters(tmp_path: Path) -> None:
    import shutil

    repo = Path(__file__).resolve().parent.parent
    folder = tmp_path / "sub"
    shutil.copytree(repo / "examples" / "mlp-submission", folder)
    manifest = folder / "defense.toml"
    manifest.write_text(manifest.read_text().replace("\nhidden = 64", "\nhiddden = 64"))
    out = tmp_path / "lb"
    code, text = run("submit", str(folder), "--out", str(out), "--epochs", "0", "--n-examples", "4")
    one_line_error(code, text, "make_model() takes no argument 'hiddden' from [model] (its parameters: hidden)")
    assert files_under(out) == []

    builtin = tmp_path / "deq"
    shutil.copytree(repo / "defenses" / "deq-standard", builtin)
    manifest = builtin / "defense.toml"
    manifest.write_text(manifest.read_text().replace("\nchannels = ", "\nchannelz = "))
    code, text = run("train", str(builtin), "--out", str(out), "--epochs", "0")
    one_line_error(code, text, "unknown setting 'channelz' (its settings: channels")
    assert files_under(out) == []


def test_the_leaderboard_root_is_positional_and_protocol_is_one_option_everywhere(tmp_path: Path) -> None:
    """zoo takes its root as leaderboard, report and site do (the old --root still works); report's
    protocol option is --protocol as elsewhere (the old --protocols still works)."""
    repo = Path(__file__).resolve().parent.parent / "leaderboards"
    for command in ("zoo", "leaderboard", "report", "site"):
        assert "[ROOT]" in run(command, "--help")[1].splitlines()[0], command
    positional, option = (
        run("zoo", str(repo / "sweeps"), "--json"),
        run("zoo", "--root", str(repo / "sweeps"), "--json"),
    )
    assert positional[0] == 0 and positional == option
    assert "--protocol" in run("report", "--help")[1]
    new = run("report", str(repo), "--protocol", "digits-l2", "--out", str(tmp_path / "a"))
    old = run("report", str(repo), "--protocols", "digits-l2", "--out", str(tmp_path / "b"))
    assert new[0] == old[0] == 0, new[1] + old[1]
    assert (tmp_path / "a" / "report.md").read_text() == (tmp_path / "b" / "report.md").read_text()


def test_no_usage_line_writes_an_argument_in_braces() -> None:
    """typer 0.29 writes a required argument as {defense}; every robustdeq command writes DEFENSE."""
    from typer.main import get_command

    group = get_command(app)
    names = [[name] for name in group.commands if name != "data"]  # type: ignore[attr-defined]
    names += [["data", name] for name in ("list", "download")]
    for command in names:
        usage = run(*command, "--help")[1].splitlines()[0]
        assert usage.startswith("Usage: robustdeq") and "{" not in usage, usage
    assert run("train", "--help")[1].splitlines()[0] == "Usage: robustdeq train [OPTIONS] DEFENSE"
