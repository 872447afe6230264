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
  training draws are untouched): ``spread_ratio``, the median pairwise distance within each
  generated unseen class, averaged over classes, divided by the same measure of the real seen
  classes in the training data; and ``to_seen``, the distance of each generated
  unseen class mean to the nearest real seen class mean, averaged over the unseen classes and
  divided by the median distance between a real seen class mean and its nearest other one.

A run **collapsed** when the final epoch's ``spread_ratio`` is below ``COLLAPSED_SPREAD_RATIO``:
its generated unseen classes are spread less than a tenth as much as real classes are, so a
softmax trained on them sees each unseen class as (nearly) one point. Real classes score about
1 on their own data; a healthy generator need not match them exactly, but a tenfold shrink is
far outside what sampling noise or a shrinking variance explains. It is **scattered** when the
ratio is above ``SCATTERED_SPREAD_RATIO`` (ten times as spread as real classes): a repulsion
with no bound (the cross term alone, or kernel scales in the data's unit) was measured to push
the reverse pass at unseen attributes out without limit, a failure as complete as collapse.
The median, not the mean,
of the pairwise distances: a contracted flow still sends a few extreme z_f far away, and on a
collapsed AWA1-shaped surrogate those few pairs lifted a root-mean-square measure above 0.5 in
some epochs while most of the generated class sat on one point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["COLLAPSED_SPREAD_RATIO", "SCATTERED_SPREAD_RATIO", "N_PER_CLASS", "degenerate", "SeenStatistics",
           "seen_statistics", "median_pairwise_distance",
           "generation_diagnostics", "collapse_summary"]

COLLAPSED_SPREAD_RATIO = 0.1  # generated unseen classes a tenth as spread as real ones: collapsed
SCATTERED_SPREAD_RATIO = 10.0  # ten times as spread: scattered (the same tenfold, the other way)
N_PER_CLASS = 32              # generated features per unseen class for the per-epoch measures
MAX_SEEN_PER_CLASS = 256      # real rows per seen class for the reference spread (an even stride, no draw)


@dataclass(frozen=True)
class SeenStatistics:
    """What the diagnostics compare generated features with: the real seen training classes."""

    means: Tensor        # (K_s, d_v) float64 class means
    spread: float        # mean over classes of the median pairwise distance within the class
    mean_gap: float      # median distance from a class mean to the nearest other class mean


def median_pairwise_distance(x: Tensor) -> Tensor:
    """The median of ||x_i - x_j|| over pairs i < j of the rows of x (n, d); 0 for n < 2."""
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    return torch.cdist(x, x)[i, j].median()


def _strided(rows: Tensor, cap: int) -> Tensor:
    return rows[:: max(1, -(-rows.shape[0] // cap))]


def seen_statistics(v: Tensor, y: Tensor) -> SeenStatistics:
    """The class means, within-class spread and typical gap between class means of real features v (N, d_v)."""
    v = v.double()
    classes = torch.unique(y)
    means = torch.stack([v[y == k].mean(0) for k in classes.tolist()])
    spread = torch.stack([median_pairwise_distance(_strided(v[y == k], MAX_SEEN_PER_CLASS))
                          for k in classes.tolist()]).mean()
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
    spread = torch.stack([median_pairwise_distance(g) for g in v]).mean()
    gen_means = v.mean(1)
    to_seen = torch.cdist(gen_means, seen.means.to(gen_means.device)).min(1).values.mean()
    return {"spread_ratio": float(spread) / seen.spread if seen.spread > 0 else math.nan,
            "to_seen": float(to_seen) / seen.mean_gap if seen.mean_gap > 0 else math.nan}


def collapse_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's verdict from its per-epoch ``gen`` records: collapsed, scattered or neither, and since when."""
    rows = [(r["epoch"], r["gen"]["spread_ratio"]) for r in history if r.get("gen")]
    rule = (f"collapsed when the final epoch's spread_ratio (generated unseen within-class spread / real seen) "
            f"< {COLLAPSED_SPREAD_RATIO:g}; scattered when it is > {SCATTERED_SPREAD_RATIO:g}")
    if not rows:
        return {"rule": rule, "collapsed": None, "scattered": None, "final_spread_ratio": None,
                "first_epoch_below": None, "first_epoch_above": None}
    final = rows[-1][1]
    below = [e for e, s in rows if not (s >= COLLAPSED_SPREAD_RATIO)]  # NaN counts as collapsed
    above = [e for e, s in rows if s > SCATTERED_SPREAD_RATIO]
    return {"rule": rule, "collapsed": bool(not (final >= COLLAPSED_SPREAD_RATIO)),
            "scattered": bool(final > SCATTERED_SPREAD_RATIO), "final_spread_ratio": final,
            "first_epoch_below": below[0] if below else None, "first_epoch_above": above[0] if above else None}


def degenerate(summary: dict[str, Any] | None) -> str | None:
    """"collapsed", "scattered" or None for a :func:`collapse_summary` (None also when nothing was measured)."""
    summary = summary or {}
    return "collapsed" if summary.get("collapsed") else "scattered" if summary.get("scattered") else None
