"""The toy experiment: Listing 1.1 reproduced, baselines trainable, measurements on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from izf_lib.experiments.toy import (
    NEAR_SHARE_TRUE,
    TOY_SIGMA,
    ToyReader,
    read_toy_grid,
    run_status,
    run_toy,
    run_toy_grid,
    toy_metrics,
)
from izf_lib.experiments.toy_baselines import CGAN, CVAE, train_cgan, train_cvae


def test_reader_reproduces_listing_fields_and_batches() -> None:
    reader = ToyReader(batch_size=24, padding=True, seed=0)
    feat, label, label_emb, s_cls, u_cls, cls_emb, s_cls_emb, u_cls_emb = reader.get_batch_tensor("training")
    assert feat.shape == (24, 4) and feat.dtype == torch.float32
    assert label.tolist() == [0.0] * 8 + [1.0] * 8 + [2.0] * 8
    assert torch.equal(label_emb[:8], torch.tensor([[0.0, 1.0]] * 8))
    assert s_cls.tolist() == [0, 1, 2] and u_cls.tolist() == [3]
    assert cls_emb.tolist() == [[0, 1], [0, 0], [1, 0], [1, 1]]
    assert s_cls_emb.shape == (3, 2) and u_cls_emb.tolist() == [[1, 1]]
    assert (feat[:, 2:] == 0).all()
    # samples are 2a - 1 + N(0, 1/9): class means near the centres
    big = ToyReader(batch_size=3000, padding=False, seed=1)
    f, y, *_ = big.get_batch_tensor("seen")
    for k, centre in enumerate([(-1, 1), (-1, -1), (1, -1)]):
        assert torch.allclose(f[y == k].mean(0), torch.tensor(centre, dtype=torch.float32), atol=0.03)
        assert abs(f[y == k].std(0).mean().item() - 1 / 3) < 0.02
    u, uy, *_ = big.get_batch_tensor("unseen")
    assert torch.allclose(u.mean(0), torch.tensor([1.0, 1.0]), atol=0.03) and (uy == 3).all()


def test_reader_fixes_the_listing_bugs() -> None:
    with pytest.raises(ValueError, match="multiple of 12"):
        ToyReader(batch_size=10)
    a = ToyReader(batch_size=12, seed=3).get_batch_tensor()[0]
    b = ToyReader(batch_size=12, seed=3).get_batch_tensor()[0]
    assert torch.equal(a, b)  # seeded, not NumPy's global state
    with pytest.raises(ValueError, match="part must be"):
        ToyReader().get_batch_tensor("test")


def test_toy_metrics_on_known_samples() -> None:
    gen = torch.Generator().manual_seed(0)
    unseen = torch.tensor([[1.0, 1.0]]) + TOY_SIGMA * torch.randn(300, 2, generator=gen)  # the MMD reference
    many = torch.tensor([[1.0, 1.0]]) + TOY_SIGMA * torch.randn(4000, 2, generator=gen)  # enough for a share
    perfect = torch.tensor([[1.0, 1.0]]).repeat(20, 1) + torch.tensor([[0.1, 0.0], [-0.1, 0.0]]).repeat(10, 1)
    m = toy_metrics(perfect, unseen)
    assert m["centre_error"] == pytest.approx(0.0, abs=1e-6) and m["near_share"] == 1.0
    wrong = torch.tensor([[-1.0, 1.0]]).repeat(20, 1)
    m2 = toy_metrics(wrong, unseen)
    assert m2["centre_error"] == pytest.approx(2.0) and m2["near_share"] == 0.0 and m2["mmd"] > m["mmd"]
    # true samples score the Gaussian value 1 - exp(-k^2 / 2), and a far-away (diverged) generator scores 0
    assert toy_metrics(many, unseen)["near_share"] == pytest.approx(NEAR_SHARE_TRUE, abs=0.02)
    assert toy_metrics(many + 7.0, unseen)["near_share"] == 0.0
    assert run_status(False, m2) == "collapsed"  # zero spread
    assert run_status(True, m) == "diverged"
    assert run_status(False, {**m, "spread": 0.3}) == "ok"
    assert toy_metrics(torch.full((5, 2), math.nan), unseen)["centre_error"] == math.inf


def test_toy_grid_is_resumable_and_independent_of_workers(tmp_path) -> None:
    one = read_toy_grid(run_toy_grid(tmp_path / "a", [0, 1], 3, models=("IZF", "CVAE"), jobs=1,
                                     picture_seed=0, progress=False).parent)
    two = read_toy_grid(run_toy_grid(tmp_path / "b", [0, 1], 3, models=("IZF", "CVAE"), jobs=2,
                                     picture_seed=0, progress=False).parent)
    assert one[0].equals(two[0]) and len(one[0]) == 8 and set(one[1]) == set(two[1])
    (tmp_path / "a" / "IZF_beta0.1_seed1.json").unlink()
    again = read_toy_grid(run_toy_grid(tmp_path / "a", [0, 1], 3, models=("IZF", "CVAE"), progress=False).parent)
    assert again[0].equals(one[0])  # the missing run is redone with the same numbers, the others are kept


@pytest.mark.parametrize("trainer", [train_cgan, train_cvae])
def test_baselines_train_and_generate_finite_samples(trainer) -> None:
    reader = ToyReader(batch_size=24, padding=False, seed=0)
    model, losses = trainer(reader, iterations=5, beta=0.1, seed=0)
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert isinstance(model, (CGAN, CVAE))
    out = model.generate(torch.tensor([[1.0, 1.0]]), 7)
    assert out.shape == (7, 2) and torch.isfinite(out).all()


def test_run_toy_is_deterministic_and_reports_status() -> None:
    a = run_toy("IZF", 0, iterations=3, beta=0.1, n_eval=24)
    b = run_toy("IZF", 0, iterations=3, beta=0.1, n_eval=24)
    assert a["losses"] == b["losses"] and torch.equal(a["generated"], b["generated"])
    assert a["status"] in {"ok", "diverged", "collapsed"} and a["generated"].shape == (24, 2)
    with pytest.raises(ValueError, match="IZF, CGAN or CVAE"):
        run_toy("GAN", 0, 1)


def test_toy_command_rejects_bad_betas(tmp_path, capsys) -> None:
    from izf_lib.__main__ import main

    assert main(["toy", "--out", str(tmp_path), "--betas", "0.1,x", "--quiet"]) == 2
    assert "--betas must be comma-separated numbers" in capsys.readouterr().err
    assert main(["toy", "--out", str(tmp_path), "--betas", ",", "--quiet"]) == 2
    assert "--betas is empty" in capsys.readouterr().err
