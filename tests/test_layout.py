"""The map of the library stays true: every module is listed where a newcomer looks first."""

from __future__ import annotations

import re
from pathlib import Path

import izf_lib

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    pkg = ROOT / "izf_lib"
    return sorted(p.stem for p in pkg.rglob("*.py") if p.stem != "__init__")


def test_every_module_is_listed_in_the_package_docstring_and_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    doc = izf_lib.__doc__ or ""
    missing_doc = [m for m in _modules() if f"``{m}``" not in doc]
    missing_readme = [m for m in _modules() if m not in readme]
    assert not missing_doc, f"izf_lib/__init__.py does not list {missing_doc}"
    assert not missing_readme, f"README.md does not list {missing_readme}"


def test_the_readme_maps_every_equation_of_the_supplementary() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Where each equation"):]
    listed = {int(n) for n in re.findall(r"\((\d+)\)", table.split("\n## ")[0])}
    ranges = re.findall(r"\((\d+)\)-\((\d+)\)", table.split("\n## ")[0])
    listed |= {k for a, b in ranges for k in range(int(a), int(b) + 1)}
    assert set(range(1, 17)) <= listed, f"equations without a row: {sorted(set(range(1, 17)) - listed)}"
