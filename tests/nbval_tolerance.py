"""nbval with measured tolerances for the cells whose printed numbers come out of training.

`pytest --nbval` compares every cell's output with the stored one, exactly. Training and sampling
in floating point amplify round-off, and round-off depends on the CPU's vector unit, the BLAS
kernel chosen at run time and the thread count, so a few cells print numbers that move in their
last digits (or by a point of accuracy) from one machine to the next. Only those cells, listed by
notebook and cell id in `tests/nbval_tolerances.json`, are compared by value:

* the text with every number taken out must be identical (same words, same table layout up to
  the width of a number, same count of numbers), and
* every number must lie within the cell's tolerance of the stored one: |new - stored| <= abs + rel |stored|.

Every other cell stays compared exactly. The tolerances are measured, not chosen: run
`scripts/measure_tolerances.py`, which reruns the chapters under several forced CPU capabilities
and thread counts (`--nbval-deviations FILE` below records how far each cell moved) and writes
the JSON with the rule it used. Loaded by the repository's top-level `conftest.py`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

TOLERANCES = Path(__file__).with_name("nbval_tolerances.json")
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
TEXT_KEYS = ("text/plain", "text/html", "text/markdown", "text/latex")


def split_numbers(text: str) -> tuple[str, list[float]]:
    """The text with each number replaced by '#' and runs of blanks folded (a table's column
    widths follow its numbers' widths), and the numbers themselves in order."""
    template = re.sub(r"[ \t]+", " ", NUMBER.sub("#", text))
    return template, [float(m) for m in NUMBER.findall(text)]


def largest_deviation(stored: str, new: str) -> float | None:
    """The largest |new - stored| over the numbers of two texts, or None when the texts differ
    in anything but their numbers (then no tolerance can accept them)."""
    t_stored, n_stored = split_numbers(stored)
    t_new, n_new = split_numbers(new)
    if t_stored != t_new or len(n_stored) != len(n_new):
        return None
    return max((abs(a - b) for a, b in zip(n_stored, n_new, strict=True)), default=0.0)


def within(stored: str, new: str, abs_tol: float, rel_tol: float = 0.0) -> tuple[bool, str]:
    """Whether `new` equals `stored` but for numbers each within abs_tol + rel_tol |stored|;
    with a one-line reason when it does not."""
    t_stored, n_stored = split_numbers(stored)
    t_new, n_new = split_numbers(new)
    if t_stored != t_new or len(n_stored) != len(n_new):
        return False, "the text differs in more than its numbers"
    for a, b in zip(n_stored, n_new, strict=True):
        allowed = abs_tol + rel_tol * abs(a)
        if abs(a - b) > allowed:
            return False, f"{b:g} against stored {a:g}: moved by {abs(a - b):.3g}, tolerance {allowed:.3g}"
    return True, ""


def load_tolerances(path: Path = TOLERANCES) -> dict[str, dict[str, dict[str, Any]]]:
    """{notebook file name: {cell id: {"abs": ..., "rel": ..., ...}}} from the measured JSON."""
    if not path.is_file():
        return {}
    cells = json.loads(path.read_text())["cells"]
    for notebook, by_id in cells.items():
        for cell_id, tol in by_id.items():
            if not isinstance(tol.get("abs"), int | float) or tol["abs"] < 0:
                raise ValueError(f"{path}: cells.{notebook}.{cell_id}.abs must be a number >= 0, "
                                 f"got {tol.get('abs')!r}")
    return cells


def _text_fields(output: dict) -> list[tuple[dict, str]]:
    """(container, key) of every text that a cell output shows: a stream's text, a result's text data."""
    if output.get("output_type") == "stream":
        return [(output, "text")]
    data = output.get("data", {})
    return [(data, key) for key in TEXT_KEYS if key in data]


def _as_text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else value


def accept_within_tolerance(item: Any, new_outputs: list, stored_outputs: list, tol: dict) -> list[str]:
    """Replace each new text that is within `tol` of its stored counterpart by the stored text, so that
    nbval's exact comparison passes on it; return a line per text that is not (left as it is, so
    nbval reports the diff)."""
    problems = []
    if len(new_outputs) != len(stored_outputs):
        return [f"{len(new_outputs)} outputs against {len(stored_outputs)} stored"]
    for new, stored in zip(new_outputs, stored_outputs, strict=True):
        new_fields, stored_fields = _text_fields(new), _text_fields(stored)
        if [k for _, k in new_fields] != [k for _, k in stored_fields]:
            continue  # different kinds of output: nbval reports it
        for (new_box, key), (stored_box, _) in zip(new_fields, stored_fields, strict=True):
            a, b = item.sanitize(_as_text(stored_box[key])), item.sanitize(_as_text(new_box[key]))
            ok, why = within(a, b, tol["abs"], tol.get("rel", 0.0))
            if ok:
                new_box[key] = stored_box[key]
            else:
                problems.append(f"{key}: {why}")
    return problems


def record_deviation(path: Path, item: Any, new_outputs: list, stored_outputs: list) -> None:
    """Append one JSON line: how far this cell's numbers moved from the stored ones (None: not by numbers alone)."""
    worst: float | None = 0.0
    if len(new_outputs) != len(stored_outputs):
        worst = None
    else:
        for new, stored in zip(new_outputs, stored_outputs, strict=True):
            for (new_box, key), (stored_box, _) in zip(_text_fields(new), _text_fields(stored), strict=False):
                d = largest_deviation(item.sanitize(_as_text(stored_box[key])), item.sanitize(_as_text(new_box[key])))
                worst = None if d is None or worst is None else max(worst, d)
    row = {"notebook": item.path.name, "cell_id": item.cell.get("id"), "cell": item.cell_num, "deviation": worst,
           "source": item.cell.source.splitlines()[0][:80] if item.cell.source else ""}
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--nbval-deviations", default=None, metavar="FILE",
                     help="append, per notebook cell, how far its printed numbers moved from the stored output "
                          "(JSON lines; read by scripts/measure_tolerances.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to adapt
        return
    tolerances = load_tolerances()
    deviations = config.getoption("--nbval-deviations")
    for item in items:
        if not isinstance(item, IPyNbCell):
            continue
        tol = tolerances.get(item.path.name, {}).get(item.cell.get("id"))
        if tol is None and deviations is None:
            continue
        exact = item.compare_outputs

        def compare(test, ref, skip_compare=None, _item=item, _tol=tol, _exact=exact):
            if deviations is not None:
                record_deviation(Path(deviations), _item, test, ref)
            if _tol is None:
                return _exact(test, ref, skip_compare)
            test = copy.deepcopy(test)
            problems = accept_within_tolerance(_item, test, ref, _tol)
            same = _exact(test, ref, skip_compare)
            if not same and problems:
                _item.comparison_traceback.insert(
                    0, "outside the measured tolerance (tests/nbval_tolerances.json): " + "; ".join(problems))
            return same

        item.compare_outputs = compare
