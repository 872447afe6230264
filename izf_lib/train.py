"""Training IZF: seeded, checkpointed every epoch, resumable, and blind to test data.

:func:`train_model` reads only a :class:`~izf_lib.data.TrainSplit` (trainval features and
labels plus attributes). Evaluation is a callback that cannot change the training
trajectory: it draws its randomness from its own generator. :func:`fit` adds the epoch
selection rule and writes ``results.json``.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import IZFConfig
from .data import DataError, TrainSplit, ZSLData
from .evaluation import CLASSIFIERS, score, score_benchmark
from .model import IZF
from .rng import STREAM_SHUFFLE, STREAM_TEST_EVAL, STREAM_TRAIN, STREAM_VAL_EVAL, make_generator

__all__ = [
    "TrainingDivergedError",
    "resolve_device",
    "make_adam",
    "train_model",
    "validation_split",
    "select_epochs",
    "fit",
    "load_checkpoint",
    "evaluation_generator",
    "CheckpointError",
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
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu or auto")
    return dev


def evaluation_generator(seed: int, epoch: int, device: str | torch.device, validation: bool = False) -> torch.Generator:
    """The generator behind the scores of ``epoch``: the same in training-time evaluation and ``evaluate``."""
    return make_generator(seed, STREAM_VAL_EVAL if validation else STREAM_TEST_EVAL, epoch, device)


def make_adam(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters) where this torch supports it.

    Same update rule as the default implementation, in one pass over all parameters instead of
    several (measured by benchmarks/train_step.py).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


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
) -> tuple[IZF, list[dict[str, Any]]]:
    """Train IZF on ``train`` for ``config.epochs`` epochs; returns the model and per-epoch history.

    Each epoch: shuffled batches of real seen pairs with dequantisation noise, the loss of
    :meth:`IZF.objective`, Adam with gradient-norm clipping. ``eval_fn(model, epoch)`` runs
    every ``config.eval_every`` epochs and at the last one. A checkpoint is written after
    every epoch; with ``resume`` training continues from it and gives the same result.
    """
    model = IZF(train.att, train.d_v, config).to(device)
    opt = make_adam(model.parameters(), config.lr, config.weight_decay, device)
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
    n = v.shape[0]
    bar = tqdm(range(start, config.epochs + 1), desc=desc, disable=not progress, initial=start - 1, total=config.epochs)
    for epoch in bar:
        dev_gen = make_generator(config.seed, STREAM_TRAIN, epoch, device)
        perm = torch.randperm(n, generator=make_generator(config.seed, STREAM_SHUFFLE, epoch)).to(device)
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        batches = 0
        for step, s in enumerate(range(0, n, config.batch_size)):
            idx = perm[s:s + config.batch_size]
            vb = v[idx]
            if config.dequant:
                vb = vb + config.dequant * torch.rand(vb.shape, generator=dev_gen, device=device)
            out = model.objective(vb, y[idx], unseen, dev_gen)
            if not torch.isfinite(out["loss"]):
                _diverged(model, opt, config, out, epoch, step, checkpoint, meta)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            for k, val in out.items():
                sums[k] = sums.get(k, 0.0) + float(val.detach())
            batches += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        record: dict[str, Any] = {"epoch": epoch, **{k: x / batches for k, x in sums.items()},
                                  "train_seconds": time.perf_counter() - t0, "eval": None}
        if eval_fn is not None and (epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0)):
            t1 = time.perf_counter()
            record["eval"] = eval_fn(model, epoch)
            record["eval_seconds"] = time.perf_counter() - t1
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if checkpoint is not None:
            _save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                   "config": config.to_dict(), "d_v": train.d_v, "d_a": train.d_a, "meta": meta or {}}, checkpoint)
    return model, history


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


def validation_split(data: ZSLData, fold: int, seed: int) -> tuple[TrainSplit, tuple[torch.Tensor, ...]]:
    """A class-level validation split from trainval only (xlsa17 fold ``fold``).

    The fold's val classes become pseudo-unseen; the train classes' images are split 80/20
    (stratified, seeded) into pseudo-trainval and pseudo-test-seen. No test image is read.
    """
    if fold not in data.folds:
        raise DataError(
            f"selection 'val' needs trainclasses{fold}.txt and valclasses{fold}.txt in {data.source or data.name}; "
            f"folds found: {sorted(data.folds) or 'none'}"
        )
    train_names, val_names = data.folds[fold]
    ids = {n: i for i, n in enumerate(data.class_names)}
    tr_cls = torch.tensor(sorted(ids[n] for n in train_names))
    va_cls = torch.tensor(sorted(ids[n] for n in val_names))
    y = data.y_trainval
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for k in tr_cls.tolist():
        rows = rng.permutation(torch.nonzero(y == k).flatten().numpy())
        cut = int(round(0.8 * rows.size))
        keep.append(rows[:cut])
        held.append(rows[cut:])
    keep_idx = torch.from_numpy(np.sort(np.concatenate(keep)))
    held_idx = torch.from_numpy(np.sort(np.concatenate(held)))
    unseen_idx = torch.nonzero(torch.isin(y, va_cls)).flatten()
    split = TrainSplit(data.v_trainval[keep_idx], y[keep_idx], data.att, tr_cls, va_cls)
    return split, (data.v_trainval[held_idx], y[held_idx], data.v_trainval[unseen_idx], y[unseen_idx])


def select_epochs(
    history: list[dict], val_history: list[dict] | None, classifiers: tuple[str, ...], rule: str
) -> dict[str, int]:
    """The epoch whose test scores are reported, per classifier.

    ``final``: the last epoch. ``val``: the epoch with the best GZSL H on the validation fold.
    ``best_test``: the epoch with the best test GZSL H (optimistic: selects on test data).
    """
    last = history[-1]["epoch"]
    if rule == "final":
        return {clf: last for clf in classifiers}
    source = val_history if rule == "val" else history
    if source is None:
        raise ValueError("selection 'val' needs the validation history")
    evaluated = [r for r in source if r.get("eval")]
    return {clf: max(evaluated, key=lambda r: (r["eval"]["gzsl"][clf]["H"], -r["epoch"]))["epoch"] for clf in classifiers}


def fit(
    data: ZSLData,
    config: IZFConfig,
    out_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    classifiers: tuple[str, ...] = CLASSIFIERS,
    resume: bool = False,
    progress: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and select as ``config.selection`` says; writes ``out_dir/results.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    meta = {"dataset": data.name, "data_dir": data_dir, "classifiers": list(classifiers)}
    t_start = time.perf_counter()

    def test_eval(model: IZF, epoch: int) -> dict:
        return score_benchmark(model, data, classifiers, config, evaluation_generator(config.seed, epoch, dev))

    model, history = train_model(data.train_split(), config, dev, checkpoint=out / "checkpoint.pt", resume=resume,
                                 eval_fn=test_eval, progress=progress, desc=f"{data.name} seed {config.seed}", meta=meta)
    val_history = None
    if config.selection == "val":
        split, (v_s, y_s, v_u, y_u) = validation_split(data, config.val_fold, config.seed)

        def val_eval(m: IZF, epoch: int) -> dict:
            return score(m, split, v_s, y_s, v_u, y_u, classifiers, config,
                         evaluation_generator(config.seed, epoch, dev, validation=True))

        _, val_history = train_model(split, config, dev, checkpoint=out / "val_checkpoint.pt", resume=resume,
                                     eval_fn=val_eval, progress=progress, desc=f"{data.name} val fold {config.val_fold}")
    chosen = select_epochs(history, val_history, classifiers, config.selection)
    by_epoch = {r["epoch"]: r for r in history}
    results: dict[str, Any] = {
        "dataset": data.name,
        "data": data.summary(),
        "seed": config.seed,
        "config": config.to_dict(),
        "sigma": model.sigma,
        "selection": {
            "rule": config.selection,
            "epochs": chosen,
            "optimistic": config.selection == "best_test",
            "note": {
                "final": "scores of the last epoch of a fixed schedule",
                "val": f"epoch with the best GZSL H on class-level validation fold {config.val_fold} (trainval only)",
                "best_test": "epoch with the best test GZSL H: selects on test data, optimistic",
            }[config.selection],
        },
        "czsl": {clf: by_epoch[e]["eval"]["czsl"][clf] for clf, e in chosen.items()},
        "gzsl": {clf: by_epoch[e]["eval"]["gzsl"][clf] for clf, e in chosen.items()},
        "history": history,
        "val_history": val_history,
        "timings": {
            "train_seconds": sum(r["train_seconds"] for r in history),
            "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in history),
            "total_seconds": time.perf_counter() - t_start,
        },
        "environment": {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


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
