"""Shared CLI plumbing: one-line errors with a non-zero exit, option helpers, and the check that an
output folder can be written before any work starts."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand

from robustdeq.device import DEVICE_HELP
from robustdeq.errors import RobustdeqError

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)
console = Console()

DATA_DIR_HELP = "Folder holding (or receiving, with --download) torchvision data sets. Not needed for digits."
DeviceOption = Annotated[str, typer.Option(help=DEVICE_HELP)]
ROOT_HELP = "Leaderboard root holding <protocol>/ folders of entries."


class Command(TyperCommand):
    """Every robustdeq command: its usage line names an argument as ``DEFENSE`` (required) or ``[ROOT]``
    (optional), not as typer writes it (``{defense}``, ``[root]``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = str(param.metavar or param.name).upper()
            pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        return pieces


def either_root(root: Path | None, root_option: Path | None) -> Path | None:
    """The leaderboard root given as the ROOT argument or, as before it was one, as ``--root`` (not both)."""
    if root is not None and root_option is not None and root != root_option:
        raise RobustdeqError(f"two leaderboard roots: {root} and --root {root_option}; give ROOT only")
    return root or root_option


def parse_protocols(values: list[str] | None) -> list[str] | None:
    """The value of every command's ``--protocol``: repeated (``--protocol a --protocol b``), comma-separated
    (``--protocol a,b``) or both, the protocols in the order given, each once; None when not given."""
    if not values:
        return None
    names: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if name and name not in names:
                names.append(name)
    if not names:
        raise typer.BadParameter(f"expected a protocol id or path, got {', '.join(map(repr, values))}")
    return names


def protocol_option(help: str) -> Any:
    """Every command's ``--protocol``, parsed by :func:`parse_protocols`; ``help`` says what it selects and
    its default."""
    return typer.Option(
        "--protocol",
        metavar="<str>",  # one protocol, or several separated by commas; the option repeats
        callback=parse_protocols,
        help=f"{help} Repeat it, or separate protocols with commas (--protocol a,b).",
    )


def print_error(message: object) -> None:
    """``error: <message>`` on stderr, the message verbatim (rich would eat text in square brackets,
    e.g. ``[train]`` or ``[fidelity]``, as markup)."""
    err_console.print(Text("error: ", style="red") + Text(str(message)), highlight=False, soft_wrap=True)


class Interrupted(RobustdeqError):
    """Ctrl-C, with what the user should know about it (e.g. that re-running resumes)."""


INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C


def one_line_errors(func: F) -> F:
    """Turn a RobustdeqError into ``error: <message>`` on stderr and exit code 1, and Ctrl-C into
    ``error: interrupted ...`` and exit code 130 (no traceback either way)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Interrupted as exc:
            print_error(exc)
            raise typer.Exit(code=INTERRUPTED_EXIT) from None
        except RobustdeqError as exc:
            print_error(exc)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(code=INTERRUPTED_EXIT) from None

    return wrapper  # type: ignore[return-value]


def split_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise RobustdeqError(f"expected at least one comma-separated name, got {value!r}")
    return names


def check_writable(*folders: Path) -> None:
    """Fail before any training or attack, with one line naming the folder and the reason, when files
    cannot be written in one of ``folders``: a temporary file is written and removed in the folder,
    or in the nearest folder above it that exists when it does not yet (where it will be made).
    Nothing is created, so a failed command leaves nothing behind, and torchrun's processes may
    check the same folder at once."""
    for folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            with tempfile.NamedTemporaryFile(dir=probe, prefix=".robustdeq-write-check-"):
                pass
        except OSError as exc:
            raise RobustdeqError(f"cannot write to {folder}: {exc.strerror or exc}") from None
