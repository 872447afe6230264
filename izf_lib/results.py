"""Collect run directories into the small tables the book renders (``results/``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARK_COLUMNS", "benchmark_rows", "collect"]

BENCHMARK_COLUMNS = ["dataset", "seed", "classifier", "selection", "epoch", "T1", "U", "S", "H",
                     "epochs", "quick", "device", "train_seconds"]


def benchmark_rows(results: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """One row per classifier of a ``results.json`` written by :func:`izf_lib.train.fit`."""
    rows = []
    for clf in results["gzsl"]:
        rows.append({
            "dataset": results["dataset"], "seed": results["seed"], "classifier": clf,
            "selection": results["selection"]["rule"], "epoch": results["selection"]["epochs"][clf],
            "T1": results["czsl"][clf]["T1"], **{k: results["gzsl"][clf][k] for k in ("U", "S", "H")},
            "epochs": results["config"]["epochs"], "quick": quick, "device": results["environment"]["device"],
            "train_seconds": results["timings"]["train_seconds"],
        })
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in columns})


def collect(runs_root: str | os.PathLike, results_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Gather ``runs_root/<DATASET>/seed*/results.json`` and ``runs_root/digits_splits/*.csv`` into
    ``results_dir/benchmark_runs.csv``, ``digits_splits.csv`` and ``manifest.json``."""
    runs_root, out = Path(runs_root), Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    quick = bool(manifest.get("quick", True))
    rows: list[dict[str, Any]] = []
    for res_file in sorted(runs_root.glob("*/seed*/results.json")):
        rows.extend(benchmark_rows(json.loads(res_file.read_text()), quick))
    _write_csv(out / "benchmark_runs.csv", rows, BENCHMARK_COLUMNS)
    split_rows: list[dict[str, Any]] = []
    for f in sorted((runs_root / "digits_splits").glob("*.csv")):
        with f.open() as fh:
            split_rows.extend(csv.DictReader(fh))
    if split_rows:
        _write_csv(out / "digits_splits.csv", split_rows, list(split_rows[0].keys()))
    manifest = {**manifest, "benchmark_rows": len(rows), "digits_split_rows": len(split_rows)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
