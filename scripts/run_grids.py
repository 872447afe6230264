#!/usr/bin/env python
"""Run the book's stored experiment grids in one pool of single-threaded workers, resumably.

    python scripts/run_grids.py --jobs 16                 # everything, into results/
    python scripts/run_grids.py --only toy oracle --jobs 2

Grids (each writes one JSON or CSV per run and a collected CSV; a rerun skips finished runs):
  toy       supplementary 4.1: IZF, CGAN, CVAE x beta in {0.1, 0} x 10 seeds x 2000 iterations
  digits    DIGITS in the full configuration (preset 'full': 100 epochs): the default split
            (3, 6, 9) and 9 evenly spaced 3-unseen splits x 3 seeds, IZF beside the baselines
  oracle    IZF on data drawn from a known IZF model, 10 seeds x 2 objectives
  ablation  DIGITS default split, every setting of izf_lib.experiments.ablation x 3 seeds (quick)
  ablation_splits  the settings in ablation.SPLIT_SETTINGS on the 9 other splits of ablation.SPLIT_SUBSET x 3 seeds
  diagnosis  IZF (quick) and the Gaussian generator on ablation.SPLIT_SUBSET x 3 seeds: scores and where each
            puts the unseen class means (izf_lib.experiments.diagnosis); again for IZF without iMMD
  tuned     `tune` on each split of ablation.SPLIT_SUBSET (its own seen classes only, 3 seeded folds; 16 trials,
            --tune-trials N fewer; one thread each, its time in tunes.csv), then each split's chosen settings x 3
            seeds beside the baselines
  gan       supplementary 4.2's CGAN + iMMD (the toy's trainer) on DIGITS, beta in {0.1, 0} x 3 seeds x 1000 iterations
  immd_forms  the forms of L_iMMD of izf_lib.experiments.immd_forms on its surrogates, 1 seed x 100 epochs (round
            1), round 1's choice and the hinge x 2 seeds (round 2), the declared rules' choice (choice.json), and
            the chosen form on the held-out surrogates
  at_scale  (only when named) the defaults on 2048-d surrogates of AWA1, CUB and SUN shapes, 3 seeds x 100 epochs,
            beside the Gaussian generator (izf_lib.experiments.at_scale); --scale 1 is full size (a minute a
            run on a GPU with --device cuda --jobs 1; on 2 CPU cores 35 min or more a run, --jobs 1), else pass a
            smaller --scale; --shapes and --seeds N take a subset; --together trains a shape's seeds in one process
            (each run gets cpu_count // jobs threads: 2048-d products gain from them); --lc-reduction R and
            --lambda-c W train with L_C reduced by R and weighted by W, into results/at_scale_lc_R/ (or
            at_scale_lambda_cW/) where they are not the library's defaults
--smoke shrinks everything to seconds (a CPU check of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from izf_lib.config import LC_REDUCTIONS, PRESETS, IZFConfig  # noqa: E402
from izf_lib.experiments import ablation, at_scale, diagnosis, digits_splits, immd_forms, oracle, toy  # noqa: E402
from izf_lib.experiments.engine import GridRunError, add_engine_arguments, run_calls, settings_from_args  # noqa: E402
from izf_lib.experiments.grid import claim_folder, write_json_atomic  # noqa: E402
from izf_lib.precision import PRECISION_CHOICES  # noqa: E402

GRIDS = ("toy", "digits", "oracle", "ablation", "ablation_splits", "diagnosis", "tuned", "gan", "immd_forms",
         "at_scale")
# not in the default set: full size takes a GPU minute or a CPU half-hour per run (at_scale.py)
DEFAULT_GRIDS = GRIDS[:-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results"), help="root folder (default: results/)")
    p.add_argument("--only", nargs="+", choices=GRIDS, default=list(DEFAULT_GRIDS))
    p.add_argument("--scale", type=float, default=1.0,
                   help="at_scale: the surrogates' size against the benchmark's (1: full size; on a CPU, e.g. 0.1)")
    p.add_argument("--device", default="auto", help="at_scale: where to train (auto: CUDA when present)")
    p.add_argument("--shapes", nargs="+", choices=at_scale.SHAPES, default=list(at_scale.SHAPES),
                   help="at_scale: the benchmark shapes to train (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="at_scale: seeds 0 .. N-1 (default 3)")
    p.add_argument("--together", action="store_true",
                   help="at_scale: train each shape's seeds together in one process (on a GPU their steps overlap "
                        "on separate CUDA streams; each record is the one its seed gives alone)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="at_scale: the runs' precision (default auto, as for train: bf16 on a CPU with AMX or "
                        "AVX512-BF16, tf32 on CUDA, else fp32; izf_lib.precision); recorded in each run's record")
    p.add_argument("--lc-reduction", choices=LC_REDUCTIONS, default=IZFConfig.lc_reduction,
                   help="at_scale: how L_C adds up its classes (default: the library's, into results/at_scale/; "
                        "another into results/at_scale_lc_<value>/)")
    p.add_argument("--lambda-c", type=float, default=IZFConfig.lambda_c,
                   help="at_scale: L_C's weight lambda_2 (default: the library's; another into a folder named "
                        "by at_scale.folder_name, e.g. results/at_scale_lambda_c10/)")
    p.add_argument("--tune-trials", type=int, default=16,
                   help="tuned: trials per split's tune (default 16; trial 0 is the preset, each trial 3 folds)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes, one thread each")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script in seconds")
    add_engine_arguments(p)
    args = p.parse_args(argv)
    if args.tune_trials < 1:
        p.error(f"--tune-trials must be >= 1, got {args.tune_trials}")
    settings = settings_from_args(args)

    ran = [0]  # every run of this command, the main pool's and those of the writers (tunes, round 2, held out)

    def run_jobs(calls: list, jobs: int, desc: str = "runs", progress: bool = True) -> list[str]:
        ran[0] += len(calls)
        return run_calls(calls, args.engine, jobs, desc=desc, settings=settings, progress=progress)

    out = Path(args.out)
    smoke = args.smoke
    if smoke:
        PRESETS["quick"] = {"epochs": 1, "eval_every": 0, "softmax_steps": 5, "hidden": 16}
    calls, writers = [], []
    toy_calls = {}
    if "toy" in args.only:
        seeds = range(2 if smoke else toy.FULL_SEEDS)
        toy_calls = {m: toy.toy_grid_calls(out / "toy", seeds, 3 if smoke else toy.FULL_ITERATIONS, models=(m,),
                                           picture_seed=0) for m in ("IZF", "CGAN", "CVAE")}
        calls += toy_calls["IZF"]  # the longest runs first, so the pool stays busy to the end
        writers.append(lambda: toy.write_toy_csv(out / "toy"))
    if "digits" in args.only:
        splits = ablation.SPLIT_SUBSET
        config = IZFConfig.preset("full", eval_every=0, **({"epochs": 1, "softmax_steps": 5, "hidden": 16}
                                                            if smoke else {}))
        claim_folder(out / "digits_full")
        calls += digits_splits.digits_grid_calls(splits[:2] if smoke else splits, range(3), config,
                                                 out / "digits_full")
        writers.append(lambda: digits_splits.write_digits_csv(out / "digits_full", config))
    calls += toy_calls.get("CGAN", [])
    if "ablation" in args.only or "ablation_splits" in args.only:
        claim_folder(out / "ablation")  # runs of another L_iMMD form are never resumed into these
    if "ablation" in args.only:
        calls += ablation.ablation_calls(out / "ablation", range(1 if smoke else 3),
                                         ["defaults", "hidden 64"] if smoke else tuple(ablation.ABLATIONS))
        writers.append(lambda: ablation.write_ablation_csv(out / "ablation"))
    if "ablation_splits" in args.only:
        others = [sp for sp in ablation.SPLIT_SUBSET if sp != ablation.DEFAULT_SPLIT]
        calls += ablation.ablation_calls(out / "ablation", range(1 if smoke else 3),
                                         ["defaults"] if smoke else ablation.SPLIT_SETTINGS,
                                         others[:1] if smoke else others)
        writers.append(lambda: ablation.write_ablation_csv(out / "ablation"))
    if "diagnosis" in args.only:
        claim_folder(out / "diagnosis")
        # lambda_3 = 0 makes the iMMD form moot there, not the reduction of L_C
        claim_folder(out / "diagnosis_no_immd")
        splits = ablation.SPLIT_SUBSET[:1] if smoke else ablation.SPLIT_SUBSET
        calls += diagnosis.diagnosis_calls(out / "diagnosis", splits, range(1 if smoke else 3))
        writers.append(lambda: diagnosis.write_diagnosis_csv(out / "diagnosis"))
        no_immd = ablation.ABLATIONS["no iMMD (lambda_3 = 0)"]  # the variant closest to the Gaussian generator
        calls += diagnosis.diagnosis_calls(out / "diagnosis_no_immd", splits, range(1 if smoke else 3),
                                           overrides=no_immd)
        writers.append(lambda: diagnosis.write_diagnosis_csv(out / "diagnosis_no_immd"))
    if "gan" in args.only:
        calls += ablation.gan_calls(out / "gan", range(3), iterations=20 if smoke else 1000)
        writers.append(lambda: ablation.write_gan_csv(out / "gan"))
    calls += toy_calls.get("CVAE", [])
    if "immd_forms" in args.only:
        root = out / "immd_forms"
        data_root = Path(tempfile.mkdtemp(prefix="izf_surrogates_")) if smoke else ROOT / "runs" / "data" / "immd_forms"
        small = {"softmax_steps": 5, "hidden": 16} if smoke else None
        epochs = 1 if smoke else 100
        calls = immd_forms.immd_form_calls(root, immd_forms.ROUND1_SEEDS, epochs=epochs, data_root=data_root,
                                           extra=small) + calls

        def write_choice() -> Path:
            # round 2 (declared after round 1): round 1's choice against the hinge, with a second seed
            first = immd_forms.choose(immd_forms.read_rows(root))["chosen"]
            run_jobs(immd_forms.immd_form_calls(root, immd_forms.ROUND2_SEEDS, epochs=epochs, data_root=data_root,
                                                candidates=[first, *immd_forms.ROUND2], extra=small),
                     args.jobs, desc="iMMD forms, round 2")
            choice = immd_forms.choose_all(immd_forms.read_rows(root))
            write_json_atomic(root / "choice.json", choice)
            # then the chosen form alone on the held-out surrogates, which took no part in the choice
            run_jobs(immd_forms.immd_form_calls(root, range(1), epochs=epochs, data_root=data_root,
                                                candidates=[choice["chosen"]], settings=list(immd_forms.HELD_OUT),
                                                extra=small),
                     args.jobs, desc="held-out surrogates")
            return root / "choice.json"

        writers.append(write_choice)
    if "at_scale" in args.only:
        scale_dir = out / at_scale.folder_name(args.lc_reduction, args.lambda_c)
        claim_folder(scale_dir, IZFConfig(lc_reduction=args.lc_reduction, lambda_c=args.lambda_c))
        scale_root = Path(tempfile.mkdtemp(prefix="izf_surrogates_")) if smoke else ROOT / "runs" / "data" / "at_scale"
        lc = {} if args.lc_reduction == IZFConfig.lc_reduction else {"lc_reduction": args.lc_reduction}
        if args.lambda_c != IZFConfig.lambda_c:
            lc["lambda_c"] = args.lambda_c
        calls += at_scale.at_scale_calls(scale_dir, scale=0.02 if smoke else args.scale,
                                         seeds=range(1 if smoke else args.seeds), epochs=1 if smoke else 100,
                                         data_root=scale_root, device=args.device,
                                         shapes=("AWA1",) if smoke else tuple(args.shapes),
                                         extra={"softmax_steps": 5, "hidden": 16, "precision": "fp32", **lc} if smoke
                                         else {"precision": args.precision, **lc},
                                         threads=max(1, (os.cpu_count() or 1) // args.jobs),
                                         together=args.together)
        writers.append(lambda: at_scale.write_at_scale_csv(scale_dir))
    if "oracle" in args.only:
        claim_folder(out / "oracle")
        calls += oracle.oracle_grid_calls(out / "oracle", range(1 if smoke else 10))
        writers.append(lambda: oracle.write_oracle_csv(out / "oracle"))
    start = time.perf_counter()
    if "tuned" in args.only:  # every split's tune first: its runs need the chosen settings
        claim_folder(out / "tuned")
        splits = ablation.SPLIT_SUBSET[:2] if smoke else ablation.SPLIT_SUBSET
        run_jobs(ablation.tune_calls(out / "tuned", splits, trials=2 if smoke else args.tune_trials), args.jobs,
                 desc="tunes")
        calls = ablation.tuned_calls(out / "tuned", splits, range(1 if smoke else 3)) + calls
        writers.append(lambda: ablation.write_tuned_csv(out / "tuned"))
    where = f"{args.jobs} workers" if args.engine == "local" else f"submitit jobs in {settings.folder}"
    print(f"{len(calls)} runs to do with {where}", flush=True)
    try:
        run_jobs(calls, args.jobs, desc="grids", progress=True)
    except GridRunError as exc:  # the other runs landed; the tables wait until every run has
        exc.report()
        return 1
    for write in writers:
        print(f"wrote {write()}")
    took = time.perf_counter() - start
    log = out / "grids_log.jsonl"
    with log.open("a") as f:
        f.write(json.dumps({"grids": args.only, "runs": ran[0], "jobs": args.jobs, "engine": args.engine,
                            "wall_seconds": round(took, 1),
                            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                            "torch": torch.__version__, "smoke": smoke}) + "\n")
    print(f"{ran[0]} runs in {took:.0f} s with {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
