#!/usr/bin/env python
"""Several seeds trained together against one seed alone: does the device fill up?

One small IZF model leaves a GPU mostly idle (its graphed step is launch- and elementwise-bound), so
``izf_lib.train.train_models`` gives each run of a group its own CUDA stream and lets their steps
overlap. This script trains seed 0 alone, then seeds 0 .. N-1 together, on one dataset with the same
settings (training only: no classifier is fitted), and writes the wall seconds of each (set-up included),
the seconds of each epoch (the median leaves out the first epochs' start-up), and how far seed 0's
per-epoch losses moved between the two (on a CPU: not at all; on a GPU: within the run-to-run spread
of its kernels).

    python benchmarks/together.py --dataset SYN_AWA1 --data-dir DIR --seeds 3 --epochs 100 --out OUT.json

The issue's goal on an H100 (tf32): 3 seeds x 100 AWA1-shaped epochs in less time than one seed takes
alone (42 s). On a CPU the runs share the same cores and the group takes about N times one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, max_relative_difference, sync, write_json  # noqa: E402

from izf_lib.config import IZFConfig  # noqa: E402
from izf_lib.data import load_xlsa17  # noqa: E402
from izf_lib.precision import PRECISION_CHOICES, choose_precision  # noqa: E402
from izf_lib.step import CUDA_GRAPH_MODES  # noqa: E402
from izf_lib.train import TrainJob, resolve_device, train_models  # noqa: E402


def _timed(jobs: list[TrainJob], device: torch.device, cuda_graphs: str) -> tuple[float, list[list[dict]]]:
    """Wall seconds of training ``jobs`` together (setup included, as a user waits for it) and their histories."""
    sync(device)
    t0 = time.perf_counter()
    trained = train_models(jobs, device, progress=False, cuda_graphs=cuda_graphs)
    sync(device)
    return time.perf_counter() - t0, [history for _, history in trained]


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    data = load_xlsa17(args.dataset, args.data_dir)
    choice = choose_precision(args.precision, device)
    overrides = IZFConfig.overrides_from_file(args.config) if args.config else {}
    config = IZFConfig(**{**overrides, "epochs": args.epochs, "precision": choice.precision, "seed": 0})
    split = data.train_split()
    _timed([TrainJob(split, replace(config, epochs=1))], device, args.cuda_graphs)  # warm-up: libraries, kernels
    alone_s, (alone,) = _timed([TrainJob(split, config)], device, args.cuda_graphs)
    jobs = [TrainJob(split, replace(config, seed=s)) for s in range(args.seeds)]
    together_s, histories = _timed(jobs, device, args.cuda_graphs)
    keys = [k for k in alone[0] if k.startswith(("l", "k_")) and isinstance(alone[0][k], float)]
    rel = max_relative_difference(alone, histories[0], keys)
    out = {"environment": environment(device), "dataset": args.dataset, "data": data.summary(),
           "epochs": args.epochs, "seeds": args.seeds, "precision": choice.to_dict(), "cuda_graphs": args.cuda_graphs,
           "config": config.to_dict(), "alone_seconds": alone_s, "together_seconds": together_s,
           "together_over_alone": together_s / alone_s,
           "throughput_gain": args.seeds * alone_s / together_s,
           # epoch by epoch (the group's epoch is all its runs' epochs): the median leaves out start-up
           "alone_epoch_seconds": [r["train_seconds"] for r in alone],
           "together_epoch_seconds": [r["train_seconds"] for r in histories[0]],
           "median_epoch_together_over_alone": (statistics.median(r["train_seconds"] for r in histories[0])
                                                / statistics.median(r["train_seconds"] for r in alone)),
           "seed0_max_relative_loss_difference": rel,
           "final_losses": [{k: h[-1][k] for k in keys} for h in histories]}
    print(f"{args.dataset}, {args.epochs} epochs, {choice.precision}: one seed alone {alone_s:.1f} s, "
          f"{args.seeds} seeds together {together_s:.1f} s ({out['together_over_alone']:.2f}x one seed's time, "
          f"{out['throughput_gain']:.2f}x the epochs per second); seed 0's losses moved by at most {rel:.1e}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 trained together (default 3)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    p.add_argument("--config", help="JSON file of IZFConfig overrides (e.g. a smaller hidden size for a smoke test)")
    p.add_argument("--cuda-graphs", choices=CUDA_GRAPH_MODES, default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        p.error("--seeds and --epochs must be positive")
    write_json(measure(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
