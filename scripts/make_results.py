#!/usr/bin/env python
"""Rerun the benchmark notebooks through papermill for every dataset found, then collect results/.

Quick mode (default; CPU, CI): 1 seed, 30 epochs, DIGITS, a subset of DIGITS splits and a
small AWA1-shaped surrogate. Full mode (--full, meant for a GPU): 3 seeds, 100 epochs, all 120
DIGITS splits and a full-size AWA1-shaped surrogate. Real xlsa17 datasets run wherever
<data dir>/<NAME>/res101.mat exists (--data-dir or $IZF_DATA); each missing one is reported in
one line, not a crash.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from izf_lib.data import XLSA17_NAMES  # noqa: E402
from izf_lib.experiments.engine import GridRunError, add_engine_arguments, run_calls, settings_from_args  # noqa: E402
from izf_lib.experiments.grid import objective_stamp  # noqa: E402
from izf_lib.experiments.notebook_runs import papermill_job  # noqa: E402
from izf_lib.prepare import prepare_digits, prepare_synthetic  # noqa: E402
from izf_lib.results import collect  # noqa: E402


def notebook_call(name: str, output: Path, parameters: dict) -> tuple:
    """One chapter run as a job of :func:`izf_lib.experiments.engine.run_calls`."""
    print(f"papermill {name} -> {output.relative_to(ROOT)} {parameters}", flush=True)
    return (papermill_job, (str(ROOT / "notebooks" / name), str(output), parameters))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="paper-like epochs and seeds (GPU)")
    p.add_argument("--data-dir", default=os.environ.get("IZF_DATA"), help="xlsa17 data directory (default $IZF_DATA)")
    p.add_argument("--att-file", help="att_splits.mat for the AWA1-shaped surrogate (default: the bundled AWA1 file)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, help="seeds per dataset (default: 3 on GPU or with --full, else 1)")
    p.add_argument("--runs", default=str(ROOT / "runs"), help="where runs are written (git-ignored)")
    p.add_argument("--results", default=str(ROOT / "results"), help="where the collected tables go (committed)")
    add_engine_arguments(p)
    args = p.parse_args(argv)

    quick = not args.full
    settings = settings_from_args(args)
    # on a cluster the submitting machine may have no GPU: GPU jobs (--gpus-per-task) train on CUDA
    gpu = args.device == "cuda" or (args.device != "cpu" and (
        torch.cuda.is_available() or (args.engine == "submitit" and settings.gpus_per_task > 0)))
    n_seeds = args.seeds or (3 if (gpu or args.full) else 1)
    seeds = list(range(n_seeds))
    runs, gen_data = Path(args.runs), Path(args.runs) / "data"
    device = "cuda" if gpu else "cpu"
    common = {"seeds": seeds, "device": device, "quick": quick, "out_root": str(runs.resolve())}

    datasets: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for name in XLSA17_NAMES:
        where = Path(args.data_dir) / name if args.data_dir else None
        if where is not None and (where / "res101.mat").is_file() and (where / "att_splits.mat").is_file():
            datasets[name] = str(Path(args.data_dir).resolve())
        else:
            why = (f"no {where}/res101.mat" if where is not None else "no data directory (--data-dir or IZF_DATA)")
            unavailable[name] = f"features not available: {why}"
            print(f"{name}: {unavailable[name]}; put xlsa17's {name}/res101.mat and att_splits.mat there to include it")

    prepare_digits(gen_data)
    datasets["DIGITS"] = str(gen_data.resolve())
    surrogates = {}
    scale, dim = (0.05, 512) if quick else (1.0, 2048)
    prepare_synthetic(gen_data, like="AWA1", att_file=args.att_file, scale=scale, d_v=dim, name="SYN_AWA1")
    datasets["SYN_AWA1"] = str(gen_data.resolve())
    surrogates["SYN_AWA1"] = (f"synthetic surrogate with AWA1's real class attributes and split sizes x {scale}, "
                              f"d_v = {dim}; synthetic features")

    calls = [notebook_call("07_benchmark.ipynb", runs / name / "benchmark.ipynb",
                           {**common, "dataset": name, "data_dir": data_dir, "results_dir": None})  # collected below
             for name, data_dir in datasets.items()]
    cpus = settings.cpus_per_task if args.engine == "submitit" else (os.cpu_count() or 1)
    calls.append(notebook_call("08_digits_benchmark.ipynb", runs / "digits_splits" / "digits_benchmark.ipynb",
                               {"quick": quick, "seeds": seeds, "device": device,
                                "out_dir": str((runs / "digits_splits").resolve()),
                                # full: all 120 splits, resumable (a rerun skips finished ones)
                                "n_splits": 8 if quick else None, "jobs": 1 if gpu else cpus}))
    try:  # one after the other here (each notebook uses the machine), or one submitit job each
        run_calls(calls, args.engine, 1, desc="notebooks", settings=settings)
    except GridRunError as exc:
        exc.report()
        return 1

    manifest = {
        "quick": quick, "seeds": seeds, "device": device,
        "machine": torch.cuda.get_device_name(0) if gpu else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "date": dt.date.today().isoformat(), "datasets": sorted(datasets), "unavailable": unavailable,
        "surrogates": surrogates, "objective": objective_stamp(),
        "command": ("make results FULL=1" if args.full else "make results")
        + (f" ENGINE={args.engine}" if args.engine != "local" else ""),
    }
    m = collect(runs, args.results, manifest)
    print(f"collected {m['benchmark_rows']} benchmark rows and {m['digits_split_rows']} DIGITS split rows "
          f"into {args.results}")
    for line in m["flagged"]:  # also marked in the book's benchmark table (chapter "Results")
        print(f"FLAGGED: {line}: these numbers do not measure the method", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
