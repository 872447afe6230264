"""Run many small independent experiments, one thread each, in parallel worker processes.

Every job is seeded by its own arguments only, so its result does not depend on how many
workers run, or in which order: a grid run with ``jobs=16`` gives the same files as ``jobs=1``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..experiment import write_text_atomic

__all__ = ["Call", "run_jobs", "usable_cores", "write_json_atomic", "write_csv", "read_csv_rows", "gather_json_rows",
           "OBJECTIVE_KEYS", "objective_stamp", "complete_stamp", "read_stamp", "claim_folder"]


def _single_threaded(call: tuple[Callable[..., Any], Any]) -> Any:
    fn, arg = call
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread per job is faster and bit-identical across runs
    try:
        return fn(arg)
    finally:
        torch.set_num_threads(threads)


Call = tuple[Callable[[Any], str], Any]  # a module-level job function and its one argument


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one): a grid's natural ``jobs``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_jobs(calls: Sequence[Call], jobs: int | None = 1, desc: str = "runs", progress: bool = True) -> list[str]:
    """Run every ``(fn, arg)`` of ``calls``; each ``fn`` returns a short run name, shown as progress.

    ``jobs`` > 1 uses that many worker processes (``None``: :func:`usable_cores`); calls from several
    experiments can share one pool.
    """
    from tqdm.auto import tqdm

    jobs = usable_cores() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    done: list[str] = []
    parallel = jobs > 1 and len(calls) > 1
    with ProcessPoolExecutor(max_workers=jobs) if parallel else nullcontext() as pool, \
            tqdm(total=len(calls), desc=desc, disable=not progress) as bar:
        for name in (pool.map if parallel else map)(_single_threaded, calls):
            done.append(name)
            bar.set_postfix_str(name)
            bar.update()
    return done


def write_json_atomic(path: Path, record: Any) -> None:
    """Write ``record`` to ``path`` so that a half-written file never exists (a run is done once its JSON is)."""
    write_text_atomic(path, json.dumps(record, indent=1))


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
              float_digits: int | None = None) -> Path:
    """Write ``rows`` to ``path`` (columns: ``columns``, else every key in order of appearance), atomically.

    ``float_digits`` rounds floats to that many significant digits; otherwise values are written as they are.
    """
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.{float_digits}g}" if float_digits and isinstance(v, float) else v)
                        for k, v in r.items()})
    tmp.replace(path)
    return path


def read_csv_rows(paths: Sequence[Path]) -> list[dict[str, str]]:
    """The rows of every CSV file in ``paths``, in order (values as text)."""
    rows: list[dict[str, str]] = []
    for p in paths:
        with Path(p).open(newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def gather_json_rows(out_dir: Path, csv_name: str, key: Callable[[dict[str, Any]], Any]) -> Path:
    """Collect every ``*.json`` record in ``out_dir`` into ``out_dir/csv_name``, sorted by ``key``."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*.json"))]
    if not rows:
        raise FileNotFoundError(f"no run records (*.json) in {out_dir}")
    rows.sort(key=key)
    return write_csv(Path(out_dir) / csv_name, rows, float_digits=6)


# The settings that define IZF's objective and were added after grids were first stored: a folder of runs
# without a stamp (or a stamp without a key) was trained when only these values existed (the development code's
# L_iMMD and L_C, and L_C's weight lambda_2 = 1, the only one used before it was stamped).
OBJECTIVE_KEYS = {"immd_form": "neg_mmd2_biased", "mmd_scale_basis": "fixed", "lc_reduction": "sum", "lambda_c": 1.0}
STAMP = "objective.stamp"  # not *.json: gather_json_rows reads every *.json as a run


def objective_stamp(config: Any = None) -> dict[str, Any]:
    """The objective settings of ``config`` (an IZFConfig; default: the library's defaults)."""
    from ..config import IZFConfig

    config = config if config is not None else IZFConfig()
    return {k: getattr(config, k) for k in OBJECTIVE_KEYS}


def complete_stamp(stamp: dict[str, Any] | None) -> dict[str, Any]:
    """A stored objective with every key of :data:`OBJECTIVE_KEYS`: a key it lacks was added after it was written,
    so its runs had that key's legacy value (None, from a record that predates stamps: all legacy values)."""
    return {**OBJECTIVE_KEYS, **(stamp or {})}


def read_stamp(folder: str | Path) -> dict[str, Any] | None:
    """The objective a grid folder's runs were trained with: its stamp, or :data:`OBJECTIVE_KEYS` for a folder of
    runs stored before stamps existed; None for a folder with no runs."""
    folder = Path(folder)
    if (folder / STAMP).is_file():
        return complete_stamp(json.loads((folder / STAMP).read_text()))
    return dict(OBJECTIVE_KEYS) if folder.is_dir() and any(folder.iterdir()) else None


def claim_folder(folder: str | Path, config: Any = None) -> None:
    """Stamp ``folder`` with the objective of ``config``, or stop if it holds runs of another objective.

    A grid resumes by skipping runs already on disk; runs of another objective would then be mixed
    in silently and reported under the new defaults.
    """
    folder = Path(folder)
    want, have = objective_stamp(config), read_stamp(folder)
    if have is not None and have != want:
        raise ValueError(f"{folder} holds runs trained with {have}, but these runs would use {want}; move the "
                         "folder away (or pass a new --out) so that the two are not mixed")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(json.dumps(want, sort_keys=True) + "\n")
