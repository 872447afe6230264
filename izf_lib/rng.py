"""Random-number streams: every draw of a run comes from its seed through an explicit generator.

A run's randomness is split into named, independent streams (weight initialisation, the
batches of each epoch, each evaluation, ...). A stream's generator is derived from
``(seed, stream, epoch)`` alone, so the numbers one part of a run draws never depend on what
another part did before it: changing the evaluation schedule, the order of runs, or resuming
from a checkpoint leaves every other draw unchanged. Library code never seeds or reads
torch's global random state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "STREAM_INIT",
    "STREAM_TRAIN",
    "STREAM_SHUFFLE",
    "STREAM_TEST_EVAL",
    "STREAM_VAL_EVAL",
    "STREAM_BASELINE",
    "STREAM_TOY_DATA",
    "STREAM_TOY_SAMPLES",
    "STREAM_TOY_HELDOUT",
    "STREAM_ORACLE",
    "STREAM_TUNE",
    "STREAM_DIAGNOSIS",
    "STREAM_COLLAPSE",
    "STREAM_IMMD_MARGIN",
    "stream_seed",
    "make_generator",
    "cpu_generator_from",
    "reset_linear_",
    "randomise_parameters_",
]

# Named streams; the values only need to differ from each other.
STREAM_INIT = 1         # weights of a model or classifier
STREAM_TRAIN = 2        # per epoch: dequantisation noise and iMMD's generated batch
STREAM_SHUFFLE = 8      # per epoch: the order of the training batches
STREAM_TEST_EVAL = 3    # per evaluated epoch: the IZF-Softmax classifiers scored on test data
STREAM_VAL_EVAL = 4     # per evaluated epoch: the same on the class-level validation fold
STREAM_BASELINE = 5     # the simple zero-shot baselines (Gaussian generator)
STREAM_TOY_DATA = 6     # the toy experiment's training batches
STREAM_TOY_SAMPLES = 7  # the toy experiment's generated samples
STREAM_TOY_HELDOUT = 9  # the toy experiment's held-out true samples
STREAM_ORACLE = 10      # the oracle check's true flow, class attributes and samples
STREAM_TUNE = 11        # tune: the seeded validation fold and the order of random trials
STREAM_DIAGNOSIS = 12   # the diagnosis of generated class means (experiments.diagnosis)
STREAM_COLLAPSE = 13    # per epoch: the generated batch of the collapse measures (izf_lib.collapse)
STREAM_IMMD_MARGIN = 14  # once: the class splits and batches that measure the iMMD hinge (losses.immd_margin)


def stream_seed(seed: int, stream: int, epoch: int = 0) -> int:
    """A 63-bit seed for ``(seed, stream, epoch)``; distinct triples give statistically independent seeds."""
    if min(seed, stream, epoch) < 0:
        raise ValueError(f"seed, stream and epoch must be >= 0, got {(seed, stream, epoch)}")
    state = np.random.SeedSequence([int(seed), int(stream), int(epoch)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def make_generator(seed: int, stream: int, epoch: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, stream, epoch)``."""
    return torch.Generator(device=torch.device(device)).manual_seed(stream_seed(seed, stream, epoch))


def cpu_generator_from(generator: torch.Generator) -> torch.Generator:
    """A CPU generator seeded by one draw of ``generator`` (which may live on a GPU), for CPU-side draws."""
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def reset_linear_(module: nn.Module, generator: torch.Generator, std: float | None = None) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``module`` from ``generator``; returns ``module``.

    ``std=None`` draws PyTorch's default scheme (weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)));
    a number draws weights ~ N(0, std^2) and zero biases. Parameters are drawn on the CPU in
    module order and copied, so the values do not depend on the device.
    """
    for layer in module.modules():
        if not isinstance(layer, nn.Linear):
            continue
        w = torch.empty(layer.weight.shape)
        if std is None:
            bound = 1.0 / math.sqrt(layer.in_features)
            w.uniform_(-bound, bound, generator=generator)
            b = torch.empty(layer.out_features).uniform_(-bound, bound, generator=generator)
        else:
            w.normal_(0.0, std, generator=generator)
            b = torch.zeros(layer.out_features)
        layer.weight.copy_(w)
        if layer.bias is not None:
            layer.bias.copy_(b)
    return module


@torch.no_grad()
def randomise_parameters_(module: nn.Module, std: float, generator: torch.Generator) -> nn.Module:
    """Overwrite every parameter with N(0, std^2) draws from ``generator``; returns ``module``.

    For checks of a flow's algebra: a new IZF flow starts near the identity (weights of size
    0.01), where log-determinants are close to 0 and a wrong formula can pass unnoticed.
    """
    for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module
