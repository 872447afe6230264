"""IZF-NBC and IZF-Softmax, in CZSL (candidates Y^u) and GZSL (candidates Y^s and Y^u) modes.

Also the one linear-softmax classifier and trainer that IZF-Softmax, the Gaussian-generator
baseline and the toy experiment's seen-class classifier share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .data import TrainSplit
from .model import IZF
from .rng import cpu_generator_from, reset_linear_

__all__ = [
    "nbc_predict",
    "density_argmax_predict",
    "class_index",
    "predict_in_chunks",
    "SoftmaxClassifier",
    "SoftmaxTrainer",
    "fit_softmax",
    "train_softmax",
]

CHUNK = 4096  # rows per forward pass at test time (and per reverse pass of a softmax pool)


@torch.no_grad()
def predict_in_chunks(scores: Callable[[Tensor], Tensor], v: Tensor, classes: Tensor, device: torch.device,
                      lowest: bool = False) -> Tensor:
    """Class ids (B,) of the best column of ``scores(v_chunk)`` (chunk, K), in chunks of ``CHUNK`` rows.

    ``classes`` (K,) maps columns to class ids; ``lowest`` takes the argmin (distances) instead.
    """
    out = []
    for start in range(0, v.shape[0], CHUNK):
        s = scores(v[start:start + CHUNK].to(device))
        out.append(classes[s.argmin(1) if lowest else s.argmax(1)])
    return torch.cat(out) if out else classes.new_empty(0)


@torch.no_grad()
def nbc_predict(model: IZF, v: Tensor, classes: Tensor) -> Tensor:
    """IZF-NBC: y_hat = argmax_{y in classes} p(v|y) p(y), computed as the nearest attribute in c-space.

    Derivation (eq. 9): log p(v|y) = log N(c; a_y, sigma^2 I) + log N(z_f; 0, I) + log|det df/dv|.
    Only the first term depends on y: z_f and the log-det are functions of v alone, so they
    add the same constant to every class's score and cancel in the argmax. With a uniform
    prior p(y) and a shared sigma, log N(c; a_y, sigma^2 I) = -||c - a_y||^2 / (2 sigma^2) + const,
    so the argmax is argmin_y ||c - a_y||. Cost per image: one forward pass plus O(M d_a).
    """
    model.eval()
    att = model.att[classes]
    return predict_in_chunks(lambda x: torch.cdist(model.encode(x)[0], att), v, classes, model.att.device, lowest=True)


@torch.no_grad()
def density_argmax_predict(model: IZF, v: Tensor, classes: Tensor) -> Tensor:
    """argmax_y log p(v|y) over ``classes`` with the full density (all terms of eq. 9); equals NBC."""
    model.eval()
    return predict_in_chunks(lambda x: model.class_log_prob(x, classes), v, classes, model.att.device)


def class_index(classes: Tensor) -> Tensor:
    """A lookup table mapping each class id in ``classes`` (K,) to its output column 0..K-1 (others -1)."""
    index = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long, device=classes.device)
    index[classes] = torch.arange(classes.numel(), device=classes.device)
    return index


class SoftmaxClassifier(nn.Module):
    """A linear softmax classifier over the candidate ``classes`` (K,), mapping outputs back to class ids.

    Weights are drawn from the CPU ``generator`` (PyTorch's default scheme), never from the global state.
    """

    classes: Tensor

    def __init__(self, d_v: int, classes: Tensor, generator: torch.Generator) -> None:
        super().__init__()
        self.linear = reset_linear_(nn.Linear(d_v, classes.numel()), generator)
        self.register_buffer("classes", classes.clone())

    def forward(self, v: Tensor) -> Tensor:
        """Logits (B, K)."""
        return self.linear(v)

    @torch.no_grad()
    def predict(self, v: Tensor) -> Tensor:
        """Predicted class ids (B,)."""
        return predict_in_chunks(self, v, self.classes, self.classes.device)


class SoftmaxTrainer:
    """Adam on the cross-entropy of a :class:`SoftmaxClassifier`, one batch of (v, class ids) per step."""

    def __init__(self, clf: SoftmaxClassifier, lr: float) -> None:
        self.clf = clf
        self.index = class_index(clf.classes)
        self.opt = torch.optim.Adam(clf.parameters(), lr=lr)

    def step(self, v: Tensor, y: Tensor) -> Tensor:
        """One update on the batch v (B, d_v), y (B,) class ids; returns the loss before the update."""
        loss = nn.functional.cross_entropy(self.clf(v), self.index[y])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def fit_softmax(v: Tensor, y: Tensor, classes: Tensor, steps: int, lr: float,
                generator: torch.Generator) -> SoftmaxClassifier:
    """A softmax classifier over ``classes`` fit by ``steps`` full-batch Adam steps on (v, y).

    The initial weights come from the CPU ``generator``; the result lives on v's device.
    """
    clf = SoftmaxClassifier(v.shape[1], classes.cpu(), generator).to(v.device)
    trainer = SoftmaxTrainer(clf, lr)
    for _ in range(steps):
        trainer.step(v, y)
    return clf


def train_softmax(
    model: IZF,
    train: TrainSplit,
    steps: int,
    lr: float,
    batch: int,
    generator: torch.Generator,
    modes: tuple[str, ...] = ("czsl", "gzsl"),
    unseen_ratio: float = 1.0,
    pool: int = 0,
) -> dict[str, SoftmaxClassifier]:
    """IZF-Softmax: fit linear classifiers on real seen features plus generated unseen ones.

    With ``pool = 0`` (the development code's scheme) each step generates its unseen features afresh
    (classes uniform over Y^u) from the attributes: ``steps`` reverse passes of a batch. With ``pool = N``
    the fit first generates N features per unseen class, once, and each step draws its generated batch
    from that pool (uniform, with replacement): N |Y^u| reverse passes in all.
    ``gzsl``: candidates Y^s and Y^u, trained on ``batch`` real seen trainval pairs plus
    ``round(unseen_ratio * batch)`` generated ones (the seen/unseen balance). ``czsl``:
    candidates Y^u, ``batch`` generated features only. Both modes share each step's generated
    batch, halving the cost of the reverse passes. Only ``train`` (trainval data and
    attributes) is read. Every draw (initial weights, batches) comes from ``generator``, so the
    same generator state gives the same classifiers.
    """
    unknown = set(modes) - {"czsl", "gzsl"}
    if unknown:
        raise ValueError(f"unknown softmax modes {sorted(unknown)}")
    if not unseen_ratio > 0:
        raise ValueError(f"unseen_ratio must be positive, got {unseen_ratio}")
    device = model.att.device
    unseen = train.unseen.to(device)
    candidates = {"czsl": unseen, "gzsl": torch.cat([train.seen.to(device), unseen])}
    init = cpu_generator_from(generator)
    trainers = {m: SoftmaxTrainer(SoftmaxClassifier(train.d_v, candidates[m].cpu(), init).to(device), lr)
                for m in modes}
    v_real, y_real = train.v.to(device), train.y.to(device)
    n_gzsl = max(1, round(unseen_ratio * batch))
    n_gen = max(batch, n_gzsl) if "gzsl" in modes else batch
    if pool < 0:
        raise ValueError(f"pool must be >= 0 (0: fresh features every step), got {pool}")
    model.eval()
    with model.flow.shared_casts():  # bf16: one cast of the flow's weights for all the fit's reverse passes
        if pool:
            y_pool = unseen.repeat_interleave(pool)
            with torch.no_grad():
                v_pool = torch.cat([model.generate_classes(y, generator) for y in y_pool.split(CHUNK)])
        for _ in range(steps):
            with torch.no_grad():
                if pool:
                    take = torch.randint(y_pool.numel(), (n_gen,), generator=generator, device=device)
                    y_gen, v_gen = y_pool[take], v_pool[take]
                else:
                    y_gen = unseen[torch.randint(unseen.numel(), (n_gen,), generator=generator, device=device)]
                    v_gen = model.generate_classes(y_gen, generator)
                batches = {"czsl": (v_gen[:batch], y_gen[:batch])}
                if "gzsl" in modes:
                    pick = torch.randint(v_real.shape[0], (batch,), generator=generator, device=device)
                    batches["gzsl"] = (torch.cat([v_real[pick], v_gen[:n_gzsl]]),
                                       torch.cat([y_real[pick], y_gen[:n_gzsl]]))
            for m in modes:
                trainers[m].step(*batches[m])
    return {m: t.clf for m, t in trainers.items()}
