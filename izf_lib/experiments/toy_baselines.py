"""Generative baselines of the toy experiment: CGAN + L_iMMD (supp. eq. 15) and CVAE + L_iMMD (eq. 16).

Both reuse the library's L_iMMD with weight beta (0.1 in the supplementary, to match IZF's
lambda_3) and small MLPs suited to 2-D data. Settings the supplementary does not give
(widths, learning rates, alpha, the gradient-penalty weight, n_critic) follow f-CLSWGAN
(Xian et al., CVPR 2018) or are our choice, and are arguments here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..classifiers import fit_softmax
from ..losses import immd_loss
from ..rng import STREAM_INIT, STREAM_TRAIN, make_generator, reset_linear_

__all__ = ["CGAN", "CVAE", "gaussian_kl", "gradient_penalty", "train_cgan", "train_cvae"]


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, closed form: 0.5 * sum(mu^2 + var - 1 - log var); (B,)."""
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1)


def gradient_penalty(critic: Callable[[Tensor, Tensor], Tensor], real: Tensor, fake: Tensor, a: Tensor,
                     eps: Tensor) -> Tensor:
    """WGAN-GP's L_Lip (eq. 15): mean of (||grad_x D(x, a)||_2 - 1)^2 at x = eps * real + (1 - eps) * fake.

    ``eps`` (B, 1) holds the interpolation weights; the graph is kept so the penalty trains the critic.
    """
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(mix, a).sum(), mix, create_graph=True)[0]
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


def _mlp(d_in: int, d_out: int, hidden: int = 64, act: type[nn.Module] = nn.LeakyReLU) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, d_out))


class CGAN(nn.Module):
    """Conditional WGAN: generator G(z, a) and critic D(v, a); z ~ N(0, I) of ``d_z`` dims."""

    def __init__(self, d_v: int = 2, d_a: int = 2, d_z: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.d_z = d_z
        self.generator = _mlp(d_z + d_a, d_v, hidden)
        self.critic = _mlp(d_v + d_a, 1, hidden)

    def generate(self, att: Tensor, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """n samples per attribute row of att (K, d_a); shape (K * n, d_v)."""
        a = att.repeat_interleave(n, dim=0)
        z = torch.randn(a.shape[0], self.d_z, generator=generator, device=a.device)
        return self.generator(torch.cat([z, a], dim=1))

    def score(self, v: Tensor, a: Tensor) -> Tensor:
        return self.critic(torch.cat([v, a], dim=1)).squeeze(1)


class CVAE(nn.Module):
    """Conditional VAE: encoder q(z|a, v) = N(mu, diag(exp(logvar))), decoder p(v|a, z) = N(mean, sigma_x^2 I).

    sigma_x is learned (one scalar), so the model can explain the data noise either through z
    or through the likelihood; samples include the likelihood noise.
    """

    def __init__(self, d_v: int = 2, d_a: int = 2, d_z: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.d_z = d_z
        self.encoder = _mlp(d_v + d_a, 2 * d_z, hidden)
        self.decoder = _mlp(d_z + d_a, d_v, hidden)
        self.log_sigma_x = nn.Parameter(torch.zeros(()))

    def generate(self, att: Tensor, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Samples of p(v|a, z), z ~ N(0, I): n per attribute row; shape (K * n, d_v)."""
        a = att.repeat_interleave(n, dim=0)
        z = torch.randn(a.shape[0], self.d_z, generator=generator, device=a.device)
        mean = self.decoder(torch.cat([z, a], dim=1))
        return mean + self.log_sigma_x.exp() * torch.randn(mean.shape, generator=generator, device=a.device)

    def neg_elbo(self, v: Tensor, a: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """KL(q(z|a,v) || N(0, I)) - E_q[log p(v|a,z)], one reparameterised sample (eq. 16 without the iMMD term)."""
        mu, logvar = self.encoder(torch.cat([v, a], dim=1)).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=mu.device)
        recon = self.decoder(torch.cat([z, a], dim=1))
        nll = (0.5 * ((v - recon) ** 2).sum(1) * torch.exp(-2.0 * self.log_sigma_x)
               + v.shape[1] * (self.log_sigma_x + 0.5 * math.log(2 * math.pi)))
        return (gaussian_kl(mu, logvar) + nll).mean()


def _optimise(opt: torch.optim.Optimizer, loss: Tensor, losses: list[float]) -> bool:
    """One optimiser step on ``loss``, recorded in ``losses``; False (NaN recorded, no step) if it is not finite."""
    if not torch.isfinite(loss):
        losses.append(float("nan"))
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(float(loss.detach()))
    return True


def _seen_classifier(v: Tensor, y: Tensor, n_classes: int, generator: torch.Generator, steps: int = 300) -> nn.Module:
    """The pre-trained, frozen seen-class softmax classifier of f-CLSWGAN's L_CLS (fit on real seen data)."""
    clf = fit_softmax(v, y, torch.arange(n_classes), steps, 1e-2, generator)
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf


def train_cgan(reader, iterations: int, beta: float = 0.1, alpha: float = 0.01, gp_weight: float = 10.0,
               n_critic: int = 5, lr: float = 1e-3, seed: int = 0, d_z: int = 2,
               hidden: int = 64) -> tuple[CGAN, list[float]]:
    """CGAN + L_iMMD in the f-CLSWGAN schema (eq. 15): WGAN-GP critic, alpha * L_CLS, beta * L_iMMD.

    Per iteration: ``n_critic`` critic steps on fresh seen batches, then one generator step on
    -E[D(G(z, a_s), a_s)] + alpha * CE(classifier(G(z, a_s)), y_s) + beta * L_iMMD(real seen,
    G(z, a_u)). Returns the model and the generator loss per iteration (NaN stops training).
    The features used are the reader's first ``reader.d_out`` columns (2 for the toy, whose
    padding is dropped); ``d_z`` and ``hidden`` size the networks.
    """
    dev = reader.device
    d = getattr(reader, "d_out", 2)
    init = make_generator(seed, STREAM_INIT)
    unseen_att = torch.as_tensor(reader.unseen_emb, dtype=torch.float32, device=dev)
    model = reset_linear_(CGAN(d_v=d, d_a=unseen_att.shape[1], d_z=d_z, hidden=hidden), init).to(dev)
    gen = make_generator(seed, STREAM_TRAIN, device=dev)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(model.critic.parameters(), lr=lr, betas=(0.5, 0.9))
    pre_v, pre_y, *_ = reader.get_batch_tensor("training")
    clf = _seen_classifier(pre_v[:, :d], pre_y.long(), reader.seen_cls_num, init)
    losses: list[float] = []
    for _ in range(iterations):
        for _ in range(n_critic):
            v, _, a, *_ = reader.get_batch_tensor("training")
            v = v[:, :d]
            with torch.no_grad():
                fake = model.generator(torch.cat([torch.randn(v.shape[0], model.d_z, generator=gen, device=dev), a], 1))
            eps = torch.rand(v.shape[0], 1, generator=gen, device=dev)
            gp = gradient_penalty(model.score, v, fake, a, eps)
            d_loss = model.score(fake, a).mean() - model.score(v, a).mean() + gp_weight * gp
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        v, y, a, *_ = reader.get_batch_tensor("training")
        v = v[:, :d]
        fake = model.generator(torch.cat([torch.randn(v.shape[0], model.d_z, generator=gen, device=dev), a], 1))
        g_loss = -model.score(fake, a).mean() + alpha * nn.functional.cross_entropy(clf(fake), y.long())
        if beta:
            g_loss = g_loss + beta * immd_loss(v, model.generate(unseen_att, v.shape[0], generator=gen))
        if not _optimise(opt_g, g_loss, losses):
            break
    return model, losses


def train_cvae(reader, iterations: int, beta: float = 0.1, lr: float = 1e-3, seed: int = 0) -> tuple[CVAE, list[float]]:
    """CVAE + L_iMMD (eq. 16): negative ELBO on seen batches + beta * L_iMMD(real seen, decoded unseen)."""
    dev = reader.device
    model = reset_linear_(CVAE(), make_generator(seed, STREAM_INIT)).to(dev)
    gen = make_generator(seed, STREAM_TRAIN, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    unseen_att = torch.as_tensor(reader.unseen_emb, dtype=torch.float32, device=dev)
    losses: list[float] = []
    for _ in range(iterations):
        v, _, a, *_ = reader.get_batch_tensor("training")
        v = v[:, :2]
        loss = model.neg_elbo(v, a, gen)
        if beta:
            loss = loss + beta * immd_loss(v, model.generate(unseen_att, v.shape[0], generator=gen))
        if not _optimise(opt, loss, losses):
            break
    return model, losses
