"""One IZF experiment: train, score, select the reported epoch, and record it as ``results.json``.

:func:`fit` runs :func:`~izf_lib.train.train_model` with test-time scoring as its callback
(and, for the ``val`` rule, a second run on a class-level validation fold), applies the
selection rule, and returns a :class:`RunResult`, the typed record that writes and reads
``results.json``. :func:`fit_together` does the same for several runs trained together.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from .collapse import COLLAPSED_SPREAD_RATIO, SCATTERED_SPREAD_RATIO, collapse_summary
from .config import CLASSIFIERS, IZFConfig
from .data import ZSLData, validation_split
from .evaluation import evaluation_generator, score, score_benchmark
from .metrics import one_sided as gzsl_one_sided
from .model import IZF
from .precision import PrecisionChoice, choose_precision
from .train import TrainJob, resolve_device, train_models

__all__ = ["RESULTS_FILE", "RunResult", "CollapseWarning", "OneSidedWarning", "select_epochs", "fit", "fit_together"]

RESULTS_FILE = "results.json"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename, so that a run killed while writing (Ctrl-C,
    a cancelled cluster job) never leaves a half-written file that a rerun would take for a finished one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


class CollapseWarning(UserWarning):
    """A run whose generated unseen features collapsed or scattered (izf_lib.collapse): IZF-Softmax is not sound."""


class OneSidedWarning(UserWarning):
    """A classifier whose GZSL predictions all fall on one side (:func:`izf_lib.metrics.one_sided`): its H of 0
    says it failed, not how; U = 0 with IZF-Softmax means its generated unseen classes lie away from real ones."""


CLASSIFIER_NAMES = {"nbc": "IZF-NBC", "softmax": "IZF-Softmax"}


SELECTION_NOTES = {
    "final": "scores of the last epoch of a fixed schedule",
    "val": "epoch with the best GZSL H on class-level validation fold {fold} (trainval only)",
    "best_test": "epoch with the best test GZSL H: selects on test data, optimistic",
}


@dataclass
class RunResult:
    """Everything one run reports; ``results.json`` is this record as JSON.

    ``czsl[clf]`` = {"T1"} and ``gzsl[clf]`` = {"U", "S", "H"} in percent at the epoch
    ``selection["epochs"][clf]`` chosen by ``selection["rule"]``; ``history`` has one record per
    epoch (mean losses, seconds, and the scores of evaluated epochs under "eval").
    """

    dataset: str
    data: dict[str, Any]
    seed: int
    config: dict[str, Any]
    sigma: float
    selection: dict[str, Any]
    czsl: dict[str, dict[str, float]]
    gzsl: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    val_history: list[dict[str, Any]] | None
    timings: dict[str, float]
    environment: dict[str, Any]
    collapse: dict[str, Any] | None = None  # izf_lib.collapse.collapse_summary (absent in older files)
    immd_kernel: dict[str, Any] | None = None  # the iMMD kernel as used: scales, bounds (absent in older files)

    def scores(self, clf: str) -> dict[str, float]:
        """T1, U, S and H (percent) of one classifier at its selected epoch."""
        return {"T1": self.czsl[clf]["T1"], **{k: self.gzsl[clf][k] for k in ("U", "S", "H")}}

    def one_sided(self) -> dict[str, str]:
        """The classifiers whose GZSL predictions fall on one side, with that side ("seen" or "unseen")."""
        return {clf: side for clf in self.gzsl if (side := gzsl_one_sided(self.gzsl[clf]))}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, run_dir: str | os.PathLike) -> Path:
        """Write ``run_dir/results.json``; returns its path."""
        path = Path(run_dir) / RESULTS_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunResult:
        """Read a ``results.json`` (or the run directory holding one); missing keys are named in the error."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a results.json: {exc}") from exc
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [n for n in required if n not in d] if isinstance(d, dict) else required
        if missing:
            raise ValueError(f"{path}: not a results.json written by izf_lib.experiment.fit (missing keys {missing})")
        return cls(**{n: d[n] for n in names if n in d})


def select_epochs(
    history: list[dict], val_history: list[dict] | None, classifiers: tuple[str, ...], rule: str
) -> dict[str, int]:
    """The epoch whose test scores are reported, per classifier.

    ``final``: the last epoch. ``val``: the epoch with the best GZSL H on the validation fold.
    ``best_test``: the epoch with the best test GZSL H (optimistic: selects on test data).
    """
    last = history[-1]["epoch"]
    if rule == "final":
        return dict.fromkeys(classifiers, last)
    source = val_history if rule == "val" else history
    if source is None:
        raise ValueError("selection 'val' needs the validation history")
    evaluated = [r for r in source if r.get("eval")]
    def best(clf: str) -> int:
        return max(evaluated, key=lambda r: (r["eval"]["gzsl"][clf]["H"], -r["epoch"]))["epoch"]

    return {clf: best(clf) for clf in classifiers}


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
    cuda_graphs: str = "auto",
    checkpoint_every: int = 1,
) -> RunResult:
    """Train, evaluate and select as ``config.selection`` says; writes ``out_dir/results.json``.

    ``cuda_graphs`` and ``checkpoint_every`` are passed to :func:`~izf_lib.train.train_model`. A
    ``config.precision`` of "auto" is resolved for the device first (:func:`~izf_lib.precision.choose_precision`);
    ``results.json`` records the resolved config, and the choice with its reason under ``environment``.
    """
    return _fit_runs(data, [config], [out_dir], device, classifiers, resume, progress, data_dir, cuda_graphs,
                     checkpoint_every)[0]


def fit_together(
    data: ZSLData,
    configs: list[IZFConfig],
    out_dirs: list[str | os.PathLike],
    *,
    device: str | torch.device = "auto",
    classifiers: tuple[str, ...] = CLASSIFIERS,
    resume: bool = False,
    progress: bool = True,
    data_dir: str | None = None,
    cuda_graphs: str = "auto",
    checkpoint_every: int = 1,
) -> list[RunResult]:
    """:func:`fit` for several runs on one dataset (seeds, settings), trained together in one process.

    The runs are trained by :func:`~izf_lib.train.train_models`: each gives the numbers it gives
    alone, and on a GPU their steps overlap on separate CUDA streams. Each writes its own
    ``out_dir/results.json``; ``environment["runs_together"]`` says how many shared the device.
    """
    return _fit_runs(data, configs, out_dirs, device, classifiers, resume, progress, data_dir, cuda_graphs,
                     checkpoint_every)


def _fit_runs(data: ZSLData, configs: list[IZFConfig], out_dirs: list[str | os.PathLike], device: str | torch.device,
              classifiers: tuple[str, ...], resume: bool, progress: bool, data_dir: str | None, cuda_graphs: str,
              checkpoint_every: int) -> list[RunResult]:
    """What :func:`fit` and :func:`fit_together` do (one level below both, so warnings name their caller)."""
    if len(configs) != len(out_dirs) or not configs:
        raise ValueError(f"fit_together needs one out_dir per config, got {len(configs)} configs and "
                         f"{len(out_dirs)} out_dirs")
    outs = [Path(o) for o in out_dirs]
    if len({o.resolve() for o in outs}) < len(outs):
        raise ValueError(f"runs trained together need distinct out_dirs, got {[str(o) for o in outs]}")
    for config in configs:
        if data.feature_scaling != config.feature_scaling:
            raise ValueError(f"{data.name} was loaded with feature_scaling '{data.feature_scaling}' but the config "
                             f"asks for '{config.feature_scaling}'; load it with load_xlsa17(..., "
                             f"feature_scaling='{config.feature_scaling}')")
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    choices = [choose_precision(config.precision, dev) for config in configs]
    configs = [replace(config, precision=choice.precision) for config, choice in zip(configs, choices, strict=True)]
    if progress and any(choice.requested == "auto" for choice in choices):
        print(f"{data.name}: {choices[0]}", file=sys.stderr)
    meta = {"dataset": data.name, "data_dir": data_dir, "classifiers": list(classifiers)}
    t_start = time.perf_counter()

    def test_eval(config: IZFConfig) -> Callable[[IZF, int], dict]:
        def run(model: IZF, epoch: int) -> dict:
            return score_benchmark(model, data, classifiers, config, evaluation_generator(config.seed, epoch, dev))
        return run

    split = data.train_split()
    jobs = [TrainJob(split, config, out / "checkpoint.pt", test_eval(config), f"{data.name} seed {config.seed}",
                     meta) for config, out in zip(configs, outs, strict=True)]
    trained = train_models(jobs, dev, resume=resume, progress=progress, cuda_graphs=cuda_graphs,
                           checkpoint_every=checkpoint_every)
    val_histories: list[list[dict[str, Any]] | None] = [None] * len(configs)
    val_runs = [i for i, config in enumerate(configs) if config.selection == "val"]
    if val_runs:
        val_jobs = []
        for i in val_runs:
            config = configs[i]
            val_split, (v_s, y_s, v_u, y_u) = validation_split(data, config.val_fold, config.seed)

            def val_eval(m: IZF, epoch: int, config: IZFConfig = config, val_split=val_split,
                         held=(v_s, y_s, v_u, y_u)) -> dict:
                return score(m, val_split, *held, classifiers, config,
                             evaluation_generator(config.seed, epoch, dev, validation=True))

            val_jobs.append(TrainJob(val_split, config, outs[i] / "val_checkpoint.pt", val_eval,
                                     f"{data.name} seed {config.seed} val fold {config.val_fold}"))
        for i, (_, val_history) in zip(val_runs, train_models(val_jobs, dev, resume=resume, progress=progress,
                                                                cuda_graphs=cuda_graphs,
                                                                checkpoint_every=checkpoint_every), strict=True):
            val_histories[i] = val_history
    results = []
    for config, choice, (model, history), val_history, out in zip(configs, choices, trained, val_histories, outs,
                                                                   strict=True):
        results.append(_record(data, config, choice, model, history, val_history, out, dev, classifiers,
                               cuda_graphs, len(configs), t_start))
    return results


def _record(data: ZSLData, config: IZFConfig, precision: PrecisionChoice, model: IZF, history: list[dict[str, Any]],
            val_history: list[dict[str, Any]] | None, out: Path, dev: torch.device, classifiers: tuple[str, ...],
            cuda_graphs: str, together: int, t_start: float) -> RunResult:
    """The run's :class:`RunResult`, written to ``out/results.json``, with a warning for each unsound classifier."""
    chosen = select_epochs(history, val_history, classifiers, config.selection)
    by_epoch = {r["epoch"]: r for r in history}
    result = RunResult(
        dataset=data.name,
        data=data.summary(),
        seed=config.seed,
        config=config.to_dict(),
        sigma=model.sigma,
        selection={
            "rule": config.selection,
            "epochs": chosen,
            "optimistic": config.selection == "best_test",
            "note": SELECTION_NOTES[config.selection].format(fold=config.val_fold),
        },
        czsl={clf: by_epoch[e]["eval"]["czsl"][clf] for clf, e in chosen.items()},
        gzsl={clf: by_epoch[e]["eval"]["gzsl"][clf] for clf, e in chosen.items()},
        history=history,
        val_history=val_history,
        timings={
            "train_seconds": sum(r["train_seconds"] for r in history),
            "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in history),
            "total_seconds": time.perf_counter() - t_start,
        },
        environment={"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
                     "threads": torch.get_num_threads(), "precision": precision.to_dict(),
                     "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                     **({"cuda_graphs": cuda_graphs} if dev.type == "cuda" else {}),
                     **({"runs_together": together} if together > 1 else {})},
        collapse=collapse_summary(history),
        immd_kernel={"scales": list(model.kernel_scales),
                     "bounds": list(model.immd_bounds) if model.immd_bounds is not None else None,
                     "margin": model.immd_margin},
    )
    result.write(out)
    c = result.collapse
    if c["collapsed"] or c["scattered"]:
        what, since = (("collapsed", f"first below {COLLAPSED_SPREAD_RATIO:g} at epoch {c['first_epoch_below']}")
                       if c["collapsed"] else
                       ("scattered", f"first above {SCATTERED_SPREAD_RATIO:g} at epoch {c['first_epoch_above']}"))
        warnings.warn(
            f"{data.name}, seed {config.seed}: the generated unseen features {what} (final spread_ratio "
            f"{c['final_spread_ratio']:.3g}, {since}): IZF-Softmax is trained on unseen classes unlike any real "
            f"class; see {out / RESULTS_FILE} 'collapse' and the per-epoch 'gen' and k_* records",
            CollapseWarning, stacklevel=4)
    for clf, side in result.one_sided().items():
        gz = result.gzsl[clf]
        warnings.warn(
            f"{data.name}, seed {config.seed}: {CLASSIFIER_NAMES.get(clf, clf)} recognises no "
            f"{'unseen' if side == 'seen' else 'seen'} test image in GZSL (U {gz['U']:.1f}, S {gz['S']:.1f}): every "
            f"GZSL prediction falls on the {side} side", OneSidedWarning, stacklevel=4)
    return result
