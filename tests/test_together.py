"""Several runs trained together (izf_lib.train.train_models): each gives the numbers it gives alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from izf_lib.__main__ import main
from izf_lib.config import IZFConfig
from izf_lib.data import load_xlsa17, validation_split
from izf_lib.experiment import fit, fit_together
from izf_lib.train import TrainJob, train_model, train_models

from helpers import TIMING_KEYS, without_keys

CPU = torch.device("cpu")
SMALL = IZFConfig(hidden=32, epochs=2, batch_size=64, eval_every=1, softmax_steps=20, lr=1e-3, precision="fp32",
                  seed=0)
CLOCKS = TIMING_KEYS | {"runs_together"}  # what differs between a run alone and in a group


def _no_clocks(obj):
    return without_keys(obj, CLOCKS)


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_runs_trained_together_match_runs_trained_alone(synthetic_dir: Path, tmp_path: Path) -> None:
    """Seeds, epoch counts and splits of different sizes: bit for bit on a CPU, evaluations included."""
    data = load_xlsa17("SYN", synthetic_dir)
    split = data.train_split()
    val_split, _ = validation_split(data, 1, seed=0)  # fewer classes and images: another number of steps

    @torch.no_grad()
    def evaluate(model, epoch: int) -> dict:
        v = model.generate(split.att[:2], 3, torch.Generator().manual_seed(0))
        return {"epoch": epoch, "v_sum": float(v.double().sum())}

    jobs = [TrainJob(split, SMALL, tmp_path / "a.pt", evaluate),
            TrainJob(split, replace(SMALL, seed=1, epochs=3), tmp_path / "b.pt", evaluate),
            TrainJob(val_split, replace(SMALL, seed=2), tmp_path / "c.pt", evaluate)]
    together = train_models(jobs, CPU, progress=False)
    for job, (model, history) in zip(jobs, together, strict=True):
        alone, alone_history = train_model(job.train, job.config, CPU, eval_fn=evaluate, progress=False)
        assert _same_model(model, alone)
        assert _no_clocks(history) == _no_clocks(alone_history)
        assert len(history) == job.config.epochs and all(r["eval"] for r in history)
        saved = torch.load(job.checkpoint, weights_only=True)
        assert saved["epoch"] == job.config.epochs and all(
            torch.equal(x, y) for x, y in zip(saved["model"].values(), model.state_dict().values(), strict=True))
    assert not _same_model(together[0][0], together[1][0])  # the seeds differ: each run has its own draws


def test_a_resumed_run_trained_beside_a_fresh_one_continues_as_alone(synthetic_dir: Path, tmp_path: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    cfg = replace(SMALL, epochs=3, eval_every=0)
    full, _ = train_model(split, cfg, CPU, progress=False)
    train_model(split, replace(cfg, epochs=1), CPU, checkpoint=tmp_path / "a.pt", progress=False)
    jobs = [TrainJob(split, cfg, tmp_path / "a.pt"), TrainJob(split, replace(cfg, seed=1), tmp_path / "b.pt")]
    (resumed, history), (fresh, _) = train_models(jobs, CPU, resume=True, progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert _same_model(resumed, full)
    assert _same_model(fresh, train_model(split, replace(cfg, seed=1), CPU, progress=False)[0])


def test_runs_trained_together_are_checked(synthetic_dir: Path, tmp_path: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    with pytest.raises(ValueError, match="share a precision"):
        train_models([TrainJob(split, SMALL), TrainJob(split, replace(SMALL, precision="bf16"))], CPU, progress=False)
    with pytest.raises(ValueError, match="distinct checkpoint"):
        train_models([TrainJob(split, SMALL, tmp_path / "x.pt"), TrainJob(split, SMALL, tmp_path / "x.pt")], CPU,
                     progress=False)
    with pytest.raises(ValueError, match="at least one"):
        train_models([], CPU, progress=False)
    data = load_xlsa17("SYN", synthetic_dir)
    with pytest.raises(ValueError, match="distinct out_dirs"):
        fit_together(data, [SMALL, SMALL], [tmp_path / "o", tmp_path / "o"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="one out_dir per config"):
        fit_together(data, [SMALL, SMALL], [tmp_path / "o"], device="cpu", progress=False)


def test_fit_together_writes_what_fit_writes_alone(synthetic_dir: Path, tmp_path: Path) -> None:
    """Including the validation rule's second training run, also trained together."""
    data = load_xlsa17("SYN", synthetic_dir)
    configs = [SMALL, replace(SMALL, seed=1, selection="val", val_fold=1)]
    results = fit_together(data, configs, [tmp_path / "t0", tmp_path / "t1"], device="cpu", progress=False)
    for i, (config, res) in enumerate(zip(configs, results, strict=True)):
        alone = fit(data, config, tmp_path / f"a{i}", device="cpu", progress=False)
        written = json.loads((tmp_path / f"t{i}" / "results.json").read_text())
        assert written["environment"]["runs_together"] == 2 and "runs_together" not in alone.environment
        assert _no_clocks(written) == _no_clocks(alone.to_dict()) == _no_clocks(res.to_dict())
    assert results[1].val_history is not None


def test_command_line_trains_seeds_together(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "runs"
    assert main(["prepare", "digits", "--out", str(data_dir)]) == 0
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"hidden": 32, "softmax_steps": 20, "eval_every": 0}))
    common = ["train", "--dataset", "DIGITS", "--data-dir", str(data_dir), "--epochs", "1", "--config", str(cfg),
              "--quiet", "--device", "cpu"]
    assert main([*common, "--out", str(out), "--seeds", "3", "4"]) == 0
    assert main([*common, "--out", str(tmp_path / "alone"), "--seed", "4"]) == 0
    together = json.loads((out / "seed_4" / "results.json").read_text())
    alone = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert together["seed"] == 4 and _no_clocks(together) == _no_clocks(alone)
    assert json.loads((out / "seed_3" / "results.json").read_text())["seed"] == 3
    assert main([*common, "--out", str(out), "--seeds", "3", "3"]) == 2
    assert "repeats a seed" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_runs_on_their_own_streams_train_as_alone(synthetic_dir: Path) -> None:
    gpu = torch.device("cuda")
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    cfg = replace(SMALL, eval_every=0)
    jobs = [TrainJob(split, replace(cfg, seed=s)) for s in range(3)]
    together = train_models(jobs, gpu, progress=False)
    for job, (_, history) in zip(jobs, together, strict=True):
        _, alone = train_model(split, job.config, gpu, progress=False)
        for rt, ra in zip(history, alone, strict=True):
            assert rt["loss"] == pytest.approx(ra["loss"], rel=1e-3)  # as the CUDA graph's own test
