"""Invertible layers of the IZF flow f: v -> z = [c, z_f].

Each layer returns ``(output, log_det)`` on the forward pass, where ``log_det`` has
shape ``(B,)`` and equals log|det d output / d input| (supplementary eq. 13 sums them),
and has an exact ``inverse``. Nothing is stored between calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's documented alias)
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .precision import autocast_dtype
from .rng import STREAM_INIT, make_generator, reset_linear_

__all__ = [
    "soft_clamp",
    "Permutation",
    "AffineCoupling",
    "IZFFlow",
    "split_z",
    "merge_z",
]

INIT_STD = 0.01  # development code: weights ~ N(0, 0.01^2), so a new flow is near the identity


def soft_clamp(s: Tensor, clamp: float) -> Tensor:
    """Smoothly bound log-scales to (-clamp, clamp): g(s) = clamp * 2/pi * atan(s / clamp).

    g is odd, monotone and g(s) ~ s for |s| << clamp; it keeps exp(g(s)) finite.
    """
    return clamp * (2.0 / math.pi) * torch.atan(s / clamp)


class _AffineHalf(torch.autograd.Function):
    """An affine half-step's elementwise part with a hand-written backward: from the sub-network's raw
    log-scales s and shifts t, out = x * exp(g(s)) + t and log_det = sum g(s), or in reverse
    out = (x - t) * exp(-g(s)) and log_det = -sum g(s), where g is :func:`soft_clamp`.

    The forward values are those of the op-by-op version, bit for bit. The backward reuses the saved
    exp(+-g(s)) and s / clamp instead of replaying the op-by-op chain (division, arctangent, scaling,
    exponential, product, sum) node by node, which saves memory traffic and autograd nodes; the
    chapter "Cost and complexity" gives the measured step times. Grads of an unused output arrive as
    None and cost nothing. The backward is once-differentiable: a second derivative raises an error.
    """

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, t: Tensor, clamp: float, reverse: bool  # type: ignore[override]
                ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        u = s / clamp
        g = torch.atan(u).mul_(clamp * (2.0 / math.pi))  # soft_clamp's arithmetic, value for value
        log_det = g.sum(-1)
        if reverse:
            e = torch.exp(g.neg_())
            out = (x - t).mul_(e)
            log_det = log_det.neg_()
            ctx.save_for_backward(u, e, out)  # d out / d g(s) = -out
        else:
            e = torch.exp(g)
            out = x * e + t  # not addcmul: the values stay those of the autograd chain
            ctx.save_for_backward(u, e, x)  # d out / d g(s) = x * e
        ctx.reverse = reverse
        return out, log_det

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor | None, d_log_det: Tensor | None  # type: ignore[override]
                 ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        u, e, w = ctx.saved_tensors
        sign = -1.0 if ctx.reverse else 1.0
        dx = dt = None
        d_g = None  # d loss / d g(s)
        if d_out is not None:
            dx = d_out * e
            dt = -dx if ctx.reverse else d_out
            d_g = (d_out * w if ctx.reverse else dx * w)
            if ctx.reverse:
                d_g = d_g.neg_()
        if d_log_det is not None:
            d_ld = sign * d_log_det.unsqueeze(-1)
            d_g = d_g.add_(d_ld) if d_g is not None else d_ld.expand_as(u).clone()
        # g(s) = clamp * 2/pi * atan(s / clamp): dg/ds = 2/pi / (1 + (s / clamp)^2)
        d_s = None if d_g is None else d_g.div_(u.square().add_(1.0)).mul_(2.0 / math.pi)
        return dx, d_s, dt, None, None


class _Permute(torch.autograd.Function):
    """y = x[..., perm] whose backward is the inverse gather dy[..., inv_perm] (no scatter-add)."""

    @staticmethod
    def forward(ctx, x: Tensor, perm: Tensor, inv_perm: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inv_perm)
        return x.index_select(-1, perm)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (inv_perm,) = ctx.saved_tensors
        return grad.index_select(-1, inv_perm), None, None


class Permutation(nn.Module):
    """A fixed random reordering of the features (supplementary eq. 10-11).

    The order is drawn once from ``seed`` and stored as a buffer, so it is saved with the
    ``state_dict``. Its Jacobian is a permutation matrix: log|det| = 0 for every input.
    """

    perm: Tensor
    inv_perm: Tensor

    def __init__(self, dim: int, seed: int = 0, order: Tensor | None = None) -> None:
        super().__init__()
        if order is None:
            gen = torch.Generator().manual_seed(int(seed))
            order = torch.randperm(dim, generator=gen)
        order = torch.as_tensor(order, dtype=torch.long)
        if order.shape != (dim,) or not torch.equal(order.sort().values, torch.arange(dim)):
            raise ValueError(f"order must be a permutation of 0..{dim - 1}, got {order.tolist()}")
        self.dim = dim
        self.register_buffer("perm", order.clone())
        self.register_buffer("inv_perm", torch.argsort(order))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z = x[..., perm]; returns ``(z, zeros(B))``."""
        return _Permute.apply(x, self.perm, self.inv_perm), x.new_zeros(x.shape[:-1])

    def inverse(self, z: Tensor) -> Tensor:
        """x = z[..., inv_perm], the exact inverse reordering."""
        return _Permute.apply(z, self.inv_perm, self.perm)


def _subnet(d_in: int, d_out: int, hidden: int, generator: torch.Generator) -> nn.Sequential:
    """Linear(d_in, hidden) -> ReLU -> Linear(hidden, d_out), weights ~ N(0, 0.01^2) from ``generator``."""
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    return reset_linear_(net, generator, std=INIT_STD)


class AffineCoupling(nn.Module):
    """Two-sided affine coupling (Glow / INN style, as in the development code).

    With x = [x1, x2] (x1 has ``dim // 2`` entries, x2 the rest, so odd dims work)::

        s2, t2 = net2(x2);  y1 = x1 * exp(g(s2)) + t2
        s1, t1 = net1(y1);  y2 = x2 * exp(g(s1)) + t1

    Each sub-network predicts s and t together in one pass. The Jacobian is block
    triangular with diagonal exp(g(s)), so log|det| = sum g(s2) + sum g(s1)
    (signed, not sum |s| as supplementary eq. 14 prints). The weights are drawn from the
    CPU ``generator`` (default: seed 0's initialisation stream), never from the global state.
    """

    def __init__(self, dim: int, hidden: int = 1024, clamp: float = 2.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"AffineCoupling needs dim >= 2, got {dim}")
        self.dim, self.hidden, self.clamp = dim, hidden, float(clamp)
        self.len1 = dim // 2
        self.len2 = dim - self.len1
        self.compute_dtype: torch.dtype | None = None  # set by IZFFlow.set_precision; not saved
        self._casts: dict[int, tuple[Tensor, ...]] | None = None  # set within IZFFlow.shared_casts
        gen = generator if generator is not None else make_generator(0, STREAM_INIT)
        self.net2 = _subnet(self.len2, 2 * self.len1, hidden, gen)  # conditions x1 on x2
        self.net1 = _subnet(self.len1, 2 * self.len2, hidden, gen)  # conditions x2 on y1

    def _subnet_weights(self, net: nn.Module) -> tuple[Tensor, ...]:
        """(W1, b1, W2, b2) of a sub-network in ``compute_dtype``: the block's shared casts, else cast now."""
        if self._casts is not None:
            return self._casts[id(net)]
        first, last = net[0], net[2]
        return tuple(w.to(self.compute_dtype) for w in (first.weight, first.bias, last.weight, last.bias))

    def _raw_scale_shift(self, net: nn.Module, u: Tensor) -> tuple[Tensor, Tensor]:
        """(s, t) of a sub-network before the clamp; under a ``compute_dtype`` only its matmuls use it."""
        if self.compute_dtype is not None and u.dtype == torch.float32:
            w1, b1, w2, b2 = self._subnet_weights(net)
            h = F.linear(F.relu(F.linear(u.to(self.compute_dtype), w1, b1)), w2, b2)
            h = h.float()  # the clamp, exp and everything after it in float32 (izf_lib.precision)
        else:
            h = net(u)
        s, t = h.chunk(2, dim=-1)
        return s, t

    def _scale_shift(self, net: nn.Module, u: Tensor) -> tuple[Tensor, Tensor]:
        """(g(s), t) of a sub-network: the clamped log-scales and the shifts."""
        s, t = self._raw_scale_shift(net, u)
        return soft_clamp(s, self.clamp), t

    def _half(self, net: nn.Module, cond: Tensor, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        """One affine half-step on ``x`` conditioned on ``cond``: x * exp(g(s)) + t, or its inverse.

        Returns ``(output, log_det)`` with log_det = sum g(s) forward and -sum g(s) in reverse.
        Both directions of both halves go through here (as in FrEIA's coupling blocks); the
        elementwise part is :class:`_AffineHalf`.
        """
        s, t = self._raw_scale_shift(net, cond)
        return _AffineHalf.apply(x, s, t, self.clamp, reverse)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[..., : self.len1], x[..., self.len1 :]

    def log_scales(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The clamped log-scales (g(s2), g(s1)) applied to x; log_det is the sum of both."""
        x1, x2 = self._split(x)
        s2, t2 = self._scale_shift(self.net2, x2)
        s1, _ = self._scale_shift(self.net1, x1 * torch.exp(s2) + t2)
        return s2, s1

    def forward_first(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The first half-step alone: [x1, x2] -> [y1, x2] with y1 = x1 * exp(g(s2(x2))) + t2(x2).

        Its Jacobian is upper block triangular [[diag(exp g(s2)), *], [0, I]].
        """
        x1, x2 = self._split(x)
        y1, log_det = self._half(self.net2, x2, x1)
        return torch.cat([y1, x2], dim=-1), log_det

    def forward_second(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The second half-step alone: [y1, x2] -> [y1, y2] with y2 = x2 * exp(g(s1(y1))) + t1(y1).

        Its Jacobian is lower block triangular [[I, 0], [*, diag(exp g(s1))]]: supplementary eq. 12.
        """
        y1, x2 = self._split(x)
        y2, log_det = self._half(self.net1, y1, x2)
        return torch.cat([y1, y2], dim=-1), log_det

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map x (B, dim) to y (B, dim): the first half-step, then the second; returns ``(y, log_det)``."""
        x1, x2 = self._split(x)
        y1, log_det2 = self._half(self.net2, x2, x1)
        y2, log_det1 = self._half(self.net1, y1, x2)
        return torch.cat([y1, y2], dim=-1), log_det2 + log_det1

    def inverse(self, y: Tensor) -> Tensor:
        """Exact inverse: undo the second half first, then the first."""
        y1, y2 = self._split(y)
        x2, _ = self._half(self.net1, y1, y2, reverse=True)
        x1, _ = self._half(self.net2, x2, y1, reverse=True)
        return torch.cat([x1, x2], dim=-1)


class IZFFlow(nn.Module):
    """The IZF flow: ``n_blocks`` permutation-coupling blocks (supplementary sec. 3).

    ``flow(v) -> (z, log_det)`` with log_det = sum of the blocks' log-dets (eq. 13);
    ``flow.inverse(z) -> v``. Block i's permutation is drawn from ``seed + i``; the sub-networks'
    weights from ``seed``'s initialisation stream (:mod:`izf_lib.rng`).
    """

    def __init__(
        self,
        dim: int,
        n_blocks: int = 5,
        hidden: int = 1024,
        clamp: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        self.dim, self.n_blocks = dim, n_blocks
        self.permutations = nn.ModuleList(Permutation(dim, seed + i) for i in range(n_blocks))
        gen = make_generator(seed, STREAM_INIT)
        self.couplings = nn.ModuleList(AffineCoupling(dim, hidden, clamp, gen) for _ in range(n_blocks))

    def set_precision(self, precision: str) -> IZFFlow:
        """Run the sub-networks' matmuls under ``precision`` (izf_lib.precision); returns the flow."""
        dtype = autocast_dtype(precision)
        for coupling in self.couplings:
            coupling.compute_dtype = dtype
        return self

    @contextmanager
    def shared_casts(self) -> Iterator[None]:
        """Within the block, each sub-network weight is cast to the compute dtype once, for every pass.

        One training step runs the flow forward (encoding) and in reverse (the centres of L_C and
        iMMD's generated features, one pass); casting 2 x n_blocks sub-networks' weights on every
        pass took about a fifth of a profiled bf16 step at AWA1 shapes (measured with three passes).
        Autograd sums the uses' gradients in the cast and converts them once. The weights must not
        change inside the block. A no-op under fp32 (nothing is cast), and inside another such block
        (the outer casts are used).
        """
        if any(c._casts is not None for c in self.couplings):
            yield
            return
        for c in self.couplings:
            if c.compute_dtype is not None:
                casts = {}
                for net in (c.net1, c.net2):  # a loop, not a comprehension: torch.compile's tracer fails on that
                    casts[id(net)] = c._subnet_weights(net)
                c._casts = casts
        try:
            yield
        finally:
            for c in self.couplings:
                c._casts = None

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """z = f(v) for v (B, dim); returns ``(z, log_det)`` with log_det (B,)."""
        log_det = v.new_zeros(v.shape[:-1])
        x = v
        for perm, coupling in zip(self.permutations, self.couplings, strict=True):
            x, _ = perm(x)  # log-det 0 (eq. 11)
            x, ld = coupling(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        """v = f^{-1}(z), the blocks undone in reverse order."""
        x = z
        for perm, coupling in zip(reversed(self.permutations), reversed(self.couplings), strict=True):
            x = perm.inverse(coupling.inverse(x))
        return x


def split_z(z: Tensor, d_a: int) -> tuple[Tensor, Tensor]:
    """Split z (B, d_v) into c = z[:, :d_a] (semantic) and z_f = z[:, d_a:] (non-semantic)."""
    if not 0 < d_a < z.shape[-1]:
        raise ValueError(f"d_a must satisfy 0 < d_a < d_v = {z.shape[-1]}, got {d_a}")
    return z[..., :d_a], z[..., d_a:]


def merge_z(c: Tensor, z_f: Tensor) -> Tensor:
    """The inverse of :func:`split_z`: z = [c, z_f]."""
    return torch.cat([c, z_f], dim=-1)
