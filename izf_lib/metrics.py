"""Zero-shot metrics as the literature computes them (Xian et al., TPAMI 2018).

All accuracies are per-class means: the top-1 accuracy of each ground-truth class,
averaged over classes, so that frequent classes do not dominate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["per_class_accuracies", "per_class_accuracy", "harmonic_mean", "czsl_t1", "gzsl_scores", "one_sided"]


def _as_numpy(x: torch.Tensor | np.ndarray | list) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def per_class_accuracies(y_true, y_pred) -> dict[int, float]:
    """Top-1 accuracy of each ground-truth class present in y_true: {class id: accuracy in [0, 1]}."""
    y_true, y_pred = _as_numpy(y_true).ravel(), _as_numpy(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    return {int(k): float((y_pred[y_true == k] == k).mean()) for k in np.unique(y_true)}


def per_class_accuracy(y_true, y_pred, classes=None) -> float:
    """Mean over ``classes`` (default: the classes present in y_true) of per-class top-1 accuracy.

    A class that is never predicted scores 0; a class in ``classes`` with no samples in
    y_true is an error (its accuracy is undefined).
    """
    y_true, y_pred = _as_numpy(y_true).ravel(), _as_numpy(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("per_class_accuracy needs at least one sample")
    classes = np.unique(y_true) if classes is None else np.unique(_as_numpy(classes))
    accs = []
    for k in classes:
        mask = y_true == k
        if not mask.any():
            raise ValueError(f"class {int(k)} has no samples in y_true")
        accs.append(float((y_pred[mask] == k).mean()))
    return float(np.mean(accs))


def harmonic_mean(u: float, s: float) -> float:
    """H = 2 U S / (U + S), defined as 0 when U + S = 0."""
    return 0.0 if u + s == 0 else 2.0 * u * s / (u + s)


def czsl_t1(y_true_unseen, y_pred_unseen) -> float:
    """CZSL T1: per-class mean top-1 accuracy on unseen test images, predicted among Y^u."""
    return per_class_accuracy(y_true_unseen, y_pred_unseen)


def gzsl_scores(y_true_seen, y_pred_seen, y_true_unseen, y_pred_unseen) -> dict[str, float]:
    """GZSL U, S and H (predictions made among Y^s and Y^u together); fractions in [0, 1]."""
    s = per_class_accuracy(y_true_seen, y_pred_seen)
    u = per_class_accuracy(y_true_unseen, y_pred_unseen)
    return {"U": u, "S": s, "H": harmonic_mean(u, s)}


def one_sided(gzsl: Mapping[str, float]) -> str | None:
    """"seen" when a GZSL classifier recognises no unseen image (U = 0 while S > 0), "unseen" for the converse,
    else None: the sign of a classifier whose GZSL predictions all fall on one side, which an H of 0 alone hides."""
    u, s = gzsl["U"], gzsl["S"]
    return "seen" if u == 0 < s else "unseen" if s == 0 < u else None
