"""The DIGITS benchmark: IZF and the simple baselines on the same zero-shot splits in one run."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import IZFConfig
from ..data import ZSLData, load_xlsa17
from ..experiment import OneSidedWarning, RunResult, fit
from ..metrics import czsl_t1, gzsl_scores
from ..prepare import prepare_digits
from .grid import Call, read_csv_rows, run_jobs, write_csv
from .zsl_baselines import BASELINES

__all__ = ["digit_splits", "split_name", "split_run_dir", "digits_split_data", "izf_columns", "score_baseline",
           "run_digits_split", "run_digits_grid", "digits_grid_calls", "write_digits_csv", "config_key",
           "SPLIT_COLUMNS"]

SPLIT_COLUMNS = ["split", "seed", "method", "T1", "U", "S", "H"]


def digit_splits(n_unseen: int = 3, limit: int | None = None) -> list[tuple[int, ...]]:
    """All C(10, n_unseen) unseen-digit sets in lexicographic order, or ``limit`` of them evenly spaced.

    Every set is valid: the ten attribute rows are distinct, so any unseen set is identifiable.
    ``limit`` 0 gives no split (callers add the default one); a negative limit is refused.
    """
    splits = list(itertools.combinations(range(10), n_unseen))
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None (all splits), got {limit}")
    if limit == 0:
        return []
    if limit is not None and limit < len(splits):
        step = len(splits) / limit
        splits = [splits[int(i * step)] for i in range(limit)]
    return splits


def split_name(unseen: Sequence[int]) -> str:
    """'3-6-9' for the unseen digits (3, 6, 9)."""
    return "-".join(str(d) for d in unseen)


def digits_split_data(unseen: Sequence[int], feature_scaling: str = "minmax") -> ZSLData:
    """DIGITS with ``unseen`` digits, written to a temporary folder and loaded into memory."""
    with tempfile.TemporaryDirectory() as tmp:
        prepare_digits(tmp, unseen=tuple(unseen), seed=0)
        return load_xlsa17("DIGITS", tmp, feature_scaling=feature_scaling)


def izf_columns(res: RunResult) -> dict[str, float]:
    """A run's scores as flat columns: ``IZF-NBC T1``, ..., ``IZF-Softmax H``."""
    return {f"{label} {k}": v for clf, label in (("nbc", "IZF-NBC"), ("softmax", "IZF-Softmax"))
            for k, v in res.scores(clf).items()}


def score_baseline(model: Any, data: ZSLData) -> dict[str, float]:
    """CZSL T1 and GZSL U, S, H (percent) of a fitted baseline with ``predict(v, classes)``."""
    both = torch.cat([data.seen, data.unseen])
    t1 = czsl_t1(data.y_test_unseen, model.predict(data.v_test_unseen, data.unseen))
    g = gzsl_scores(data.y_test_seen, model.predict(data.v_test_seen, both),
                    data.y_test_unseen, model.predict(data.v_test_unseen, both))
    return {"T1": 100 * t1, **{k: 100 * x for k, x in g.items()}}


def split_run_dir(run_dir: str | os.PathLike, unseen: Sequence[int], seed: int) -> Path:
    """Where :func:`run_digits_split` writes the IZF run (checkpoint and results.json) of a split and seed."""
    return Path(run_dir) / f"split_{split_name(unseen)}_seed{seed}"


def run_digits_split(unseen: tuple[int, ...], config: IZFConfig, run_dir: str | os.PathLike,
                     device: str = "cpu", data: ZSLData | None = None) -> list[dict[str, Any]]:
    """IZF-NBC, IZF-Softmax and every baseline on DIGITS with ``unseen`` digits; one row per method.

    The IZF run is written to :func:`split_run_dir`; ``data`` (that split, scaled as ``config`` says)
    saves loading it again when the caller already has it. A classifier whose GZSL predictions all fall on
    one side is not warned of per run here: its row's U or S is 0, and the tables that show the rows mark
    it (:func:`izf_lib.metrics.one_sided`), once per grid instead of once per split and seed.
    """
    split = split_name(unseen)
    data = digits_split_data(unseen, config.feature_scaling) if data is None else data
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OneSidedWarning)
        res = fit(data, config, split_run_dir(run_dir, unseen, config.seed), device=device, progress=False)
    for clf, label in (("nbc", "IZF-NBC"), ("softmax", "IZF-Softmax")):
        rows.append({"split": split, "seed": config.seed, "method": label, **res.scores(clf)})
    train = data.train_split()
    for label, cls in BASELINES.items():
        kwargs = {"seed": config.seed} if "seed" in inspect.signature(cls).parameters else {}
        rows.append({"split": split, "seed": config.seed, "method": label,
                     **score_baseline(cls(**kwargs).fit(train), data)})
    return rows


# Settings added after grids were stored: at these values they leave the fingerprint as it was.
KEY_NEUTRAL = {"immd_form": "neg_mmd2_biased", "mmd_scale_basis": "fixed", "lc_reduction": "sum"}


def config_key(config: IZFConfig) -> str:
    """A short fingerprint of every setting but the seed: rows of different settings never mix on resume."""
    settings = {k: v for k, v in config.to_dict().items()
                if k != "seed" and not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _rows_dir(out_dir: str | os.PathLike, config: IZFConfig) -> Path:
    return Path(out_dir) / "rows" / config_key(config)


def _grid_job(job: tuple[tuple[int, ...], dict[str, Any], str, str, bool]) -> str:
    """One (split, seed) of the grid: writes ROWS/<config>/<split>_seed<k>.csv once all its methods are scored."""
    unseen, config_dict, out_dir, device, keep_checkpoint = job
    config = IZFConfig.from_dict(config_dict)
    out = Path(out_dir)
    rows_dir = _rows_dir(out, config)
    name = f"{split_name(unseen)}_seed{config.seed}"
    rows = run_digits_split(unseen, config, out / "runs", device=device)
    if not keep_checkpoint:
        shutil.rmtree(split_run_dir(out / "runs", unseen, config.seed), ignore_errors=True)
    write_csv(rows_dir / f"{name}.csv", rows, SPLIT_COLUMNS)  # atomic: a run is done once its file exists
    return name


def run_digits_grid(splits: Iterable[Sequence[int]], seeds: Iterable[int], config: IZFConfig,
                    out_dir: str | os.PathLike, device: str = "cpu", jobs: int | None = 1, progress: bool = True,
                    keep_checkpoints: bool = False) -> Path:
    """:func:`run_digits_split` for every split and seed not already done; writes ``out_dir/digits_splits.csv``.

    Resumable: each (split, seed) is one file under ``out_dir/rows/<settings fingerprint>/``,
    skipped when present (rows of other settings are kept apart and never reused).
    Runs are independent (seeded by their own seed), so ``jobs`` worker processes (``None``: one per
    usable CPU core) give the same rows as one.
    """
    calls = digits_grid_calls(splits, seeds, config, out_dir, device, keep_checkpoints)
    run_jobs(calls, jobs, desc="DIGITS splits", progress=progress)
    return write_digits_csv(out_dir, config)


def digits_grid_calls(splits: Iterable[Sequence[int]], seeds: Iterable[int], config: IZFConfig,
                      out_dir: str | os.PathLike, device: str = "cpu", keep_checkpoints: bool = False) -> list[Call]:
    """The (split, seed) runs not yet done in ``out_dir``, as calls for :func:`~izf_lib.experiments.grid.run_jobs`."""
    rows_dir = _rows_dir(out_dir, config)
    rows_dir.mkdir(parents=True, exist_ok=True)
    splits, seeds = list(splits), list(seeds)
    return [(_grid_job, (tuple(int(d) for d in unseen), {**config.to_dict(), "seed": int(seed)}, str(out_dir), device,
                         keep_checkpoints))
            for seed in seeds for unseen in splits
            if not (rows_dir / f"{split_name(unseen)}_seed{int(seed)}.csv").exists()]


def write_digits_csv(out_dir: str | os.PathLike, config: IZFConfig) -> Path:
    """Gather the rows of ``config``'s runs into ``out_dir/digits_splits.csv`` (sorted by split, seed, method)."""
    out = Path(out_dir)
    rows = read_csv_rows(sorted(_rows_dir(out, config).glob("*.csv")))
    if not rows:
        raise FileNotFoundError(f"no DIGITS rows (*.csv) in {_rows_dir(out, config)}")
    order = {m: i for i, m in enumerate(["IZF-NBC", "IZF-Softmax", *BASELINES])}
    rows.sort(key=lambda r: (r["split"], int(r["seed"]), order.get(r["method"], len(order))))
    return write_csv(out / "digits_splits.csv", rows, SPLIT_COLUMNS)
