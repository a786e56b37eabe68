"""Links within the README and docs/ lead somewhere: every ``(#anchor)`` names a heading of its page
(GitHub's slugs), every relative link names a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found = {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}
    return found | set(re.findall(r'<a (?:id|name)="([^"]+)"', text))


def test_slug_matches_github() -> None:
    assert slug("MNIST at L-inf 0.3 (in progress)") == "mnist-at-l-inf-03-in-progress"
    assert slug("`deq-pgd-at` on mnist") == "deq-pgd-at-on-mnist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    text = page.read_text()
    own = anchors(text)
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in own:
                broken.append(target)
        elif not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"
