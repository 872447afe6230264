"""Write benchmarks in the xlsa17 layout: the real DIGITS benchmark and synthetic surrogates.

Both writers produce ``<out>/<NAME>/res101.mat`` and ``att_splits.mat`` (plus the class
lists and class-level validation folds), so they load through exactly the code path a
user's ``res101.mat`` does. Nothing is downloaded: digits ship with scikit-learn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io as sio

from .data import (
    FEATURES_FILE,
    SPLITS_FILE,
    DataError,
    bundled_att_splits,
    default_class_names,
    read_mat,
    stratified_split,
)

__all__ = [
    "SEVEN_SEGMENT",
    "TOPOLOGY",
    "BENCHMARK_SHAPES",
    "digit_attributes",
    "write_xlsa17",
    "prepare_digits",
    "prepare_synthetic",
]

# Seven-segment encoding (a top, b upper right, c lower right, d bottom, e lower left,
# f upper left, g middle) of each digit; the repository's datasets/digits_zsl/seven_segment.csv
# holds the same table (tests/test_data.py checks that they agree).
SEVEN_SEGMENT: dict[int, tuple[int, ...]] = {
    0: (1, 1, 1, 1, 1, 1, 0),
    1: (0, 1, 1, 0, 0, 0, 0),
    2: (1, 1, 0, 1, 1, 0, 1),
    3: (1, 1, 1, 1, 0, 0, 1),
    4: (0, 1, 1, 0, 0, 1, 1),
    5: (1, 0, 1, 1, 0, 1, 1),
    6: (1, 0, 1, 1, 1, 1, 1),
    7: (1, 1, 1, 0, 0, 0, 0),
    8: (1, 1, 1, 1, 1, 1, 1),
    9: (1, 1, 1, 1, 0, 1, 1),
}
SEGMENT_NAMES = ("seg_a_top", "seg_b_upper_right", "seg_c_lower_right", "seg_d_bottom",
                 "seg_e_lower_left", "seg_f_upper_left", "seg_g_middle")
# Topology of the handwritten glyph (has a closed loop, has two loops, has a diagonal
# stroke); the same table as datasets/digits_zsl/extra_topology.csv.
TOPOLOGY: dict[int, tuple[int, ...]] = {
    0: (1, 0, 0), 1: (0, 0, 0), 2: (0, 0, 1), 3: (0, 0, 0), 4: (0, 0, 1),
    5: (0, 0, 0), 6: (1, 0, 0), 7: (0, 0, 1), 8: (1, 1, 0), 9: (1, 0, 0),
}
TOPOLOGY_NAMES = ("has_closed_loop", "has_two_loops", "has_diagonal_stroke")

# Real class counts and split sizes of the xlsa17 benchmarks (d_a, classes, unseen,
# trainval, test_seen, test_unseen); d_v = 2048 for ResNet-101 features.
BENCHMARK_SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "AWA1": (85, 50, 10, 19832, 4958, 5685),
    "AWA2": (85, 50, 10, 23527, 5882, 7913),
    "CUB": (312, 200, 50, 7057, 1764, 2967),
    "SUN": (102, 717, 72, 10320, 2580, 1440),
    "APY": (64, 32, 12, 5932, 1483, 7924),
    "FLO": (1024, 102, 20, 5631, 1403, 1155),
}


def digit_attributes(topology: bool = True) -> tuple[np.ndarray, list[str]]:
    """The (10, d_a) binary attribute table of the digits 0-9 and the attribute names."""
    rows = [SEVEN_SEGMENT[d] + (TOPOLOGY[d] if topology else ()) for d in range(10)]
    names = list(SEGMENT_NAMES) + (list(TOPOLOGY_NAMES) if topology else [])
    return np.asarray(rows, dtype=np.float64), names


def _l2_columns(att: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(att, axis=0, keepdims=True)
    return att / np.where(norms > 0, norms, 1.0)


def write_xlsa17(
    out_dir: str | os.PathLike,
    features: np.ndarray,
    labels: np.ndarray,
    original_att: np.ndarray,
    class_names: list[str],
    trainval: np.ndarray,
    test_seen: np.ndarray,
    test_unseen: np.ndarray,
    folds: list[tuple[list[str], list[str]]] | None = None,
) -> Path:
    """Write one dataset directory in the xlsa17 layout.

    ``features`` (N, d_v) and 0-based ``labels`` (N,) are stored as d_v x N and 1-based;
    ``original_att`` is (d_a, C) and ``att`` its column-wise L2 normalisation, as released.
    Split arrays are 0-based row indices, written 1-based.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = np.empty((len(class_names), 1), dtype=object)
    for i, n in enumerate(class_names):
        names[i, 0] = np.array([n])
    sio.savemat(out / FEATURES_FILE, {
        "features": np.ascontiguousarray(features.T),
        "labels": (np.asarray(labels, dtype=np.int64) + 1).reshape(-1, 1).astype(np.float64),
    }, do_compression=False)
    index_dtype = np.uint16 if len(labels) < 65535 else np.uint32  # uint16 as in the originals

    def one_based(rows: np.ndarray) -> np.ndarray:
        return (np.asarray(rows) + 1).reshape(-1, 1).astype(index_dtype)

    sio.savemat(out / SPLITS_FILE, {
        "att": _l2_columns(original_att),
        "original_att": original_att,
        "allclasses_names": names,
        "trainval_loc": one_based(trainval),
        "test_seen_loc": one_based(test_seen),
        "test_unseen_loc": one_based(test_unseen),
    })
    seen_names = sorted({class_names[k] for k in np.asarray(labels)[trainval]}, key=class_names.index)
    unseen_names = sorted({class_names[k] for k in np.asarray(labels)[test_unseen]}, key=class_names.index)
    (out / "trainvalclasses.txt").write_text("\n".join(seen_names) + "\n")
    (out / "testclasses.txt").write_text("\n".join(unseen_names) + "\n")
    for k, (tr, va) in enumerate(folds or [], start=1):
        (out / f"trainclasses{k}.txt").write_text("\n".join(tr) + "\n")
        (out / f"valclasses{k}.txt").write_text("\n".join(va) + "\n")
    return out


def _class_folds(seen_names: list[str], n_folds: int, n_val: int,
                 rng: np.random.Generator) -> list[tuple[list[str], list[str]]]:
    """Class-level validation folds: each holds out ``n_val`` seen classes as pseudo-unseen."""
    folds = []
    order = list(rng.permutation(len(seen_names)))
    for k in range(n_folds):
        val = {seen_names[i] for i in np.roll(order, -k * n_val)[:n_val]}
        folds.append(([n for n in seen_names if n not in val], [n for n in seen_names if n in val]))
    return folds


def prepare_digits(
    out: str | os.PathLike,
    unseen: tuple[int, ...] = (3, 6, 9),
    topology: bool = True,
    seed: int = 0,
    name: str = "DIGITS",
) -> Path:
    """Write the DIGITS benchmark: scikit-learn's 8x8 digits (d_v = 64) with digit attributes.

    Unseen digits (default 3, 6, 9) give test_unseen; the seen digits' images are split
    80/20 stratified (fixed ``seed``) into trainval and test_seen.
    """
    from sklearn.datasets import load_digits

    unseen = tuple(sorted({int(u) for u in unseen}))
    if not unseen or any(u not in range(10) for u in unseen) or len(unseen) > 8:
        raise ValueError(f"unseen digits must be 1 to 8 distinct values in 0-9, got {unseen}")
    att, _ = digit_attributes(topology)
    if len({tuple(r) for r in att}) < 10:
        raise ValueError("attribute rows are not unique; use the topology attributes")
    digits = load_digits()
    features = digits.data.astype(np.float64)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    is_unseen = np.isin(labels, unseen)
    test_unseen = np.flatnonzero(is_unseen)
    trainval, test_seen = stratified_split(labels, np.flatnonzero(~is_unseen), 0.8, rng)
    class_names = [f"digit_{d}" for d in range(10)]
    seen_names = [class_names[d] for d in range(10) if d not in unseen]
    folds = _class_folds(seen_names, 3, max(1, len(seen_names) // 4), rng)
    return write_xlsa17(Path(out) / name, features, labels, att.T, class_names, trainval, test_seen, test_unseen, folds)


def _read_att_file(path: Path) -> tuple[np.ndarray, list[str], tuple[int, int, int], list[str] | None]:
    """Attributes (d_a, C), class names, split sizes and, if listed beside it, the unseen class names."""
    mat = read_mat(path)
    for key in ("att", "trainval_loc", "test_seen_loc", "test_unseen_loc"):
        if key not in mat:
            raise DataError(f"{path}: missing key '{key}' needed to build a surrogate")
    att = np.asarray(mat.get("original_att", mat["att"]), dtype=np.float64)
    if "allclasses_names" in mat:
        names = [str(np.asarray(x).ravel()[0]) for x in np.asarray(mat["allclasses_names"]).ravel()]
    else:  # FLO's release lists no class names
        names = default_class_names(att.shape[1])
    sizes = tuple(int(np.asarray(mat[k]).size) for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc"))
    test_list = path.parent / "testclasses.txt"
    unseen = [n.strip() for n in test_list.read_text().splitlines() if n.strip()] if test_list.is_file() else None
    return att, names, sizes, unseen  # type: ignore[return-value]


def prepare_synthetic(
    out: str | os.PathLike,
    like: str = "AWA1",
    att_file: str | os.PathLike | None = None,
    scale: float = 1.0,
    d_v: int = 2048,
    noise: float = 1.0,
    seed: int = 0,
    name: str | None = None,
    random_attributes: bool = False,
) -> Path:
    """Write a surrogate with a benchmark's class count, attributes and split sizes.

    The attributes, class names, unseen classes and split sizes come from ``att_file``, by
    default the repository's bundled copy of xlsa17's ``<like>/att_splits.mat``;
    ``random_attributes`` draws random attributes with the benchmark's shapes instead.

    Features are v = mu(a_y) + noise * eps, where mu is a fixed random two-layer tanh map of
    the class attributes (so unseen class means follow from their attributes: zero-shot
    transfer is possible) and eps ~ N(0, I). ``scale`` multiplies every split size.
    """
    like = like.upper()
    rng = np.random.default_rng(seed)
    unseen_names = None
    if att_file is None and not random_attributes:
        att_file = bundled_att_splits(like)
    if att_file is not None:
        att, class_names, sizes, unseen_names = _read_att_file(Path(att_file))
        n_classes = att.shape[1]
        n_unseen = len(unseen_names) if unseen_names else BENCHMARK_SHAPES.get(like, (0, 0, max(1, n_classes // 5)))[2]
    else:
        if like not in BENCHMARK_SHAPES:
            raise ValueError(f"unknown benchmark '{like}'; choose one of {sorted(BENCHMARK_SHAPES)} or pass att_file")
        d_a, n_classes, n_unseen, *sizes = BENCHMARK_SHAPES[like]
        att = (rng.random((d_a, n_classes)) < 0.3).astype(np.float64) * rng.random((d_a, n_classes))
        class_names = [f"class_{k:03d}" for k in range(n_classes)]
    d_a = att.shape[0]
    if d_a >= d_v:
        raise ValueError(f"d_v = {d_v} must exceed the {d_a} attributes of {like}")
    if unseen_names:
        missing = [n for n in unseen_names if n not in class_names]
        if missing:
            raise DataError(f"testclasses.txt beside {att_file} names unknown classes {missing[:5]}")
        unseen = np.asarray(sorted(class_names.index(n) for n in unseen_names))
    else:
        unseen = np.sort(rng.choice(n_classes, n_unseen, replace=False))
    seen = np.setdiff1d(np.arange(n_classes), unseen)
    n_tv, n_ts, n_tu = (max(len(seen) if i < 2 else len(unseen), int(round(s * scale))) for i, s in enumerate(sizes))

    # class means from a fixed random nonlinear map of the (globally rescaled) attributes
    a = att.T
    a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    hidden = 256
    w1 = rng.standard_normal((d_a, hidden)) * 3.0 / np.sqrt(d_a)
    b1 = rng.standard_normal(hidden) * 0.5
    w2 = rng.standard_normal((hidden, d_v)) / np.sqrt(hidden)
    h = np.tanh((a - a.mean(0)) @ w1 + b1)
    mu = h @ w2
    mu = (mu - mu.mean(0)) / (mu.std(0) + 1e-12)

    def draw(classes: np.ndarray, n: int) -> np.ndarray:
        base = np.repeat(classes, n // len(classes))
        extra = rng.choice(classes, n - base.size, replace=False) if n > base.size else np.empty(0, dtype=int)
        return np.concatenate([base, extra]).astype(np.int64)

    labels = np.concatenate([draw(seen, n_tv), draw(seen, n_ts), draw(unseen, n_tu)])
    order = rng.permutation(labels.size)  # interleave the splits' rows, as in the real files
    labels = labels[order]
    position = np.argsort(order)
    trainval, test_seen = np.sort(position[:n_tv]), np.sort(position[n_tv:n_tv + n_ts])
    test_unseen = np.sort(position[n_tv + n_ts:])
    features = np.empty((labels.size, d_v), dtype=np.float32)
    for start in range(0, labels.size, 4096):
        rows = labels[start:start + 4096]
        features[start:start + rows.size] = mu[rows] + noise * rng.standard_normal((rows.size, d_v))
    seen_names = [class_names[k] for k in seen]
    folds = _class_folds(seen_names, 3, max(1, len(seen) // 4), rng)
    return write_xlsa17(Path(out) / (name or f"SYN_{like}"), features, labels, att, class_names,
                        trainval, test_seen, test_unseen, folds)
