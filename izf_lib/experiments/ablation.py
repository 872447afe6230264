"""Ablations on DIGITS: which part of IZF matters, and the seen/unseen trade-off H hides.

Each setting is a set of :class:`~izf_lib.config.IZFConfig` overrides on the ``quick`` preset,
trained on the default DIGITS split (3, 6, 9 unseen) for several seeds, and a stated subset of
settings on :data:`SPLIT_SUBSET` (the default split and 9 evenly spaced others). For the default
setting the GZSL classifiers are also swept by calibrated stacking: a constant gamma
subtracted from every seen class's score trades S for U, and the curve shows the whole
trade-off instead of the one point H reports.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..classifiers import train_softmax
from ..config import IZFConfig
from ..data import TrainSplit, ZSLData
from ..evaluation import evaluation_generator
from ..experiment import fit
from ..metrics import gzsl_scores
from ..model import IZF
from ..prepare import prepare_digits
from ..train import load_checkpoint
from .digits_splits import (
    digit_splits,
    digits_split_data,
    izf_columns,
    run_digits_split,
    score_baseline,
    split_name,
    split_run_dir,
)
from .grid import Call, gather_json_rows, read_csv_rows, run_jobs, write_csv, write_json_atomic
from .zsl_baselines import GaussianGenerator

__all__ = ["ABLATIONS", "ABLATION_PRESET", "DEFAULT_SPLIT", "SPLIT_SUBSET", "SPLIT_SETTINGS",
           "stacking_curve", "run_ablation", "ablation_calls",
           "write_ablation_csv", "run_tuned", "tune_calls", "tuned_calls", "write_tuned_csv",
           "FeatureReader", "CGANGenerator", "gan_calls", "write_gan_csv"]

ABLATION_PRESET = "quick"
DEFAULT_SPLIT = (3, 6, 9)
ABLATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no L_C (lambda_2 = 0)": {"lambda_c": 0.0},
    "no iMMD (lambda_3 = 0)": {"lambda_immd": 0.0},
    "K = 1 block": {"n_blocks": 1},
    "K = 3 blocks": {"n_blocks": 3},
    "K = 10 blocks": {"n_blocks": 10},
    "hidden 256": {"hidden": 256},
    "hidden 64": {"hidden": 64},
    "w_c = 3 (wider sigma)": {"w_c": 3.0},
    "w_c = 30 (narrower sigma)": {"w_c": 30.0},
    "L_flow: dev form": {"flow_loss": "dev"},
    "features standardised": {"feature_scaling": "standard"},
    "softmax unseen:seen 0.5": {"softmax_unseen_ratio": 0.5},
    "softmax unseen:seen 2": {"softmax_unseen_ratio": 2.0},
    # generated unseen features drawn once per fit, not at every step (new settings go last: a run's file
    # name is its setting's index)
    "softmax pool 300 per class": {"softmax_pool": 300},
}
N_POINTS = 21  # points on each stacking curve
# the default split and 9 evenly spaced 3-unseen splits (the results chapter's full-configuration subset)
SPLIT_SUBSET: list[tuple[int, ...]] = [DEFAULT_SPLIT] + [s for s in digit_splits(3, limit=9) if s != DEFAULT_SPLIT]
# the settings also run on every split of SPLIT_SUBSET: the main paper's ablations (L_C, iMMD, K) and the two
# settings with the largest effects on the default split (width, the softmax's balance)
SPLIT_SETTINGS = ("defaults", "no L_C (lambda_2 = 0)", "no iMMD (lambda_3 = 0)", "K = 1 block", "hidden 256",
                  "softmax unseen:seen 0.5")


def _curve(scores: Tensor, n_seen: int, classes: Tensor, y_seen: Tensor, y_unseen: Tensor,
           n_seen_rows: int) -> list[dict[str, float]]:
    """U, S, H as gamma sweeps the quantiles of (best seen score - best unseen score) over the test images."""
    margin = scores[:, :n_seen].max(1).values - scores[:, n_seen:].max(1).values
    gammas = torch.quantile(margin.double(), torch.linspace(0, 1, N_POINTS, dtype=torch.float64))
    gammas = torch.cat([gammas[:1] - 1e-6, gammas[1:-1], gammas[-1:] + 1e-6])  # both extremes reached exactly
    out = []
    for g in gammas.tolist():
        shifted = scores.double().clone()
        shifted[:, :n_seen] -= g
        pred = classes[shifted.argmax(1)]
        s = gzsl_scores(y_seen, pred[:n_seen_rows], y_unseen, pred[n_seen_rows:])
        out.append({"gamma": g, **{k: 100 * v for k, v in s.items()}})
    return out


def stacking_curve(model: IZF, data: ZSLData, config: IZFConfig, epoch: int) -> dict[str, list[dict[str, float]]]:
    """Calibrated-stacking curves (U, S, H per gamma) of IZF-NBC, IZF-Softmax and the Gaussian generator.

    IZF-Softmax is retrained exactly as it was scored (same evaluation stream and epoch), so
    the curve passes through the reported point. Test images are used to draw the curve only.
    """
    train = data.train_split()
    both = torch.cat([data.seen, data.unseen])
    v = torch.cat([data.v_test_seen, data.v_test_unseen])
    gen = evaluation_generator(config.seed, epoch, "cpu")
    clf = train_softmax(model, train, config.softmax_steps, config.softmax_lr, config.softmax_batch, gen,
                        unseen_ratio=config.softmax_unseen_ratio, pool=config.softmax_pool)["gzsl"]
    gauss = GaussianGenerator(seed=config.seed).fit(train)
    model.eval()
    with torch.no_grad():
        scores = {
            "IZF-NBC": model.class_log_prob(v, both),
            "IZF-Softmax": clf(v),
            "Gaussian generator + softmax": gauss.gzsl(v.float()),
        }
    n_seen, n_rows = len(data.seen), len(data.y_test_seen)
    return {m: _curve(s, n_seen, both, data.y_test_seen, data.y_test_unseen, n_rows) for m, s in scores.items()}


def _run_name(setting: str, seed: int, split: Sequence[int]) -> str:
    """The run's file name: ``NN_seedK`` on the default split (as first stored), ``NN_<split>_seedK`` elsewhere."""
    idx = list(ABLATIONS).index(setting)
    return f"{idx:02d}_seed{seed}" if tuple(split) == DEFAULT_SPLIT else f"{idx:02d}_{split_name(split)}_seed{seed}"


def _ablation_job(job: tuple[str, int, str, bool, tuple[int, ...]]) -> str:
    setting, seed, out_dir, curve, split = job
    config = IZFConfig.preset(ABLATION_PRESET, eval_every=0, seed=seed, **ABLATIONS[setting])
    name = _run_name(setting, seed, split)
    data = digits_split_data(split, config.feature_scaling)
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(data, config, Path(tmp) / "run", device="cpu", progress=False)
        record: dict[str, Any] = {"setting": setting, "seed": seed, "split": split_name(split),
                                  "epochs": config.epochs, **izf_columns(res)}
        if curve:
            model, _, _ = load_checkpoint(Path(tmp) / "run" / "checkpoint.pt", "cpu")
            curves = stacking_curve(model, data, config, res.selection["epochs"]["softmax"])
            points = [{"seed": seed, "method": m, "point": i, **p} for m, pts in curves.items()
                      for i, p in enumerate(pts)]
            write_json_atomic(Path(out_dir) / "curves" / f"seed{seed}.json", {"points": points})
    write_json_atomic(Path(out_dir) / f"{name}.json", record)
    return name


def run_ablation(out_dir: str | Path, seeds: Iterable[int], settings: Sequence[str] = tuple(ABLATIONS),
                 jobs: int = 1, progress: bool = True, splits: Sequence[Sequence[int]] = (DEFAULT_SPLIT,)) -> Path:
    """Every setting x split x seed not yet in ``out_dir``; writes ``ablation_runs.csv`` and ``stacking_curves.csv``."""
    run_jobs(ablation_calls(out_dir, seeds, settings, splits), jobs, desc="ablation runs", progress=progress)
    return write_ablation_csv(out_dir)


def ablation_calls(out_dir: str | Path, seeds: Iterable[int], settings: Sequence[str] = tuple(ABLATIONS),
                   splits: Sequence[Sequence[int]] = (DEFAULT_SPLIT,)) -> list[Call]:
    """The ablation runs not yet done in ``out_dir``, as calls for :func:`~izf_lib.experiments.grid.run_jobs`.

    The stacking curves are drawn for the default setting on the default split only.
    """
    unknown = sorted(set(settings) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation settings {unknown}; choose from {list(ABLATIONS)}")
    out = Path(out_dir)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    return [(_ablation_job, (s, int(seed), str(out), s == "defaults" and tuple(sp) == DEFAULT_SPLIT, tuple(sp)))
            for sp in splits for s in settings for seed in seeds
            if not (out / f"{_run_name(s, int(seed), sp)}.json").exists()]


def write_ablation_csv(out_dir: str | Path) -> Path:
    """Gather the runs into ``ablation_runs.csv`` and the default setting's curves into ``stacking_curves.csv``."""
    out = Path(out_dir)
    points = [p for f in sorted((out / "curves").glob("*.json")) for p in json.loads(f.read_text())["points"]]
    if points:
        write_csv(out / "stacking_curves.csv", points, float_digits=6)
    order, default = list(ABLATIONS), split_name(DEFAULT_SPLIT)
    return gather_json_rows(out, "ablation_runs.csv",
                            key=lambda r: (r["split"] != default, r["split"], order.index(r["setting"]), r["seed"]))


def _tune_dir(out: Path, split: Sequence[int]) -> Path:
    return out / "tune" if tuple(split) == DEFAULT_SPLIT else out / f"tune_{split_name(split)}"


def _tuned_rows(out: Path, split: Sequence[int], seed: int) -> Path:
    name = f"seed{seed}" if tuple(split) == DEFAULT_SPLIT else f"{split_name(split)}_seed{seed}"
    return out / "rows" / f"{name}.csv"


def _tuned_diagnosis(out: Path, split: Sequence[int], seed: int) -> Path:
    return out / "diagnosis" / f"{split_name(split)}_seed{seed}.json"


def _tune_job(job: tuple[tuple[int, ...], str, int]) -> str:
    """``tune`` on one split's seen classes (its own seeded validation folds), from the ablations' preset (their
    defaults are what the tuned runs are paired with), every trial run whatever the time."""
    from ..tune import tune

    split, out_dir, trials = job
    with tempfile.TemporaryDirectory() as tmp:
        prepare_digits(tmp, unseen=split, seed=0)
        tune("DIGITS", tmp, _tune_dir(Path(out_dir), split), preset=ABLATION_PRESET, trials=trials,
             budget_minutes=math.inf, progress=False)
    return f"tune {split_name(split)}"


def _tuned_job(job: tuple[tuple[int, ...], int, str]) -> str:
    """The split's chosen settings trained with one seed, scored beside the baselines on the test split, and
    diagnosed (where the tuned IZF and the Gaussian generator put the class means, :mod:`.diagnosis`)."""
    from .diagnosis import diagnose

    split, seed, out_dir = job
    out = Path(out_dir)
    chosen = IZFConfig.overrides_from_file(_tune_dir(out, split) / "chosen_config.json")
    config = IZFConfig.from_dict({**chosen, "seed": int(seed), "eval_every": 0})  # only final scores are read
    data = digits_split_data(split, config.feature_scaling)
    with tempfile.TemporaryDirectory() as run_dir:
        rows = run_digits_split(tuple(split), config, run_dir, data=data)
        model, _, _ = load_checkpoint(split_run_dir(run_dir, split, seed) / "checkpoint.pt", "cpu")
    gauss = GaussianGenerator(seed=int(seed)).fit(data.train_split())
    path = _tuned_diagnosis(out, split, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"split": split_name(split), "seed": int(seed), **diagnose(model, gauss, data, int(seed))})
    write_csv(_tuned_rows(out, split, seed), rows)  # last: a run is done once its rows file exists
    return f"tuned {split_name(split)} seed {seed}"


def tune_calls(out_dir: str | Path, splits: Sequence[Sequence[int]] = (DEFAULT_SPLIT,),
               trials: int = 16) -> list[Call]:
    """The per-split ``tune`` runs not yet done in ``out_dir`` (each split tuned on its own seen classes only)."""
    out = Path(out_dir)
    return [(_tune_job, (tuple(sp), str(out), trials)) for sp in splits
            if not (_tune_dir(out, sp) / "tune_summary.json").exists()]


def tuned_calls(out_dir: str | Path, splits: Sequence[Sequence[int]] = (DEFAULT_SPLIT,),
                seeds: Iterable[int] = (0, 1, 2)) -> list[Call]:
    """The test-split runs of each split's chosen settings not yet done; every split must be tuned first."""
    out = Path(out_dir)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    untuned = [split_name(sp) for sp in splits if not (_tune_dir(out, sp) / "chosen_config.json").exists()]
    if untuned:
        raise FileNotFoundError(f"{out}: no chosen_config.json for splits {untuned}; run their tune first")
    seeds = [int(s) for s in seeds]
    return [(_tuned_job, (tuple(sp), seed, str(out))) for sp in splits for seed in seeds
            if not (_tuned_rows(out, sp, seed).exists() and _tuned_diagnosis(out, sp, seed).exists())]


def write_tuned_csv(out_dir: str | Path) -> Path:
    """Gather every tuned run into ``tuned_runs.csv`` (default split first), every tune into ``tunes.csv`` and
    the placement of the tuned runs' class means into ``diagnosis/diagnosis_runs.csv``."""
    from ..tune import SEARCH_SPACE

    out = Path(out_dir)
    default = split_name(DEFAULT_SPLIT)
    tunes = []
    for path in sorted(out.glob("tune*/tune_summary.json")):
        s = json.loads(path.read_text())
        split = default if path.parent.name == "tune" else path.parent.name.removeprefix("tune_")
        chosen = IZFConfig.from_file(path.parent / "chosen_config.json")
        tunes.append({"split": split, "trials_run": s["trials_run"], "seconds": round(s["seconds"], 1),
                      "threads": s["threads"], "evaluations_per_trial": s["evaluations_per_trial"],
                      "best_trial": s["best_trial"], "best_objective": s["best_objective"],
                      "chosen_trial": s["chosen_trial"], "chosen_objective": s["chosen_objective"],
                      "chosen_objective_se": s["chosen_objective_se"], "reason": s["reason"],
                      "validation_classes": " | ".join(" ".join(fold) for fold in s["validation_classes"]),
                      **{k: getattr(chosen, k) for k in SEARCH_SPACE}})
    tunes.sort(key=lambda r: (r["split"] != default, r["split"]))
    if tunes:
        write_csv(out / "tunes.csv", tunes, float_digits=6)
    if list((out / "diagnosis").glob("*.json")):
        gather_json_rows(out / "diagnosis", "diagnosis_runs.csv",
                         key=lambda r: (r["split"] != default, r["split"], r["seed"]))
    rows = read_csv_rows(sorted((out / "rows").glob("*.csv")))
    if not rows:
        raise FileNotFoundError(f"no tuned runs (rows/*.csv) in {out}; run tuned_calls' runs first")
    rows.sort(key=lambda r: (r["split"] != default, r["split"], int(r["seed"])))
    return write_csv(out / "tuned_runs.csv", rows)


def run_tuned(out_dir: str | Path, seeds: Iterable[int] = (0, 1, 2), trials: int = 16,
              splits: Sequence[Sequence[int]] = (DEFAULT_SPLIT,), jobs: int = 1, progress: bool = True) -> Path:
    """``tune`` on each split's validation classes, then its chosen settings x ``seeds`` beside the baselines.

    Writes ``out_dir/tune/`` for the default split and ``out_dir/tune_<split>/`` for the others
    (chosen_config.json, trials.json, tune_summary.json), one rows file per split and seed, and
    ``tuned_runs.csv`` / ``tunes.csv``. A rerun reuses finished tunes and runs.
    """
    run_jobs(tune_calls(out_dir, splits, trials), jobs, desc="tunes", progress=progress)
    run_jobs(tuned_calls(out_dir, splits, seeds), jobs, desc="tuned runs", progress=progress)
    return write_tuned_csv(out_dir)


class FeatureReader:
    """Seen training features in the toy reader's interface, so the toy's CGAN + iMMD trains on real data.

    ``get_batch_tensor("training")`` returns ``[v, seen index, a_y]`` for a batch drawn from
    ``generator``; labels are indices into ``train.seen`` (the pre-trained classifier's outputs).
    """

    def __init__(self, train: TrainSplit, batch_size: int, generator: torch.Generator) -> None:
        self.train, self.batch_size, self.generator = train, batch_size, generator
        self.device = torch.device("cpu")
        self.d_out = train.d_v
        self.seen_cls_num = len(train.seen)
        self.unseen_emb = train.att[train.unseen]
        self.index = torch.searchsorted(train.seen, train.y)

    def get_batch_tensor(self, part: str = "training") -> list[Tensor]:
        pick = torch.randint(len(self.train.y), (self.batch_size,), generator=self.generator)
        return [self.train.v[pick], self.index[pick].float(), self.train.att[self.train.y[pick]]]


class CGANGenerator:
    """CGAN + beta L_iMMD (supp. eq. 15, the toy's trainer) as a feature generator on real data, then a softmax.

    Scored like the Gaussian generator: CZSL on generated unseen features, GZSL on real seen +
    generated unseen. Supplementary 4.2 says this baseline "cannot produce reasonable
    classification results on real image features"; this class measures it on DIGITS.
    """

    def __init__(self, beta: float = 0.1, iterations: int = 1000, n_per_class: int = 200, steps: int = 500,
                 lr: float = 1e-2, seed: int = 0) -> None:
        self.beta, self.iterations, self.n_per_class = beta, iterations, n_per_class
        self.steps, self.lr, self.seed = steps, lr, seed

    def fit(self, train: TrainSplit) -> CGANGenerator:
        from ..classifiers import fit_softmax
        from ..rng import STREAM_BASELINE, make_generator
        from .toy_baselines import train_cgan

        gen = make_generator(self.seed, STREAM_BASELINE)
        reader = FeatureReader(train, 120, gen)
        model, self.losses = train_cgan(reader, self.iterations, beta=self.beta, seed=self.seed,
                                        d_z=train.d_a, hidden=256)
        with torch.no_grad():
            v_gen = model.generate(train.att[train.unseen], self.n_per_class, generator=gen)
        self.finite = bool(torch.isfinite(v_gen).all())
        v_gen = torch.nan_to_num(v_gen, nan=0.0, posinf=0.0, neginf=0.0)
        y_gen = train.unseen.repeat_interleave(self.n_per_class)
        self.unseen = train.unseen
        self.czsl = fit_softmax(v_gen, y_gen, train.unseen, self.steps, self.lr, gen)
        self.gzsl = fit_softmax(torch.cat([train.v, v_gen]), torch.cat([train.y, y_gen]),
                                torch.cat([train.seen, train.unseen]), self.steps, self.lr, gen)
        return self

    @torch.no_grad()
    def predict(self, v: Tensor, classes: Tensor) -> Tensor:
        same = torch.equal(torch.sort(classes).values, torch.sort(self.unseen).values)
        return (self.czsl if same else self.gzsl).predict(v.float())


def _gan_job(job: tuple[float, int, int, str]) -> str:
    beta, seed, iterations, out_dir = job
    data = digits_split_data(DEFAULT_SPLIT)
    model = CGANGenerator(beta=beta, iterations=iterations, seed=seed).fit(data.train_split())
    name = f"gan_beta{beta:g}_seed{seed}"
    write_json_atomic(Path(out_dir) / f"{name}.json",
                      {"method": f"CGAN + {beta:g} iMMD" if beta else "CGAN (no iMMD)", "beta": beta, "seed": seed,
                       "iterations": iterations, "finite": model.finite,
                       "final_loss": model.losses[-1] if model.losses else float("nan"),
                       **score_baseline(model, data)})
    return name


def gan_calls(out_dir: str | Path, seeds: Iterable[int], betas: Sequence[float] = (0.1, 0.0),
              iterations: int = 1000) -> list[Call]:
    """The CGAN runs on DIGITS not yet done in ``out_dir``, as calls for :func:`~izf_lib.experiments.grid.run_jobs`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    return [(_gan_job, (float(b), int(s), iterations, str(out))) for b in betas for s in seeds
            if not (out / f"gan_beta{float(b):g}_seed{int(s)}.json").exists()]


def write_gan_csv(out_dir: str | Path) -> Path:
    """Gather the CGAN runs into ``gan_runs.csv``."""
    return gather_json_rows(Path(out_dir), "gan_runs.csv", key=lambda r: (-r["beta"], r["seed"]))
