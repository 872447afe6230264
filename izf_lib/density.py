"""The factorised conditional density of IZF (supplementary eq. 7-9).

log p(v|y) = log N(c; a_y, sigma^2 I) + log N(z_f; 0, I) + log|det df/dv|,
where [c, z_f] = f(v) and c holds the first d_a coordinates of z.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .flows import split_z

__all__ = ["log_normal", "log_prob_from_latent", "conditional_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def log_normal(x: Tensor, mean: Tensor | float = 0.0, sigma: float = 1.0) -> Tensor:
    """log N(x; mean, sigma^2 I) summed over the last dimension; shape (B,)."""
    d = x.shape[-1]
    sq = ((x - mean) ** 2).sum(-1)
    return -0.5 * sq / sigma**2 - d * math.log(sigma) - 0.5 * d * _LOG_2PI


def log_prob_from_latent(
    c: Tensor, z_f: Tensor, log_det: Tensor, att_y: Tensor, sigma: float
) -> Tensor:
    """Supplementary eq. 9 in log form, given the latent [c, z_f] and log|det| (all (B, .))."""
    return log_normal(c, att_y, sigma) + log_normal(z_f) + log_det


def conditional_log_prob(flow: nn.Module, v: Tensor, att_y: Tensor, sigma: float) -> Tensor:
    """log p(v|y) for v (B, d_v) and its class attributes att_y (B, d_a); shape (B,)."""
    if att_y.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"att_y batch shape {tuple(att_y.shape)} does not match v {tuple(v.shape)}")
    z, log_det = flow(v)
    c, z_f = split_z(z, att_y.shape[-1])
    return log_prob_from_latent(c, z_f, log_det, att_y, sigma)
