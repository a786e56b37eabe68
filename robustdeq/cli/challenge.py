"""``robustdeq challenge``: verify an outside attack's adversarial examples and record them in the entry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import check_writable, console, either_root, one_line_errors


@one_line_errors
def challenge(
    target: Annotated[
        str, typer.Argument(help="A zoo model (NAME or PROTOCOL/NAME) or the path of a leaderboard entry (.json).")
    ],
    file: Annotated[
        Path,
        typer.Argument(help="A safetensors file with 'indices' (int64, N) and 'x_adv' (float32, N x input shape)."),
    ],
    by: Annotated[str, typer.Option(help="Who ran the attack (recorded in the entry).")],
    root: Annotated[
        Path | None,
        typer.Argument(help="Leaderboard root a zoo NAME is looked up in (default: the repository's)."),
    ] = None,
    root_option: Annotated[Path | None, typer.Option("--root", hidden=True)] = None,  # before ROOT was positional
) -> None:
    """Verify adversarial examples found by an outside attack, as the protocol verifies its own (within eps,
    in [0, 1], finite, misclassified by a fresh instance), and record the verified breaks in the entry;
    tables then show the best known robust accuracy, marked (docs/challenge.md)."""
    from robustdeq.challenge import challenge as run
    from robustdeq.challenge import find_target

    root = either_root(root, root_option)
    check_writable(find_target(target, root).entry.parent)  # the entry is rewritten there
    verdict = run(target, file, by, root)
    n = verdict.n_examples
    console.print(
        f"{len(verdict.broken)} of {verdict.submitted} submitted examples verified as broken; "
        f"new (left robust by the protocol's attacks): {', '.join(map(str, verdict.new)) or 'none'}"
    )
    console.print(
        f"robust accuracy: protocol {100 * verdict.protocol_robust / n:.1f}%, "
        f"best known {100 * verdict.best_known_robust / n:.1f}% ({verdict.best_known_robust} / {n})"
    )
