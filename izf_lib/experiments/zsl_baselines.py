"""Simple zero-shot baselines scored beside IZF on the same splits.

* attribute ridge regression: v -> a by ridge, predict the nearest class attribute (cosine);
* ESZSL (Romera-Paredes and Torr, ICML 2015): closed-form bilinear compatibility;
* Gaussian feature generation: ridge from attributes to class means plus the pooled seen
  covariance; a softmax on real seen and generated unseen features (the simplest generative
  ZSL baseline).

Regularisation strengths are fixed (our choice), not tuned on test data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..classifiers import SoftmaxClassifier, fit_softmax
from ..data import TrainSplit
from ..rng import STREAM_BASELINE, make_generator

__all__ = ["AttributeRidge", "ESZSL", "GaussianGenerator", "BASELINES"]


def _ridge(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    """argmin_W ||x W - y||^2 + alpha ||W||^2 in float64; x (N, p), y (N, q) -> W (p, q)."""
    x64, y64 = x.double(), y.double()
    return torch.linalg.solve(x64.T @ x64 + alpha * torch.eye(x.shape[1], dtype=torch.float64), x64.T @ y64)


class AttributeRidge:
    """Regress attributes from features, then predict the class whose attribute is most cosine-similar."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, train: TrainSplit) -> AttributeRidge:
        self.att = train.att.double()
        self.mean = train.v.double().mean(0)
        self.w = _ridge(train.v.double() - self.mean, self.att[train.y], self.alpha)
        return self

    def predict(self, v: Tensor, classes: Tensor) -> Tensor:
        a_hat = nn.functional.normalize((v.double() - self.mean) @ self.w, dim=1)
        return classes[(a_hat @ nn.functional.normalize(self.att[classes], dim=1).T).argmax(1)]


class ESZSL:
    """V = (X X^T + gamma I)^-1 X Y S^T (S S^T + lam I)^-1; score(v, y) = v^T V a_y."""

    def __init__(self, gamma: float = 1.0, lam: float = 1.0) -> None:
        self.gamma, self.lam = gamma, lam

    def fit(self, train: TrainSplit) -> ESZSL:
        x = train.v.double().T                                    # (d_v, N)
        seen = train.seen
        index = {int(k): i for i, k in enumerate(seen.tolist())}
        y = -torch.ones(x.shape[1], len(seen), dtype=torch.float64)
        y[torch.arange(x.shape[1]), torch.tensor([index[int(k)] for k in train.y.tolist()])] = 1.0
        s = train.att[seen].double().T                            # (d_a, M_s)
        left = torch.linalg.solve(x @ x.T + self.gamma * torch.eye(x.shape[0], dtype=torch.float64), x @ y @ s.T)
        self.v_mat = torch.linalg.solve(s @ s.T + self.lam * torch.eye(s.shape[0], dtype=torch.float64), left.T).T
        self.att = train.att.double()
        return self

    def predict(self, v: Tensor, classes: Tensor) -> Tensor:
        return classes[(v.double() @ self.v_mat @ self.att[classes].T).argmax(1)]


class GaussianGenerator:
    """Generate unseen features from N(ridge(a_y), pooled seen covariance); softmax on real seen + generated.

    The softmax candidates are fixed at fit time per mode: ``predict`` with the unseen classes
    uses the CZSL classifier (generated unseen only), any other candidate set the GZSL one.
    """

    def __init__(self, alpha: float = 1.0, n_per_class: int = 200, steps: int = 500, lr: float = 1e-2,
                 shrink: float = 1e-3, seed: int = 0) -> None:
        self.alpha, self.n, self.steps, self.lr, self.shrink, self.seed = alpha, n_per_class, steps, lr, shrink, seed

    def fit(self, train: TrainSplit) -> GaussianGenerator:
        gen = make_generator(self.seed, STREAM_BASELINE)
        v, y, att = train.v.double(), train.y, train.att.double()
        seen, unseen = train.seen, train.unseen
        means = torch.stack([v[y == k].mean(0) for k in seen.tolist()])
        a_mean, m_mean = att[seen].mean(0), means.mean(0)
        w = _ridge(att[seen] - a_mean, means - m_mean, self.alpha)
        resid = v - means[torch.searchsorted(seen, y)]
        cov = (resid.T @ resid / max(1, v.shape[0] - len(seen))
               + self.shrink * torch.eye(v.shape[1], dtype=torch.float64))
        chol = torch.linalg.cholesky(cov)
        self._ridge_map = (a_mean, w, m_mean)
        mu_u = (att[unseen] - a_mean) @ w + m_mean
        y_gen = unseen.repeat_interleave(self.n)
        eps = torch.randn(len(y_gen), v.shape[1], generator=gen, dtype=torch.float64)
        v_gen = mu_u.repeat_interleave(self.n, 0) + eps @ chol.T
        self.unseen = unseen
        self.czsl = self._softmax(v_gen.float(), y_gen, unseen, gen)
        self.gzsl = self._softmax(torch.cat([train.v, v_gen.float()]), torch.cat([y, y_gen]),
                                  torch.cat([seen, unseen]), gen)
        return self

    def class_means(self, att: Tensor) -> Tensor:
        """The generator's class means for attribute rows ``att`` (K, d_a): the fitted ridge map, (K, d_v) float64."""
        a_mean, w, m_mean = self._ridge_map
        return (att.double() - a_mean) @ w + m_mean

    def _softmax(self, v: Tensor, y: Tensor, classes: Tensor, gen: torch.Generator) -> SoftmaxClassifier:
        return fit_softmax(v, y, classes, self.steps, self.lr, gen)

    @torch.no_grad()
    def predict(self, v: Tensor, classes: Tensor) -> Tensor:
        clf = self.czsl if torch.equal(torch.sort(classes).values, torch.sort(self.unseen).values) else self.gzsl
        return clf.predict(v.float())


BASELINES = {
    "ridge + nearest attribute": AttributeRidge,
    "ESZSL": ESZSL,
    "Gaussian generator + softmax": GaussianGenerator,
}
