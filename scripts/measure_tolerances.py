"""Measure how far the chapters' printed numbers move across CPU kernels; write tests/nbval_tolerances.json.

Each configuration reruns `pytest --nbval notebooks` in a copy of the working tree, with PyTorch's
kernel dispatch forced (ATEN_CPU_CAPABILITY) and the BLAS libraries held to the same instruction set
(MKL_CBWR, ONEDNN_MAX_CPU_ISA), at a given thread count: each is the round-off of another kind of
CPU. `--nbval-deviations` (tests/nbval_tolerance.py) records, for every cell, the largest change of
a printed number against the stored output. Optionally, notebooks executed on another machine
(`--foreign DIR`, e.g. an older checkout's stored outputs) add their deviations too.

A cell whose numbers moved in any configuration gets the tolerance

    abs = FACTOR x the largest deviation seen     (rounded up to two significant digits)

and every other cell stays compared exactly. A cell whose text changed in more than its numbers
cannot be toleranced: the script names it and exits non-zero (make that cell's output robust).

    python scripts/measure_tolerances.py                    # the default configurations, 2 at a time
    python scripts/measure_tolerances.py --configs avx2/1 default/2 --jobs 1
    python scripts/measure_tolerances.py --notebooks 06_toy_experiment.ipynb   # re-measure one chapter
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nbval_tolerance import TOLERANCES, _as_text, _text_fields  # noqa: E402

# Each instruction set: the variables that hold ATen, MKL and oneDNN to it.
CAPABILITIES = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "native": {},
}
DEFAULT_CONFIGS = ["default/1", "default/2", "avx2/1", "avx2/2", "avx512/1", "native/1"]
FACTOR = 3.0  # margin over the largest deviation seen, for CPUs not among the configurations
COPIED = ["notebooks", "results", "benchmarks", "tests", "datasets", "conftest.py", "pyproject.toml"]


def config_env(config: str) -> dict[str, str]:
    """The environment of one configuration, 'CAPABILITY/THREADS' (e.g. 'avx2/1')."""
    cap, _, threads = config.partition("/")
    if cap not in CAPABILITIES or not threads.isdigit():
        raise SystemExit(f"--configs: {config!r} is not CAPABILITY/THREADS with CAPABILITY in {sorted(CAPABILITIES)}")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    env.update(CAPABILITIES[cap])
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    return env


def run_config(config: str, notebooks: list[str], work: Path) -> list[dict]:
    """Rerun the notebooks' nbval tests under one configuration in a copy of the tree; the deviation rows."""
    tree = work / config.replace("/", "_t")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        elif src.is_file():
            shutil.copy2(src, tree / name)
    rows_file = tree / "deviations.jsonl"
    cmd = [sys.executable, "-m", "pytest", "--nbval", "-q", "--no-header", "-p", "no:randomly",
           f"--nbval-deviations={rows_file}", *[f"notebooks/{n}" for n in notebooks]]
    start = time.time()
    out = subprocess.run(cmd, cwd=tree, env=config_env(config), capture_output=True, text=True)
    tail = out.stdout.strip().splitlines()[-1:] or [out.stderr[-300:]]
    print(f"{config}: {tail[0]} ({time.time() - start:.0f} s)", flush=True)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.is_file() else []
    return [{**r, "config": config} for r in rows]


def foreign_rows(folder: Path, notebooks: list[str]) -> list[dict]:
    """Deviation rows of notebooks executed elsewhere, against the stored ones, matched by cell id.

    Only the numbers are compared (a cell whose count of numbers differs is skipped: its code changed)."""
    from nbval_tolerance import split_numbers

    patterns = re.findall(r"^regex: (.*)$\n^replace: (.*)$", (ROOT / "tests" / "nbval_sanitize.cfg").read_text(), re.M)

    def sanitize(text: str) -> str:  # as nbval does, with the project's sanitizer
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    rows = []
    for name in notebooks:
        theirs, ours = folder / name, ROOT / "notebooks" / name
        if not theirs.is_file():
            continue
        by_id = {c.get("id"): c for c in json.loads(theirs.read_text())["cells"] if c["cell_type"] == "code"}
        for cell in json.loads(ours.read_text())["cells"]:
            other = by_id.get(cell.get("id"))
            if cell["cell_type"] != "code" or other is None:
                continue
            ta, na = split_numbers(sanitize(_numbers_text(cell)))
            tb, nb = split_numbers(sanitize(_numbers_text(other)))
            # the same text but for numbers and line breaks (a sentence rewrapped is the same sentence;
            # a table printed in another layout is skipped: its numbers are in another order)
            if re.sub(r"\s+", " ", ta) == re.sub(r"\s+", " ", tb) and len(na) == len(nb) and na:
                rows.append({"notebook": name, "cell_id": cell.get("id"), "config": f"foreign:{folder.name}",
                             "deviation": max(abs(x - y) for x, y in zip(na, nb, strict=True)),
                             "source": "".join(cell["source"]).splitlines()[0][:80]})
    return rows


def _numbers_text(cell: dict) -> str:
    """Every text a stored cell shows, joined (the plugin's view of its outputs)."""
    return "\n".join(_as_text(box[key]) for o in cell.get("outputs", []) for box, key in _text_fields(o))


def round_up(x: float, digits: int = 2) -> float:
    """x rounded up to `digits` significant digits (a tolerance is never rounded down)."""
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / scale - 1e-9) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="CAPABILITY/THREADS each")
    parser.add_argument("--notebooks", nargs="+", default=None, help="file names under notebooks/ (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="configurations run at once (one thread each: 1/THREADS)")
    parser.add_argument("--foreign", type=Path, nargs="*", default=[], help="folders of notebooks executed elsewhere")
    parser.add_argument("--factor", type=float, default=FACTOR)
    parser.add_argument("--out", type=Path, default=TOLERANCES)
    parser.add_argument("--skip-runs", action="store_true",
                        help="rerun nothing: take the configurations' measurements from --out, add --foreign anew")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for c in args.configs:
        config_env(c)  # reject a bad name before anything runs

    rows: list[dict] = []
    if args.skip_runs:
        previous = json.loads(args.out.read_text())
        args.configs = list(previous["configurations"])
        for nb, by_id in previous["cells"].items():
            for cell_id, tol in by_id.items():
                rows += [{"notebook": nb, "cell_id": cell_id, "deviation": tol["measured"], "config": c,
                          "source": tol["cell"]} for c in tol["moved_under"] if not c.startswith("foreign:")]
    with tempfile.TemporaryDirectory(prefix="izf-tolerances-") as work:
        # configurations of 1 thread run side by side; any with more threads runs alone
        single = [c for c in args.configs if c.endswith("/1") and not args.skip_runs]
        multi = [c for c in args.configs if not c.endswith("/1") and not args.skip_runs]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for r in pool.map(lambda c: run_config(c, notebooks, Path(work)), single):
                rows += r
        for c in multi:
            rows += run_config(c, notebooks, Path(work))
    for folder in args.foreign:
        rows += foreign_rows(folder, notebooks)

    worst: dict[tuple[str, str], dict] = {}
    bad = []
    for r in rows:
        key = (r["notebook"], r["cell_id"])
        if r["deviation"] is None:
            bad.append(r)
            continue
        w = worst.setdefault(key, {"deviation": 0.0, "configs": [], "source": r["source"]})
        if r["deviation"] > 0:
            w["configs"].append(r["config"])
            w["deviation"] = max(w["deviation"], r["deviation"])
    for r in bad:
        print(f"NOT BY NUMBERS ALONE: {r['notebook']} cell {r.get('cell')} ({r['config']}): {r['source']}")

    # measuring some notebooks only keeps the other notebooks' entries as they were measured
    cells: dict[str, dict] = {}
    if args.notebooks and args.out.is_file():
        cells = {nb: by_id for nb, by_id in json.loads(args.out.read_text())["cells"].items() if nb not in notebooks}
    for (nb, cell_id), w in sorted(worst.items()):
        if w["deviation"] > 0:
            cells.setdefault(nb, {})[cell_id] = {
                "abs": round_up(args.factor * w["deviation"]),
                "measured": w["deviation"],
                "moved_under": sorted(set(w["configs"])),
                "cell": w["source"],
            }
    doc = {
        "about": "Tolerances of the notebook cells whose printed numbers come out of training or sampling "
                 "(tests/nbval_tolerance.py). Written by scripts/measure_tolerances.py; do not edit by hand.",
        "rule": f"abs = {args.factor:g} x the largest |new - stored| seen over the configurations, rounded up to "
                "two significant digits; cells that did not move stay compared exactly",
        "configurations": {c: {**CAPABILITIES[c.split('/')[0]], "threads": int(c.split('/')[1])} for c in args.configs},
        "foreign": [f.name for f in args.foreign],
        "measured_on": {"machine": platform.machine(), "processor": _cpu_name(), "cores": os.cpu_count(),
                        "date": time.strftime("%Y-%m-%d")},
        "cells": dict(sorted(cells.items())),
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}: {sum(len(v) for v in cells.values())} cells with a tolerance")
    if bad:
        raise SystemExit(f"{len(bad)} cell run(s) changed in more than their numbers (listed above)")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
