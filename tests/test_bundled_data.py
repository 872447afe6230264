"""The repository is self-contained: bundled class-level files match their checksums, and no
tracked file reads anything outside the repository."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from izf_lib.data import BUNDLED_DIR, XLSA17_NAMES, bundled_att_splits, load_xlsa17
from izf_lib.prepare import BENCHMARK_SHAPES

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([^`]+)` \| `([0-9a-f]{32})` \| (\d+) \|$")


def _listed_checksums() -> dict[str, tuple[str, int]]:
    rows = {}
    for line in (BUNDLED_DIR / "SOURCES.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = (m.group(2), int(m.group(3)))
    return rows


def test_every_bundled_file_matches_its_listed_md5() -> None:
    listed = _listed_checksums()
    present = {p.relative_to(BUNDLED_DIR).as_posix() for p in BUNDLED_DIR.rglob("*") if p.is_file()} - {"SOURCES.md"}
    assert present == set(listed), f"unlisted {sorted(present - set(listed))}, missing {sorted(set(listed) - present)}"
    for rel, (md5, size) in listed.items():
        data = (BUNDLED_DIR / rel).read_bytes()
        assert (hashlib.md5(data).hexdigest(), len(data)) == (md5, size), rel


@pytest.mark.parametrize("name", XLSA17_NAMES)
def test_bundled_attributes_have_the_benchmark_shapes(name: str) -> None:
    from izf_lib.prepare import _read_att_file

    att, names, sizes, unseen = _read_att_file(bundled_att_splits(name))
    d_a, n_classes, n_unseen, n_tv, n_ts, n_tu = BENCHMARK_SHAPES[name]
    assert att.shape == (d_a, n_classes) and len(names) == n_classes
    assert sizes == (n_tv, n_ts, n_tu)
    if unseen is not None:
        assert len(unseen) == n_unseen


def test_bundled_folds_are_read_by_the_loader(tmp_path: Path) -> None:
    """A user who adds res101.mat beside a copy of the bundled AWA1 folder gets its validation folds."""
    from izf_lib.prepare import prepare_synthetic

    prepare_synthetic(tmp_path, like="AWA1", scale=0.01, d_v=96, name="AWA1")
    for f in bundled_att_splits("AWA1").parent.glob("*classes*.txt"):
        shutil.copy(f, tmp_path / "AWA1" / f.name)
    data = load_xlsa17("AWA1", tmp_path)
    assert sorted(data.folds) == [1, 2, 3]
    assert all(set(va).isdisjoint(tr) for tr, va in data.folds.values())


def _tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / p for p in out.decode().split("\0") if p]
    return [f for f in files if f.is_file() and f.suffix not in {".mat", ".png"}]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    """Users have no sibling folders: nothing tracked may point at one, or at an absolute path of ours."""
    sibling = "shared"  # spelled apart so this test does not match itself
    outside = re.compile(
        r"\.\./" + sibling + "|" + sibling + r"/(data|reference|hooks)|(?<![\w.])/" + "work/|parents\\[2\\]"
    )
    hits = []
    for f in _tracked_text_files():
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "tracked files refer outside the repository:\n" + "\n".join(hits)
