#!/usr/bin/env python
"""What evaluation costs against training: one run per IZF-Softmax pool setting on a 2048-d surrogate,
a classifier every ``--eval-every`` epochs, with the train and eval seconds of its results.json.

``softmax_pool = 0`` (the default) generates fresh unseen features at every one of the softmax's steps;
``softmax_pool = N`` generates N per unseen class once per fit. The runs are sequential (never two
torch jobs at once) and share one seed, so their training is identical and only evaluation differs.

    python benchmarks/evaluation_cost.py --scale 0.1 --epochs 10 --pools 0 300 \\
        --out benchmarks/results/evaluation_cost_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_json  # noqa: E402

from izf_lib.config import IZFConfig  # noqa: E402
from izf_lib.data import load_xlsa17  # noqa: E402
from izf_lib.experiment import fit  # noqa: E402
from izf_lib.prepare import prepare_synthetic  # noqa: E402
from izf_lib.train import resolve_device  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare_synthetic(root, like=args.like, scale=args.scale, d_v=args.dim, seed=args.data_seed, name="SYN")
        data = load_xlsa17("SYN", str(root))
        for pool in args.pools:
            extra = {"hidden": args.hidden, "softmax_steps": args.softmax_steps} if args.hidden else {}
            config = IZFConfig.from_dict({"epochs": args.epochs, "eval_every": args.eval_every, "seed": args.seed,
                                          "softmax_pool": pool, **extra})
            # one checkpoint at the end: writing one per epoch (378 MB at 2048-d) is neither timed nor needed
            result = fit(data, config, root / f"run_pool{pool}", device=device, progress=not args.quiet,
                         checkpoint_every=args.epochs)
            timings = result.timings
            evaluations = sum(1 for r in result.history if r.get("eval") is not None)  # None: not evaluated
            runs.append({
                "softmax_pool": pool, "evaluations": evaluations,
                "train_seconds": timings["train_seconds"], "eval_seconds": timings["eval_seconds"],
                "eval_per_train": timings["eval_seconds"] / timings["train_seconds"],
                "softmax": result.scores("softmax"), "nbc": result.scores("nbc"),
                "collapse": result.collapse,
            })
            print(f"softmax_pool {pool}: train {timings['train_seconds']:.0f} s, eval {timings['eval_seconds']:.0f} s "
                  f"({evaluations} evaluations)", flush=True)
    return {"like": args.like, "scale": args.scale, "d_v": args.dim, "data_seed": args.data_seed, "seed": args.seed,
            "epochs": args.epochs, "eval_every": args.eval_every, "train_images": int(data.v_trainval.shape[0]),
            "unseen_classes": int(data.unseen.numel()), "runs": runs, "environment": environment(device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--like", default="AWA1", help="the benchmark whose classes and split sizes the surrogate has")
    p.add_argument("--scale", type=float, default=0.1, help="split sizes against the benchmark's")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension d_v")
    p.add_argument("--data-seed", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--pools", type=int, nargs="+", default=[0, 300], help="softmax_pool values, one run each")
    p.add_argument("--hidden", type=int, help="a smaller sub-network width and --softmax-steps (tests only)")
    p.add_argument("--softmax-steps", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default="benchmarks/results/evaluation_cost.json")
    args = p.parse_args(argv)
    if args.eval_every < 1 or args.epochs < args.eval_every:
        p.error("--eval-every must be >= 1 and at most --epochs: the point is to time evaluations")
    write_json(measure(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
