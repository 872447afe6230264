"""Choose IZF settings for a new dataset on a class-level validation fold, never on test images.

``tune`` trains each trial on the seen classes of a validation fold (the fold's train classes,
80% of their trainval images) and scores it on the fold's held-out classes as pseudo-unseen
(and the other 20% as pseudo-seen test images): the xlsa17 ``trainclassesK.txt`` /
``valclassesK.txt`` fold K, or, for a dataset without folds, a seeded split of the seen
classes (:func:`seeded_class_fold`). Every trial is scored on every usable fold (and ``repeats``
seeds), and its objective is the mean over them of the validation CZSL T1 and GZSL H of one
classifier. Trial 0 is always the preset itself, then random draws from :data:`SEARCH_SPACE`; the
choice follows :data:`SELECTION_RULE` (the preset stays unless beaten by more than the noise) and is
written as ``chosen_config.json`` for ``train --config``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import CLASSIFIERS, DEFAULT_PRESET, PRESETS, IZFConfig
from .data import DataError, ZSLData, load_xlsa17, validation_split
from .evaluation import evaluation_generator, score
from .experiment import write_text_atomic
from .rng import STREAM_TUNE, stream_seed
from .train import resolve_device, train_model

__all__ = ["standard_error", "SEARCH_SPACE", "MIN_VAL_CLASSES", "SELECTION_RULE", "seeded_class_fold", "choose_trial",
           "chosen_config", "tune"]

# ours: a small space around the defaults, each axis one the ablation chapter measures
SEARCH_SPACE: dict[str, list[Any]] = {
    "hidden": [256, 1024],
    "epochs": [30, 60],
    "w_c": [3.0, 10.0, 30.0],
    "lambda_c": [0.3, 1.0, 3.0],
    "lambda_immd": [0.0, 0.1],
    "softmax_unseen_ratio": [0.5, 1.0, 2.0],
    "softmax_steps": [500, 1000, 2000],
    "feature_scaling": ["minmax", "standard"],
}


MIN_VAL_CLASSES = 2  # CZSL among fewer than 2 pseudo-unseen classes is always right: nothing to select on
SE_MARGIN = 2.0      # how many standard errors a trial must win by to replace the preset

SELECTION_RULE = (
    "the preset (trial 0) is kept unless the trial with the best mean validation objective beats it, "
    f"evaluation by evaluation (same folds and seeds), by more than {SE_MARGIN:g} standard errors of that "
    "paired difference; with a single evaluation per trial no error can be measured and the preset is kept"
)


def standard_error(values: list[float]) -> float | None:
    """The standard error of the mean of ``values``; None for fewer than two."""
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def choose_trial(records: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(best, chosen, reason) under :data:`SELECTION_RULE`; ``records[0]`` is the preset.

    The best of many noisy trials is lucky as well as good (on a 2-class fold, one seed, a trial's
    validation objective moved by more than 10 points), so winning has to beat the noise seen.
    """
    preset = records[0]
    best = max(records, key=lambda r: (r["objective"], -r["trial"]))
    if best is preset:
        return best, preset, "the preset has the best mean validation objective"
    diffs = [b["objective"] - p["objective"] for b, p in zip(best["evaluations"], preset["evaluations"], strict=True)]
    mean, se = float(np.mean(diffs)), standard_error(diffs)
    if se is None:
        return best, preset, (f"trial {best['trial']} leads by {mean:.1f} on a single evaluation, which measures no "
                              "error: the preset is kept")
    if mean > SE_MARGIN * se:
        return best, best, (f"trial {best['trial']} beats the preset by {mean:.1f} +- {se:.1f} (s.e. of the paired "
                            f"difference over {len(diffs)} evaluations), more than {SE_MARGIN:g} s.e.")
    return best, preset, (f"trial {best['trial']} leads by {mean:.1f} +- {se:.1f} (s.e., {len(diffs)} paired "
                          f"evaluations), not more than {SE_MARGIN:g} s.e.: the preset is kept")


def chosen_config(preset: str, params: dict[str, Any]) -> dict[str, Any]:
    """The settings ``train --config`` gets: the preset with the chosen trial's overrides and nothing else.

    With no overrides (the preset kept) this is exactly ``train --preset PRESET``, so the same seed gives the
    same run as not tuning at all; the trials' own ``eval_every = 0`` (they need only final scores) stays out.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose from {sorted(PRESETS)}")
    return {**PRESETS[preset], **params}


def seeded_class_fold(data: ZSLData, seed: int, share: float = 0.25) -> tuple[list[str], list[str]]:
    """A validation fold for a dataset without usable xlsa17 folds: ``share`` of the seen classes (at
    least 2, at most all but 2) drawn with ``seed`` become pseudo-unseen; returns (train, val) names."""
    seen = [data.class_names[k] for k in data.seen.tolist()]
    if len(seen) < 2 + MIN_VAL_CLASSES:
        raise DataError(f"{data.source or data.name}: a validation fold needs at least {2 + MIN_VAL_CLASSES} "
                        f"seen classes, found {len(seen)}")
    n_val = min(len(seen) - 2, max(MIN_VAL_CLASSES, round(share * len(seen))))
    rng = np.random.default_rng(stream_seed(seed, STREAM_TUNE))
    val = set(rng.choice(len(seen), n_val, replace=False).tolist())
    return [n for i, n in enumerate(seen) if i not in val], [n for i, n in enumerate(seen) if i in val]


def _check_space(space: dict[str, list[Any]]) -> None:
    known = {f.name for f in dataclasses.fields(IZFConfig)}
    if not space or any(not isinstance(v, list) or not v for v in space.values()):
        raise ValueError("the search space is empty: give at least one setting with a non-empty list of values")
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(f"the search space names unknown IZF settings {unknown}")


def _draw_trials(space: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Trial 0 = no overrides (the preset), then up to n - 1 distinct random points of the grid."""
    keys = list(space)
    grid = list(itertools.product(*(space[k] for k in keys)))
    rng = np.random.default_rng(stream_seed(seed, STREAM_TUNE, 1))
    order = rng.permutation(len(grid))[: max(0, n - 1)]
    return [{}] + [dict(zip(keys, grid[i], strict=True)) for i in order]


def tune(
    dataset: str,
    data_dir: str | None,
    out_dir: str | Path,
    *,
    preset: str = DEFAULT_PRESET,
    trials: int = 16,
    budget_minutes: float = 12.0,
    fold: int | None = None,
    classifier: str = "softmax",
    seed: int = 0,
    space: dict[str, list[Any]] | None = None,
    device: str = "auto",
    progress: bool = True,
    repeats: int = 1,
    seeded_folds: int = 3,
) -> dict[str, Any]:
    """Run up to ``trials`` trials (stopping once ``budget_minutes`` have passed) and write the choice.

    Each trial is trained and scored on every usable validation fold (only ``fold`` when given), or on
    ``seeded_folds`` seeded class splits when the dataset has none, ``repeats`` seeds each; the choice
    follows :data:`SELECTION_RULE`.

    Writes ``out_dir/chosen_config.json`` (the preset plus the chosen overrides, loadable with
    ``train --config``), ``out_dir/trials.json`` (every trial's settings, validation scores and
    seconds) and returns the summary that ``out_dir/tune_summary.json`` holds.
    """
    from tqdm.auto import tqdm

    space = SEARCH_SPACE if space is None else space
    _check_space(space)
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if repeats < 1 or seeded_folds < 1:
        raise ValueError(f"repeats and seeded_folds must be >= 1, got {repeats} and {seeded_folds}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got '{classifier}'")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose from {sorted(PRESETS)}")
    dev = resolve_device(device)
    loaded: dict[str, ZSLData] = {}

    def data_for(scaling: str) -> ZSLData:
        if scaling not in loaded:
            loaded[scaling] = load_xlsa17(dataset, data_dir, feature_scaling=scaling)
        return loaded[scaling]

    first = data_for(IZFConfig.preset(preset).feature_scaling)
    usable = {k: f for k, f in first.folds.items() if len(f[1]) >= MIN_VAL_CLASSES}
    if fold is not None:
        if fold not in first.folds:
            raise DataError(f"{first.source or dataset}: no validation fold {fold} (trainclasses{fold}.txt / "
                            f"valclasses{fold}.txt); folds found: {sorted(first.folds) or 'none'}")
        if fold not in usable:
            raise DataError(f"{first.source or dataset}: validation fold {fold} has {len(first.folds[fold][1])} "
                            f"validation classes; tuning needs at least {MIN_VAL_CLASSES} pseudo-unseen classes")
    if fold is not None:
        folds = [(fold, first.folds[fold], f"xlsa17 fold {fold}")]
    elif usable:
        folds = [(k, usable[k], f"xlsa17 fold {k}") for k in sorted(usable)]
    else:  # no usable xlsa17 fold: seeded splits of the seen classes, one per seed
        folds = [(0, seeded_class_fold(first, seed + j), f"seeded split of the seen classes (seed {seed + j})")
                 for j in range(seeded_folds)]
    fold_note = "; ".join(note for _, _, note in folds)
    if not usable and fold is None:
        fold_note += (f" (izf_lib.tune.seeded_class_fold: the dataset has no xlsa17 fold with at least "
                      f"{MIN_VAL_CLASSES} validation classes)")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    plan = _draw_trials(space, trials, seed)
    bar = tqdm(plan, desc=f"tune {dataset}", disable=not progress)
    for i, params in enumerate(bar):
        if i > 0 and time.perf_counter() - start > 60 * budget_minutes:
            break
        t0 = time.perf_counter()
        evaluations = []
        for k, names, note in folds:
            for r in range(repeats):
                run_seed = seed + r
                config = IZFConfig.preset(preset, **{**params, "seed": run_seed, "eval_every": 0})
                data = dataclasses.replace(data_for(config.feature_scaling), folds={k: names})
                split, (v_s, y_s, v_u, y_u) = validation_split(data, k, run_seed)
                model, _ = train_model(split, config, dev, progress=False)
                scores = score(model, split, v_s, y_s, v_u, y_u, CLASSIFIERS, config,
                               evaluation_generator(run_seed, config.epochs, dev, validation=True))
                t1, h = scores["czsl"][classifier]["T1"], scores["gzsl"][classifier]["H"]
                evaluations.append({"fold": note, "seed": run_seed, "val": scores,
                                    "objective": 0.5 * (t1 + h) if math.isfinite(t1 + h) else -math.inf})
        values = [e["objective"] for e in evaluations]
        records.append({"trial": i, "params": params, "objective": float(np.mean(values)),
                        "objective_se": standard_error(values), "evaluations": evaluations,
                        "seconds": time.perf_counter() - t0})
        best = max(records, key=lambda r: r["objective"])
        bar.set_postfix_str(f"best trial {best['trial']}: {best['objective']:.1f}")
        write_text_atomic(out / "trials.json", json.dumps(records, indent=1))
    best, chosen_record, reason = choose_trial(records)
    chosen = chosen_config(preset, chosen_record["params"])
    IZFConfig.from_dict(chosen)  # a chosen config always loads
    write_text_atomic(out / "chosen_config.json", json.dumps(chosen, indent=1) + "\n")
    summary = {
        "dataset": dataset, "preset": preset, "classifier": classifier, "fold": fold_note,
        "validation_classes": [names[1] for _, names, _ in folds],
        "objective": "mean of validation CZSL T1 and GZSL H (percent), averaged over every fold and seed",
        "evaluations_per_trial": len(folds) * repeats, "rule": SELECTION_RULE,
        "trials_run": len(records), "trials_planned": len(plan), "best_trial": best["trial"],
        "best_objective": best["objective"], "chosen_trial": chosen_record["trial"],
        "chosen_params": chosen_record["params"], "chosen_objective": chosen_record["objective"],
        "chosen_objective_se": chosen_record["objective_se"], "reason": reason,
        "seconds": time.perf_counter() - start, "device": str(dev), "threads": torch.get_num_threads(),
    }
    write_text_atomic(out / "tune_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
