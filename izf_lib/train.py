"""The IZF training loop: seeded, checkpointed every epoch, resumable, and blind to test data.

:func:`train_model` reads only a :class:`~izf_lib.data.TrainSplit` (trainval features and
labels plus attributes). Evaluation is a callback that cannot change the training
trajectory: it draws its randomness from its own generator. :func:`train_models` trains
several runs together (on a GPU, overlapping), each as it would train alone. The experiment around the loop
(epoch selection, ``results.json``) is :mod:`izf_lib.experiment`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .collapse import generation_diagnostics, seen_statistics
from .config import IZFConfig
from .data import TrainSplit
from .model import IZF
from .precision import matmul_precision
from .rng import STREAM_COLLAPSE, STREAM_SHUFFLE, STREAM_TRAIN, make_generator
from .step import CUDA_GRAPH_MODES, OnStep, TrainStep

__all__ = [
    "CUDA_GRAPH_MODES",
    "TrainingDivergedError",
    "CheckpointError",
    "resolve_device",
    "make_adam",
    "TrainJob",
    "train_model",
    "train_models",
    "load_checkpoint",
]

EvalFn = Callable[[IZF, int], dict]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or inf; the message names where and where the state was saved."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False; "
                           "use --device cpu or auto")
    return dev


def make_adam(params, lr: float, weight_decay: float, device: torch.device,
              capturable: bool = False) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters) where this torch supports it.

    Same update rule as the default implementation, in one pass over all parameters instead of
    several (measured by benchmarks/train_step.py). ``capturable`` keeps the step count on the
    device, as a CUDA graph of the step needs.
    """
    params = list(params)
    extra = {"capturable": True} if capturable else {}
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, **extra)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **extra)


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class TrainJob:
    """One run of a group that :func:`train_models` trains together: its data, settings and outputs."""

    train: TrainSplit
    config: IZFConfig
    checkpoint: Path | None = None
    eval_fn: EvalFn | None = None
    desc: str = "IZF"
    meta: dict[str, Any] | None = None


def train_model(
    train: TrainSplit,
    config: IZFConfig,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    eval_fn: EvalFn | None = None,
    progress: bool = True,
    desc: str = "IZF",
    meta: dict[str, Any] | None = None,
    cuda_graphs: str = "auto",
    checkpoint_every: int = 1,
) -> tuple[IZF, list[dict[str, Any]]]:
    """Train IZF on ``train`` for ``config.epochs`` epochs; returns the model and per-epoch history.

    Each epoch: shuffled batches of real seen pairs with dequantisation noise, the loss of
    :meth:`IZF.objective`, Adam with gradient-norm clipping. ``eval_fn(model, epoch)`` runs
    every ``config.eval_every`` epochs and at the last one. A checkpoint is written after
    ``checkpoint_every`` epochs and after the last; with ``resume`` training continues from it
    and gives the same result. ``cuda_graphs``: ``auto`` replays the training step from a CUDA
    graph on a GPU (:mod:`izf_lib.step`), ``on`` also runs its fixed-shape step on a CPU, ``off``
    runs the eager step everywhere.
    """
    job = TrainJob(train, config, checkpoint, eval_fn, desc, meta)
    return train_models([job], device, resume=resume, progress=progress, cuda_graphs=cuda_graphs,
                        checkpoint_every=checkpoint_every)[0]


def train_models(
    jobs: list[TrainJob],
    device: torch.device,
    *,
    resume: bool = False,
    progress: bool = True,
    cuda_graphs: str = "auto",
    checkpoint_every: int = 1,
) -> list[tuple[IZF, list[dict[str, Any]]]]:
    """Train several runs together in one process, each exactly as :func:`train_model` trains it alone.

    The runs take their steps in turn, one step each, epoch by epoch. Each run keeps its own model,
    optimiser, generators and checkpoint, so its numbers do not depend on the others (a test checks
    it on a CPU, bit for bit). On a GPU each run's work goes to its own CUDA stream: a step of one
    small model leaves most of the device idle, and the streams let the runs' kernels overlap
    (``benchmarks/together.py`` measures it). On a CPU the runs share the cores, so together takes
    about as long as one after another. The runs must share a precision (it sets process-wide
    matmul flags). ``train_seconds`` of each epoch is the wall time of the group's epoch.
    """
    if cuda_graphs not in CUDA_GRAPH_MODES:
        raise ValueError(f"cuda_graphs must be one of {CUDA_GRAPH_MODES}, got '{cuda_graphs}'")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if not jobs:
        raise ValueError("train_models needs at least one TrainJob")
    precisions = sorted({job.config.precision for job in jobs})
    if len(precisions) > 1:
        raise ValueError(f"runs trained together must share a precision (it sets process-wide matmul flags), "
                         f"got {precisions}")
    checkpoints = [job.checkpoint for job in jobs if job.checkpoint is not None]
    if len(set(checkpoints)) < len(checkpoints):
        raise ValueError("runs trained together need distinct checkpoint paths")
    fixed_shapes = cuda_graphs == "on" or (cuda_graphs == "auto" and device.type == "cuda")
    runs = [_Run(job, device, fixed_shapes, resume, progress, len(jobs) > 1, i) for i, job in enumerate(jobs)]
    first = min(run.start for run in runs)
    last = max(run.config.epochs for run in runs)
    try:
        with matmul_precision(precisions[0], device):
            for epoch in range(first, last + 1):
                active = [run for run in runs if run.start <= epoch <= run.config.epochs]
                for run in active:  # the state to replay the epoch from if its loss turns out non-finite
                    with run.on_stream():
                        run.snapshot = _snapshot(run.model, run.opt, run.snapshot)
                t0 = time.perf_counter()
                batches = _interleave(active, epoch)
                means = {id(run): run.epoch_means(batches[id(run)]) for run in active}
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - t0
                for run in active:
                    with run.on_stream():
                        run.end_epoch(epoch, means[id(run)], seconds, checkpoint_every)
    finally:
        for run in runs:
            run.close()
    return [(run.model, run.history) for run in runs]


def _interleave(runs: list[_Run], epoch: int) -> dict[int, int]:
    """One epoch of every run, a step of each in turn (each on its own stream); returns batches per run."""
    steppers = {id(run): _epoch_steps(run.step_fn, epoch) for run in runs}
    batches = dict.fromkeys(steppers, 0)
    pending = list(runs)
    while pending:
        still = []
        for run in pending:
            with run.on_stream():
                if next(steppers[id(run)], None) is not None:
                    batches[id(run)] += 1
                    still.append(run)
        pending = still
    return batches


class _Run:
    """The state of one run inside :func:`train_models`: model, optimiser, step, history, progress bar."""

    def __init__(self, job: TrainJob, device: torch.device, fixed_shapes: bool, resume: bool, progress: bool,
                 own_stream: bool, position: int) -> None:
        train, config = job.train, job.config
        self.job, self.config, self.device = job, config, device
        self.model = model = IZF(train.att, train.d_v, config).to(device)
        if train.unseen.numel():  # measured on the training features only (no test image is read)
            model.fit_immd_kernel(train.v, train.y, train.unseen.numel())
        self.opt = opt = make_adam(model.parameters(), config.lr, config.weight_decay, device,
                                   capturable=fixed_shapes and device.type == "cuda")
        self.history: list[dict[str, Any]] = []
        self.start = 1
        checkpoint = job.checkpoint
        if resume and checkpoint is not None and checkpoint.is_file():
            state = _load_state(checkpoint, device)
            saved = IZFConfig.from_dict(state["config"])
            if {**saved.to_dict(), "epochs": 0} != {**config.to_dict(), "epochs": 0}:
                raise ValueError(f"{checkpoint} was written with a different config; resume needs the same "
                                 f"settings (only epochs may change). Saved: {saved.to_dict()}")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            self.history = state["history"]
            self.start = state["epoch"] + 1
        elif resume and progress:
            print(f"no checkpoint at {checkpoint}: starting from epoch 1")
        # own_stream: on a GPU, this run's kernels go to its own stream, after what setup queued on the current one
        self.stream = torch.cuda.Stream(device) if own_stream and device.type == "cuda" else None
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(device))
        with self.on_stream():
            v, y, unseen = train.v.to(device), train.y.to(device), train.unseen.to(device)
            self.step_fn = TrainStep(model, opt, v, y, train.y, unseen, config, fixed_shapes=fixed_shapes)
            self.seen_stats = seen_statistics(v, y) if unseen.numel() else None
        self.unseen = unseen
        self.snapshot: tuple[dict, dict] | None = None  # the state at the epoch's start (train_models takes it)
        self.bar = tqdm(total=config.epochs, desc=job.desc, disable=not progress, initial=self.start - 1,
                        position=position, leave=True)

    def on_stream(self) -> contextlib.AbstractContextManager:
        """Run the block's CUDA work on this run's stream (a no-op without one)."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def epoch_means(self, batches: int) -> dict[str, float]:
        """The epoch's mean loss terms (one read back from the device)."""
        sums = self.step_fn.sums
        with self.on_stream():
            return dict(zip(sums, (torch.stack(list(sums.values())) / batches).tolist(), strict=True))

    def end_epoch(self, epoch: int, means: dict[str, float], seconds: float, checkpoint_every: int) -> None:
        """Check the epoch's losses, record it, run the diagnostics and ``eval_fn`` when due, checkpoint."""
        model, opt, config, job = self.model, self.opt, self.config, self.job
        if not all(math.isfinite(x) for x in means.values()):
            # Replay the epoch from its start with a check after every step: the same streams give the
            # same batches, so the first non-finite step is found, its state saved, and training stops.
            assert self.snapshot is not None
            model.load_state_dict(self.snapshot[0])
            opt.load_state_dict(self.snapshot[1])

            def check(out: dict[str, torch.Tensor], step: int) -> None:
                if not torch.isfinite(out["loss"]):
                    _diverged(model, opt, config, out, epoch, step, job.checkpoint, job.meta)

            _run_epoch(self.step_fn, epoch, on_step=check)
            raise TrainingDivergedError(
                f"the mean training loss of epoch {epoch} was non-finite ({means}), but a replay of the epoch "
                "from its start stayed finite (a non-deterministic kernel?); the model was not saved"
            )
        record: dict[str, Any] = {"epoch": epoch, **means, "train_seconds": seconds, "eval": None}
        if self.seen_stats is not None:  # is the generated unseen set collapsing? (own stream: training untouched)
            record["gen"] = generation_diagnostics(model, self.unseen, self.seen_stats,
                                                   make_generator(config.seed, STREAM_COLLAPSE, epoch, self.device))
        due = epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0)
        if job.eval_fn is not None and due:
            t1 = time.perf_counter()
            record["eval"] = job.eval_fn(model, epoch)
            record["eval_seconds"] = time.perf_counter() - t1
        self.history.append(record)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}")
        if job.checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == config.epochs):
            _save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                   "history": self.history, "config": config.to_dict(), "d_v": job.train.d_v,
                   "d_a": job.train.d_a, "meta": job.meta or {}}, job.checkpoint)

    def close(self) -> None:
        """Close the progress bar; later work on the current stream waits for this run's."""
        self.bar.close()
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)


def _snapshot(model: IZF, opt: torch.optim.Optimizer, into: tuple[dict, dict] | None = None) -> tuple[dict, dict]:
    """Copies of the model's and optimiser's state, to replay an epoch that produced a non-finite loss.

    With ``into`` (the previous epoch's copies) the tensors are copied into its tensors where their
    shapes match: fresh copies every epoch made the allocator return and re-fault hundreds of MB per
    epoch, which cost up to a third of an epoch with three AWA1-sized runs in one process on a CPU.
    """
    return _copy_into(into[0] if into else None, model.state_dict()), _copy_into(into[1] if into else None,
                                                                               opt.state_dict())


def _copy_into(dst: Any, src: Any) -> Any:
    """A deep copy of ``src``, reusing the tensors of ``dst`` (same structure, shape and dtype) as its storage."""
    if isinstance(src, torch.Tensor):
        if (isinstance(dst, torch.Tensor) and dst.shape == src.shape and dst.dtype == src.dtype
                and dst.device == src.device):
            return dst.copy_(src.detach())
        return src.detach().clone()
    if isinstance(src, dict):
        return {k: _copy_into(dst.get(k) if isinstance(dst, dict) else None, v) for k, v in src.items()}
    if isinstance(src, list | tuple):
        old = dst if isinstance(dst, type(src)) and len(dst) == len(src) else [None] * len(src)
        return type(src)(_copy_into(d, v) for d, v in zip(old, src, strict=True))
    return copy.deepcopy(src)


def _epoch_steps(step_fn: TrainStep, epoch: int, on_step: OnStep | None = None) -> Iterator[int]:
    """One epoch of updates, one per ``next``; yields the step's index. The loss-term sums stay on the device.

    Nothing is read back to the host: the batch order is drawn on the CPU and each step's draws
    on the device. ``on_step(out, step)`` runs before each update (the divergence replay uses it
    to check every step).
    """
    config = step_fn.config
    dev_gen = make_generator(config.seed, STREAM_TRAIN, epoch, step_fn.device)
    perm = torch.randperm(step_fn.y_cpu.numel(), generator=make_generator(config.seed, STREAM_SHUFFLE, epoch))
    if step_fn.device.type == "cuda":  # page-locked: a batch's asynchronous copy then never holds up the host
        perm = perm.pin_memory()
    step_fn.model.train()
    step_fn.reset()
    for step, s in enumerate(range(0, perm.numel(), config.batch_size)):
        step_fn(perm[s:s + config.batch_size], dev_gen, on_step, step)
        yield step


def _run_epoch(step_fn: TrainStep, epoch: int, on_step: OnStep | None = None) -> int:
    """One whole epoch of :func:`_epoch_steps`; returns the batch count."""
    return sum(1 for _ in _epoch_steps(step_fn, epoch, on_step))


def _diverged(model: IZF, opt, config: IZFConfig, out: dict, epoch: int, step: int,
              checkpoint: Path | None, meta: dict | None) -> None:
    terms = ", ".join(f"{k}={float(x.detach()):.4g}" for k, x in out.items())
    where = checkpoint.parent / "diverged_state.pt" if checkpoint is not None else None
    if where is not None:
        _save({"epoch": epoch, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
               "config": config.to_dict(), "meta": meta or {}, "losses": terms}, where)
    raise TrainingDivergedError(
        f"the training loss became non-finite at epoch {epoch}, step {step} ({terms}); "
        f"state saved to {where if where else '(no output directory)'}. "
        "Try a lower lr, a smaller clamp or lambda_immd, or check the features for extreme values."
    )


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely or lacks what a checkpoint holds."""


def _load_state(path: Path, device: str | torch.device) -> dict:
    """A checkpoint's contents, loaded as data only (``weights_only=True``): no code in the file runs."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain containers, and "
            f"loading them could run code. Only load checkpoints written by izf_lib from a source you trust. ({exc})"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    missing = [k for k in ("epoch", "model", "config", "d_v") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not an izf_lib checkpoint (missing keys {missing})")
    return state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[IZF, IZFConfig, dict]:
    """A trained model, its config and the checkpoint's metadata (dataset, data_dir, epoch)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = _load_state(path, device)
    config = IZFConfig.from_dict(state["config"])
    att = state["model"]["att"]
    model = IZF(att, state["d_v"], config).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, {**state.get("meta", {}), "epoch": state["epoch"]}
