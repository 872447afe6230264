"""Helpers for tests: small datasets in the xlsa17 layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio
import torch

from izf_lib.data import BUNDLED_DIR, bundled_att_splits
from izf_lib.rng import randomise_parameters_

AWA1_ATT = bundled_att_splits("AWA1")  # the repository's copy; a clone needs nothing outside it
DIGITS_DESCRIPTORS = BUNDLED_DIR / "digits_zsl"


def raw_dataset(d_v: int = 12, d_a: int = 3, n_per_class: int = 6, seed: int = 0) -> tuple[dict, dict]:
    """A valid (res101, att_splits) pair of dicts: classes 0-3 seen, 4-5 unseen."""
    rng = np.random.default_rng(seed)
    n_classes = 6
    labels = np.repeat(np.arange(n_classes), n_per_class)
    feats = rng.standard_normal((d_v, labels.size)) + labels[None, :]
    att = rng.random((d_a, n_classes))
    seen_rows = np.flatnonzero(labels < 4)
    trainval = seen_rows[np.arange(seen_rows.size) % 3 != 0]
    test_seen = seen_rows[np.arange(seen_rows.size) % 3 == 0]
    test_unseen = np.flatnonzero(labels >= 4)
    names = np.empty((n_classes, 1), dtype=object)
    for i in range(n_classes):
        names[i, 0] = np.array([f"class{i}"])
    fmat = {"features": feats, "labels": (labels + 1).reshape(-1, 1).astype(np.float64)}
    smat = {
        "att": att / np.linalg.norm(att, axis=0, keepdims=True),
        "allclasses_names": names,
        "trainval_loc": (trainval + 1).reshape(-1, 1).astype(np.uint16),
        "test_seen_loc": (test_seen + 1).reshape(-1, 1).astype(np.uint16),
        "test_unseen_loc": (test_unseen + 1).reshape(-1, 1).astype(np.uint16),
    }
    return fmat, smat


def write_raw(root: Path, fmat: dict | None, smat: dict | None, name: str = "TINY") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    if fmat is not None:
        sio.savemat(d / "res101.mat", fmat)
    if smat is not None:
        sio.savemat(d / "att_splits.mat", smat)
    return root


def randomised(module: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """``module`` with every parameter ~ N(0, std^2) from ``seed``: checks away from the near-identity init."""
    return randomise_parameters_(module, std, torch.Generator().manual_seed(seed))


TIMING_KEYS = frozenset({"train_seconds", "eval_seconds", "total_seconds", "timings"})


def without_keys(obj, keys=TIMING_KEYS):
    """A results.json structure with every entry named in ``keys`` (default: the wall-clock ones) removed."""
    if isinstance(obj, dict):
        return {k: without_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without_keys(v, keys) for v in obj]
    return obj
