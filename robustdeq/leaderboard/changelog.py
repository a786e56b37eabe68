"""Where the leaderboard's numbers moved since a git revision: a Markdown changelog per entry.

Usage (from a checkout)::

    python -m robustdeq.leaderboard.changelog <revision> [--root leaderboards] [--out leaderboards/CHANGELOG.md]

For every entry file under ``root`` (``<protocol>/<defense>.json``, sweeps included) at
``revision`` and now, one row: clean and robust accuracy then and now, the protocol version and
number of examples then and now, and the causes the two entries record (protocol version,
examples, protocol content, training settings, seed, code version). A reader who cited an old
number finds where it went.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustdeq.errors import RobustdeqError
from robustdeq.records.store import atomic_write_text

ENTRY_KEYS = ("defense", "protocol", "clean_accuracy", "robust_accuracy")


@dataclass(frozen=True)
class Change:
    """One entry then (``old``) and now (``new``); either is None when the entry was added or removed."""

    key: str  # the entry's path under the leaderboard root, without ".json"
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def causes(self) -> list[str]:
        """What the two entries record as different, besides their numbers."""
        if self.old is None:
            return ["new entry"]
        if self.new is None:
            return ["entry removed"]
        old, new = self.old, self.new
        if old == new:
            return ["unchanged"]
        out = []
        if old["protocol_version"] != new["protocol_version"]:
            out.append(f"protocol version {old['protocol_version']} -> {new['protocol_version']}")
        elif old["protocol_hash"] != new["protocol_hash"]:
            out.append("protocol content changed (same version)")
        if old["n_examples"] != new["n_examples"]:
            out.append(f"examples {old['n_examples']} -> {new['n_examples']}")
        old_train, new_train = old["provenance"].get("training"), new["provenance"].get("training")
        if old_train != new_train:
            changed = sorted(k for k in {*(old_train or {}), *(new_train or {})}
                             if (old_train or {}).get(k) != (new_train or {}).get(k))  # fmt: skip
            out.append(f"training changed ({', '.join(changed)})")
        elif old["provenance"].get("seed") != new["provenance"].get("seed"):
            out.append("evaluation seed changed")
        if old["provenance"].get("robustdeq_version") != new["provenance"].get("robustdeq_version"):
            out.append(
                f"robustdeq {old['provenance']['robustdeq_version']} -> {new['provenance']['robustdeq_version']}"
            )
        old_commit, new_commit = old["provenance"].get("git_commit"), new["provenance"].get("git_commit")
        if old_commit != new_commit and old_commit and new_commit:
            out.append(f"code {old_commit[:8]} -> {new_commit[:8]}")
        return out or ["re-evaluated, nothing recorded differs"]


def is_entry(data: Any) -> bool:
    return isinstance(data, dict) and all(k in data for k in ENTRY_KEYS)


def read_tree(root: Path) -> dict[str, dict[str, Any]]:
    """Every entry file under ``root`` now, by its path under ``root`` without ``.json``."""
    out = {}
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith("."):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if is_entry(data):
            out[path.relative_to(root).with_suffix("").as_posix()] = data
    return out


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RobustdeqError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def read_revision(root: Path, revision: str) -> dict[str, dict[str, Any]]:
    """Every entry file under ``root`` as committed at ``revision``."""
    prefix = git(root, "rev-parse", "--show-prefix").strip()  # root's path inside the repository
    out = {}
    for name in git(root, "ls-tree", "-r", "--name-only", "--full-name", revision, "--", ".").splitlines():
        inside = name[len(prefix) :] if name.startswith(prefix) else name
        if not inside.endswith(".json") or Path(inside).name.startswith("."):
            continue
        data = json.loads(git(root, "show", f"{revision}:{name}"))
        if is_entry(data):
            out[inside[: -len(".json")]] = data
    return out


def compare(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[Change]:
    """One change per entry present then or now, by path."""
    return [Change(key, old.get(key), new.get(key)) for key in sorted({*old, *new})]


def pct(entry: dict[str, Any] | None, field: str) -> str:
    return "-" if entry is None else f"{100 * entry[field]:.1f}"


def delta(change: Change, field: str) -> str:
    if change.old is None or change.new is None:
        return "-"
    return f"{100 * (change.new[field] - change.old[field]):+.1f}"


def version(entry: dict[str, Any] | None) -> str:
    return "-" if entry is None else f"v{entry['protocol_version']}, n={entry['n_examples']}"


def markdown(changes: list[Change], revision: str, described: str, notes: tuple[str, ...] = ()) -> str:
    """The changelog: one table row per entry, numbers in percent; ``notes``: paragraphs on why the
    numbers moved, printed above the table."""
    lines = [
        "# Changelog of leaderboard numbers",
        "",
        f"Every entry under `leaderboards/` at `{revision}` ({described}) and now: clean and robust accuracy (%) "
        "then and now, the protocol version and number of examples, and what the two entries record as different. "
        "Written by `python -m robustdeq.leaderboard.changelog`; numbers from different protocol versions are "
        "different measurements (see each table's title), not corrections of one another.",
        "",
        *[line for note in notes for line in (note.strip(), "")],
        "| entry | clean then | clean now | change | robust then | robust now | change | protocol then | "
        "protocol now | causes |",
        "|:--|--:|--:|--:|--:|--:|--:|:--|:--|:--|",
    ]
    for c in changes:
        lines.append(
            f"| {c.key} | {pct(c.old, 'clean_accuracy')} | {pct(c.new, 'clean_accuracy')} | "
            f"{delta(c, 'clean_accuracy')} | {pct(c.old, 'robust_accuracy')} | {pct(c.new, 'robust_accuracy')} | "
            f"{delta(c, 'robust_accuracy')} | {version(c.old)} | {version(c.new)} | {'; '.join(c.causes())} |"
        )
    return "\n".join(lines) + "\n"


def write_changelog(root: Path, revision: str, out: Path, notes: tuple[str, ...] = ()) -> Path:
    """Compare ``root``'s entries at ``revision`` with the files now and write the Markdown to ``out``."""
    described = git(root, "log", "-1", "--format=%h, %cs", revision).strip()
    changes = compare(read_revision(root, revision), read_tree(root))
    atomic_write_text(out, markdown(changes, revision, described, notes))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m robustdeq.leaderboard.changelog", description=__doc__.split("\n")[0]
    )
    parser.add_argument("revision", help="git revision of the old numbers (a tag, branch or commit)")
    parser.add_argument(
        "--root", type=Path, default=Path("leaderboards"), help="leaderboard root (default: leaderboards)"
    )
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default: <root>/CHANGELOG.md)")
    parser.add_argument(
        "--note", action="append", default=[], help="a paragraph on why the numbers moved (repeatable), above the table"
    )
    args = parser.parse_args(argv)
    try:
        path = write_changelog(args.root, args.revision, args.out or args.root / "CHANGELOG.md", tuple(args.note))
    except RobustdeqError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
