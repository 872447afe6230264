"""The IZF training loop: seeded, checkpointed every epoch, resumable, and blind to test data.

:func:`train_model` reads only a :class:`~izf_lib.data.TrainSplit` (trainval features and
labels plus attributes). Evaluation is a callback that cannot change the training
trajectory: it draws its randomness from its own generator. The experiment around the loop
(epoch selection, ``results.json``) is :mod:`izf_lib.experiment`.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import time
from collections.abc import Callable
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
from .step import CUDA_GRAPH_MODES, TrainStep

__all__ = [
    "CUDA_GRAPH_MODES",
    "TrainingDivergedError",
    "CheckpointError",
    "resolve_device",
    "make_adam",
    "train_model",
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
    if cuda_graphs not in CUDA_GRAPH_MODES:
        raise ValueError(f"cuda_graphs must be one of {CUDA_GRAPH_MODES}, got '{cuda_graphs}'")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    fixed_shapes = cuda_graphs == "on" or (cuda_graphs == "auto" and device.type == "cuda")
    model = IZF(train.att, train.d_v, config).to(device)
    if train.unseen.numel():  # measured on the training features only (no test image is read)
        model.fit_immd_kernel(train.v, train.y, train.unseen.numel())
    opt = make_adam(model.parameters(), config.lr, config.weight_decay, device,
                    capturable=fixed_shapes and device.type == "cuda")
    history: list[dict[str, Any]] = []
    start = 1
    if resume and checkpoint is not None and checkpoint.is_file():
        state = _load_state(checkpoint, device)
        saved = IZFConfig.from_dict(state["config"])
        if {**saved.to_dict(), "epochs": 0} != {**config.to_dict(), "epochs": 0}:
            raise ValueError(f"{checkpoint} was written with a different config; resume needs the same settings "
                             f"(only epochs may change). Saved: {saved.to_dict()}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = state["history"]
        start = state["epoch"] + 1
    elif resume and progress:
        print(f"no checkpoint at {checkpoint}: starting from epoch 1")

    v, y, unseen = train.v.to(device), train.y.to(device), train.unseen.to(device)
    step_fn = TrainStep(model, opt, v, y, train.y, unseen, config, fixed_shapes=fixed_shapes)
    seen_stats = seen_statistics(v, y) if unseen.numel() else None
    bar = tqdm(range(start, config.epochs + 1), desc=desc, disable=not progress, initial=start - 1, total=config.epochs)
    with matmul_precision(config.precision, device):
        for epoch in bar:
            snapshot = _snapshot(model, opt)
            t0 = time.perf_counter()
            batches = _run_epoch(step_fn, epoch)
            sums = step_fn.sums
            means = dict(zip(sums, (torch.stack(list(sums.values())) / batches).tolist(), strict=True))  # one sync
            if not all(math.isfinite(x) for x in means.values()):
                # Replay the epoch from its start with a check after every step: the same streams give the
                # same batches, so the first non-finite step is found, its state saved, and training stops.
                model.load_state_dict(snapshot[0])
                opt.load_state_dict(snapshot[1])
                def check(out: dict[str, torch.Tensor], step: int, epoch: int = epoch) -> None:
                    if not torch.isfinite(out["loss"]):
                        _diverged(model, opt, config, out, epoch, step, checkpoint, meta)

                _run_epoch(step_fn, epoch, on_step=check)
                raise TrainingDivergedError(
                    f"the mean training loss of epoch {epoch} was non-finite ({means}), but a replay of the epoch "
                    "from its start stayed finite (a non-deterministic kernel?); the model was not saved"
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            record: dict[str, Any] = {"epoch": epoch, **means, "train_seconds": time.perf_counter() - t0, "eval": None}
            if seen_stats is not None:  # is the generated unseen set collapsing? (own stream: training untouched)
                record["gen"] = generation_diagnostics(model, unseen, seen_stats,
                                                       make_generator(config.seed, STREAM_COLLAPSE, epoch, device))
            due = epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0)
            if eval_fn is not None and due:
                t1 = time.perf_counter()
                record["eval"] = eval_fn(model, epoch)
                record["eval_seconds"] = time.perf_counter() - t1
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == config.epochs):
                _save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                       "config": config.to_dict(), "d_v": train.d_v, "d_a": train.d_a, "meta": meta or {}}, checkpoint)
    return model, history


def _snapshot(model: IZF, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Copies of the model's and optimiser's state, to replay an epoch that produced a non-finite loss."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def _run_epoch(step_fn: TrainStep, epoch: int, on_step: Callable[[dict[str, torch.Tensor], int], None] | None = None
               ) -> int:
    """One epoch of updates; the loss-term sums stay on the device in ``step_fn.sums``. Returns the batch count.

    Nothing is read back to the host: the batch order is drawn on the CPU and each step's draws
    on the device. ``on_step(out, step)`` runs before each update (the divergence replay uses it
    to check every step).
    """
    config = step_fn.config
    dev_gen = make_generator(config.seed, STREAM_TRAIN, epoch, step_fn.device)
    perm = torch.randperm(step_fn.y_cpu.numel(), generator=make_generator(config.seed, STREAM_SHUFFLE, epoch))
    step_fn.model.train()
    step_fn.reset()
    batches = 0
    for step, s in enumerate(range(0, perm.numel(), config.batch_size)):
        step_fn(perm[s:s + config.batch_size], dev_gen, on_step, step)
        batches += 1
    return batches


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
