"""The IZF losses: MMD properties, centralizing loss, flow NLL."""

from __future__ import annotations

import math

import pytest
import torch

from izf_lib.density import conditional_log_prob
from izf_lib.flows import IZFFlow, merge_z
from izf_lib.losses import (
    centralizing_loss,
    flow_loss_dev,
    flow_nll,
    immd_bounds,
    immd_loss,
    imq_kernel,
    kernel_scales,
    median_sq_distance,
    mmd2,
    mmd2_terms,
)


def test_imq_kernel_is_sum_over_scales() -> None:
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])  # squared distance 25
    assert imq_kernel(x, y, (1.0, 5.0)).item() == pytest.approx(1 / 26 + 5 / 30)
    assert imq_kernel(x, x, (1.0, 5.0)).item() == pytest.approx(2.0)


def test_mmd_is_zero_for_identical_sets_and_nonnegative() -> None:
    x = torch.randn(50, 4)
    assert mmd2(x, x).item() == pytest.approx(0.0, abs=1e-6)
    for _ in range(5):
        assert mmd2(torch.randn(30, 4), torch.randn(40, 4)).item() >= 0


def test_mmd_grows_with_distance() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=gen)
    y = torch.randn(200, 3, generator=gen)
    values = [mmd2(x, y + shift).item() for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True)), values


def test_unbiased_mmd_is_centred_while_biased_is_not() -> None:
    """Same distribution: the biased estimate is positive on average, the unbiased one averages ~0."""
    gen = torch.Generator().manual_seed(1)
    biased, unbiased = [], []
    for _ in range(200):
        x, y = torch.randn(10, 2, generator=gen), torch.randn(10, 2, generator=gen)
        biased.append(mmd2(x, y).item())
        unbiased.append(mmd2(x, y, unbiased=True).item())
    b, u = torch.tensor(biased), torch.tensor(unbiased)
    assert b.mean() > 5 * b.std() / math.sqrt(200)
    assert u.mean().abs() < 3 * u.std() / math.sqrt(200)
    assert (u < 0).any()


def test_immd_gradient_is_finite_and_pushes_sets_apart() -> None:
    x = torch.randn(20, 3)
    y = (torch.randn(20, 3) + 0.5).requires_grad_()
    loss = immd_loss(x, y)
    loss.backward()
    assert torch.isfinite(y.grad).all()
    with torch.no_grad():
        y2 = y - 0.1 * y.grad / y.grad.norm()
    assert immd_loss(x, y2) < loss  # a descent step increases the MMD


def test_centralizing_loss_matches_its_definition() -> None:
    torch.manual_seed(0)
    flow = IZFFlow(5, n_blocks=2, hidden=8).double()
    att = torch.rand(4, 2, dtype=torch.float64)
    v = torch.randn(7, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 2, 3, 0, 0, 2])
    expected = 0.0
    for k in (0, 2, 3):
        centre = flow.inverse(merge_z(att[k:k + 1], torch.zeros(1, 3, dtype=torch.float64)))[0]
        expected += (centre - v[y == k].mean(0)).norm()
    got = centralizing_loss(flow, v, y, att)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_centralizing_loss_mean_divides_by_the_classes_in_the_batch() -> None:
    torch.manual_seed(1)
    flow = IZFFlow(5, n_blocks=2, hidden=8).double()
    att = torch.rand(4, 2, dtype=torch.float64)
    v = torch.randn(7, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 2, 3, 0, 0, 2])  # three classes present, class 1 absent
    total = centralizing_loss(flow, v, y, att)
    mean = centralizing_loss(flow, v, y, att, reduction="mean")
    torch.testing.assert_close(mean, total / 3)
    with pytest.raises(ValueError, match="reduction"):
        centralizing_loss(flow, v, y, att, reduction="median")


def test_flow_nll_is_minus_log_density_per_dimension() -> None:
    torch.manual_seed(1)
    flow = IZFFlow(6, n_blocks=2, hidden=8).double()
    v = torch.randn(5, 6, dtype=torch.float64)
    att_y = torch.rand(5, 2, dtype=torch.float64)
    z, log_det = flow(v)
    got = flow_nll(z[:, :2], z[:, 2:], log_det, att_y, sigma=0.3)
    torch.testing.assert_close(got, -conditional_log_prob(flow, v, att_y, 0.3).mean() / 6)


def test_dev_flow_loss_formula() -> None:
    c, z_f = torch.ones(2, 2), torch.full((2, 4), 2.0)
    log_det = torch.tensor([6.0, 0.0])
    att_y = torch.zeros(2, 2)
    # 10 * 1 + 4 / 2 - 3 / 6
    assert flow_loss_dev(c, z_f, log_det, att_y, w_c=10.0).item() == pytest.approx(11.5)


def test_median_sq_distance_on_a_hand_made_set_and_its_stride() -> None:
    # points 0, 1, 3 on a line: squared distances 1, 9, 4 -> median 4
    assert median_sq_distance(torch.tensor([[0.0], [1.0], [3.0]])) == 4.0
    # 6 rows capped at 3 take every 2nd row (0, 2, 4 -> squared distances 4, 16, 4 -> 4): no random draw
    assert median_sq_distance(torch.arange(6.0)[:, None], max_rows=3) == 4.0
    with pytest.raises(ValueError, match="at least two rows"):
        median_sq_distance(torch.zeros(1, 3))


def test_kernel_scales_fixed_or_in_the_data_unit() -> None:
    v = torch.tensor([[0.0], [1.0], [3.0]])
    assert kernel_scales((0.5, 2.0), "fixed") == (0.5, 2.0)
    assert kernel_scales((0.5, 2.0), "median", v) == (2.0, 8.0)  # times the median 4
    with pytest.raises(ValueError, match="distinct features"):
        kernel_scales((1.0,), "median", torch.zeros(4, 2))
    with pytest.raises(ValueError, match="needs the real seen"):
        kernel_scales((1.0,), "median")


def test_immd_bounds_on_a_hand_made_set() -> None:
    # class 0 at 0 and 1, class 1 at 10 and 12: within-class squared distances 1, 4 -> lower median 1;
    # all six pairs 1, 100, 144, 81, 121, 4 -> lower median 81
    v, y = torch.tensor([[0.0], [1.0], [10.0], [12.0]]), torch.tensor([0, 0, 1, 1])
    assert immd_bounds(v, y) == (1.0, 81.0)
    with pytest.raises(ValueError, match="two training features of one seen class"):
        immd_bounds(v[[0, 2]], y[[0, 2]])


def test_the_bounded_kernel_rewards_neither_collapse_nor_scatter() -> None:
    """Within the generated set, pairs closer than b_l earn no more than b_l; across, farther than b_u no less."""
    scales, bounds = (1.0, 4.0), (1.0, 9.0)
    seen = torch.zeros(4, 2)
    point = torch.full((4, 2), 5.0)                                # a collapsed generated set
    spread = point + torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]) * 0.3  # pairs below b_l
    k_point = mmd2_terms(seen, point, scales, bounds=bounds)
    k_spread = mmd2_terms(seen, spread, scales, bounds=bounds)
    assert torch.allclose(k_point[1], k_spread[1])  # E k_uu: collapse earns nothing once below b_l
    assert torch.allclose(k_point[2], k_spread[2])  # E k_su: both beyond b_u, capped alike
    far = (point * 10).requires_grad_(True)
    mmd2_terms(seen, far, scales, bounds=bounds)[2].backward()
    assert torch.count_nonzero(far.grad) == 0  # no push beyond b_u
    assert mmd2_terms(seen, point, scales)[1] > k_point[1]  # unbounded, the collapsed set scores higher
