"""Command line: ``python -m izf_lib prepare|train|evaluate|tune|toy``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .config import CLASSIFIERS, DEFAULT_PRESET, PRESETS, SELECTION_RULES
from .experiments.toy import FULL_ITERATIONS, FULL_SEEDS
from .precision import PRECISION_CHOICES
from .step import CUDA_GRAPH_MODES

CLASSIFIER_CHOICES = (*CLASSIFIERS, "both")

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m izf_lib", description="Invertible Zero-Shot Recognition Flows")
    sub = p.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="write a dataset in the xlsa17 layout")
    kinds = prep.add_subparsers(dest="kind", required=True)
    dg = kinds.add_parser("digits", help="the real DIGITS benchmark from scikit-learn's bundled digits")
    dg.add_argument("--out", required=True, help="data directory; writes OUT/DIGITS/")
    dg.add_argument("--unseen", default="3,6,9", help="comma-separated unseen digits (default 3,6,9)")
    dg.add_argument("--no-topology", action="store_true", help="seven-segment attributes only")
    dg.add_argument("--seed", type=int, default=0, help="seed of the 80/20 trainval/test_seen split")
    dg.add_argument("--name", default="DIGITS")
    sy = kinds.add_parser("synthetic", help="a surrogate with a real benchmark's classes, attributes and split sizes")
    sy.add_argument("--like", default="AWA1", help="AWA1, AWA2, CUB, SUN, APY or FLO")
    sy.add_argument("--out", required=True, help="data directory; writes OUT/SYN_<LIKE>/ (or OUT/<NAME>/)")
    sy.add_argument("--att-file", help="an att_splits.mat to take attributes, class names and split sizes from "
                    "(default: the repository's bundled copy of xlsa17's <LIKE>/att_splits.mat)")
    sy.add_argument("--random-attributes", action="store_true",
                    help="random attributes with the benchmark's shapes instead of the real ones")
    sy.add_argument("--scale", type=float, default=1.0, help="multiply every split size (e.g. 0.1)")
    sy.add_argument("--dim", type=int, default=2048, help="feature dimension d_v")
    sy.add_argument("--noise", type=float, default=1.0, help="within-class noise std")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--name", help="dataset directory name")

    tr = sub.add_parser("train", help="train IZF and write RUNDIR/results.json")
    tr.add_argument("--dataset", required=True, help="dataset directory name under the data dir, e.g. AWA1 or DIGITS")
    tr.add_argument("--data-dir", help="folder holding <DATASET>/res101.mat and att_splits.mat (default: $IZF_DATA)")
    tr.add_argument("--out", required=True, help="run directory for results.json and the checkpoint")
    tr.add_argument("--classifier", choices=CLASSIFIER_CHOICES, default="both")
    tr.add_argument("--epochs", type=int)
    seeds = tr.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int)
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="train these seeds together in one process, each into OUT/seed_<SEED>/ (on a GPU their "
                            "steps overlap on separate CUDA streams; each run gives the numbers it gives alone)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    tr.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                    help="named profile of settings (izf_lib.config.PRESETS); --config and the flags below override it")
    tr.add_argument("--config", help="JSON file of IZFConfig overrides")
    tr.add_argument("--selection", choices=SELECTION_RULES, help="epoch selection rule")
    tr.add_argument("--eval-every", type=int, help="evaluate every N epochs (0: only at the end)")
    tr.add_argument("--precision", choices=PRECISION_CHOICES,
                    help="auto (default, unless --config sets it: bf16 where the hardware has bf16 matrix units and "
                         "bf16 was measured at parity, tf32 on CUDA, fp32 otherwise; the choice and its reason are "
                         "printed and kept in results.json), fp32, bf16 (sub-network matmuls in bfloat16) or tf32 "
                         "(CUDA); see izf_lib.precision")
    tr.add_argument("--resume", action="store_true", help="continue from RUNDIR/checkpoint.pt")
    tr.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                    help="write RUNDIR/checkpoint.pt every N epochs and after the last (default 1)")
    tr.add_argument("--cuda-graphs", choices=CUDA_GRAPH_MODES, default="auto",
                    help="auto: on a GPU, replay the training step from a CUDA graph (izf_lib.step); off: eager")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="rescore a checkpoint without retraining")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data-dir", help="override the data directory stored in the checkpoint")
    ev.add_argument("--classifier", choices=CLASSIFIER_CHOICES, default="both")
    ev.add_argument("--device", default="auto")

    tu = sub.add_parser("tune", help="choose settings on a class-level validation fold (never test images)")
    tu.add_argument("--dataset", required=True)
    tu.add_argument("--data-dir", help="folder holding <DATASET>/ (default: $IZF_DATA)")
    tu.add_argument("--out", required=True, help="folder for chosen_config.json, trials.json, tune_summary.json")
    tu.add_argument("--trials", type=int, default=16, help="trials at most; trial 0 is the preset itself")
    tu.add_argument("--budget", type=float, default=12.0, help="minutes; no new trial starts after this")
    tu.add_argument("--fold", type=int, help="xlsa17 fold K only (default: every fold with 2+ validation classes, "
                    "else --seeded-folds seeded class splits)")
    tu.add_argument("--repeats", type=int, default=1, help="training seeds per fold and trial (default 1)")
    tu.add_argument("--seeded-folds", type=int, default=3,
                    help="seeded class splits to use when the dataset has no usable xlsa17 fold (default 3)")
    tu.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                    help=f"settings the trials start from; trial 0 (default '{DEFAULT_PRESET}': what train runs) is "
                         "kept unless beaten; 'quick' trials cost about 3x less, but then trial 0 is not train's run")
    tu.add_argument("--classifier", choices=CLASSIFIERS, default="softmax", help="whose validation scores count")
    tu.add_argument("--space", help="JSON file {setting: [values]} replacing izf_lib.tune.SEARCH_SPACE")
    tu.add_argument("--seed", type=int, default=0)
    tu.add_argument("--device", default="auto")
    tu.add_argument("--quiet", action="store_true")

    ty = sub.add_parser("toy", help="the toy grid (supp. 4.1): IZF, CGAN, CVAE x beta x seeds")
    ty.add_argument("--out", required=True, help="folder for one JSON per run and toy_runs.csv (reruns skip done runs)")
    ty.add_argument("--seeds", type=int, default=FULL_SEEDS, help=f"runs per model and beta (default {FULL_SEEDS})")
    ty.add_argument("--first-seed", type=int, default=0)
    ty.add_argument("--iterations", type=int, default=FULL_ITERATIONS,
                    help=f"training iterations per run (default {FULL_ITERATIONS})")
    ty.add_argument("--betas", default="0.1,0", help="comma-separated iMMD weights (default 0.1,0)")
    ty.add_argument("--jobs", type=int, default=1, help="parallel worker processes, one thread each")
    ty.add_argument("--picture-seed", type=int, default=0, help="keep this seed's generated samples for the figures")
    ty.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _classifiers(choice: str) -> tuple[str, ...]:
    return CLASSIFIERS if choice == "both" else (choice,)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .data import DataError

    try:
        if args.command == "prepare":
            from .prepare import prepare_digits, prepare_synthetic

            if args.kind == "digits":
                unseen = tuple(int(x) for x in args.unseen.split(",") if x.strip())
                path = prepare_digits(args.out, unseen=unseen, topology=not args.no_topology, seed=args.seed,
                                      name=args.name)
            else:
                path = prepare_synthetic(args.out, like=args.like, att_file=args.att_file, scale=args.scale,
                                         d_v=args.dim, noise=args.noise, seed=args.seed, name=args.name,
                                         random_attributes=args.random_attributes)
            print(f"wrote {path}")
            print(f"train with: python -m izf_lib train --dataset {path.name} --data-dir {path.parent} "
                  f"--out runs/{path.name}")
            return 0
        if args.command == "train":
            from .config import IZFConfig
            from .data import load_xlsa17
            from .experiment import fit, fit_together

            overrides = IZFConfig.overrides_from_file(args.config) if args.config else {}
            flags = {"epochs": args.epochs, "seed": args.seed, "selection": args.selection,
                     "eval_every": args.eval_every, "precision": args.precision}
            overrides.update({k: v for k, v in flags.items() if v is not None})
            overrides.setdefault("precision", "auto")  # the flag's default, below --config
            config = IZFConfig.preset(args.preset, **overrides)
            data = load_xlsa17(args.dataset, args.data_dir, feature_scaling=config.feature_scaling)
            if args.seeds:
                if len(set(args.seeds)) < len(args.seeds):
                    raise ValueError(f"--seeds repeats a seed: {args.seeds}")
                outs = [Path(args.out) / f"seed_{s}" for s in args.seeds]
                results = fit_together(data, [replace(config, seed=s) for s in args.seeds], outs,
                                       device=args.device, classifiers=_classifiers(args.classifier),
                                       resume=args.resume, progress=not args.quiet, data_dir=args.data_dir,
                                       cuda_graphs=args.cuda_graphs, checkpoint_every=args.checkpoint_every)
            else:
                outs = [Path(args.out)]
                results = [fit(data, config, args.out, device=args.device, classifiers=_classifiers(args.classifier),
                               resume=args.resume, progress=not args.quiet, data_dir=args.data_dir,
                               cuda_graphs=args.cuda_graphs, checkpoint_every=args.checkpoint_every)]
            for res, out in zip(results, outs, strict=True):
                print(json.dumps({"seed": res.seed, "czsl": res.czsl, "gzsl": res.gzsl, "selection": res.selection,
                                  "precision": res.environment["precision"]}, indent=1))
                print(f"wrote {out / 'results.json'}")
            return 0
        if args.command == "evaluate":
            from .data import load_xlsa17
            from .evaluation import evaluation_generator, score_benchmark
            from .precision import matmul_precision
            from .train import load_checkpoint, resolve_device

            dev = resolve_device(args.device)
            model, config, meta = load_checkpoint(args.checkpoint, dev)
            data = load_xlsa17(meta["dataset"], args.data_dir or meta.get("data_dir"),
                               feature_scaling=config.feature_scaling)
            gen = evaluation_generator(config.seed, meta["epoch"], dev)  # the stream training-time scores used
            with matmul_precision(config.precision, dev):
                scores = score_benchmark(model, data, _classifiers(args.classifier), config, gen)
            res = {"checkpoint": str(args.checkpoint), "epoch": meta["epoch"], "dataset": meta["dataset"], **scores}
            out = Path(args.checkpoint).with_name("evaluation.json")
            out.write_text(json.dumps(res, indent=1))
            print(json.dumps(res, indent=1))
            print(f"wrote {out}")
            return 0
        if args.command == "tune":
            from .tune import tune

            space = None
            if args.space:
                try:
                    space = json.loads(Path(args.space).read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{args.space}: cannot read a JSON search space: {exc}") from exc
                if not isinstance(space, dict):
                    raise ValueError(f"{args.space}: a search space is a JSON object {{setting: [values]}}")
            summary = tune(args.dataset, args.data_dir, args.out, preset=args.preset, trials=args.trials,
                           budget_minutes=args.budget, fold=args.fold, classifier=args.classifier, seed=args.seed,
                           space=space, device=args.device, progress=not args.quiet, repeats=args.repeats,
                           seeded_folds=args.seeded_folds)
            print(json.dumps(summary, indent=1))
            print(f"wrote {Path(args.out) / 'chosen_config.json'}; train with: python -m izf_lib train "
                  f"--dataset {args.dataset} --config {Path(args.out) / 'chosen_config.json'} --out runs/...")
            return 0
        if args.command == "toy":
            from .experiments.toy import run_toy_grid

            if args.seeds < 1 or args.iterations < 1 or args.jobs < 1:
                raise ValueError("--seeds, --iterations and --jobs must be positive")
            try:
                betas = [float(b) for b in args.betas.split(",") if b.strip()]
            except ValueError:
                raise ValueError(f"--betas must be comma-separated numbers such as 0.1,0; got '{args.betas}'") from None
            if not betas:
                raise ValueError("--betas is empty: give at least one iMMD weight, e.g. 0.1,0")
            path = run_toy_grid(args.out, range(args.first_seed, args.first_seed + args.seeds), args.iterations,
                                betas=betas, jobs=args.jobs, picture_seed=args.picture_seed,
                                progress=not args.quiet)
            print(f"wrote {path}")
            return 0
    except (DataError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
