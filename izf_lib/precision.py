"""Numeric precision policies: what runs in which floating-point format, and why.

``fp32``  everything in float32 (the reference).
``bf16``  the coupling sub-networks' matrix products (Linear -> ReLU -> Linear) run under
          ``torch.autocast(dtype=bfloat16)`` on CPU or CUDA; their outputs are cast back to
          float32 *before* the soft clamp, so the log-scales g(s), exp(g(s)), the affine
          update, the log-determinants, the densities, the MMD and every sum stay float32.
          A flow's exact inverse and its log-det are the precision-sensitive parts; only the
          sub-networks, whose outputs need not be invertible, lose precision. Parameters,
          optimiser state and checkpoints stay float32.
``tf32``  float32 storage with TF32 tensor-core matrix products (CUDA only; on a CPU it is fp32).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["PRECISIONS", "autocast_dtype", "matmul_precision"]

PRECISIONS = ("fp32", "bf16", "tf32")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of the sub-networks under ``precision`` (None: no autocast)."""
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
