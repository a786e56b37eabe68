"""``robustdeq fidelity``: render docs/fidelity.md and the README's table of methods from the reference
defenses' manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import check_writable, console, one_line_errors
from robustdeq.fidelity import PAGE_PATH, README_PATH, write_page, write_readme
from robustdeq.records.paths import DEFENSES_DIR


@one_line_errors
def fidelity(
    out: Annotated[Path, typer.Option(help="Where the page goes.")] = PAGE_PATH,
    readme: Annotated[
        Path,
        typer.Option(
            help="The README whose block between <!-- methods:start --> and <!-- methods:end --> is rewritten."
        ),
    ] = README_PATH,
    defenses_dir: Annotated[Path, typer.Option(help="Where defense folders live.")] = DEFENSES_DIR,
) -> None:
    """Write the fidelity page (each reference defense's paper, what the paper did, and every deviation) and
    the README's table of methods (each reference defense's suite, model, solver and training, from its manifest)."""
    check_writable(out.parent, readme.parent)
    console.print(f"wrote {write_page(out, defenses_dir)}")
    console.print(f"wrote {write_readme(readme, defenses_dir)}")
