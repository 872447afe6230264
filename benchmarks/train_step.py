#!/usr/bin/env python
"""Training-step throughput of IZF at AWA1 shapes, against a FrEIA-built reference and the matmul limits.

Measures, in one run on one device: the full IZF objective (flow NLL, centralizing loss,
reverse-pass generation and iMMD) and the NLL-only step of izf_lib for K blocks, under each
precision policy asked for (izf_lib.precision: fp32, bf16, tf32); the same NLL-only network
built from FrEIA (PermuteRandom + GLOWCouplingBlock, same widths and clamp) in fp32; and
torch.mm throughput on the step's own GEMM shapes in each precision. With ``--profile``, each
eager IZF row also records where its step's time goes (torch.profiler self time per step:
matrix products, dtype casts, the optimiser, everything else). Each precision's row is timed on its
own, one after another; a virtual machine's speed can drift by several percent within minutes, which
moves the ratio of two rows. So the full objective's steps are also timed *paired*: one step of each
precision in turn, round after round (the order reversed every other round), and the speed-up over
fp32 is the median of the rounds' ratios (``paired`` in the JSON). With ``--compile``, the full
objective is also compiled with torch.compile (inductor, forward and backward) and timed per precision
(rows ``izf_full_compiled``, and paired), which says what a graph compiler adds to the eager step.
Writes JSON.

    python benchmarks/train_step.py --out benchmarks/results/train_step_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import statistics  # noqa: E402
import time  # noqa: E402

from common import environment, matmul_gflops, peak_memory_mb, reset_peak, sync, time_fn, write_json  # noqa: E402

from izf_lib.config import IZFConfig  # noqa: E402
from izf_lib.model import IZF  # noqa: E402
from izf_lib.precision import PRECISIONS, matmul_precision  # noqa: E402
from izf_lib.step import TrainStep  # noqa: E402
from izf_lib.train import make_adam, resolve_device  # noqa: E402

AWA1_TRAINVAL = 19832


def step_flops(batch: int, dim: int, hidden: int, blocks: int) -> float:
    """Matmul FLOPs of one NLL training step: forward 6 B h d per coupling, backward twice that."""
    return 3.0 * blocks * 6.0 * batch * hidden * dim


def gemm_shapes(batch: int, dim: int, hidden: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) GEMMs of one coupling's forward and backward passes (both halves)."""
    l1, l2 = dim // 2, dim - dim // 2
    shapes = []
    for d_in, d_out in ((l2, 2 * l1), (l1, 2 * l2)):
        for k_in, n_out in ((d_in, hidden), (hidden, d_out)):
            shapes += [(batch, k_in, n_out), (batch, n_out, k_in), (k_in, batch, n_out)]  # fwd, grad-in, grad-W
    return shapes


# torch.profiler op names of each part of a step (self time; everything else is "other")
PROFILE_PARTS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"), "casts": ("aten::copy_",),
                 "optimizer": ("aten::_fused_adam_", "aten::_fused_adamw_")}


def profile_step(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Self milliseconds per step of each part of PROFILE_PARTS (and "other") over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    parts = dict.fromkeys([*PROFILE_PARTS, "other"], 0.0)
    for event in prof.key_averages():
        part = next((k for k, ops in PROFILE_PARTS.items() if event.key in ops), "other")
        parts[part] += event.self_cpu_time_total / steps / 1e3
    return parts


def _optimiser_step(loss_fn: Callable[[], torch.Tensor], module: nn.Module, opt: torch.optim.Optimizer,
                    grad_clip: float) -> Callable[[], None]:
    """One training step as izf_lib.train takes it: backward, gradient-norm clip, optimiser step."""
    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
        opt.step()
    return step


def _izf_and_adam(config: IZFConfig, att: torch.Tensor, v: torch.Tensor, y: torch.Tensor, unseen: torch.Tensor,
                  device: torch.device, capturable: bool = False) -> tuple[IZF, torch.optim.Optimizer]:
    """An IZF model on the step's data with its iMMD kernel fitted and its Adam, as izf_lib.train sets them up."""
    model = IZF(att, v.shape[1], config).to(device)
    model.fit_immd_kernel(v, y, unseen.numel())
    return model, make_adam(model.parameters(), config.lr, config.weight_decay, device, capturable=capturable)


def _objective_step(config: IZFConfig, att: torch.Tensor, v: torch.Tensor, y: torch.Tensor, unseen: torch.Tensor,
                    device: torch.device, compiled: bool = False) -> Callable[[], None]:
    """One optimiser step on ``config``'s objective for a new model; with ``compiled`` the objective is
    compiled by torch.compile (inductor, forward and backward) at its first call."""
    model, opt = _izf_and_adam(config, att, v, y, unseen, device)
    objective = torch.compile(model.objective) if compiled else model.objective
    return _optimiser_step(lambda: objective(v, y, unseen)["loss"], model, opt, config.grad_clip)


def paired_steps(steps: dict[str, Callable[[], None]], device: torch.device, rounds: int,
                 warmup: int) -> dict[str, list[float]]:
    """Wall seconds of one call of each of ``steps`` per round, for ``rounds`` rounds after ``warmup``:
    within a round the steps run one after another, in the order given on even rounds and reversed on
    odd ones, so a drift in the machine's speed touches every step alike."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            steps[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def paired_speedup(seconds: dict[str, list[float]], base: str, other: str) -> dict:
    """The speed-up of ``other`` over ``base`` from paired step times: the median over rounds of
    base / other, with each round's ratio and the two median step times."""
    ratios = [b / o for b, o in zip(seconds[base], seconds[other], strict=True)]
    return {"baseline": base, "precision": other, "rounds": len(ratios), "ratio_per_round": ratios,
            "speedup_median": statistics.median(ratios),
            "median_seconds": {base: statistics.median(seconds[base]), other: statistics.median(seconds[other])},
            "seconds": {base: seconds[base], other: seconds[other]}}


def freia_flow(dim: int, hidden: int, blocks: int, clamp: float) -> nn.Module:
    import FrEIA.framework as Ff  # noqa: N812 (FrEIA's documented aliases)
    import FrEIA.modules as Fm  # noqa: N812

    def subnet(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, c_out))

    net = Ff.SequenceINN(dim)
    for k in range(blocks):
        net.append(Fm.PermuteRandom, seed=k)
        net.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=clamp)
    return net


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.manual_seed(0)
    v = torch.rand(args.batch, args.dim, device=device)
    y = torch.randint(0, 40, (args.batch,), device=device)
    att = torch.rand(50, args.d_a, device=device)
    unseen = torch.arange(40, 50, device=device)
    flops_gemm = gemm_shapes(args.batch, args.dim, args.hidden)
    graphs = args.cuda_graphs == "on" or (args.cuda_graphs == "auto" and device.type == "cuda")
    limits = {}
    # the limits of every policy this device supports, also those not timed (a slow bf16 GEMM explains a skip)
    for precision in sorted(set(args.precisions) | {"fp32", "bf16"} | ({"tf32"} if device.type == "cuda" else set())):
        with matmul_precision(precision, device):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            limits[precision] = matmul_gflops(flops_gemm, device, dtype=dtype, steps=args.steps)
        print(f"{precision} matmul limit on the step's GEMM shapes: {limits[precision]:.1f} GFLOP/s")
    out = {"environment": environment(device), "shapes": {"d_v": args.dim, "d_a": args.d_a, "hidden": args.hidden,
           "batch": args.batch, "awa1_trainval": AWA1_TRAINVAL}, "matmul_limit_gflops": limits.get("fp32"),
           "matmul_limits_gflops": limits, "runs": []}
    for blocks in args.blocks:
        for precision in args.precisions:
            cfg = IZFConfig(n_blocks=blocks, hidden=args.hidden, precision=precision)
            nll_only = IZFConfig.from_dict({**cfg.to_dict(), "lambda_c": 0.0, "lambda_immd": 0.0})
            for name, c in {"izf_full": cfg, "izf_nll": nll_only}.items():
                step = _objective_step(c, att, v, y, unseen, device)
                with matmul_precision(precision, device):
                    out["runs"].append(_record(name, blocks, step, device, args, limits[precision], precision))
                    if args.profile and device.type == "cpu":
                        out["runs"][-1]["profile_ms_per_step"] = profile_step(step, args.steps)
                del step
                if graphs:
                    model, opt = _izf_and_adam(c, att, v, y, unseen, device, capturable=True)
                    train_step = TrainStep(model, opt, v, y, y.cpu(), unseen, c, fixed_shapes=True)
                    idx, gen = torch.arange(args.batch), torch.Generator(device=device).manual_seed(0)
                    with matmul_precision(precision, device):
                        rec = _record(f"{name}_graph", blocks, lambda t=train_step, i=idx, g=gen: t(i, g), device, args,
                                      limits[precision], precision)
                    rec["captured"] = train_step.captured
                    out["runs"].append(rec)
                    del model, opt, train_step
            if args.compile:
                step = _objective_step(cfg, att, v, y, unseen, device, compiled=True)
                with matmul_precision(precision, device):
                    t0 = time.perf_counter()
                    step()  # compiles
                    sync(device)
                    first = time.perf_counter() - t0
                    rec = _record("izf_full_compiled", blocks, step, device, args, limits[precision], precision)
                rec["first_step_seconds"] = first  # compiling included
                out["runs"].append(rec)
                del step
        if not args.no_freia:
            try:
                net = freia_flow(args.dim, args.hidden, blocks, 2.0).to(device)
            except ImportError:
                print("FrEIA not installed (pip install -e '.[bench]'): reference skipped")
                args.no_freia = True
                continue
            sigma = IZFConfig().sigma_for(args.dim, args.d_a)
            opt = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=1e-5)  # a straightforward setup

            def freia_nll(net: nn.Module = net, sigma: float = sigma) -> torch.Tensor:
                z, log_det = net(v)
                c, z_f = z[:, : args.d_a], z[:, args.d_a:]
                return (((c - att[y]) ** 2).sum(1) / (2 * sigma**2) + 0.5 * (z_f**2).sum(1) - log_det).mean() / args.dim

            freia_step = _optimiser_step(freia_nll, net, opt, 10.0)
            out["runs"].append(_record("freia_nll", blocks, freia_step, device, args, limits["fp32"], "fp32"))
            del net, opt, freia_step
    others = [pr for pr in args.precisions if pr != "fp32"]
    if args.paired_rounds > 0 and "fp32" in args.precisions and others:
        blocks = min(args.blocks)
        out["paired"] = []
        variants = [("izf_full", False)] + ([("izf_full_compiled", True)] if args.compile else [])
        for name, compiled in variants:
            steps = {}
            for precision in ["fp32", *others]:
                cfg = IZFConfig(n_blocks=blocks, hidden=args.hidden, precision=precision)
                step = _objective_step(cfg, att, v, y, unseen, device, compiled)

                def in_precision(step: Callable[[], None] = step, precision: str = precision) -> None:
                    with matmul_precision(precision, device):
                        step()

                steps[precision] = in_precision  # holds its model and optimiser
            seconds = paired_steps(steps, device, args.paired_rounds, args.warmup)
            out["paired"] += [{"name": name, "blocks": blocks, **paired_speedup(seconds, "fp32", precision)}
                              for precision in others]
            del steps, step
        for rec in out["paired"]:
            print(f"K={blocks} {rec['name']} {rec['precision']}, paired with fp32 over {rec['rounds']} rounds: "
                  f"{rec['speedup_median']:.2f}x fp32 (median of the rounds' ratios; range "
                  f"{min(rec['ratio_per_round']):.2f}-{max(rec['ratio_per_round']):.2f})")
    # The limits once more after the runs: a virtual machine's throughput can drop for a while (two runs on one
    # VM measured half their usual limits before steps that ran at their usual speed). A limit is an upper
    # bound, so the higher of the two measurements is kept, and both are recorded.
    measured = {}
    for precision in limits:
        with matmul_precision(precision, device):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            after = matmul_gflops(flops_gemm, device, dtype=dtype, steps=args.steps)
        measured[precision] = [limits[precision], after]
        if after > 1.2 * limits[precision] or limits[precision] > 1.2 * after:
            print(f"{precision} matmul limit moved during the run: {limits[precision]:.1f} before, {after:.1f} "
                  "after; the higher is kept")
        limits[precision] = max(limits[precision], after)
    out["matmul_limits_measured_gflops"] = measured
    out["matmul_limit_gflops"] = limits.get("fp32")
    for r in out["runs"]:
        r["fraction_of_matmul_limit"] = r["achieved_gflops"] / limits[r["precision"]]

    def find(name: str, blocks: int, precision: str) -> dict | None:
        return next((r for r in out["runs"] if (r["name"], r["blocks"], r["precision"]) == (name, blocks, precision)),
                    None)

    for blocks in args.blocks:
        ref = find("freia_nll", blocks, "fp32")
        for r in (r for r in out["runs"] if r["blocks"] == blocks and r["name"] != "freia_nll"):
            base = find(r["name"], blocks, "fp32")
            if base is not None:
                r["speedup_vs_fp32"] = base["seconds_per_step"] / r["seconds_per_step"]
            eager = find(r["name"].removesuffix("_graph").removesuffix("_compiled"), blocks, r["precision"])
            if r["name"].endswith(("_graph", "_compiled")) and eager is not None:
                r["speedup_vs_eager"] = eager["seconds_per_step"] / r["seconds_per_step"]
            if ref is not None and r["name"] == "izf_nll":
                r["speedup_vs_freia"] = ref["seconds_per_step"] / r["seconds_per_step"]
            print(f"K={blocks} {r['name']} {r['precision']}: {r.get('speedup_vs_fp32', float('nan')):.2f}x fp32"
                  + (f", {r['speedup_vs_freia']:.2f}x the FrEIA-built reference" if "speedup_vs_freia" in r else "")
                  + (f", {r['speedup_vs_eager']:.2f}x the eager step" if "speedup_vs_eager" in r else ""))
    return out


def _record(name: str, blocks: int, step, device: torch.device, args: argparse.Namespace, limit: float,
            precision: str) -> dict:
    reset_peak(device)
    sec = time_fn(step, device, args.steps, warmup=args.warmup)
    flops = step_flops(args.batch, args.dim, args.hidden, blocks) * (2.0 if name.startswith("izf_full") else 1.0)
    steps_per_epoch = -(-AWA1_TRAINVAL // args.batch)
    rec = {"name": name, "blocks": blocks, "precision": precision, "seconds_per_step": sec,
           "samples_per_second": args.batch / sec,
           "epoch_seconds_awa1": sec * steps_per_epoch, "projected_100_epochs_seconds": 100 * sec * steps_per_epoch,
           "matmul_gflop_per_step": flops / 1e9, "achieved_gflops": flops / sec / 1e9,
           "fraction_of_matmul_limit": flops / sec / 1e9 / limit, "peak_memory_mb": peak_memory_mb(device)}
    print(f"{name:10s} {precision} K={blocks:2d}: {sec * 1e3:8.1f} ms/step, "
          f"{rec['samples_per_second']:8.0f} samples/s, "
          f"{rec['achieved_gflops']:7.1f} GFLOP/s = {100 * rec['fraction_of_matmul_limit']:.0f}% of the matmul limit, "
          f"100 AWA1 epochs in {rec['projected_100_epochs_seconds'] / 60:.1f} min")
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--d-a", type=int, default=85)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--blocks", type=int, nargs="+", default=[5, 10])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-freia", action="store_true")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["fp32", "bf16"],
                   help="precision policies to time (fp32 is the baseline of the speed-ups)")
    p.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                   help="also time the training step replayed as a CUDA graph (auto: on a GPU; on: also on a CPU, "
                        "where the fixed-shape step runs eagerly)")
    p.add_argument("--paired-rounds", type=int, default=10,
                   help="rounds of the paired timing of the full objective (one step per precision per round; "
                        "0: none)")
    p.add_argument("--compile", action="store_true",
                   help="also time the full objective compiled by torch.compile (inductor), per precision and paired")
    p.add_argument("--profile", action="store_true",
                   help="also record where each eager IZF step's time goes on a CPU (torch.profiler, self time)")
    p.add_argument("--out", default="benchmarks/results/train_step.json")
    args = p.parse_args(argv)
    if args.paired_rounds < 0:
        p.error(f"--paired-rounds must be >= 0, got {args.paired_rounds}")
    write_json(measure(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
