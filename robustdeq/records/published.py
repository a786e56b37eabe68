"""Published numbers under a protocol's threat model: ``leaderboards/<protocol>/published.toml``.

What papers and public leaderboards report for the protocol's data set and threat model, each copied
from a source a reader can open, with the setting it was measured in. They are anchors: they say
what the threat model allows with other models, budgets and attacks, and are shown beside the
entries (the leaderboard, the site, the report) but never ranked with them::

    protocol = "mnist-linf-0.3"
    note = "what was searched for and not found"

    [[result]]
    model = "Madry et al., 2018: PGD adversarial training"
    paper = "https://arxiv.org/abs/1706.06083"
    clean = 98.53          # percent
    robust = 88.50         # percent, under `attack`
    reported = 89.62       # optional: the robust accuracy the paper itself reported, as the source lists it
    attack = "AutoAttack (standard), run by Croce & Hein"
    source = "https://github.com/fra31/auto-attack/blob/<commit>/README.md#mnist---linf"
    listed = "fra31/auto-attack README, 'MNIST - Linf', row 7"
    setting = "the authors' released model, full test set (10,000 images)"  # where it differs from ours

The file is read by :class:`PublishedFile` (strict: unknown keys and wrong types are one-line errors;
``docs/schema/published.schema.json`` is generated from it). A folder may hold this file before it
holds any entry: the readers show the numbers and say "no entries yet".
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from robustdeq.errors import RobustdeqError
from robustdeq.records.parse import Record, parse, read_toml
from robustdeq.records.store import entry_files

PUBLISHED = "published.toml"


class PublishedResult(Record):
    """One published number: a ``model`` (and the paper it comes from, ``paper``), its ``clean`` and
    ``robust`` accuracy in percent under ``attack`` (and the robust accuracy the paper itself reported,
    ``reported``, when the source lists it), the ``source`` that lists the numbers and where in it
    (``listed``), and how its ``setting`` differs from the protocol's."""

    model: str
    paper: str
    clean: float
    robust: float
    reported: float | None = None
    attack: str
    source: str
    listed: str
    setting: str

    @model_validator(mode="after")
    def _checked(self) -> PublishedResult:
        if not 0 <= self.robust <= self.clean <= 100:
            raise ValueError(f"{self.model}: 0 <= robust <= clean <= 100 (percent), got {self.robust} and {self.clean}")
        if self.reported is not None and not 0 <= self.reported <= 100:
            raise ValueError(f"{self.model}: reported is a percentage, got {self.reported}")
        for key in ("paper", "source"):
            if not getattr(self, key).startswith(("https://", "http://")):
                raise ValueError(f"{self.model}: {key} must be a link (http:// or https://)")
        for key in ("model", "attack", "listed", "setting"):
            if not getattr(self, key).strip():
                raise ValueError(f"{self.model or 'a result'}: {key} must not be empty")
        return self


class PublishedFile(Record):
    """``published.toml``: the protocol the numbers are for, a ``note`` (e.g. what was searched for and
    not found), and the ``[[result]]`` tables."""

    protocol: str
    note: str = ""
    result: list[PublishedResult]


def read_published(folder: Path) -> PublishedFile | None:
    """The ``published.toml`` of a leaderboard folder, checked (its protocol is the folder's name);
    None when the folder has none."""
    path = folder / PUBLISHED
    if not path.is_file():
        return None
    data, _ = read_toml(path)
    published = parse(PublishedFile, data, str(path))
    if published.protocol != folder.name:
        raise RobustdeqError(f"{path}: protocol {published.protocol!r} is not its folder's, {folder.name!r}")
    return published


def published_only(root: Path) -> list[Path]:
    """Sub-folders of ``root`` holding a ``published.toml`` and no entries yet."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / PUBLISHED).is_file() and not entry_files(p))
