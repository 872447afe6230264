#!/usr/bin/env python
"""Does replaying the training step from a CUDA graph change training? Eager against graphed, same seed.

Trains IZF for a few epochs on one dataset twice, by default with ``cuda_graphs="off"`` (the eager
step) and ``"auto"`` (the step replayed from a CUDA graph on a GPU; on a CPU, auto is the eager
step), and writes per-epoch loss terms, the largest relative difference between the two
runs, the largest parameter difference at the end, and the training seconds of each.

    python benchmarks/graph_parity.py --dataset SYN_AWA1 --data-dir DIR --epochs 5 --out OUT.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, max_relative_difference, write_json  # noqa: E402

from izf_lib.config import IZFConfig  # noqa: E402
from izf_lib.data import load_xlsa17  # noqa: E402
from izf_lib.precision import PRECISIONS, matmul_precision  # noqa: E402
from izf_lib.train import resolve_device, train_model  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    data = load_xlsa17(args.dataset, args.data_dir)
    config = IZFConfig(epochs=args.epochs, precision=args.precision, seed=args.seed)
    runs, models = {}, {}
    labels = list(args.modes) if len(set(args.modes)) == 2 else [f"{m} ({i + 1})" for i, m in enumerate(args.modes)]
    for label, mode in zip(labels, args.modes, strict=True):
        t0 = time.perf_counter()
        with matmul_precision(args.precision, device):
            model, history = train_model(data.train_split(), config, device, progress=False, cuda_graphs=mode)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs[label] = {"cuda_graphs": mode, "seconds": time.perf_counter() - t0,
                      "epoch_seconds": [r["train_seconds"] for r in history],
                      "losses": [{k: r[k] for k in r if k.startswith("l") and k != "eval"} for r in history]}
        models[label] = model
        print(f"cuda_graphs={mode}: {runs[label]['seconds']:.1f} s, last epoch {runs[label]['losses'][-1]}")
    a_run, b_run = (runs[x] for x in labels)
    rel = max_relative_difference(a_run["losses"], b_run["losses"], a_run["losses"][0])
    param = max(float((p.detach() - q.detach()).abs().max()) for p, q in
                zip(models[labels[0]].parameters(), models[labels[1]].parameters(), strict=True))
    out = {"environment": environment(device), "dataset": args.dataset, "epochs": args.epochs,
           "precision": args.precision, "seed": args.seed, "runs": runs,
           "max_relative_loss_difference": rel, "max_parameter_difference": param,
           "compared": labels, "speedup": sum(a_run["epoch_seconds"]) / sum(b_run["epoch_seconds"])}
    print(f"largest relative difference of an epoch's mean loss term: {rel:.2e}; "
          f"of a parameter after {args.epochs} epochs: {param:.2e}; training speed {labels[1]} / {labels[0]}: "
          f"{out['speedup']:.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", nargs=2, choices=("off", "auto", "on"), default=["off", "auto"],
                   help="the two cuda_graphs modes compared (off off: how far two eager runs differ on this device)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    write_json(measure(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
