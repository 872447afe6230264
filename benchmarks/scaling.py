#!/usr/bin/env python
"""How IZF's costs grow: training time per epoch against the number of samples, and test-time
cost of IZF-NBC and IZF-Softmax against the number of classes M and the feature dimension d_v
(supplementary Table 1 and 5.2). Fits log-log slopes; writes JSON.

    python benchmarks/scaling.py --out benchmarks/results/scaling_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, sync, time_fn, write_json  # noqa: E402

from izf_lib.classifiers import SoftmaxClassifier, nbc_predict  # noqa: E402
from izf_lib.config import IZFConfig  # noqa: E402
from izf_lib.data import TrainSplit  # noqa: E402
from izf_lib.model import IZF  # noqa: E402
from izf_lib.train import resolve_device, train_model  # noqa: E402


def fit_line(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares slope of log y on log x, and of y on x with its R^2."""
    lx, ly = np.log(x), np.log(y)
    log_slope = float(np.polyfit(lx, ly, 1)[0])
    a, b = np.polyfit(x, y, 1)
    pred = a * np.asarray(x) + b
    r2 = 1 - float(((np.asarray(y) - pred) ** 2).sum() / ((np.asarray(y) - np.mean(y)) ** 2).sum())
    return {"loglog_slope": log_slope, "linear_slope": float(a), "linear_intercept": float(b), "linear_r2": r2}


def _fits(rows: list[dict], x: str) -> dict[str, dict[str, float]]:
    """Log-log fits of the NBC and softmax cost per sample against column ``x``."""
    return {f"{k}_fit": fit_line([r[x] for r in rows], [r[f"{k}_seconds_per_sample"] for r in rows])
            for k in ("nbc", "softmax")}


def epoch_scaling(args: argparse.Namespace, device: torch.device) -> dict:
    rows = []
    gen = torch.Generator().manual_seed(0)
    att = torch.rand(50, args.d_a, generator=gen)
    cfg = IZFConfig(epochs=1, hidden=args.hidden, eval_every=0)
    for n in args.samples:
        y = torch.randint(0, 40, (n,), generator=gen)
        split = TrainSplit(torch.rand(n, args.dim, generator=gen), y, att, torch.arange(40), torch.arange(40, 50))
        train_model(split, cfg, device, progress=False)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        train_model(split, cfg, device, progress=False)
        sync(device)
        rows.append({"samples": n, "epoch_seconds": time.perf_counter() - t0})
        print(f"epoch of {n:6d} samples: {rows[-1]['epoch_seconds']:.2f} s", flush=True)
    return {"d_v": args.dim, "hidden": args.hidden, "rows": rows,
            "fit": fit_line([r["samples"] for r in rows], [r["epoch_seconds"] for r in rows])}


def test_cost(args: argparse.Namespace, device: torch.device) -> dict:
    out = {}
    n_test = args.test_samples

    def per_sample(model: IZF, m: int, d_v: int) -> dict[str, float]:
        v = torch.rand(n_test, d_v, device=device)
        classes = torch.arange(m, device=device)
        clf = SoftmaxClassifier(d_v, classes.cpu(), torch.Generator().manual_seed(0)).to(device)
        nbc = time_fn(lambda: nbc_predict(model, v, classes), device, args.steps, warmup=1) / n_test
        soft = time_fn(lambda: clf.predict(v), device, args.steps, warmup=1) / n_test
        return {"nbc_seconds_per_sample": nbc, "softmax_seconds_per_sample": soft}

    rows = []
    for m in args.classes:
        att = torch.rand(m, args.d_a)
        model = IZF(att, args.dim, IZFConfig(hidden=args.hidden)).to(device).eval()
        rows.append({"M": m, "d_v": args.dim, **per_sample(model, m, args.dim)})
        print(f"M = {m:5d}: {rows[-1]}", flush=True)
    out["vs_classes"] = {"rows": rows, **_fits(rows, "M")}
    rows = []
    for d in args.dims:
        att = torch.rand(args.fixed_classes, args.d_a)
        model = IZF(att, d, IZFConfig(hidden=args.hidden)).to(device).eval()
        rows.append({"M": args.fixed_classes, "d_v": d, **per_sample(model, args.fixed_classes, d)})
        print(f"d_v = {d:5d}: {rows[-1]}", flush=True)
    out["vs_dim"] = {"rows": rows, **_fits(rows, "d_v")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--dim", type=int, default=512, help="d_v for the epoch and class sweeps")
    p.add_argument("--d-a", type=int, default=85)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--samples", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    p.add_argument("--dims", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--fixed-classes", type=int, default=50)
    p.add_argument("--test-samples", type=int, default=2048)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/scaling.json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    result = {"environment": environment(device), "epoch": epoch_scaling(args, device), "test": test_cost(args, device)}
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
