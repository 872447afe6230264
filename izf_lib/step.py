"""One IZF training step (batch, random draws, loss, backward, clip, Adam), eager or as a CUDA graph.

On a GPU the step's arithmetic takes a few milliseconds, but it launches hundreds of small
kernels, and Python and launch overhead dominate (benchmarks/train_step.py). A CUDA graph
records the step's kernels once and replays them with one launch. That needs fixed shapes and
no host work inside the step, so the *fixed-shape* step differs from the eager one in three ways,
none of which changes the arithmetic:

- the batch indices and the step's random draws are written into fixed buffers before each
  replay, drawn from the same generator in the same order as the eager step draws them
  (:func:`draw_noise`);
- L_C groups the batch over the fixed list of all seen classes, absent ones with weight 0
  (:func:`~izf_lib.losses.fixed_class_groups`), instead of the classes present;
- Adam keeps its step count on the device (``capturable``).

A batch of another size (an epoch's last) runs the same fixed-shape step eagerly. On a CPU the
fixed-shape step also runs eagerly: the tests check it against the eager step there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import IZFConfig
from .losses import class_groups, fixed_class_groups
from .model import IZF

__all__ = ["CUDA_GRAPH_MODES", "StepNoise", "draw_noise", "TrainStep", "WARMUP_STEPS"]

CUDA_GRAPH_MODES = ("auto", "on", "off")  # auto: capture on a GPU; on: the fixed-shape step everywhere; off: eager

WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's CUDA-graph recipe); undone afterwards

OnStep = Callable[[dict[str, Tensor], int], None]


@dataclass
class StepNoise:
    """The random draws of one training step; None where the config draws nothing."""

    dequant: Tensor | None  # (B, d_v) uniform dequantisation noise, scaled by config.dequant
    pick: Tensor | None  # (B,) positions in the unseen-class list, one generated feature each (iMMD)
    z_f: Tensor | None  # (B, d_v - d_a) the generated features' Gaussian latent


def draw_noise(config: IZFConfig, batch: int, d_v: int, d_a: int, n_unseen: int, generator: torch.Generator | None,
               device: torch.device, out: StepNoise | None = None) -> StepNoise:
    """A step's draws, in the order the eager loop has always made them: dequantisation noise, then
    iMMD's unseen classes, then their z_f. With ``out`` the numbers are written into its buffers."""
    dequant = pick = z_f = None
    if config.dequant:
        dequant = torch.rand((batch, d_v), generator=generator, device=device,
                             out=out.dequant if out is not None else None)
    if config.lambda_immd and n_unseen:
        pick = torch.randint(n_unseen, (batch,), generator=generator, device=device,
                             out=out.pick if out is not None else None)
        z_f = torch.randn((batch, d_v - d_a), generator=generator, device=device,
                          out=out.z_f if out is not None else None)
    return StepNoise(dequant, pick, z_f)


class TrainStep:
    """Applies one optimiser step per call and sums the loss terms on the device (float64).

    ``fixed_shapes=False``: the eager step. ``fixed_shapes=True``: the fixed-shape step of the module
    docstring, captured as a CUDA graph on the first full batch when the model is on a GPU (and run
    eagerly elsewhere). ``sums`` holds the per-term sums since :meth:`reset`; nothing is read back to
    the host.
    """

    def __init__(self, model: IZF, opt: torch.optim.Optimizer, v: Tensor, y: Tensor, y_cpu: Tensor, unseen: Tensor,
                 config: IZFConfig, *, fixed_shapes: bool = False) -> None:
        self.model, self.opt, self.config = model, opt, config
        self.v, self.y, self.y_cpu, self.unseen = v, y, y_cpu, unseen
        self.device = v.device
        self.fixed_shapes = fixed_shapes
        self.params = list(model.parameters())
        self.classes = torch.unique(y_cpu).to(self.device)  # every seen class, sorted
        self.sums: dict[str, Tensor] = {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self._capture_failed = False
        self._idx: Tensor | None = None
        self._noise: StepNoise | None = None

    @property
    def captured(self) -> bool:
        """Whether full batches are replayed from a CUDA graph."""
        return self.graph is not None

    def reset(self) -> None:
        """Zero the loss sums (in place, so a captured graph keeps adding into the same buffers)."""
        for t in self.sums.values():
            t.zero_()

    def __call__(self, idx_cpu: Tensor, generator: torch.Generator | None, on_step: OnStep | None = None,
                 step: int = 0) -> None:
        """One step on the trainval rows ``idx_cpu`` (CPU indices) with the step's draws from ``generator``.

        ``on_step(out, step)`` runs after the loss and before the update; it forces an eager step.
        """
        batch = idx_cpu.numel()
        if (self.fixed_shapes and on_step is None and self.device.type == "cuda" and batch == self.config.batch_size
                and not self._capture_failed):
            if self.graph is None:
                self._capture(idx_cpu)
            if self.graph is not None:
                assert self._idx is not None and self._noise is not None
                self._idx.copy_(idx_cpu, non_blocking=True)
                self._draw(batch, generator, self._noise)
                self.graph.replay()
                return
        idx = idx_cpu.to(self.device, non_blocking=True)
        noise = self._draw(batch, generator)
        groups = None if self.fixed_shapes else class_groups(self.y_cpu[idx_cpu], self.device)
        self._update(idx, noise, groups, on_step, step, set_to_none=self.graph is None)

    def _draw(self, batch: int, generator: torch.Generator | None, out: StepNoise | None = None) -> StepNoise:
        return draw_noise(self.config, batch, self.model.d_v, self.model.d_a, self.unseen.numel(), generator,
                          self.device, out)

    def _update(self, idx: Tensor, noise: StepNoise, groups: tuple[Tensor, Tensor, Tensor] | None,
                on_step: OnStep | None = None, step: int = 0, set_to_none: bool = True) -> None:
        """The step itself: gather, dequantise, loss, backward, clip, Adam, sums (the captured code)."""
        vb, yb = self.v.index_select(0, idx), self.y.index_select(0, idx)
        if noise.dequant is not None:
            vb = vb + self.config.dequant * noise.dequant
        if groups is None:
            groups = fixed_class_groups(yb, self.classes)
        out = self.model.objective(vb, yb, self.unseen, noise=noise, groups=groups)
        if on_step is not None:
            on_step(out, step)
        self.opt.zero_grad(set_to_none=set_to_none)  # a captured graph's gradients stay in its own memory
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.opt.step()
        for k, val in out.items():
            if k not in self.sums:
                self.sums[k] = torch.zeros((), dtype=torch.float64, device=self.device)
            self.sums[k].add_(val.detach().double())

    def _capture(self, idx_cpu: Tensor) -> None:
        """Record the fixed-shape step as a CUDA graph; the warm-up steps it needs are undone exactly.

        The warm-up uses this batch with scratch draws (not the training generator), and afterwards
        the parameters, Adam's state and the loss sums are restored, so training continues as if
        nothing had run. If capture fails, a warning says why and the step stays eager.
        """
        params = [p.detach().clone() for p in self.params]
        had_state = {p: {k: t.clone() for k, t in s.items() if torch.is_tensor(t)} for p, s in self.opt.state.items()}
        sums = {k: t.clone() for k, t in self.sums.items()}
        self._idx = idx_cpu.to(self.device).clone()
        scratch = torch.Generator(device=self.device).manual_seed(0)
        self._noise = self._draw(self._idx.numel(), scratch)
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._update(self._idx, self._noise, None)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._update(self._idx, self._noise, None)
            self.graph = graph
        except RuntimeError as exc:  # e.g. an optimiser that cannot be captured
            self._capture_failed = True
            warnings.warn(f"CUDA graph capture of the training step failed; training continues eagerly ({exc})",
                          RuntimeWarning, stacklevel=3)
        finally:
            self._restore(params, had_state, sums)

    def _restore(self, params: list[Tensor], had_state: dict, sums: dict[str, Tensor]) -> None:
        """Put parameters, Adam's state and the sums back in place (the graph holds their addresses)."""
        with torch.no_grad():
            for p, saved in zip(self.params, params, strict=True):
                p.copy_(saved)
            for p, state in self.opt.state.items():
                for k, t in state.items():
                    if torch.is_tensor(t):
                        t.copy_(had_state[p][k]) if p in had_state else t.zero_()  # zero: Adam's fresh state
            for k, t in self.sums.items():
                t.copy_(sums[k]) if k in sums else t.zero_()
