"""The benchmark scripts run end to end at tiny sizes and write the JSON the book reads (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_runs_tiny_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("FrEIA")
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    step = json.loads((tmp_path / "train_step.json").read_text())
    names = {r["name"] for r in step["runs"]}
    assert names == {"izf_full", "izf_nll", "freia_nll"}  # no *_graph rows without a GPU
    assert {r["precision"] for r in step["runs"]} == {"fp32", "tf32", "bf16"}
    assert set(step["matmul_limits_gflops"]) == {"fp32", "tf32", "bf16"}
    nll = next(r for r in step["runs"] if r["name"] == "izf_nll" and r["precision"] == "fp32")
    assert nll["speedup_vs_freia"] > 0 and nll["fraction_of_matmul_limit"] > 0
    assert step["matmul_limit_gflops"] > 0 and nll["projected_100_epochs_seconds"] > 0
    bf16 = next(r for r in step["runs"] if r["name"] == "izf_full" and r["precision"] == "bf16")
    assert bf16["speedup_vs_fp32"] > 0
    scaling = json.loads((tmp_path / "scaling.json").read_text())
    assert len(scaling["epoch"]["rows"]) == 2 and "loglog_slope" in scaling["epoch"]["fit"]
    assert {"nbc_fit", "softmax_fit"} <= set(scaling["test"]["vs_classes"])
    for precision in ("fp32", "tf32", "bf16"):
        results = json.loads((tmp_path / f"awa1_{precision}" / "results.json").read_text())
        assert {"nbc", "softmax"} == set(results["gzsl"]) and results["config"]["precision"] == precision
        assert results["data"]["d_a"] == 85 and results["data"]["d_v"] == 128
    for name, compared in (("graph_parity", ["off", "auto"]), ("eager_parity", ["off (1)", "off (2)"])):
        parity = json.loads((tmp_path / f"{name}.json").read_text())
        assert parity["compared"] == compared and set(parity["runs"]) == set(compared)
        assert parity["max_relative_loss_difference"] == 0.0  # on a CPU, auto is the eager step: identical
    together = json.loads((tmp_path / "together.json").read_text())
    assert together["seeds"] == 3 and len(together["final_losses"]) == 3 and together["together_seconds"] > 0
    assert together["seed0_max_relative_loss_difference"] == 0.0  # on a CPU, together is alone, bit for bit
    assert not (tmp_path / "data").exists()  # the surrogate is removed at the end


def test_gpu_script_rejects_an_unknown_part(tmp_path: Path) -> None:
    env = {**os.environ, "PARTS": "step trian", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown part 'trian'" in proc.stderr
    assert not (tmp_path / "out").exists()  # rejected before anything runs


def test_train_step_times_the_fixed_shape_step_on_request(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_step import main as train_step_main

    out = tmp_path / "step.json"
    train_step_main(["--dim", "32", "--d-a", "4", "--hidden", "16", "--batch", "16", "--blocks", "2", "--steps", "1",
                     "--warmup", "1", "--precisions", "fp32", "--no-freia", "--cuda-graphs", "on", "--profile",
                     "--out", str(out)])
    step = json.loads(out.read_text())
    runs = {r["name"]: r for r in step["runs"]}
    assert set(runs) == {"izf_full", "izf_nll", "izf_full_graph", "izf_nll_graph"}
    for precision, (before, after) in step["matmul_limits_measured_gflops"].items():  # the higher bound is used
        limit = step["matmul_limits_gflops"][precision]
        assert limit == max(before, after)
        for r in (r for r in step["runs"] if r["precision"] == precision):
            assert r["fraction_of_matmul_limit"] == pytest.approx(r["achieved_gflops"] / limit)
    parts = runs["izf_full"]["profile_ms_per_step"]  # where the eager step's time goes
    assert set(parts) == {"matmul", "casts", "optimizer", "other"} and parts["matmul"] > 0 and parts["optimizer"] > 0
    assert "profile_ms_per_step" not in runs["izf_full_graph"]
    env = step["environment"]  # the machine is named with its speed flags and what auto would pick on it
    from izf_lib.precision import choose_precision, cpu_flags
    assert env["precision_auto"] == choose_precision("auto", "cpu").to_dict()
    if cpu_flags() is not None:
        assert set(env["cpu_flags"]) <= cpu_flags() and ("avx2" in env["cpu_flags"]) == ("avx2" in cpu_flags())
    assert runs["izf_full_graph"]["speedup_vs_eager"] > 0 and runs["izf_full_graph"]["captured"] is False  # CPU
    if (ROOT / ".git").exists():  # the code measured is named by its commit
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        assert env["code"].removesuffix("+changes") == head.stdout.strip()


def test_train_step_pairs_the_precisions_step_by_step(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_step import main as train_step_main

    out = tmp_path / "step.json"
    train_step_main(["--dim", "32", "--d-a", "4", "--hidden", "16", "--batch", "16", "--blocks", "1", "--steps", "1",
                     "--warmup", "1", "--precisions", "fp32", "tf32", "--no-freia", "--cuda-graphs", "off",
                     "--paired-rounds", "3", "--out", str(out)])
    (paired,) = json.loads(out.read_text())["paired"]
    key = (paired["name"], paired["blocks"], paired["baseline"], paired["precision"])
    assert key == ("izf_full", 1, "fp32", "tf32")
    fp32, tf32 = paired["seconds"]["fp32"], paired["seconds"]["tf32"]
    assert paired["rounds"] == len(fp32) == len(tf32) == 3
    assert paired["ratio_per_round"] == pytest.approx([a / b for a, b in zip(fp32, tf32, strict=True)])
    assert paired["speedup_median"] == pytest.approx(sorted(paired["ratio_per_round"])[1])
    with pytest.raises(SystemExit):  # argparse's error
        train_step_main(["--paired-rounds", "-1", "--out", str(tmp_path / "no.json")])
    assert not (tmp_path / "no.json").exists()


def test_train_step_compiles_the_objective_on_request(tmp_path: Path) -> None:
    """--compile adds a torch.compile (inductor) row per precision and its own paired timing, with the
    compiled step compared against the eager one; the eager rows and pairs stay as they are."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_step import main as train_step_main

    out = tmp_path / "step.json"
    train_step_main(["--dim", "32", "--d-a", "4", "--hidden", "16", "--batch", "16", "--blocks", "1", "--steps", "1",
                     "--warmup", "1", "--precisions", "fp32", "bf16", "--no-freia", "--cuda-graphs", "off",
                     "--paired-rounds", "2", "--compile", "--out", str(out)])
    step = json.loads(out.read_text())
    runs = {(r["name"], r["precision"]): r for r in step["runs"]}
    assert set(runs) == {(n, p) for n in ("izf_full", "izf_nll", "izf_full_compiled") for p in ("fp32", "bf16")}
    for precision in ("fp32", "bf16"):
        compiled, eager = runs[("izf_full_compiled", precision)], runs[("izf_full", precision)]
        assert compiled["matmul_gflop_per_step"] == eager["matmul_gflop_per_step"]  # the same work
        assert compiled["speedup_vs_eager"] == pytest.approx(eager["seconds_per_step"] / compiled["seconds_per_step"])
        assert compiled["first_step_seconds"] > compiled["seconds_per_step"]  # the first call compiles
    assert [(p["name"], p["precision"], p["rounds"]) for p in step["paired"]] == [
        ("izf_full", "bf16", 2), ("izf_full_compiled", "bf16", 2)]


def test_paired_steps_alternate_the_order_and_pair_the_rounds() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from train_step import paired_speedup, paired_steps

    calls: list[str] = []
    seconds = paired_steps({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                           rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds in order, reversed, in order
    assert [len(t) for t in seconds.values()] == [3, 3]
    rec = paired_speedup({"fp32": [3.0, 6.0, 2.0], "bf16": [1.0, 3.0, 2.0]}, "fp32", "bf16")
    assert rec["ratio_per_round"] == [3.0, 2.0, 1.0] and rec["speedup_median"] == 2.0
    assert rec["median_seconds"] == {"fp32": 3.0, "bf16": 2.0} and rec["rounds"] == 3


def test_step_flops_counts_the_gemms() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_step import gemm_shapes, step_flops

    # one block: forward 6 B h d, backward twice that
    assert step_flops(batch=2, dim=4, hidden=3, blocks=1) == 3 * 6 * 2 * 3 * 4
    assert sum(2 * m * k * n for m, k, n in gemm_shapes(2, 4, 3)) == step_flops(2, 4, 3, 1)


def test_evaluation_cost_times_each_pool_setting_on_the_same_training(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from evaluation_cost import main as evaluation_cost_main

    out = tmp_path / "cost.json"
    evaluation_cost_main(["--scale", "0.02", "--dim", "128", "--epochs", "4", "--eval-every", "2", "--pools", "0", "5",
                          "--hidden", "16", "--softmax-steps", "20", "--quiet", "--out", str(out)])
    cost = json.loads(out.read_text())
    runs = {r["softmax_pool"]: r for r in cost["runs"]}
    assert set(runs) == {0, 5} and all(r["evaluations"] == 2 for r in runs.values())
    assert all(r["train_seconds"] > 0 and r["eval_seconds"] > 0 for r in runs.values())
    assert runs[0]["nbc"] == runs[5]["nbc"]  # same seed, same training: the pool changes only IZF-Softmax's fit
    from izf_lib.precision import cpu_flags
    assert cost["d_v"] == 128 and cost["unseen_classes"] == 10
    assert ("cpu_flags" in cost["environment"]) == (cpu_flags() is not None)  # the machine is named
