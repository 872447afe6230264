"""Numeric precision policies: what runs in which floating-point format, and why.

``fp32``  everything in float32 (the reference).
``bf16``  the coupling sub-networks' matrix products (Linear -> ReLU -> Linear) run in bfloat16
          on CPU or CUDA (inputs and weights cast; within ``IZFFlow.shared_casts``, as in a
          training step, each weight is cast once); their outputs are cast back to
          float32 *before* the soft clamp, so the log-scales g(s), exp(g(s)), the affine
          update, the log-determinants, the densities, the MMD and every sum stay float32.
          A flow's exact inverse and its log-det are the precision-sensitive parts; only the
          sub-networks, whose outputs need not be invertible, lose precision. The MMD kernel's
          product x.x' stays float32 too: its squared distances |x|^2 + |x'|^2 - 2 x.x' cancel,
          and a CPU bf16 product returns bfloat16, whose rounding (a fraction of x.x') loses the
          distances of a feature to itself and within a collapsed set (chapter "Cost and
          complexity" measures it).
          Parameters, optimiser state and checkpoints stay float32.
``tf32``  float32 storage with TF32 tensor-core matrix products (CUDA only; on a CPU it is fp32).
``auto``  one of the above for the machine (:func:`choose_precision`): bf16 only where the hardware has
          bf16 matrix units *and* bf16 was measured both faster and within the fp32 seed spread on that
          kind of device (:data:`BF16_MEASURED`), tf32 on CUDA devices with TF32 tensor cores, fp32
          otherwise. The choice and its reason are recorded in ``results.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "PRECISION_CHOICES", "BF16_CPU_FLAGS", "BF16_MEASURED", "BF16_MEASURED_CPU_UNITS",
           "PrecisionChoice", "cpu_flags",
           "choose_precision", "autocast_dtype", "matmul_precision"]

PRECISIONS = ("fp32", "bf16", "tf32")  # the policies a model runs under
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what a user may ask for; "auto" is resolved by choose_precision

# x86 CPU flags (as /proc/cpuinfo spells them) of bf16 matrix units: AMX tiles (Intel Sapphire Rapids and later)
# and AVX512-BF16 dot products (Intel Cooper Lake and later, AMD Zen 4 and later). Without them bf16 matmuls are
# emulated and far slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Where "auto" may pick bf16: device kinds on which bf16 was measured both faster than the alternative and within
# the fp32 seed spread (benchmarks/train_step.py, benchmarks/precision_parity.py). CPU: on a Xeon with AMX, the full
# step about 2x fp32 and the DIGITS parity table within one fp32 seed s.d. on every score (train_step_cpu_amx_*.json,
# precision_parity_cpu_amx.json); on an AMD EPYC with AVX512-BF16 and no AMX, the full step 1.76x fp32 and the same
# table, re-measured under the averaged L_C, within one fp32 seed s.d. on 7 of 8 scores: the exception, IZF-NBC S,
# is 0.3 points higher in bf16 against an fp32 s.d. of 0.2 (train_step_cpu_avx512bf16_1.json,
# precision_parity_cpu_avx512bf16.json); on an AMD EPYC of family 26 (Zen 5), with the hand-written backward of the
# coupling halves, the full step 2.55-3.21x fp32 in rows timed apart and 2.69-2.88x in paired steps (one step of each
# precision in turn), and the table within one fp32 s.d. on 6 of 8 scores, the two seen-class
# accuracies S higher in bf16 by 0.5 and 0.2 points, within two (train_step_cpu_zen5_*.json,
# precision_parity_cpu_zen5.json). CUDA: at parity on an H200, but its graphed step no faster than tf32.
BF16_MEASURED: dict[str, bool] = {"cpu": True, "cuda": False}
# the CPU bf16 units those CPU measurements ran on (a CPU with a kind of unit not listed here stays fp32 under auto)
BF16_MEASURED_CPU_UNITS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
# oneDNN (which runs PyTorch's bf16 CPU matmuls) can be capped below its bf16 code by ONEDNN_MAX_CPU_ISA; caps whose
# name has none of these markers leave the bf16 units unused.
_BF16_ISA_MARKERS = ("BF16", "AMX", "AVX10", "ALL", "DEFAULT")
_NO_UNITS = (f"this CPU has no bf16 matrix units (none of {', '.join(BF16_CPU_FLAGS)} among its flags): bf16 matmuls "
             "would be emulated, much slower than fp32")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, what was asked for, and why (recorded in ``results.json``)."""

    requested: str
    precision: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"precision {self.precision} ({'auto: ' if self.requested == 'auto' else ''}{self.reason})"


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags from ``cpuinfo`` (Linux: its ``flags`` or ``Features`` line); None if unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def _onednn_cap(environ: Mapping[str, str]) -> str | None:
    """The ONEDNN_MAX_CPU_ISA (or older DNNL_MAX_CPU_ISA) setting when it keeps oneDNN from bf16 code, else None."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = environ.get(name, "").strip().upper()
        if value and not any(m in value for m in _BF16_ISA_MARKERS):
            return f"{name}={value}"
    return None


def choose_precision(requested: str, device: str | torch.device, *, flags: Iterable[str] | None = None,
                     cpuinfo: str | os.PathLike = "/proc/cpuinfo", cuda_capability: tuple[int, int] | None = None,
                     environ: Mapping[str, str] | None = None) -> PrecisionChoice:
    """Resolve ``requested`` (one of :data:`PRECISION_CHOICES`) for ``device``, with the reason.

    ``flags`` (the CPU's; default read from ``cpuinfo``), ``cuda_capability`` (default the device's) and
    ``environ`` (default ``os.environ``) are parameters so that the rule can be checked without the hardware.
    """
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got '{requested}'")
    device = torch.device(device)
    environ = os.environ if environ is None else environ
    if device.type == "cuda":
        major, minor = cuda_capability or torch.cuda.get_device_capability(device)
        if requested != "auto":
            return PrecisionChoice(requested, requested, "asked for")
        if major < 8:
            return PrecisionChoice("auto", "fp32", f"CUDA compute capability {major}.{minor} has no TF32 or bf16 "
                                                   "tensor cores (8.0 and later have)")
        if BF16_MEASURED["cuda"]:
            return PrecisionChoice("auto", "bf16", f"bf16 tensor cores (compute capability {major}.{minor}); bf16 "
                                                   "measured faster than tf32 and at parity with fp32")
        return PrecisionChoice("auto", "tf32", f"TF32 tensor cores (compute capability {major}.{minor}); bf16 was "
                                               "measured no faster than tf32 for IZF's training step on an H200")
    if device.type != "cpu":
        if requested == "auto":
            return PrecisionChoice("auto", "fp32", f"no rule for {device.type} devices: the reference precision")
        return PrecisionChoice(requested, requested, "asked for")
    flags = cpu_flags(cpuinfo) if flags is None else frozenset(flags)
    units = [f for f in BF16_CPU_FLAGS if flags and f in flags]
    if requested != "auto":
        why = "asked for"
        if requested == "tf32":
            why += "; on a CPU it is fp32"
        elif requested == "bf16" and flags is not None and not units:
            why += f"; {_NO_UNITS}"
        return PrecisionChoice(requested, requested, why)
    if flags is None:
        return PrecisionChoice("auto", "fp32", "the CPU's flags could not be read (/proc/cpuinfo), so no bf16 "
                                               "matrix units are known")
    if not units:
        return PrecisionChoice("auto", "fp32", _NO_UNITS)
    cap = _onednn_cap(environ)
    if cap:
        return PrecisionChoice("auto", "fp32", f"this CPU has {', '.join(units)}, but {cap} keeps oneDNN from "
                                               "its bf16 code")
    measured = [u for u in units if u in BF16_MEASURED_CPU_UNITS] if BF16_MEASURED["cpu"] else []
    if not measured:
        where = f"only on CPUs with {' or '.join(BF16_MEASURED_CPU_UNITS)}" if BF16_MEASURED["cpu"] else "not"
        return PrecisionChoice("auto", "fp32", f"this CPU has bf16 matrix units ({', '.join(units)}), but bf16's "
                                               f"speed and accuracy parity with fp32 were measured {where} "
                                               "(benchmarks/train_step.py, benchmarks/precision_parity.py); "
                                               "--precision bf16 uses them anyway")
    return PrecisionChoice("auto", "bf16", f"bf16 matrix units ({', '.join(units)}); bf16 measured faster than "
                                           f"fp32 on a CPU with {', '.join(measured)} and within the fp32 seed spread")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype the sub-networks compute in under ``precision`` (None: float32, nothing cast)."""
    if precision == "auto":
        raise ValueError("precision 'auto' names no policy until it is resolved for a device: "
                         "izf_lib.precision.choose_precision (izf_lib.experiment.fit resolves it)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    return torch.bfloat16 if precision == "bf16" else None


@contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Within the block, float32 matrix products on CUDA use TF32 when ``precision`` is 'tf32'.

    The global flags are restored on exit, so no setting leaks into the caller's code.
    """
    autocast_dtype(precision)  # validates
    if precision != "tf32" or device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
