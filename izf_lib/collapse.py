"""Is the reverse pass collapsing? Per-epoch measures of the generated unseen features.

L_iMMD = -(E k_ss + E k_uu - 2 E k_su) can be lowered by pushing generated unseen features away
from the real seen ones (the cross term E k_su), and also by making the generated set tight
(E k_uu grows to K(0), the number of kernel scales, when every sample is the same point). A
flow cannot send two z_f to one feature, but it can contract a direction by e^-20 or more, which
for the kernel is a point. The training loop records, once per epoch and without any host
synchronisation per step:

- the three kernel terms of the iMMD estimate, averaged over the epoch's steps
  (``k_ss``, ``k_uu``, ``k_su``; from :meth:`izf_lib.model.IZF.objective`);
- from a fixed-size generated batch at the end of the epoch (its own random stream, so the
  training draws are untouched): ``spread_ratio``, the root-mean-square pairwise distance
  within each generated unseen class, averaged over classes, divided by the same measure of
  the real seen classes in the training data; and ``to_seen``, the distance of each generated
  unseen class mean to the nearest real seen class mean, averaged over the unseen classes and
  divided by the median distance between a real seen class mean and its nearest other one.

A run **collapsed** when the final epoch's ``spread_ratio`` is below ``COLLAPSED_SPREAD_RATIO``:
its generated unseen classes are spread less than a tenth as much as real classes are, so a
softmax trained on them sees each unseen class as (nearly) one point. Real classes score about
1 on their own data; a healthy generator need not match them exactly, but a tenfold shrink is
far outside what sampling noise or a shrinking variance explains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["COLLAPSED_SPREAD_RATIO", "N_PER_CLASS", "SeenStatistics", "seen_statistics", "rms_pairwise_distance",
           "generation_diagnostics", "collapse_summary"]

COLLAPSED_SPREAD_RATIO = 0.1  # generated unseen classes a tenth as spread as real ones: collapsed
N_PER_CLASS = 32              # generated features per unseen class for the per-epoch measures


@dataclass(frozen=True)
class SeenStatistics:
    """What the diagnostics compare generated features with: the real seen training classes."""

    means: Tensor        # (K_s, d_v) float64 class means
    spread: float        # mean over classes of the RMS pairwise distance within the class
    mean_gap: float      # median distance from a class mean to the nearest other class mean


def rms_pairwise_distance(x: Tensor) -> Tensor:
    """sqrt(mean ||x_i - x_j||^2) over pairs i != j of the rows of x (n, d); 0 for n < 2.

    Equals sqrt(2 n / (n - 1) * mean ||x_i - mean||^2), so it costs O(n d), not O(n^2 d).
    """
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    return torch.sqrt(2.0 * n / (n - 1) * ((x - x.mean(0)) ** 2).sum(1).mean())


def seen_statistics(v: Tensor, y: Tensor) -> SeenStatistics:
    """The class means, within-class spread and typical gap between class means of real features v (N, d_v)."""
    v = v.double()
    classes = torch.unique(y)
    means = torch.stack([v[y == k].mean(0) for k in classes.tolist()])
    spread = torch.stack([rms_pairwise_distance(v[y == k]) for k in classes.tolist()]).mean()
    if classes.numel() > 1:
        d = torch.cdist(means, means)
        d.fill_diagonal_(math.inf)
        gap = float(d.min(1).values.median())
    else:
        gap = float("nan")
    return SeenStatistics(means=means, spread=float(spread), mean_gap=gap)


@torch.no_grad()
def generation_diagnostics(model: Any, unseen: Tensor, seen: SeenStatistics, generator: torch.Generator,
                           n: int = N_PER_CLASS) -> dict[str, float]:
    """``spread_ratio`` and ``to_seen`` (module docstring) of n generated features per class in ``unseen``."""
    v = model.generate(model.att[unseen], n, generator=generator).double()
    if not torch.isfinite(v).all():
        return {"spread_ratio": math.nan, "to_seen": math.nan}
    v = v.view(unseen.numel(), n, -1)
    spread = torch.stack([rms_pairwise_distance(g) for g in v]).mean()
    gen_means = v.mean(1)
    to_seen = torch.cdist(gen_means, seen.means.to(gen_means.device)).min(1).values.mean()
    return {"spread_ratio": float(spread) / seen.spread if seen.spread > 0 else math.nan,
            "to_seen": float(to_seen) / seen.mean_gap if seen.mean_gap > 0 else math.nan}


def collapse_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's verdict from its per-epoch ``gen`` records: collapsed or not, and when it first fell below."""
    rows = [(r["epoch"], r["gen"]["spread_ratio"]) for r in history if r.get("gen")]
    rule = (f"collapsed when the final epoch's spread_ratio (generated unseen within-class spread / real seen) "
            f"< {COLLAPSED_SPREAD_RATIO:g}")
    if not rows:
        return {"rule": rule, "collapsed": None, "final_spread_ratio": None, "first_epoch_below": None}
    final = rows[-1][1]
    below = [e for e, s in rows if not (s >= COLLAPSED_SPREAD_RATIO)]  # NaN counts as collapsed
    return {"rule": rule, "collapsed": bool(not (final >= COLLAPSED_SPREAD_RATIO)), "final_spread_ratio": final,
            "first_epoch_below": below[0] if below else None}
