"""The IZF model: a flow f with a class-conditional factorised latent (supplementary eq. 9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from . import losses
from .config import BOUNDED_FORMS, IZFConfig
from .density import log_normal, log_prob_from_latent
from .flows import IZFFlow, merge_z, split_z
from .rng import STREAM_IMMD_MARGIN, make_generator

if TYPE_CHECKING:
    from .step import StepNoise

__all__ = ["IZF"]


class IZF(nn.Module):
    """IZF on d_v-dimensional features with class attributes ``att`` (C, d_a).

    ``encode`` is the forward pass v -> (c, z_f, log_det); ``generate`` the reverse pass
    [a_y, z_f] -> v with z_f ~ N(0, I). The attribute table is a buffer, saved with the model.
    """

    att: Tensor

    def __init__(self, att: Tensor, d_v: int, config: IZFConfig | None = None) -> None:
        super().__init__()
        self.config = config or IZFConfig()
        d_a = att.shape[1]
        if not 0 < d_a < d_v:
            raise ValueError(f"IZF needs 0 < d_a < d_v, got d_a = {d_a}, d_v = {d_v}")
        self.d_v, self.d_a = d_v, d_a
        self.sigma = self.config.sigma_for(d_v, d_a)
        self.flow = IZFFlow(d_v, self.config.n_blocks, self.config.hidden, self.config.clamp, seed=self.config.seed)
        self.flow.set_precision(self.config.precision)
        self.register_buffer("att", att.detach().clone().float())
        # the iMMD kernel's scales and the bounds of the bounded form: fit_immd_kernel measures them on the data
        self.kernel_scales: tuple[float, ...] = tuple(self.config.mmd_scales)
        self.immd_bounds: tuple[float, float] | None = None
        self.immd_margin: float | None = None

    def fit_immd_kernel(self, v_seen: Tensor, y_seen: Tensor, n_unseen: int = 0) -> None:
        """Set the iMMD kernel's scales (``mmd_scale_basis``), bounds (``neg_mmd2_bounded``, ``neg_mmd2_hinge``)
        and hinge (``neg_mmd2_hinge``, for ``n_unseen`` unseen classes) from real seen training features v_seen
        (N, d_v) and their labels; a no-op for fixed scales and an unbounded form."""
        cfg = self.config
        self.kernel_scales = losses.kernel_scales(cfg.mmd_scales, cfg.mmd_scale_basis, v_seen)
        if cfg.immd_form in BOUNDED_FORMS:
            self.immd_bounds = losses.immd_bounds(v_seen, y_seen)
        if cfg.immd_form == "neg_mmd2_hinge":
            if n_unseen < 1:
                raise ValueError("immd_form 'neg_mmd2_hinge' needs the number of unseen classes (n_unseen >= 1)")
            self.immd_margin = losses.immd_margin(v_seen, y_seen, n_unseen, cfg.batch_size, self.kernel_scales,
                                                  self.immd_bounds, make_generator(cfg.seed, STREAM_IMMD_MARGIN))

    def encode(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Forward pass: v (B, d_v) -> c (B, d_a), z_f (B, d_v - d_a), log_det (B,)."""
        z, log_det = self.flow(v)
        c, z_f = split_z(z, self.d_a)
        return c, z_f, log_det

    def log_prob(self, v: Tensor, y: Tensor) -> Tensor:
        """log p(v|y) of eq. 9 for features v (B, d_v) and class ids y (B,); shape (B,)."""
        c, z_f, log_det = self.encode(v)
        return log_prob_from_latent(c, z_f, log_det, self.att[y], self.sigma)

    def class_log_prob(self, v: Tensor, classes: Tensor) -> Tensor:
        """log p(v|y) for every candidate class y in ``classes`` (K,): shape (B, K), one forward pass."""
        c, z_f, log_det = self.encode(v)
        log_p_c = log_normal(c[:, None, :], self.att[classes][None, :, :], self.sigma)  # (B, K)
        return log_p_c + (log_normal(z_f) + log_det)[:, None]

    def generate(self, att: Tensor, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Reverse pass: n features per attribute row of att (K, d_a); shape (K * n, d_v), class-major."""
        return self._decode(att.to(self.att.device, self.att.dtype).repeat_interleave(n, dim=0), generator)

    def generate_classes(self, y: Tensor, generator: torch.Generator | None = None,
                         z_f: Tensor | None = None) -> Tensor:
        """One generated feature per class id in y (B,): v = f^{-1}([a_y, z_f]), z_f ~ N(0, I) (or the given z_f)."""
        return self._decode(self.att[y], generator, z_f)

    def _decode(self, c: Tensor, generator: torch.Generator | None, z_f: Tensor | None = None) -> Tensor:
        """v = f^{-1}([c, z_f]) with a fresh z_f ~ N(0, I) per row of c (B, d_a), unless z_f is given."""
        return self.flow.inverse(self._latents(c, generator, z_f))

    def _latents(self, c: Tensor, generator: torch.Generator | None, z_f: Tensor | None = None) -> Tensor:
        """z = [c, z_f], drawing z_f ~ N(0, I) per row of c from ``generator`` unless it is given."""
        if z_f is None:
            z_f = torch.randn(c.shape[0], self.d_v - self.d_a, generator=generator, device=c.device, dtype=c.dtype)
        return merge_z(c, z_f)

    def objective(
        self, v: Tensor, y: Tensor, unseen: Tensor, generator: torch.Generator | None = None,
        groups: tuple[Tensor, Tensor, Tensor] | None = None, noise: StepNoise | None = None,
    ) -> dict[str, Tensor]:
        """The training loss L = lambda_1 L_flow + lambda_2 L_C + lambda_3 L_iMMD on one seen batch.

        ``v`` (B, d_v), ``y`` (B,) are real seen training pairs; the iMMD term generates B
        unseen features from the attributes of ``unseen`` only (no unseen images are used).
        ``groups`` is :func:`~izf_lib.losses.class_groups` of ``y`` if the caller has it. The
        iMMD draws come from ``generator``, or from ``noise`` when the caller drew them already
        (:func:`~izf_lib.step.draw_noise` draws the same numbers from the same generator).
        L_C's centres and iMMD's generated features share one reverse pass, and both of the flow's
        passes share one cast of its weights (:meth:`IZFFlow.shared_casts`).
        """
        with self.flow.shared_casts():
            return self._objective(v, y, unseen, generator, groups, noise)

    def _objective(
        self, v: Tensor, y: Tensor, unseen: Tensor, generator: torch.Generator | None,
        groups: tuple[Tensor, Tensor, Tensor] | None, noise: StepNoise | None,
    ) -> dict[str, Tensor]:
        cfg = self.config
        c, z_f, log_det = self.encode(v)
        att_y = self.att[y]
        if cfg.flow_loss == "nll":
            l_flow = losses.flow_nll(c, z_f, log_det, att_y, self.sigma)
        else:
            l_flow = losses.flow_loss_dev(c, z_f, log_det, att_y, cfg.w_c)
        out = {"l_flow": l_flow}
        total = cfg.lambda_flow * l_flow
        # The reverse passes of L_C (one centre per class of the batch) and of iMMD (B generated
        # features) run as one pass over both sets of rows: the flow acts on each row alone, so the
        # values are the same, and one pass over B + K rows is cheaper than one of K rows after one of B.
        z_rows = []
        if cfg.lambda_c:
            groups = groups if groups is not None else losses.class_groups(y)
            z_rows.append(losses.centre_latents(self.att, groups[0], self.d_v))
        n_centres = z_rows[0].shape[0] if z_rows else 0
        generates = bool(cfg.lambda_immd and unseen.numel())
        if generates:
            if noise is not None and noise.pick is not None:
                pick, z_f_gen = noise.pick, noise.z_f
            else:
                pick = torch.randint(unseen.numel(), (v.shape[0],), generator=generator, device=unseen.device)
                z_f_gen = None
            z_rows.append(self._latents(self.att[unseen[pick]], generator, z_f_gen))
        v_rev = self.flow.inverse(torch.cat(z_rows)) if z_rows else None
        if cfg.lambda_c:
            out["l_c"] = losses.centralizing_loss(self.flow, v, y, self.att, groups, centres=v_rev[:n_centres],
                                               reduction=cfg.lc_reduction)
            total = total + cfg.lambda_c * out["l_c"]
        if generates:
            v_gen = v_rev[n_centres:]
            unbiased = cfg.immd_form == "neg_mmd2_unbiased"
            bounds = None
            if cfg.immd_form in BOUNDED_FORMS:
                if self.immd_bounds is None or (cfg.immd_form == "neg_mmd2_hinge" and self.immd_margin is None):
                    raise ValueError(f"immd_form '{cfg.immd_form}' needs the kernel's bounds and margin: call "
                                     "model.fit_immd_kernel(v_seen, y_seen, n_unseen) first (train_model does)")
                bounds = self.immd_bounds
            k_ss, k_uu, k_su = losses.mmd2_terms(v, v_gen, self.kernel_scales, unbiased=unbiased, bounds=bounds)
            out["l_immd"] = losses.immd_from_terms(k_ss, k_uu, k_su, cfg.immd_form, self.immd_margin)
            # the terms, recorded per epoch (izf_lib.collapse): E k_uu -> K(0) is a collapsing generated set
            out["k_ss"], out["k_uu"], out["k_su"] = k_ss.detach(), k_uu.detach(), k_su.detach()
            total = total + cfg.lambda_immd * out["l_immd"]
        out["loss"] = total
        return out
