"""The README's leaderboard tables: a block per protocol, rendered from that protocol's entries.

A README beside a leaderboard root (``<root>/../README.md``) may hold blocks

    <!-- leaderboard:mnist-linf-0.3:start -->
    ...
    <!-- leaderboard:mnist-linf-0.3:end -->

which ``robustdeq leaderboard`` replaces with the protocol's compact ranked table (:func:`block`), so the
README's numbers are the entries' and move with them. A README without such blocks is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

from robustdeq.leaderboard.headline import DEVIATES, STATUS_MARKERS, shown_entries
from robustdeq.leaderboard.render import NO_ENTRIES_YET, headline, markdown
from robustdeq.records.store import atomic_write_text

BLOCK = re.compile(
    r"(<!-- leaderboard:(?P<protocol>[\w.-]+):start -->\n)(?P<body>.*?)(<!-- leaderboard:(?P=protocol):end -->)", re.S
)
UNRELIABLE = STATUS_MARKERS["overestimate"]
# The columns a reader of the README needs; the leaderboard's own page has the rest.
COLUMNS = [
    "rank", "defense", "model", "recipe", "clean % [95% CI]", "robust % [95% CI]", "AutoAttack %", "strongest attack",
    "status",
]  # fmt: skip


def block(folder: Path) -> str:
    """The body of a protocol's block: its ranked entries (rank groups as in ``leaderboard.md``), or a line
    saying that none has landed yet, and where the whole table is."""
    entries = shown_entries(folder)
    path = f"{folder.parent.name}/{folder.name}"
    where = f"[`{path}/leaderboard.md`]({path}/leaderboard.md)"
    note = f"<!-- Rendered by `robustdeq leaderboard` from the entries in {path}/; do not edit by hand. -->\n"
    if not entries:
        return f"{note}{NO_ENTRIES_YET}: no defense has been evaluated under this protocol ({where}).\n"
    frame = headline(entries, links=False)[COLUMNS]
    n = entries[0]["n_examples"]
    count = f"{len(frame)} {'entry' if len(frame) == 1 else 'entries'}"
    return (
        f"{note}{markdown(frame)}\n\n{count} on {n:,} test images; robust accuracy is the per-example worst case "
        f"over every attack, and {DEVIATES} marks a defense that departs from its paper. An entry with a flag that "
        f"makes its number a probable overestimate (status `{UNRELIABLE}`) is listed, not ranked. Rank groups, "
        f"letters, each flag and deviation, and every attack run: {where}.\n"
    )


def write_readme_tables(root: Path) -> Path | None:
    """Replace every leaderboard block of the README beside ``root`` with :func:`block` of its protocol
    folder; the README's path if it has blocks, else None (nothing written)."""
    readme = root.resolve().parent / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    if not BLOCK.search(text):
        return None
    updated = BLOCK.sub(lambda m: m.group(1) + block(root / m.group("protocol")) + m.group(4), text)
    if updated != text:
        atomic_write_text(readme, updated)
    return readme


def readme_blocks(readme: Path) -> dict[str, str]:
    """The README's blocks as they stand: protocol -> body."""
    return {m.group("protocol"): m.group("body") for m in BLOCK.finditer(readme.read_text(encoding="utf-8"))}
