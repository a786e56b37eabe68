"""``robustdeq report``: Markdown + HTML report with figures from the leaderboard entries."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from robustdeq.cli.common import ROOT_HELP, check_writable, console, one_line_errors, parse_protocols, protocol_option
from robustdeq.report import write_report
from robustdeq.report.claims import BENCHMARK_RESULTS


@one_line_errors
def report(
    root: Annotated[Path, typer.Argument(help=ROOT_HELP)] = Path("leaderboards"),
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html and the PNG figures.")] = Path("report"),
    protocol: Annotated[list[str] | None, protocol_option("Only these protocols (default: all).")] = None,
    benchmarks: Annotated[
        Path, typer.Option(help="Benchmark results the timing claims read (benchmarks/jiio_vs_pgd_at.py --repeats).")
    ] = BENCHMARK_RESULTS,
    protocols: Annotated[  # the name before --protocol, still read
        list[str] | None, typer.Option("--protocols", hidden=True, callback=parse_protocols)
    ] = None,
) -> None:
    """Write a report of one or more protocols: tables and a per-attack accuracy figure each."""
    # Built in a temporary folder beside OUT and moved in only when complete: a failure part-way
    # (a damaged entry in the second protocol) leaves OUT as it was.
    check_writable(out.parent, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        names = parse_protocols([*(protocol or []), *(protocols or [])])
        built = write_report(root, Path(tmp), names, benchmarks=benchmarks)
        out.mkdir(exist_ok=True)
        paths = [out / p.name for p in built]
        for source, target in zip(built, paths, strict=True):
            os.replace(source, target)
    console.print("wrote " + ", ".join(str(p) for p in paths))
