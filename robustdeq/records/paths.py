"""Where the repository's folders are, and what counts as a plain name (ids become file names)."""

from __future__ import annotations

import re
from pathlib import Path

# A defense, protocol or entry id: it names files and folders, so it must be a plain lowercase name.
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


def repo_folder(name: str) -> Path:
    """``./<name>`` when run from a checkout, else the checkout this package was installed from."""
    here = Path(name)
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent.parent / name


DEFENSES_DIR = repo_folder("defenses")
ATTACKS_DIR = repo_folder("attacks")
LEADERBOARDS_DIR = repo_folder("leaderboards")
