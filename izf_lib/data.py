"""Benchmarks in the xlsa17 layout: loading, validation and preprocessing.

A dataset directory ``<data_dir>/<NAME>/`` holds ``res101.mat`` (``features`` d_v x N,
``labels`` N x 1, 1-based class indices) and ``att_splits.mat`` (``att`` d_a x C,
``allclasses_names``, 1-based row indices ``trainval_loc``, ``test_seen_loc``,
``test_unseen_loc``), as released by Xian et al. (TPAMI 2018). Every check raises a
:class:`DataError` naming the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch
from torch import Tensor

__all__ = [
    "DataError",
    "ZSLData",
    "TrainSplit",
    "resolve_data_dir",
    "load_xlsa17",
    "read_class_folds",
    "minmax_fit",
    "standard_fit",
    "FEATURE_SCALINGS",
    "XLSA17_NAMES",
    "BUNDLED_DIR",
    "bundled_att_splits",
    "read_mat",
    "stratified_split",
    "validation_split",
]

FEATURES_FILE = "res101.mat"
SPLITS_FILE = "att_splits.mat"
FEATURE_SCALINGS = ("minmax", "standard", "none")  # per-dimension scalers, fit on trainval features only
XLSA17_HINT = (
    "Download xlsa17.zip (Xian et al., 'Zero-Shot Learning - The Good, the Bad and the Ugly', "
    "proposed splits v2.0) and put <NAME>/res101.mat and <NAME>/att_splits.mat under the data "
    "directory, or create a dataset with `python -m izf_lib prepare digits|synthetic --out DIR`."
)


class DataError(ValueError):
    """A dataset file is missing or malformed; the message says which file, key and what to fix."""


XLSA17_NAMES = ("AWA1", "AWA2", "CUB", "SUN", "APY", "FLO")  # the standard benchmarks
# The repository's bundled class-level files (attributes, splits, class lists; no features):
# <repository>/datasets/, sources and md5 sums in datasets/SOURCES.md.
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "datasets"


def bundled_att_splits(name: str) -> Path:
    """The repository's copy of xlsa17's ``<name>/att_splits.mat`` (class attributes and splits, no features)."""
    if name.upper() not in XLSA17_NAMES:
        raise DataError(f"no bundled attributes for '{name}': the repository ships {', '.join(XLSA17_NAMES)}")
    path = BUNDLED_DIR / "xlsa17" / name.upper() / SPLITS_FILE
    if not path.is_file():
        raise DataError(
            f"the bundled file {path} is missing: izf_lib reads it from a clone of the izf-book repository "
            "(pip install -e .); pass an att_splits.mat explicitly instead"
        )
    return path


@dataclass
class TrainSplit:
    """What training may see: trainval features and labels plus the class attributes.

    ``v`` (N, d_v), ``y`` (N,) class ids, ``att`` (C, d_a) for all classes, ``seen`` and
    ``unseen`` class ids. Test features and labels are deliberately absent.
    """

    v: Tensor
    y: Tensor
    att: Tensor
    seen: Tensor
    unseen: Tensor

    @property
    def d_v(self) -> int:
        return self.v.shape[1]

    @property
    def d_a(self) -> int:
        return self.att.shape[1]


@dataclass
class ZSLData:
    """A zero-shot benchmark after preprocessing; labels are 0-based class ids into ``att``."""

    name: str
    v_trainval: Tensor
    y_trainval: Tensor
    v_test_seen: Tensor
    y_test_seen: Tensor
    v_test_unseen: Tensor
    y_test_unseen: Tensor
    att: Tensor
    seen: Tensor
    unseen: Tensor
    class_names: list[str]
    source: str = ""
    folds: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)
    feature_scaling: str = "minmax"

    @property
    def d_v(self) -> int:
        return self.v_trainval.shape[1]

    @property
    def d_a(self) -> int:
        return self.att.shape[1]

    def train_split(self) -> TrainSplit:
        """The part of the benchmark that training is allowed to read."""
        return TrainSplit(self.v_trainval, self.y_trainval, self.att, self.seen, self.unseen)

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "d_v": self.d_v,
            "d_a": self.d_a,
            "n_seen": len(self.seen),
            "n_unseen": len(self.unseen),
            "trainval": len(self.y_trainval),
            "test_seen": len(self.y_test_seen),
            "test_unseen": len(self.y_test_unseen),
        }


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory from the argument, else the IZF_DATA environment variable."""
    if data_dir is None:
        data_dir = os.environ.get("IZF_DATA")
        if not data_dir:
            raise DataError(
                "No data directory: pass data_dir / --data-dir or set the IZF_DATA environment "
                f"variable to a folder holding <NAME>/{FEATURES_FILE} and <NAME>/{SPLITS_FILE}. {XLSA17_HINT}"
            )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"Data directory {path} does not exist. {XLSA17_HINT}")
    return path


def read_mat(path: Path) -> dict:
    """The variables of a MATLAB .mat file; a missing, v7.3 or corrupt file raises a :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"Missing file {path}. {XLSA17_HINT}")
    try:
        return sio.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise DataError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which this loader does not read: re-save it with "
            "`save(..., '-v7')` or use the original xlsa17 release"
        ) from exc
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DataError(f"{path} could not be read as a MATLAB .mat file: {exc}") from exc


def _get(mat: dict, key: str, path: Path, expected: str) -> np.ndarray:
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: missing key '{key}' (expected {expected}); keys found: {found}")
    return mat[key]


def _check_finite(arr: np.ndarray, path: Path, key: str) -> None:
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: key '{key}' must be numeric, found dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise DataError(f"{path}: key '{key}' has {int(bad.sum())} NaN or inf values (first at index {where})")


def _index_vector(mat: dict, key: str, path: Path, n_rows: int, features_path: Path) -> np.ndarray:
    raw = _get(mat, key, path, f"a column of 1-based row indices into {features_path.name}")
    arr = np.asarray(raw)
    if arr.ndim != 2 or 1 not in arr.shape:
        raise DataError(f"{path}: key '{key}' must be a vector (n x 1), found shape {arr.shape}")
    arr = arr.ravel()
    if arr.size == 0:
        raise DataError(f"{path}: key '{key}' is empty; every split needs at least one image")
    if not np.issubdtype(arr.dtype, np.integer) and (
        not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr))
    ):
            raise DataError(f"{path}: key '{key}' must hold integer indices, found dtype {arr.dtype}")
    idx = arr.astype(np.int64)  # uint16 in the originals: cast before subtracting 1
    if idx.min() < 1 or idx.max() > n_rows:
        raise DataError(
            f"{path}: key '{key}' has indices in [{idx.min()}, {idx.max()}] but {features_path.name} "
            f"has {n_rows} images: 1-based indices must lie in [1, {n_rows}]"
        )
    if np.unique(idx).size != idx.size:
        raise DataError(f"{path}: key '{key}' lists {idx.size - np.unique(idx).size} image indices twice")
    return idx - 1


def default_class_names(n_classes: int) -> list[str]:
    """Names for a release without ``allclasses_names`` (xlsa17's FLO): class_001 ... in column order."""
    return [f"class_{k + 1:03d}" for k in range(n_classes)]


def _class_names(mat: dict, path: Path, n_classes: int) -> list[str]:
    """The class names of ``att_splits.mat``; FLO's release has none, and gets :func:`default_class_names`."""
    if "allclasses_names" not in mat:
        return default_class_names(n_classes)
    raw = _get(mat, "allclasses_names", path, f"a cell array of {n_classes} class names")
    names = [str(np.asarray(x).ravel()[0]) if np.asarray(x).size else "" for x in np.asarray(raw).ravel()]
    if len(names) != n_classes:
        raise DataError(
            f"{path}: key 'allclasses_names' has {len(names)} names but 'att' has {n_classes} class columns"
        )
    return names


def standard_fit(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension (mean, std) of x (N, d), std 1 where a dimension is constant."""
    mean, std = x.mean(0), x.std(0)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def minmax_fit(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension (min, range) of x (N, d), range 1 where a dimension is constant."""
    lo = x.min(0).values
    rng = x.max(0).values - lo
    return lo, torch.where(rng > 0, rng, torch.ones_like(rng))


def read_class_folds(directory: Path, names: list[str]) -> dict[int, tuple[list[str], list[str]]]:
    """The xlsa17 class-level validation folds ``trainclassesK.txt`` / ``valclassesK.txt`` present in a directory."""
    folds: dict[int, tuple[list[str], list[str]]] = {}
    known = set(names)
    for k in range(1, 10):
        tr, va = directory / f"trainclasses{k}.txt", directory / f"valclasses{k}.txt"
        if not (tr.is_file() and va.is_file()):
            continue
        lists = []
        for f in (tr, va):
            items = [line.strip() for line in f.read_text().splitlines() if line.strip()]
            unknown = [n for n in items if n not in known]
            if unknown:
                raise DataError(f"{f}: class names not in allclasses_names: {unknown[:5]}")
            lists.append(items)
        folds[k] = (lists[0], lists[1])
    return folds


def load_xlsa17(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    scale_features: bool = True,
    scale_att: bool = True,
    feature_scaling: str = "minmax",
) -> ZSLData:
    """Load and validate ``<data_dir>/<name>/{res101.mat, att_splits.mat}``.

    Preprocessing (development code): features min-max scaled to [0, 1] per
    dimension and attributes (the L2-normalised ``att``) rescaled by their global min/max;
    both scalers are fit on trainval / the attribute table only, never on test images.
    ``feature_scaling`` (see :data:`FEATURE_SCALINGS`) picks the feature scaler;
    ``scale_features=False`` is the same as ``feature_scaling="none"``.
    """
    if feature_scaling not in FEATURE_SCALINGS:
        raise ValueError(f"feature_scaling must be one of {FEATURE_SCALINGS}, got '{feature_scaling}'")
    if not scale_features:
        feature_scaling = "none"
    root = resolve_data_dir(data_dir) / name
    if not root.is_dir():
        raise DataError(f"Dataset directory {root} does not exist. {XLSA17_HINT}")
    fpath, spath = root / FEATURES_FILE, root / SPLITS_FILE
    fmat, smat = read_mat(fpath), read_mat(spath)

    att_raw = np.asarray(_get(smat, "att", spath, "class attributes, d_a x C"))
    if att_raw.ndim != 2:
        raise DataError(f"{spath}: key 'att' must be 2-D (d_a x C), found shape {att_raw.shape}")
    _check_finite(att_raw, spath, "att")
    d_a, n_classes = att_raw.shape
    names = _class_names(smat, spath, n_classes)

    labels_raw = np.asarray(_get(fmat, "labels", fpath, "N x 1 1-based class indices"))
    if labels_raw.ndim != 2 or 1 not in labels_raw.shape:
        raise DataError(f"{fpath}: key 'labels' must be a vector (N x 1), found shape {labels_raw.shape}")
    labels = labels_raw.ravel()
    n = labels.size
    feats = np.asarray(_get(fmat, "features", fpath, f"d_v x N = d_v x {n} image features"))
    if feats.ndim != 2:
        raise DataError(f"{fpath}: key 'features' must be 2-D (d_v x N), found {feats.ndim}-D shape {feats.shape}")
    if feats.shape[1] != n:
        if feats.shape[0] == n:
            raise DataError(
                f"{fpath}: key 'features' has shape {feats.shape}, which looks transposed: xlsa17 stores "
                f"d_v x N (one column per image) and 'labels' has N = {n}; save features.T instead"
            )
        raise DataError(
            f"{fpath}: key 'features' has {feats.shape[1]} columns (images) but 'labels' has {n} entries"
        )
    _check_finite(feats, fpath, "features")
    _check_finite(labels, fpath, "labels")
    if not np.all(labels == np.round(labels)) or labels.min() < 1 or labels.max() > n_classes:
        raise DataError(
            f"{fpath}: key 'labels' must hold integer class indices in [1, {n_classes}] (1-based into "
            f"allclasses_names of {spath.name}), found values in [{labels.min()}, {labels.max()}]"
        )
    d_v = feats.shape[0]
    if d_a >= d_v:
        raise DataError(
            f"{spath}: 'att' has d_a = {d_a} attributes but {fpath.name} has d_v = {d_v} feature "
            "dimensions; IZF needs d_a < d_v so that z_f is not empty"
        )
    y_all = labels.astype(np.int64) - 1

    splits = {k: _index_vector(smat, k, spath, n, fpath) for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc")}
    keys = list(splits)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            common = np.intersect1d(splits[a], splits[b])
            if common.size:
                raise DataError(
                    f"{spath}: '{a}' and '{b}' share {common.size} image indices (e.g. {common[0] + 1}); "
                    "the splits must be disjoint"
                )
    seen = np.unique(y_all[splits["trainval_loc"]])
    unseen = np.unique(y_all[splits["test_unseen_loc"]])
    leak = np.intersect1d(seen, unseen)
    if leak.size:
        raise DataError(
            f"{spath}: classes {[names[k] for k in leak[:5]]} appear in 'test_unseen_loc' but also have "
            "images in 'trainval_loc'; unseen classes must have no training images"
        )
    stray = np.setdiff1d(np.unique(y_all[splits["test_seen_loc"]]), seen)
    if stray.size:
        raise DataError(
            f"{spath}: classes {[names[k] for k in stray[:5]]} appear in 'test_seen_loc' but have no "
            "images in 'trainval_loc'"
        )

    def take(key: str) -> tuple[Tensor, Tensor]:
        idx = splits[key]
        return torch.from_numpy(feats[:, idx].T.astype(np.float32)), torch.from_numpy(y_all[idx])

    v_tr, y_tr = take("trainval_loc")
    v_ts, y_ts = take("test_seen_loc")
    v_tu, y_tu = take("test_unseen_loc")
    if feature_scaling != "none":
        lo, rng = minmax_fit(v_tr) if feature_scaling == "minmax" else standard_fit(v_tr)
        v_tr, v_ts, v_tu = ((x - lo) / rng for x in (v_tr, v_ts, v_tu))
    att = torch.from_numpy(att_raw.T.astype(np.float32))
    if scale_att:
        lo_a, hi_a = att.min(), att.max()
        att = (att - lo_a) / (hi_a - lo_a) if hi_a > lo_a else att - lo_a

    return ZSLData(
        name=name,
        v_trainval=v_tr.contiguous(),
        y_trainval=y_tr,
        v_test_seen=v_ts.contiguous(),
        y_test_seen=y_ts,
        v_test_unseen=v_tu.contiguous(),
        y_test_unseen=y_tu,
        att=att.contiguous(),
        seen=torch.from_numpy(seen),
        unseen=torch.from_numpy(unseen),
        class_names=names,
        source=str(root),
        folds=read_class_folds(root, names),
        feature_scaling=feature_scaling,
    )


def stratified_split(
    labels: np.ndarray, idx: np.ndarray, frac: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows ``idx`` class by class into a ``frac`` part and the rest (both sorted).

    Classes are visited in ascending order and each class's rows shuffled by ``rng``, so the
    split is a function of the labels and the generator's seed alone.
    """
    first, rest = [], []
    for k in np.unique(labels[idx]):
        rows = rng.permutation(idx[labels[idx] == k])
        cut = int(round(frac * rows.size))
        first.append(rows[:cut])
        rest.append(rows[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


def validation_split(data: ZSLData, fold: int, seed: int) -> tuple[TrainSplit, tuple[Tensor, ...]]:
    """A class-level validation split from trainval only (xlsa17 fold ``fold``).

    The fold's val classes become pseudo-unseen; the train classes' images are split 80/20
    (stratified, seeded) into pseudo-trainval and pseudo-test-seen. No test image is read.
    Returns the pseudo-training split and (v_seen, y_seen, v_unseen, y_unseen) to score on.
    """
    if fold not in data.folds:
        raise DataError(
            f"selection 'val' needs trainclasses{fold}.txt and valclasses{fold}.txt in {data.source or data.name}; "
            f"folds found: {sorted(data.folds) or 'none'}"
        )
    train_names, val_names = data.folds[fold]
    ids = {n: i for i, n in enumerate(data.class_names)}
    tr_cls = torch.tensor(sorted(ids[n] for n in train_names))
    va_cls = torch.tensor(sorted(ids[n] for n in val_names))
    y = data.y_trainval
    rows = np.flatnonzero(np.isin(y.numpy(), tr_cls.numpy()))
    keep, held = stratified_split(y.numpy(), rows, 0.8, np.random.default_rng(seed))
    keep_idx, held_idx = torch.from_numpy(keep), torch.from_numpy(held)
    unseen_idx = torch.nonzero(torch.isin(y, va_cls)).flatten()
    split = TrainSplit(data.v_trainval[keep_idx], y[keep_idx], data.att, tr_cls, va_cls)
    return split, (data.v_trainval[held_idx], y[held_idx], data.v_trainval[unseen_idx], y[unseen_idx])
