"""The lock (constraints.txt) pins every package the project declares, at versions its specifiers allow."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
        key = canonicalize_name(name)
        assert key not in pins, f"constraints.txt pins {name} twice"
        pins[key] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith(PROJECT["name"])]
    return reqs


@pytest.mark.parametrize("req", _declared(), ids=lambda r: r.name)
def test_every_declared_requirement_is_pinned_within_its_specifier(req: Requirement) -> None:
    pins = _pins()
    key = canonicalize_name(req.name)
    assert key in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt: run `make lock`"
    assert req.specifier.contains(pins[key], prereleases=True), (
        f"constraints.txt pins {req.name}=={pins[key]}, outside pyproject.toml's {req.specifier}: run `make lock`")


def test_lock_pins_the_cpu_torch_and_a_book_engine_below_2() -> None:
    pins = _pins()
    assert pins["torch"] == Version("2.13.0"), "torch must stay pinned at the CPU wheel's version"
    assert pins["jupyter-book"] < Version("2"), "jupyter-book 2.x ignores _config.yml and _toc.yml"


def test_lock_has_no_local_version_labels() -> None:
    """'torch==2.13.0+cpu' would not resolve on a machine that has only PyPI."""
    assert all(v.local is None for v in _pins().values())


def test_every_install_route_uses_the_lock() -> None:
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in (ROOT / "environment.yml").read_text()
