"""The DIGITS benchmark: IZF and the simple baselines on the same zero-shot splits in one run."""

from __future__ import annotations

import inspect
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..config import IZFConfig
from ..data import ZSLData, load_xlsa17
from ..experiment import fit
from ..metrics import czsl_t1, gzsl_scores
from ..prepare import prepare_digits
from .zsl_baselines import BASELINES

__all__ = ["digit_splits", "score_baseline", "run_digits_split"]


def digit_splits(n_unseen: int = 3, limit: int | None = None) -> list[tuple[int, ...]]:
    """All C(10, n_unseen) unseen-digit sets in lexicographic order, or ``limit`` of them evenly spaced.

    Every set is valid: the ten attribute rows are distinct, so any unseen set is identifiable.
    """
    splits = list(itertools.combinations(range(10), n_unseen))
    if limit is not None and limit < len(splits):
        step = len(splits) / limit
        splits = [splits[int(i * step)] for i in range(limit)]
    return splits


def score_baseline(model: Any, data: ZSLData) -> dict[str, float]:
    """CZSL T1 and GZSL U, S, H (percent) of a fitted baseline with ``predict(v, classes)``."""
    both = torch.cat([data.seen, data.unseen])
    t1 = czsl_t1(data.y_test_unseen, model.predict(data.v_test_unseen, data.unseen))
    g = gzsl_scores(data.y_test_seen, model.predict(data.v_test_seen, both),
                    data.y_test_unseen, model.predict(data.v_test_unseen, both))
    return {"T1": 100 * t1, **{k: 100 * x for k, x in g.items()}}


def run_digits_split(unseen: tuple[int, ...], config: IZFConfig, run_dir: str | os.PathLike,
                     device: str = "cpu") -> list[dict[str, Any]]:
    """IZF-NBC, IZF-Softmax and every baseline on DIGITS with ``unseen`` digits; one row per method.

    The IZF run (checkpoint and results.json) is written under ``run_dir``.
    """
    split = "-".join(str(d) for d in unseen)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_digits(tmp, unseen=unseen, seed=0)
        data = load_xlsa17("DIGITS", tmp)
    rows = []
    res = fit(data, config, Path(run_dir) / f"split_{split}_seed{config.seed}", device=device, progress=False)
    for clf, label in (("nbc", "IZF-NBC"), ("softmax", "IZF-Softmax")):
        rows.append({"split": split, "seed": config.seed, "method": label, **res.scores(clf)})
    train = data.train_split()
    for label, cls in BASELINES.items():
        kwargs = {"seed": config.seed} if "seed" in inspect.signature(cls).parameters else {}
        rows.append({"split": split, "seed": config.seed, "method": label,
                     **score_baseline(cls(**kwargs).fit(train), data)})
    return rows
