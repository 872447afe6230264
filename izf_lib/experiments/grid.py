"""Run many small independent experiments, one thread each, in parallel worker processes.

Every job is seeded by its own arguments only, so its result does not depend on how many
workers run, or in which order: a grid run with ``jobs=16`` gives the same files as ``jobs=1``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

__all__ = ["Call", "run_jobs", "write_json_atomic", "gather_json_rows"]

def _single_threaded(call: tuple[Callable[..., Any], Any]) -> Any:
    fn, arg = call
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread per job is faster and bit-identical across runs
    try:
        return fn(arg)
    finally:
        torch.set_num_threads(threads)


Call = tuple[Callable[[Any], str], Any]  # a module-level job function and its one argument


def run_jobs(calls: Sequence[Call], jobs: int = 1, desc: str = "runs", progress: bool = True) -> list[str]:
    """Run every ``(fn, arg)`` of ``calls``; each ``fn`` returns a short run name, shown as progress.

    ``jobs`` > 1 uses that many worker processes; calls from several experiments can share one pool.
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    done: list[str] = []
    with tqdm(total=len(calls), desc=desc, disable=not progress) as bar:
        if jobs == 1 or len(calls) <= 1:
            names = map(_single_threaded, calls)
            for name in names:
                done.append(name)
                bar.set_postfix_str(name)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for name in pool.map(_single_threaded, calls):
                    done.append(name)
                    bar.set_postfix_str(name)
                    bar.update()
    return done


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` so that a half-written file never exists (a run is done once its JSON is)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def gather_json_rows(out_dir: Path, csv_name: str, key: Callable[[dict[str, Any]], Any]) -> Path:
    """Collect every ``*.json`` record in ``out_dir`` into ``out_dir/csv_name``, sorted by ``key``."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*.json"))]
    if not rows:
        raise FileNotFoundError(f"no run records (*.json) in {out_dir}")
    rows.sort(key=key)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    path = Path(out_dir) / csv_name
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path
