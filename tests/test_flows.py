"""Properties of the invertible layers and of the cascaded IZF flow."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from izf_lib.flows import AffineCoupling, IZFFlow, Permutation, merge_z, split_z

from helpers import randomised


def _autograd_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at each row of x, by brute-force autograd Jacobians."""
    out = []
    for row in x:
        jac = jacobian(lambda r: fn(r[None])[0][0], row)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


@pytest.mark.parametrize("dim,n_blocks", [(2, 1), (3, 2), (5, 5), (8, 3), (11, 5)])
def test_flow_log_det_matches_autograd_jacobian(dim: int, n_blocks: int) -> None:
    torch.manual_seed(dim)
    flow = IZFFlow(dim, n_blocks=n_blocks, hidden=16, seed=dim).double()
    randomised(flow, seed=dim)
    x = torch.randn(4, dim, dtype=torch.float64)
    _, log_det = flow(x)
    expected = _autograd_logdet(flow, x)
    assert log_det.shape == (4,)
    assert expected.abs().max() > 1e-2  # the check is not trivially 0 == 0
    torch.testing.assert_close(log_det, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dim", [2, 3, 7])
def test_coupling_log_det_is_signed_sum_of_clamped_scales(dim: int) -> None:
    layer = AffineCoupling(dim, hidden=8).double()
    randomised(layer, std=0.8, seed=0)
    x = 2.0 * torch.randn(32, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(dim))
    _, log_det = layer(x)
    torch.testing.assert_close(log_det, _autograd_logdet(layer, x), rtol=1e-10, atol=1e-10)
    # signed: both signs occur, which a sum of |s| (as eq. 14 prints) could never produce
    assert (log_det < 0).any() and (log_det > 0).any(), log_det


@pytest.mark.parametrize("dim", [2, 5, 9])
def test_inverse_round_trip_float64(dim: int) -> None:
    flow = IZFFlow(dim, n_blocks=5, hidden=32, seed=3).double()
    randomised(flow, std=0.2, seed=3)
    v = torch.randn(16, dim, dtype=torch.float64)
    z, _ = flow(v)
    torch.testing.assert_close(flow.inverse(z), v, rtol=0, atol=1e-12)
    torch.testing.assert_close(flow(flow.inverse(v))[0], v, rtol=0, atol=1e-12)


def test_inverse_round_trip_float32_at_benchmark_size() -> None:
    """d = 2048, hidden 1024, 5 blocks, float32: |f^-1(f(v)) - v| below 1e-4 (stated tolerance)."""
    torch.manual_seed(0)
    flow = IZFFlow(2048, n_blocks=5, hidden=1024)
    v = torch.rand(64, 2048)
    with torch.no_grad():
        z, log_det = flow(v)
        back = flow.inverse(z)
    assert z.shape == v.shape and log_det.shape == (64,)
    assert (back - v).abs().max().item() < 1e-4


def test_jacobian_of_inverse_is_inverse_jacobian() -> None:
    dim = 6
    flow = IZFFlow(dim, n_blocks=3, hidden=16, seed=1).double()
    randomised(flow, std=0.3, seed=2)
    v = torch.randn(dim, dtype=torch.float64)
    j_f = jacobian(lambda r: flow(r[None])[0][0], v)
    z = flow(v[None])[0][0]
    j_inv = jacobian(lambda r: flow.inverse(r[None])[0], z)
    torch.testing.assert_close(j_inv @ j_f, torch.eye(dim, dtype=torch.float64), atol=1e-10, rtol=0)


def test_every_parameter_receives_a_gradient() -> None:
    flow = IZFFlow(7, n_blocks=3, hidden=8)
    randomised(flow, std=0.3)
    z, log_det = flow(torch.randn(5, 7))
    (z.pow(2).sum() - log_det.sum() + flow.inverse(z).sum()).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_state_dict_round_trip_reproduces_outputs_across_seeds() -> None:
    a = IZFFlow(9, n_blocks=4, hidden=16, seed=1)
    randomised(a, std=0.3)
    b = IZFFlow(9, n_blocks=4, hidden=16, seed=99)
    x = torch.randn(8, 9)
    assert not torch.equal(a(x)[0], b(x)[0])  # different permutations and weights
    b.load_state_dict(a.state_dict())
    za, lda = a(x)
    zb, ldb = b(x)
    assert torch.equal(za, zb) and torch.equal(lda, ldb)
    assert torch.equal(a.inverse(za), b.inverse(zb))


def test_permutation_order_is_a_saved_buffer() -> None:
    p = Permutation(10, seed=5)
    assert "perm" in p.state_dict()
    q = Permutation(10, seed=6)
    q.load_state_dict(p.state_dict())
    assert torch.equal(p.perm, q.perm)
    assert list(p.parameters()) == []  # fixed, not trained


def test_permutation_reproduces_eq10_example() -> None:
    """Supplementary eq. 10: order [3, 2, 4, 1] (1-based) maps x to [x3, x2, x4, x1]."""
    layer = Permutation(4, order=torch.tensor([3, 2, 4, 1]) - 1)
    x = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    z, log_det = layer(x)
    assert z.tolist() == [[30.0, 20.0, 40.0, 10.0]]
    assert log_det.tolist() == [0.0]
    assert torch.equal(layer.inverse(z), x)
    # reverse pass as printed: x = [z4, z2, z1, z3]
    assert layer.inverse(z).tolist() == [[z[0, 3].item(), z[0, 1].item(), z[0, 0].item(), z[0, 2].item()]]


def test_permutation_rejects_a_non_permutation() -> None:
    with pytest.raises(ValueError, match="permutation"):
        Permutation(3, order=torch.tensor([0, 0, 1]))


def test_new_flow_is_near_identity_up_to_permutation() -> None:
    flow = IZFFlow(16, n_blocks=5, hidden=64)
    v = torch.rand(32, 16)
    z, log_det = flow(v)
    order = torch.arange(16)
    for p in flow.permutations:
        order = order[p.perm]
    assert (z - v[:, order]).abs().max() < 0.05
    assert log_det.abs().max() < 0.05


def test_flow_runs_in_float64_and_keeps_dtype() -> None:
    flow = IZFFlow(5, n_blocks=2, hidden=8).double()
    z, log_det = flow(torch.randn(3, 5, dtype=torch.float64))
    assert z.dtype == torch.float64 and log_det.dtype == torch.float64


def test_split_and_merge_are_inverse() -> None:
    z = torch.randn(4, 10)
    c, z_f = split_z(z, 3)
    assert c.shape == (4, 3) and z_f.shape == (4, 7)
    assert torch.equal(merge_z(c, z_f), z)
    with pytest.raises(ValueError, match="d_a"):
        split_z(z, 10)


def test_coupling_is_the_composition_of_its_two_triangular_half_steps() -> None:
    layer = AffineCoupling(5, hidden=8).double()
    randomised(layer, std=0.5, seed=7)
    x = torch.randn(3, 5, dtype=torch.float64)
    mid, ld1 = layer.forward_first(x)
    y, ld2 = layer.forward_second(mid)
    full, ld = layer(x)
    torch.testing.assert_close(y, full)
    torch.testing.assert_close(ld1 + ld2, ld)
    j1 = jacobian(lambda r: layer.forward_first(r[None])[0][0], x[0])
    j2 = jacobian(lambda r: layer.forward_second(r[None])[0][0], mid[0])
    n1 = layer.len1
    assert torch.all(j1[n1:, :n1] == 0)  # first half-step: upper block triangular
    assert torch.all(j2[:n1, n1:] == 0)  # second half-step: lower block triangular (eq. 12)


def test_log_scales_sum_to_log_det() -> None:
    layer = AffineCoupling(6, hidden=8)
    randomised(layer, std=0.5, seed=8)
    x = torch.randn(4, 6)
    s2, s1 = layer.log_scales(x)
    torch.testing.assert_close(s2.sum(-1) + s1.sum(-1), layer(x)[1])
    assert s2.abs().max() < layer.clamp and s1.abs().max() < layer.clamp


@pytest.mark.parametrize("reverse", [False, True])
def test_affine_half_step_backward_matches_finite_differences(reverse: bool) -> None:
    """The hand-written backward of a half-step's elementwise part, both directions, float64."""
    from izf_lib.flows import _AffineHalf

    gen = torch.Generator().manual_seed(int(reverse))
    x, s, t = (3.0 * torch.randn(3, 5, dtype=torch.float64, generator=gen) for _ in range(3))
    inputs = tuple(a.requires_grad_() for a in (x, s, t))
    assert torch.autograd.gradcheck(lambda x, s, t: _AffineHalf.apply(x, s, t, 2.0, reverse), inputs)
    # one output unused: its gradient is None inside, and the other's is still right
    for pick in (0, 1):
        def one(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, pick: int = pick) -> torch.Tensor:
            return _AffineHalf.apply(x, s, t, 2.0, reverse)[pick]

        assert torch.autograd.gradcheck(one, inputs)


@pytest.mark.parametrize("reverse", [False, True])
def test_affine_half_step_values_are_the_op_by_op_values(reverse: bool) -> None:
    """float32 forward values equal the soft clamp -> exp -> affine chain bit for bit, so a fused step changes
    no number a forward pass gives (only the gradients' rounding)."""
    from izf_lib.flows import _AffineHalf, soft_clamp

    gen = torch.Generator().manual_seed(7)
    x, s, t = (4.0 * torch.randn(64, 33, generator=gen) for _ in range(3))
    out, log_det = _AffineHalf.apply(x, s, t, 2.0, reverse)
    g = soft_clamp(s, 2.0)
    if reverse:
        ref, ref_ld = (x - t) * torch.exp(-g), -g.sum(-1)
    else:
        ref, ref_ld = x * torch.exp(g) + t, g.sum(-1)
    assert torch.equal(out, ref) and torch.equal(log_det, ref_ld)


def test_affine_half_step_refuses_a_second_derivative() -> None:
    """Its backward is written by hand and not itself differentiable: asking for more is an error, not a zero."""
    from izf_lib.flows import _AffineHalf

    x, s, t = (torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, log_det = _AffineHalf.apply(x, s, t, 2.0, False)
    (d_s,) = torch.autograd.grad((out.square().sum() + log_det.sum()), s, create_graph=True)
    with pytest.raises(RuntimeError, match="marked with @once_differentiable"):
        d_s.sum().backward()
