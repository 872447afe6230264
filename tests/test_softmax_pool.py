"""IZF-Softmax's generated unseen features: fresh every step (the default) or a pool drawn once per fit."""

from __future__ import annotations

import pytest
import torch

from izf_lib.classifiers import train_softmax
from izf_lib.config import IZFConfig
from izf_lib.data import TrainSplit
from izf_lib.model import IZF

UNSEEN = torch.tensor([3, 4])


def _model_and_split() -> tuple[IZF, TrainSplit]:
    g = torch.Generator().manual_seed(0)
    att = torch.rand(5, 3, generator=g)
    model = IZF(att, d_v=8, config=IZFConfig(hidden=16, n_blocks=3))
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    y = torch.arange(3).repeat_interleave(20)
    v = model.generate_classes(y, g)
    return model, TrainSplit(v=v, y=y, att=att, seen=torch.arange(3), unseen=UNSEEN)


def _counting(model: IZF, seen: list[torch.Tensor]) -> None:
    """Record the class ids of every reverse pass the fit asks for."""
    inner = model.generate_classes

    def generate_classes(y, generator=None, z_f=None):
        seen.append(y.clone())
        return inner(y, generator, z_f)

    model.generate_classes = generate_classes


def _fit(model: IZF, split: TrainSplit, pool: int, seed: int = 0, steps: int = 30):
    return train_softmax(model, split, steps, 1e-2, 16, torch.Generator().manual_seed(seed), pool=pool)


@pytest.mark.parametrize("pool", [0, 7])
def test_a_pool_costs_n_reverse_passes_per_unseen_class_and_fresh_costs_one_batch_per_step(pool) -> None:
    model, split = _model_and_split()
    asked: list[torch.Tensor] = []
    _counting(model, asked)
    _fit(model, split, pool, steps=30)
    rows = torch.cat(asked)
    if pool:
        assert len(asked) == 1 and rows.numel() == pool * UNSEEN.numel()
        assert torch.bincount(rows, minlength=5)[UNSEEN].tolist() == [pool, pool]  # every unseen class, N times
    else:
        assert len(asked) == 30 and rows.numel() == 30 * 16
    assert set(rows.tolist()) <= set(UNSEEN.tolist())  # only unseen classes are ever generated


def test_a_pooled_fit_is_reproducible_from_its_seed_and_learns_the_generated_classes() -> None:
    model, split = _model_and_split()
    a, b, other = (_fit(model, split, pool=50, seed=s, steps=200) for s in (0, 0, 1))
    for mode in ("czsl", "gzsl"):
        torch.testing.assert_close(a[mode].linear.weight, b[mode].linear.weight, rtol=0, atol=0)
    assert not torch.equal(a["czsl"].linear.weight, other["czsl"].linear.weight)
    y = UNSEEN.repeat_interleave(100)
    v = model.generate_classes(y, torch.Generator().manual_seed(9))  # fresh draws, not the pool's
    accuracy = (a["czsl"].predict(v) == y).float().mean().item()
    assert accuracy > 0.75, accuracy  # chance is 0.5


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_a_pool_size_must_be_a_count(bad) -> None:
    with pytest.raises(ValueError, match="softmax_pool must be an integer >= 0"):
        IZFConfig(softmax_pool=bad)
    if isinstance(bad, int) and not isinstance(bad, bool):
        model, split = _model_and_split()
        with pytest.raises(ValueError, match="pool must be >= 0"):
            _fit(model, split, pool=bad)
