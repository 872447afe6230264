#!/usr/bin/env python
"""The parts of benchmarks/gpu.sh as one job each: on a GPU cluster, `--engine submitit --gpus-per-task 1`.

Each part (step, scaling, parity, train, together) runs `benchmarks/gpu.sh OUT` with PARTS set to it, its own
log (OUT/log_<part>.txt) and its own copy of the surrogate data (removed when the part ends), so the
parts can run at once on different GPUs. TINY, PRECISIONS and BLOCKS are passed on as given here.

    python scripts/submit_gpu_benchmarks.py benchmarks/results/gpu/MACHINE --engine submitit --gpus-per-task 1 \\
        --partition gpu --timeout-min 30
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from izf_lib.experiments.engine import GridRunError, add_engine_arguments, run_calls, settings_from_args  # noqa: E402
from izf_lib.experiments.notebook_runs import command_job  # noqa: E402

PARTS = ("step", "scaling", "parity", "train", "together")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder the parts write into (benchmarks/gpu.sh OUT_DIR)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    add_engine_arguments(p)
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    passed = {k: os.environ[k] for k in ("TINY", "PRECISIONS", "BLOCKS", "PYTHON") if k in os.environ}
    calls = [(command_job, (["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(out)],
                            {**passed, "PARTS": part, "LOG": str(out / f"log_{part}.txt"),
                             "DATA": str(out / f"data_{part}"), "CLEAN_DATA": "1"}, str(ROOT), f"gpu.sh {part}"))
             for part in args.parts]
    try:
        for name in run_calls(calls, args.engine, 1, desc="gpu.sh parts", settings=settings_from_args(args)):
            print(f"done: {name}")
    except GridRunError as exc:
        exc.report()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
