"""Collect run directories into the small tables the book renders (``results/``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from .experiment import CLASSIFIER_NAMES, RESULTS_FILE, RunResult
from .metrics import one_sided

__all__ = ["BENCHMARK_COLUMNS", "benchmark_rows", "flagged_rows", "upsert_benchmark_rows", "collect"]

# no timings: they vary run to run (see results.json)
BENCHMARK_COLUMNS = ["dataset", "seed", "classifier", "selection", "epoch", "T1", "U", "S", "H",
                     "epochs", "quick", "device", "collapsed", "scattered"]


def benchmark_rows(result: RunResult, quick: bool) -> list[dict[str, Any]]:
    """One row per classifier of a run recorded by :func:`izf_lib.experiment.fit`.

    ``collapsed`` / ``scattered`` (IZF-Softmax rows): whether the run's generated unseen features
    collapsed or scattered (:mod:`izf_lib.collapse`); empty for IZF-NBC, which uses no generated features, and for runs
    recorded before the measure existed.
    """
    summary = result.collapse or {}

    def flag(key: str, clf: str) -> Any:
        return summary[key] if clf == "softmax" and summary.get(key) is not None else ""

    return [{
        "dataset": result.dataset, "seed": result.seed, "classifier": clf,
        "selection": result.selection["rule"], "epoch": result.selection["epochs"][clf], **result.scores(clf),
        "epochs": result.config["epochs"], "quick": quick, "device": result.environment["device"],
        "collapsed": flag("collapsed", clf), "scattered": flag("scattered", clf),
    } for clf in result.gzsl]


def flagged_rows(rows: list[dict[str, Any]]) -> list[str]:
    """One line per benchmark row whose numbers do not measure the method: IZF-Softmax trained on a collapsed or
    scattered generated unseen set, or any classifier whose GZSL predictions all fall on one side."""
    out = []
    for r in rows:
        what = [k for k in ("collapsed", "scattered") if str(r.get(k, "")) == "True"]
        side = one_sided({"U": float(r["U"]), "S": float(r["S"])})
        if side:
            what.append(f"one-sided (every GZSL prediction {side}: U {float(r['U']):.1f}, S {float(r['S']):.1f})")
        if what:
            name = CLASSIFIER_NAMES.get(str(r["classifier"]), str(r["classifier"]))
            out.append(f"{r['dataset']} seed {r['seed']} {name}: " + "; ".join(what))
    return out


def _row_order(r: dict[str, Any]) -> tuple:
    return (str(r.get("dataset", "")), int(r.get("seed", 0)), str(r.get("classifier", "")))


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write rows sorted by (dataset, seed, classifier), floats rounded to 4 decimals."""
    rows = sorted(rows, key=_row_order) if "classifier" in columns else rows
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in columns})


def upsert_benchmark_rows(results_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Add or replace rows (keyed by dataset, seed, classifier) in ``results_dir/benchmark_runs.csv``.

    Lets a single papermill run of the benchmark notebook update the table the book renders.
    """
    path = Path(results_dir) / "benchmark_runs.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = lambda r: (str(r["dataset"]), str(r["seed"]), str(r["classifier"]))  # noqa: E731
    old = list(csv.DictReader(path.open())) if path.is_file() else []
    new_keys = {key(r) for r in rows}
    merged = [r for r in old if key(r) not in new_keys] + rows
    _write_csv(path, [{k: (float(v) if k in ("T1", "U", "S", "H") else v) for k, v in r.items()} for r in merged],
               BENCHMARK_COLUMNS)
    return path


def collect(runs_root: str | os.PathLike, results_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Gather ``runs_root/<DATASET>/seed*/results.json`` and ``runs_root/digits_splits/*.csv`` into
    ``results_dir/benchmark_runs.csv``, ``digits_splits.csv`` and ``manifest.json``."""
    runs_root, out = Path(runs_root), Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    quick = bool(manifest.get("quick", True))
    rows: list[dict[str, Any]] = []
    for res_file in sorted(runs_root.glob(f"*/seed*/{RESULTS_FILE}")):
        rows.extend(benchmark_rows(RunResult.read(res_file), quick))
    _write_csv(out / "benchmark_runs.csv", rows, BENCHMARK_COLUMNS)
    split_rows: list[dict[str, Any]] = []
    for f in sorted((runs_root / "digits_splits").glob("*.csv")):
        with f.open() as fh:
            split_rows.extend(csv.DictReader(fh))
    if split_rows:
        _write_csv(out / "digits_splits.csv", split_rows, list(split_rows[0].keys()))
    manifest = {**manifest, "benchmark_rows": len(rows), "digits_split_rows": len(split_rows),
                "flagged": flagged_rows(sorted(rows, key=_row_order))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
