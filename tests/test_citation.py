"""CITATION.cff cites the version pyproject.toml builds."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_citation_names_the_package_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    citation = (REPO / "CITATION.cff").read_text()
    assert re.search(r"^cff-version: 1\.2\.0$", citation, re.M)
    assert re.search(rf"^version: {re.escape(version)}$", citation, re.M)
    assert re.search(r"^title: robustdeq$", citation, re.M) and "The robustdeq developers" in citation
