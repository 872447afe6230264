"""Shared helpers of the benchmark scripts: timing, peak memory, matmul throughput, environment."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from izf_lib.precision import BF16_CPU_FLAGS, choose_precision, cpu_flags

SPEED_FLAGS = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8",
                         *BF16_CPU_FLAGS})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_relative_difference(a: list[dict], b: list[dict], keys: Iterable[str]) -> float:
    """The largest |a - b| / |a| of the values under ``keys`` over two histories' epochs, paired in order."""
    keys = list(keys)
    return max(abs(x[k] - z[k]) / max(abs(x[k]), 1e-12) for x, z in zip(a, b, strict=True) for k in keys)


def time_fn(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int = 2) -> float:
    """Median wall seconds of fn() over ``steps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or the process's peak resident set (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(shapes: list[tuple[int, int, int]], device: torch.device, dtype=torch.float32,
                  steps: int = 10) -> float:
    """Sustained GFLOP/s of torch.mm over the (m, k, n) shapes given, run back to back (the practical limit)."""
    mats = [(torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype))
            for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    def run() -> None:
        for a, b in mats:
            torch.mm(a, b)

    return flops / time_fn(run, device, steps) / 1e9


def code_version() -> str | None:
    """The project's commit, with "+changes" when tracked files differ from it; None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+changes" if dirty else commit


def environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "processor": platform.processor()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                env["cpu_model"] = value
            elif key in ("cpu family", "model"):  # a virtual machine's model name may hide the generation
                env.setdefault("cpu_family_model", {})[key.replace("cpu ", "")] = int(value)
            if not key:
                break  # the first processor's block only
    except OSError:
        pass
    flags = cpu_flags()
    if flags is not None:  # the vector and matrix extensions that decide a CPU's fp32 and bf16 speed
        env["cpu_flags"] = sorted(f for f in flags if f in SPEED_FLAGS)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["precision_auto"] = choose_precision("auto", device).to_dict()
    env["code"] = code_version()  # which izf_lib was measured: results of older code stay comparable by name
    return env


def write_json(obj: dict[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {path}")
