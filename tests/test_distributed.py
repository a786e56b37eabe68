"""torchrun on CPU (gloo): a sharded evaluation and DDP training give what one process gives."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from robustdeq import distributed
from robustdeq.cli import app
from robustdeq.evaluation.runner import select_subset
from robustdeq.evaluation.state import EvalState, evaluation_key
from robustdeq.pipeline import load_splits, load_trained
from robustdeq.records.protocol import load_protocol
from robustdeq.training.recipes import BatchNoise

REPO = Path(__file__).resolve().parent.parent

PROTOCOL = """
id = "dist-digits"
version = 1
dataset = "digits"

[threat_model]
norm = "Linf"
eps = 0.2

[subset]
n_examples = 32

[evaluation]
batch_size = 250
seed = 0
warm_start = true

[eps_sweep]
eps = [0.1, 1.0]

[[attacks]]
name = "pgd"
steps = 5
step_size = 0.05
grad_modes = ["ift", "unroll"]

[[attacks]]
name = "transfer"
steps = 5
step_size = 0.05

[[attacks]]
name = "autoattack"
version = "custom"
attacks = ["apgd-ce", "square"]
n_iter = 10
n_queries = 30

[checks]
more_iterations = "pgd"
solver_budget = "pgd"
"""

# Trains a defense for one epoch on the first N digits and saves this rank's weights and buffers.
TRAIN_SCRIPT = """
import dataclasses, sys
from pathlib import Path
from safetensors.torch import save_file
from robustdeq import distributed
from robustdeq.data import load
from robustdeq.records.defense import find_defense
from robustdeq.threat import ThreatModel
from robustdeq.training import train_model

distributed.init()
defense = find_defense(sys.argv[1])
spec = dataclasses.replace(defense.train, epochs=1, train_subset=int(sys.argv[2]))
model = train_model(defense, "digits", load("digits", "train"), ThreatModel("Linf", 0.2), spec).model
state = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(state, str(Path(sys.argv[3]) / f"rank{distributed.rank()}.safetensors"))
distributed.shutdown()
"""


def launch(args: list[str], processes: int = 1) -> subprocess.CompletedProcess[str]:
    """``python ARGS``, or ``torchrun --nproc-per-node PROCESSES ARGS``, one torch thread per process."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, *(torchrun if processes > 1 else []), *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def without_timings(path: Path) -> dict:  # type: ignore[type-arg]
    entry = json.loads(path.read_text())
    for key in ("train_seconds", "eval_seconds", "attack_seconds", "hardware", "command"):
        entry["provenance"].pop(key)
    return entry


def test_sharded_evaluation_equals_one_process_and_resumes_per_rank(tmp_path: Path) -> None:
    protocol = tmp_path / "dist-digits.toml"
    protocol.write_text(PROTOCOL)
    runs = tmp_path / "runs"
    train = ["train", "deq-pgd-at", "--protocol", str(protocol), "--out", str(runs), "--epochs", "4"]
    launch(["-m", "robustdeq", *train, "--train-subset", "400", "--quiet"], processes=2)
    checkpoint = runs / "dist-digits" / "deq-pgd-at"

    def evaluate(out: Path, processes: int) -> subprocess.CompletedProcess[str]:
        args = ["evaluate", str(checkpoint), "--protocol", str(protocol), "--out", str(out), "--batch-size", "8"]
        return launch(["-m", "robustdeq", *args, "--per-example", str(out / "per-example.json"), "--quiet"], processes)

    for processes in (1, 2):
        evaluate(tmp_path / f"np{processes}", processes)
    single, sharded = (json.loads((tmp_path / f"np{n}" / "per-example.json").read_text()) for n in (1, 2))
    assert sum(single["clean_correct"]) > 8  # at least two attack batches of 8
    assert single == sharded  # every example's outcome and every batch record (labels, solver steps, traces)
    entry = without_timings(tmp_path / "np1" / "dist-digits" / "deq-pgd-at.json")
    assert entry == without_timings(tmp_path / "np2" / "dist-digits" / "deq-pgd-at.json")
    assert {s["batch_size"] for s in entry["provenance"]["attack_settings"].values()} == {8}
    assert sorted(p.name for p in (tmp_path / "np2" / "dist-digits").iterdir()) == [
        "deq-pgd-at.json", "deq-pgd-at.safetensors", "leaderboard.csv", "leaderboard.html", "leaderboard.md",
    ]  # fmt: skip

    # Resume: each rank finds its own state file, holding any of the batches (here half each,
    # whichever rank owns them); the entry is the same.
    _, trained = load_trained(checkpoint)
    spec = load_protocol(protocol)
    indices = select_subset(spec, load_splits(spec, None, False)[1])
    key = evaluation_key(trained.model, spec.hash, indices, 8)
    names = sorted(single["batches"])
    folder = tmp_path / "np2r" / "dist-digits"
    folder.mkdir(parents=True)
    for rank, part in enumerate((names[::2], names[1::2])):
        batches = {name: single["batches"][name] for name in part}
        (folder / f".deq-pgd-at.state.rank{rank}.json").write_text(json.dumps({"key": key, "batches": batches}))
    resumed = evaluate(tmp_path / "np2r", 2)
    assert f"resumed {len(names)} attack batches" in resumed.stderr.replace("\n", " ")
    assert without_timings(folder / "deq-pgd-at.json") == entry
    assert not list(folder.glob(".*state*"))


def test_ddp_training_keeps_ranks_equal_and_matches_one_process(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    # 133 digits in batches of 64: two even batches, then 5 rows split 3 / 2 between the ranks.
    for processes in (1, 2):
        (tmp_path / f"np{processes}").mkdir()
        launch([str(script), "deq-pgd-at", "133", str(tmp_path / f"np{processes}")], processes)
    single = load_file(str(tmp_path / "np1" / "rank0.safetensors"))
    rank0, rank1 = (load_file(str(tmp_path / "np2" / f"rank{r}.safetensors")) for r in (0, 1))
    assert set(single) == set(rank0) == set(rank1)
    for name in single:
        assert torch.equal(rank0[name], rank1[name]), name  # weights and power-iteration buffers
        torch.testing.assert_close(rank0[name], single[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_rows_split_a_batch_into_contiguous_near_equal_shares(world: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    for n in (1, 2, 7, 64):
        shares = []
        for r in range(world):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            shares.append(distributed.rows(n))
        assert [i for s in shares for i in range(n)[s]] == list(range(n))
        assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


def test_every_attack_batch_has_one_owner_whatever_was_resumed() -> None:
    names = [f"Linf:0.2/pgd/{8 * i}" for i in range(7)]
    owners = []
    for rank in range(3):
        state = EvalState(None, "", rank, 3)
        state.batches = {names[rank]: {}}  # each rank resumed a different batch
        owners.append([state.runs_here(name) for name in names + names[:2]])  # names asked twice keep their owner
    assert [sum(column) for column in zip(*owners, strict=True)] == [1] * 9
    assert [sum(row[:7]) for row in owners] == [3, 2, 2]  # dealt round-robin


def test_batch_noise_gives_each_rank_the_single_process_rows() -> None:
    like = torch.zeros(5, 1, 8, 8)
    whole = BatchNoise(torch.Generator().manual_seed(3), 5)
    expected = [whole.uniform(like), whole.normal(like)]
    for rows in (slice(0, 3), slice(3, 5)):
        part = BatchNoise(torch.Generator().manual_seed(3), 5, rows)
        assert torch.equal(part.uniform(like[rows]), expected[0][rows])
        assert torch.equal(part.normal(like[rows]), expected[1][rows])


def test_bench_under_torchrun_refuses_parallel_jobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    result = CliRunner().invoke(app, ["bench", "--defenses", "cnn-standard", "--jobs", "2", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "under torchrun" in result.output
