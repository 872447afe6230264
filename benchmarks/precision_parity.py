#!/usr/bin/env python
"""Does IZF's accuracy survive bf16? Accuracy and numerical error of each precision policy.

Two measurements, written to one JSON file that the cost chapter renders:

* accuracy: IZF trained on DIGITS (default split 3-6-9) in the full configuration (100 epochs,
  1000 softmax steps) under each policy, for several seeds; CZSL T1 and GZSL U, S, H of both
  classifiers at the last epoch;
* numerics: on a 2048-d, 5-block, hidden-1024 flow with randomised weights, the round-trip error
  |f^-1(f(v)) - v| and the log-det error against the float64 autograd Jacobian of a smaller flow,
  under each policy.

    python benchmarks/precision_parity.py --out benchmarks/results/precision_parity_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.autograd.functional import jacobian

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_json  # noqa: E402

from izf_lib.config import IZFConfig  # noqa: E402
from izf_lib.data import load_xlsa17  # noqa: E402
from izf_lib.experiment import fit  # noqa: E402
from izf_lib.experiments.grid import objective_stamp  # noqa: E402
from izf_lib.flows import IZFFlow  # noqa: E402
from izf_lib.precision import PRECISIONS, matmul_precision  # noqa: E402
from izf_lib.prepare import prepare_digits  # noqa: E402
from izf_lib.rng import randomise_parameters_  # noqa: E402
from izf_lib.train import resolve_device  # noqa: E402


def numerics(precision: str, device: torch.device, seed: int = 0) -> dict[str, float]:
    """Round-trip error at benchmark size and log-det error against float64 autograd at d = 16."""
    gen = torch.Generator().manual_seed(seed)
    big = randomise_parameters_(IZFFlow(2048, 5, 1024, seed=seed), 0.01, gen).to(device).set_precision(precision)
    v = torch.rand(256, 2048, generator=gen).to(device)
    small = randomise_parameters_(IZFFlow(16, 5, 64, seed=seed), 0.2, gen)
    x = torch.randn(8, 16, generator=gen)
    reference = torch.stack([torch.linalg.slogdet(jacobian(lambda r: small.double()(r[None])[0][0], row)).logabsdet
                             for row in x.double()])
    small = small.float().to(device).set_precision(precision)
    with torch.no_grad(), matmul_precision(precision, device):
        z, _ = big(v)
        round_trip = float((big.inverse(z) - v).abs().max())
        _, log_det = small(x.to(device))
    return {"round_trip_max_abs": round_trip,
            "log_det_max_abs_error": float((log_det.double().cpu() - reference).abs().max()),
            "log_det_scale": float(reference.abs().max())}


def accuracy(precision: str, seeds: list[int], epochs: int, device: str, data_dir: Path) -> list[dict]:
    data = load_xlsa17("DIGITS", data_dir)
    rows = []
    for seed in seeds:
        cfg = IZFConfig.preset("full", epochs=epochs, eval_every=0, precision=precision, seed=seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            res = fit(data, cfg, run_dir, device=device, progress=False)
        rows.append({"precision": precision, "seed": seed, "seconds": time.perf_counter() - t0,
                     **{f"{clf}_{k}": v for clf in res.gzsl for k, v in res.scores(clf).items()}})
        print(f"{precision} seed {seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items()
                                                       if k not in ("precision", "seed")), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["fp32", "bf16"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/precision_parity_cpu.json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    out = {"environment": environment(device), "dataset": "DIGITS", "split": "3-6-9", "epochs": args.epochs,
           "seeds": args.seeds, "objective": objective_stamp(), "numerics": {}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        prepare_digits(tmp)
        for precision in args.precisions:
            out["numerics"][precision] = numerics(precision, device)
            print(f"{precision} numerics: {out['numerics'][precision]}", flush=True)
        for seed in args.seeds:  # seed-major, so an interrupted run still compares the precisions
            for precision in args.precisions:
                out["runs"].extend(accuracy(precision, [seed], args.epochs, str(device), Path(tmp)))
                write_json(out, args.out)  # partial results survive an interruption
    return 0


if __name__ == "__main__":
    sys.exit(main())
