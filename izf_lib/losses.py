"""The three IZF losses; each docstring names its source.

L = lambda_1 L_flow + lambda_2 L_C + lambda_3 L_iMMD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .density import log_prob_from_latent
from .flows import merge_z

__all__ = [
    "IMQ_SCALES",
    "flow_nll",
    "flow_loss_dev",
    "class_groups",
    "fixed_class_groups",
    "centralizing_loss",
    "centre_latents",
    "imq_kernel",
    "mmd2",
    "mmd2_terms",
    "immd_loss",
    "immd_from_terms",
    "median_sq_distance",
    "immd_bounds",
    "immd_margin",
    "kernel_scales",
]

IMQ_SCALES: tuple[float, ...] = (0.1, 0.2, 1.5, 3.0, 5.0, 10.0)  # development code


def flow_nll(c: Tensor, z_f: Tensor, log_det: Tensor, att_y: Tensor, sigma: float) -> Tensor:
    """L_flow: -log p(v|y) of supplementary eq. 9, averaged over the batch, in nats per dimension.

    Dividing by d_v only rescales the gradient; it makes values comparable across datasets.
    """
    d_v = c.shape[-1] + z_f.shape[-1]
    return -log_prob_from_latent(c, z_f, log_det, att_y, sigma).mean() / d_v


def flow_loss_dev(c: Tensor, z_f: Tensor, log_det: Tensor, att_y: Tensor, w_c: float) -> Tensor:
    """L_flow in the development code's per-dimension form (a reconstruction, not the paper's text).

    w_c * mean((c - a_y)^2) + mean(z_f^2) / 2 - mean(log_det) / d_v.
    """
    d_v = c.shape[-1] + z_f.shape[-1]
    return w_c * ((c - att_y) ** 2).mean() + 0.5 * (z_f**2).mean() - log_det.mean() / d_v


def class_groups(y: Tensor, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The classes present in ``y`` (K,), each row's group 0..K-1 (B,) and the group sizes (K,).

    Computed where ``y`` lives and then moved to ``device``: the training loop passes CPU labels
    so that the device never has to report a data-dependent size (a host synchronisation).
    """
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if device is None:
        return classes, inverse, counts
    return tuple(t.to(device, non_blocking=True) for t in (classes, inverse, counts))  # type: ignore[return-value]


def centre_latents(att: Tensor, classes: Tensor, d_v: int) -> Tensor:
    """z = [a_y, 0] for each class of ``classes`` (K,): the latents whose reverse pass are L_C's centres."""
    a = att[classes]
    return merge_z(a, a.new_zeros(a.shape[0], d_v - a.shape[1]))


def centralizing_loss(flow: torch.nn.Module, v: Tensor, y: Tensor, att: Tensor,
                      groups: tuple[Tensor, Tensor, Tensor] | None = None,
                      centres: Tensor | None = None, reduction: str = "sum") -> Tensor:
    """L_C: sum over the classes y in the batch of || f^{-1}([a_y, 0]) - mean of the batch's v of class y ||_2.

    Pulls each class's "centre" generation onto the class mean of real features
    (development code; the exact form in the main paper is a reconstruction). ``reduction`` "mean"
    divides the sum by the number of classes in the batch, so L_C weighs the same against L_flow
    whether a batch holds 7 classes or 230 (``IZFConfig.lc_reduction``). ``groups`` is
    :func:`class_groups` of ``y``, when the caller has it already, or :func:`fixed_class_groups`
    (classes with count 0 are left out of the sum). ``centres`` (K, d_v) is f^{-1} of
    :func:`centre_latents` of ``groups``' classes when the caller ran that reverse pass itself
    (IZF.objective runs it together with iMMD's: one pass over more rows costs less than two).
    """
    classes, inverse, counts = groups if groups is not None else class_groups(y)
    means = torch.zeros(classes.numel(), v.shape[1], dtype=v.dtype, device=v.device)
    means.index_add_(0, inverse, v)
    if centres is None:
        centres = flow.inverse(centre_latents(att, classes, v.shape[1]))
    means = means / counts.clamp_min(1).to(v.dtype)[:, None]
    present = (counts > 0).to(v.dtype)  # classes absent from the batch (count 0) add nothing
    total = ((centres - means).norm(dim=1) * present).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / present.sum().clamp_min(1.0)
    raise ValueError(f"reduction must be 'sum' or 'mean', got '{reduction}'")


def fixed_class_groups(y: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`class_groups` over a fixed sorted class list (K,) that contains every label of ``y``.

    The shapes do not depend on which classes the batch holds (absent ones get count 0), so a
    step that uses them can be captured once as a CUDA graph and replayed for every batch.
    """
    inverse = torch.searchsorted(classes, y)
    counts = (inverse[None, :] == torch.arange(classes.numel(), device=y.device)[:, None]).sum(1)  # no atomics
    return classes, inverse, counts


def imq_kernel(x: Tensor, y: Tensor, scales: Sequence[float] = IMQ_SCALES,
               min_d2: float | None = None, max_d2: float | None = None) -> Tensor:
    """Multi-scale inverse multiquadric kernel k(x, x') = sum_C C / (C + ||x - x'||^2); shape (n, m).

    ``min_d2`` / ``max_d2`` clamp the squared distance first (a bounded kernel): pairs closer than
    ``min_d2`` or farther than ``max_d2`` count as at that distance and get no gradient.
    """
    d2 = (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    if min_d2 is not None or max_d2 is not None:
        d2 = d2.clamp(min=min_d2, max=max_d2)
    return sum(s / (s + d2) for s in scales)


def mmd2_terms(x: Tensor, y: Tensor, scales: Sequence[float] = IMQ_SCALES,
               unbiased: bool = False, bounds: tuple[float, float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The three terms of MMD^2(x, y): E k(x, x'), E k(y, y') and E k(x, y), each a scalar.

    Biased (V-statistic): the means of the kernel matrices, diagonals included; unbiased
    (U-statistic): the within-set means drop the diagonal. ``bounds`` = (b_l, b_u) bounds the
    kernel as :func:`immd_bounds` explains: within y, squared distances below b_l count as b_l;
    between x and y, those above b_u count as b_u.
    """
    b_l, b_u = bounds if bounds is not None else (None, None)
    kxx, kyy = imq_kernel(x, x, scales), imq_kernel(y, y, scales, min_d2=b_l)
    kxy = imq_kernel(x, y, scales, max_d2=b_u)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least two samples per set")
        return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)),
                (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)), kxy.mean())
    return kxx.mean(), kyy.mean(), kxy.mean()


def mmd2(x: Tensor, y: Tensor, scales: Sequence[float] = IMQ_SCALES, unbiased: bool = False) -> Tensor:
    """Squared MMD between the samples x (n, d) and y (m, d) under the IMQ kernel.

    The default biased (V-statistic) estimate is >= 0 and exactly 0 for identical sets; the
    unbiased (U-statistic) estimate drops the diagonal terms and can be negative.
    """
    k_xx, k_yy, k_xy = mmd2_terms(x, y, scales, unbiased)
    return k_xx + k_yy - 2.0 * k_xy


def immd_loss(v_seen: Tensor, v_unseen_generated: Tensor, scales: Sequence[float] = IMQ_SCALES) -> Tensor:
    """The development code's L_iMMD = -MMD^2(real seen batch, generated unseen batch) (``immd_form``
    ``neg_mmd2_biased``): pushes generated unseen features away from the real seen ones, and also rewards a
    tight generated set; training uses the configured form (:meth:`izf_lib.model.IZF.objective`)."""
    return immd_from_terms(*mmd2_terms(v_seen, v_unseen_generated, scales))


def immd_from_terms(k_ss: Tensor, k_uu: Tensor, k_su: Tensor, form: str = "neg_mmd2_biased",
                    margin: float | None = None) -> Tensor:
    """L_iMMD from the three kernel terms of :func:`mmd2_terms` (``IZFConfig.immd_form``).

    ``neg_mmd2_biased`` / ``neg_mmd2_unbiased`` / ``neg_mmd2_bounded``: -(E k_ss + E k_uu - 2 E k_su), the
    negative MMD^2 (the terms come biased, unbiased or from the bounded kernel of :func:`mmd2_terms`);
    unbounded, it is lowered by a tight generated set as well as by a far one. ``neg_mmd2_hinge``:
    -min(MMD^2, margin) on the bounded terms, so once the generated unseen set is as far from the real
    seen batch as a real group of classes is (:func:`immd_margin`), pushing it farther earns nothing.
    ``cross_only``: -(E k_ss - 2 E k_su), the same value without E k_uu, so only the push away from the
    real seen batch remains and collapse earns nothing (measured: with nothing to bound it, the push
    scatters the set).
    """
    if form in ("neg_mmd2_biased", "neg_mmd2_unbiased", "neg_mmd2_bounded"):
        return -(k_ss + k_uu - 2.0 * k_su)
    if form == "neg_mmd2_hinge":
        if margin is None:
            raise ValueError("immd_form 'neg_mmd2_hinge' needs its margin (losses.immd_margin)")
        return -torch.clamp(k_ss + k_uu - 2.0 * k_su, max=margin)
    if form == "cross_only":
        return -(k_ss - 2.0 * k_su)
    raise ValueError(f"immd_form must be neg_mmd2_biased, neg_mmd2_unbiased, neg_mmd2_bounded, neg_mmd2_hinge "
                     f"or cross_only, got '{form}'")


def _pair_sq_distances(v: Tensor, max_rows: int) -> tuple[Tensor, tuple[Tensor, Tensor], int]:
    """||v_i - v_j||^2 over pairs i < j of at most ``max_rows`` rows of v taken at an even stride (no random
    draw), in float64; returns the distances, the pair indices (i, j) into the strided rows, and the stride."""
    step = max(1, -(-v.shape[0] // max_rows))
    rows = v[::step].double()
    i, j = torch.triu_indices(rows.shape[0], rows.shape[0], offset=1, device=rows.device)
    return torch.cdist(rows, rows).pow(2)[i, j], (i, j), step


def median_sq_distance(v: Tensor, max_rows: int = 2048) -> float:
    """The median of ||v_i - v_j||^2 over pairs i < j of the rows of v (N, d), from at most ``max_rows`` rows.

    The rows are taken at an even stride (no random draw), so the value depends on the data alone.
    """
    if v.shape[0] < 2:
        raise ValueError(f"the median pairwise distance needs at least two rows, got {v.shape[0]}")
    return float(_pair_sq_distances(v, max_rows)[0].median())


def kernel_scales(scales: Sequence[float], basis: str, v_seen: Tensor | None = None) -> tuple[float, ...]:
    """The IMQ scales used by L_iMMD (``IZFConfig.mmd_scale_basis``): ``scales`` as given (``fixed``), or times
    the median squared distance between the real seen training features ``v_seen`` (``median``).

    With fixed scales of 0.1 to 10 and min-max features in 2048 dimensions (squared distances near 100),
    every kernel value between two different features is small; measured in the data's own unit the
    kernel sees the distances it compares.
    """
    if basis == "fixed":
        return tuple(float(s) for s in scales)
    if basis == "median":
        if v_seen is None:
            raise ValueError("mmd_scale_basis 'median' needs the real seen training features")
        m = median_sq_distance(v_seen)
        if not m > 0:
            raise ValueError(f"the median squared distance between seen training features is {m}; "
                             "'median' kernel scales need distinct features")
        return tuple(float(s) * m for s in scales)
    raise ValueError(f"mmd_scale_basis must be 'fixed' or 'median', got '{basis}'")


def immd_bounds(v_seen: Tensor, y_seen: Tensor, max_rows: int = 2048) -> tuple[float, float]:
    """(b_l, b_u) of the bounded iMMD kernel, from the real seen training features v_seen (N, d) alone.

    b_l: the median squared distance between two features of the same seen class, so a generated
    unseen set tighter than a real class earns nothing; b_u: the median squared distance between
    any two seen features, so pushing a generated feature farther from the real seen ones than
    they lie from each other earns nothing. This mirrors the bounded kernel of Wang, Sun and
    Halgamuge (ICLR 2019), which bounds MMD-GAN's kernel so maximising MMD^2 stops rewarding
    a contracted or a scattered set. Rows are taken at an even stride (no random draw).
    """
    d2, (i, j), step = _pair_sq_distances(v_seen, max_rows)
    y = y_seen[::step]
    same = y[i] == y[j]
    if not same.any():
        raise ValueError("the bounded iMMD kernel needs two training features of one seen class")
    return float(d2[same].median()), float(d2.median())


def immd_margin(v_seen: Tensor, y_seen: Tensor, n_unseen: int, batch_size: int, scales: Sequence[float],
                bounds: tuple[float, float], generator: torch.Generator, draws: int = 16) -> float:
    """The hinge of ``neg_mmd2_hinge``: the bounded MMD^2 between real seen classes and a group of other real
    seen classes, as the training step estimates it, from the seen training features v_seen (N, d) alone.

    Each of ``draws`` draws holds out min(n_unseen, #seen // 2) seen classes as pseudo-unseen and
    compares a batch of the rest (``batch_size`` features, drawn as the training batches are: uniform
    over images) with a batch of the held-out group (uniform over its classes, as the generated unseen
    batch is) under the kernel of :func:`mmd2_terms` with ``bounds``; returns the mean. It is how far apart
    a new group of real classes lies from the seen ones, measured without any unseen image.
    """
    classes = torch.unique(y_seen)
    k = min(int(n_unseen), classes.numel() // 2)
    if k < 1:
        raise ValueError(f"the iMMD margin needs two seen classes and one unseen class, got {classes.numel()} "
                         f"seen and {n_unseen} unseen")
    values = []
    for _ in range(draws):
        held = classes[torch.randperm(classes.numel(), generator=generator, device="cpu")[:k].to(classes.device)]
        is_held = torch.isin(y_seen, held)
        rest = v_seen[~is_held]
        x = rest[torch.randint(rest.shape[0], (batch_size,), generator=generator).to(rest.device)]
        pick = held[torch.randint(k, (batch_size,), generator=generator).to(held.device)]
        rows = torch.empty(batch_size, dtype=torch.long, device=v_seen.device)
        for cls in pick.unique():  # one feature of each picked class, uniform within the class
            at = (pick == cls).nonzero().squeeze(1)
            members = (y_seen == cls).nonzero().squeeze(1)
            rows[at] = members[torch.randint(members.numel(), (at.numel(),), generator=generator).to(members.device)]
        k_ss, k_uu, k_su = mmd2_terms(x.float(), v_seen[rows].float(), scales, bounds=bounds)
        values.append(float(k_ss + k_uu - 2.0 * k_su))
    return sum(values) / len(values)
