"""The nbval tolerance plugin: numbers within a measured tolerance pass, anything else still fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbval_tolerance import TOLERANCES, load_tolerances, split_numbers, within

ROOT = Path(__file__).resolve().parents[1]


def test_numbers_are_taken_out_of_the_text_and_table_widths_do_not_matter() -> None:
    template, numbers = split_numbers("nbc   44.8  13.0\nsoftmax  9.9 -1.21e-03 (T1, H2)")
    assert numbers == [44.8, 13.0, 9.9, -1.21e-03]
    assert template == "nbc # #\nsoftmax # # (T1, H2)"  # words with digits (T1, H2) are text
    assert split_numbers("a  10.0 b")[0] == split_numbers("a 9.9 b")[0]


def test_within_accepts_moves_up_to_the_tolerance_and_names_the_first_that_exceeds() -> None:
    assert within("U 37.0 H 51.3", "U 35.5 H 50.0", abs_tol=1.5)[0]
    ok, why = within("U 37.0 H 51.3", "U 35.4 H 50.0", abs_tol=1.5)
    assert not ok and "35.4 against stored 37" in why
    assert within("x 100", "x 104", abs_tol=0.0, rel_tol=0.05)[0]


def test_a_change_of_words_or_of_the_number_count_is_never_within_tolerance() -> None:
    assert not within("CGAN ok 1.0", "CGAN diverged 1.0", abs_tol=100)[0]
    assert not within("3 of 3 agree", "3 of 3 agree, 1 tie", abs_tol=100)[0]


def test_a_malformed_tolerance_file_is_refused_with_the_cell_named(tmp_path: Path) -> None:
    bad = tmp_path / "tol.json"
    bad.write_text(json.dumps({"cells": {"05_x.ipynb": {"abc123": {"abs": -1}}}}))
    with pytest.raises(ValueError, match=r"cells\.05_x\.ipynb\.abc123\.abs must be a number >= 0"):
        load_tolerances(bad)


def test_every_toleranced_cell_exists_and_prints_numbers() -> None:
    """The measured file cannot go stale silently: each entry names a code cell that exists."""
    for notebook, by_id in load_tolerances().items():
        cells = {c.get("id"): c for c in json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]}
        for cell_id, tol in by_id.items():
            assert cell_id in cells, f"{TOLERANCES.name}: {notebook} has no cell {cell_id} (re-run make tolerances)"
            assert cells[cell_id]["cell_type"] == "code" and cells[cell_id]["outputs"], (notebook, cell_id)
            assert tol["abs"] >= tol["measured"], f"{notebook} {cell_id}: tolerance below what was measured"


def _project(tmp: Path, printed: str, stored: str, abs_tol: float | None) -> Path:
    """A tiny project: the plugin, a tolerance file, and a notebook whose stored output is ``stored``."""
    (tmp / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "nbval_tolerance.py", tmp / "tests")
    shutil.copy(ROOT / "conftest.py", tmp)
    cell = nbformat.v4.new_code_cell(f"print({printed!r})", id="c0ffee00", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text=stored + "\n")])
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "chapter.ipynb")
    cells = {} if abs_tol is None else {"chapter.ipynb": {"c0ffee00": {"abs": abs_tol, "measured": abs_tol}}}
    (tmp / "tests" / "nbval_tolerances.json").write_text(json.dumps({"cells": cells}))
    return tmp


def _nbval(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-q", "-p",
                           "no:cacheprovider", "chapter.ipynb"], cwd=project, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize(("printed", "abs_tol", "passes"), [
    ("T1 45.5 H 22.0", 1.0, True),    # moved by 0.7 and 0.9: round-off of another CPU
    ("T1 47.0 H 22.9", 1.0, False),   # moved by 2.2: a change of the method
    ("T1 45.5 H 22.0", None, False),  # no tolerance for the cell: compared exactly
])
def test_nbval_passes_a_cell_within_its_tolerance_and_fails_beyond(tmp_path: Path, printed: str,
                                                                   abs_tol: float | None, passes: bool) -> None:
    out = _nbval(_project(tmp_path, printed, "T1 44.8 H 22.9", abs_tol))
    assert (out.returncode == 0) is passes, out.stdout[-2000:]
    if not passes and abs_tol is not None:
        assert "outside the measured tolerance" in out.stdout and "moved by 2.2" in out.stdout
