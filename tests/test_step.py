"""The training step: pre-drawn noise, fixed-shape class groups, the CUDA-graph path, checkpoint spacing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from izf_lib.config import IZFConfig
from izf_lib.data import load_xlsa17
from izf_lib.flows import IZFFlow
from izf_lib.losses import centralizing_loss, class_groups, fixed_class_groups
from izf_lib.model import IZF
from izf_lib.rng import make_generator
from izf_lib.step import draw_noise
from izf_lib.train import load_checkpoint, train_model

CPU = torch.device("cpu")
SMALL = IZFConfig(hidden=32, epochs=2, batch_size=64, lr=1e-3, seed=0)


def _rand_flow(dim: int) -> IZFFlow:
    flow = IZFFlow(dim, n_blocks=2, hidden=16, seed=3)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return flow


def test_fixed_class_groups_give_the_same_centralizing_loss_and_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    dim, n_cls = 12, 7
    att = torch.randn(n_cls, 3, generator=gen)
    v = torch.randn(20, dim, generator=gen)
    y = torch.tensor([0, 2, 2, 5, 6] * 4)  # classes 1, 3 and 4 are absent from the batch
    seen = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    flow = _rand_flow(dim)
    fixed = fixed_class_groups(y, seen)
    assert fixed[2].tolist() == [4, 0, 8, 0, 0, 4, 4]
    dynamic = centralizing_loss(flow, v, y, att, class_groups(y))
    grads_d = torch.autograd.grad(dynamic, list(flow.parameters()))
    static = centralizing_loss(flow, v, y, att, fixed)
    grads_s = torch.autograd.grad(static, list(flow.parameters()))
    assert abs(float(static.detach()) - float(dynamic.detach())) < 1e-5 * abs(float(dynamic.detach()))
    assert max(float((a - b).abs().max()) for a, b in zip(grads_d, grads_s, strict=True)) < 1e-5
    assert float(dynamic.detach()) > 0  # the absent classes were left out, not the present ones
    # averaged: over the 4 classes present (0, 2, 5, 6), not the 7 of the fixed list
    static_mean = centralizing_loss(flow, v, y, att, fixed, reduction="mean")
    assert abs(float(static_mean.detach()) - float(dynamic.detach()) / 4) < 1e-5 * abs(float(dynamic.detach()))


def test_pre_drawn_noise_gives_the_objective_the_same_numbers_as_its_generator() -> None:
    att = torch.rand(6, 3)
    model = IZF(att, 10, replace(SMALL, hidden=16))
    v, y, unseen = torch.rand(8, 10), torch.tensor([0, 1, 2, 3] * 2), torch.tensor([4, 5])
    model.fit_immd_kernel(v, y, unseen.numel())
    eager = model.objective(v, y, unseen, make_generator(0, 2))
    gen = make_generator(0, 2)
    _ = torch.rand((8, 10), generator=gen)  # the eager loop draws the dequantisation noise first
    noise = draw_noise(model.config, 8, 10, 3, 2, make_generator(0, 2), CPU)
    assert noise.dequant is not None and torch.equal(noise.dequant, torch.rand((8, 10), generator=make_generator(0, 2)))
    shifted = model.objective(v, y, unseen, gen)
    pre = model.objective(v, y, unseen, noise=noise)
    assert torch.equal(pre["loss"], shifted["loss"])
    assert not torch.equal(eager["loss"], shifted["loss"])  # the draws matter, so the test can fail
    into = draw_noise(model.config, 8, 10, 3, 2, make_generator(5, 2), CPU)
    again = draw_noise(model.config, 8, 10, 3, 2, make_generator(0, 2), CPU, out=into)
    assert again.z_f is into.z_f and torch.equal(again.z_f, noise.z_f)


def test_no_noise_is_drawn_for_terms_that_are_switched_off() -> None:
    cfg = replace(SMALL, dequant=0.0, lambda_immd=0.0)
    noise = draw_noise(cfg, 4, 10, 3, 2, make_generator(0, 2), CPU)
    assert noise.dequant is None and noise.pick is None and noise.z_f is None


def test_the_fixed_shape_step_trains_like_the_eager_step(synthetic_dir: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    eager, hist_e = train_model(split, SMALL, CPU, progress=False, cuda_graphs="off")
    fixed, hist_f = train_model(split, SMALL, CPU, progress=False, cuda_graphs="on")
    auto, hist_a = train_model(split, SMALL, CPU, progress=False)  # auto on a CPU is the eager step
    assert [r["loss"] for r in hist_a] == [r["loss"] for r in hist_e]
    for re, rf in zip(hist_e, hist_f, strict=True):
        for k in ("l_flow", "l_c", "l_immd", "loss"):
            assert rf[k] == pytest.approx(re[k], rel=1e-4), k
    diff = max(float((a.detach() - b.detach()).abs().max())
               for a, b in zip(eager.parameters(), fixed.parameters(), strict=True))
    assert diff < 1e-3


def test_training_options_are_checked(synthetic_dir: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    with pytest.raises(ValueError, match="cuda_graphs must be one of"):
        train_model(split, SMALL, CPU, progress=False, cuda_graphs="yes")
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        train_model(split, SMALL, CPU, progress=False, checkpoint_every=0)


def test_checkpoint_every_n_epochs_and_after_the_last(synthetic_dir: Path, tmp_path: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    cfg = replace(SMALL, epochs=3)
    saved: list[int] = []

    def eval_fn(model: IZF, epoch: int) -> dict:  # runs before the epoch's checkpoint is written
        if (tmp_path / "c.pt").is_file():
            saved.append(load_checkpoint(tmp_path / "c.pt")[2]["epoch"])
        return {}

    train_model(split, replace(cfg, eval_every=1), CPU, checkpoint=tmp_path / "c.pt", progress=False,
                checkpoint_every=2, eval_fn=eval_fn)
    assert saved == [2]  # nothing after epoch 1, epoch 2's file seen at epoch 3
    assert load_checkpoint(tmp_path / "c.pt")[2]["epoch"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_graph_replays_the_fixed_shape_step(synthetic_dir: Path) -> None:
    from izf_lib.step import TrainStep

    gpu = torch.device("cuda")
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    eager, hist_e = train_model(split, SMALL, gpu, progress=False, cuda_graphs="off")
    graphed, hist_g = train_model(split, SMALL, gpu, progress=False, cuda_graphs="auto")
    for re, rg in zip(hist_e, hist_g, strict=True):
        assert rg["loss"] == pytest.approx(re["loss"], rel=1e-3)
    model = IZF(split.att, split.d_v, SMALL).to(gpu)
    model.fit_immd_kernel(split.v, split.y, split.unseen.numel())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    step = TrainStep(model, opt, split.v.to(gpu), split.y.to(gpu), split.y, split.unseen.to(gpu), SMALL,
                     fixed_shapes=True)
    step(torch.arange(SMALL.batch_size), make_generator(0, 2, 1, gpu))
    assert step.captured
