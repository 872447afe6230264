"""The factorised conditional density of supplementary eq. 9."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from izf_lib.density import conditional_log_prob, log_normal
from izf_lib.flows import IZFFlow

from helpers import randomised


def _flow(dim: int, seed: int = 0) -> IZFFlow:
    return randomised(IZFFlow(dim, n_blocks=3, hidden=16, seed=seed).double(), std=0.3, seed=seed)


def test_log_normal_matches_torch_distributions() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    mean = torch.randn(5, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(mean, 0.7).log_prob(x).sum(-1)
    torch.testing.assert_close(log_normal(x, mean, 0.7), ref)


def test_conditional_log_prob_matches_brute_force() -> None:
    d_v, d_a, sigma = 6, 2, 0.5
    flow = _flow(d_v)
    v = torch.randn(4, d_v, dtype=torch.float64)
    att = torch.randn(4, d_a, dtype=torch.float64)
    got = conditional_log_prob(flow, v, att, sigma)
    expected = []
    for row, a in zip(v, att, strict=True):
        z = flow(row[None])[0][0]
        jac = jacobian(lambda r: flow(r[None])[0][0], row)
        log_pz = (
            torch.distributions.Normal(a, sigma).log_prob(z[:d_a]).sum()
            + torch.distributions.Normal(0.0, 1.0).log_prob(z[d_a:]).sum()
        )
        expected.append(log_pz + torch.linalg.slogdet(jac).logabsdet)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_conditional_density_integrates_to_one_in_2d() -> None:
    """Quadrature of p(v|y) over a grid that holds its mass, for d_v = 2, d_a = 1."""
    flow = _flow(2, seed=4)
    n, lim = 801, 12.0
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    vv = torch.cartesian_prod(g, g)
    for a in (-1.0, 0.0, 1.5):
        att = torch.full((vv.shape[0], 1), a, dtype=torch.float64)
        with torch.no_grad():
            p = conditional_log_prob(flow, vv, att, sigma=0.6).exp()
        area = (g[1] - g[0]) ** 2
        total = (p.sum() * area).item()
        assert math.isclose(total, 1.0, abs_tol=2e-3), total
