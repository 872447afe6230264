"""Where a generator puts the unseen classes: the measurement behind "why IZF does not win on DIGITS".

A generative zero-shot classifier can only be as good as the features it generates for the
unseen classes. After training, each class's *generated mean* is compared with its *real mean*
(the class mean of its test images, read here after training for this diagnosis only, as scoring
reads them):

- ``error``: the distance between the two means, divided by the median distance between two
  real class means (0: on target; 1: as far off as a typical other class);
- ``placed``: the generated mean lies nearer to its own class's real mean than to any other
  class's (among all classes, and among the unseen classes only: the CZSL case).

For IZF the generated mean averages ``n`` features f^{-1}([a_y, z_f]); for the Gaussian generator
it is its ridge-regression mean (its features are that mean plus Gaussian noise). The same
measures on the seen classes say how well each generator fits the classes it was trained on.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import IZFConfig
from ..data import ZSLData
from ..experiment import fit
from ..model import IZF
from ..rng import STREAM_DIAGNOSIS, make_generator
from ..train import load_checkpoint
from .digits_splits import digits_split_data, izf_columns, score_baseline, split_name
from .grid import Call, gather_json_rows, run_jobs, write_json_atomic
from .zsl_baselines import GaussianGenerator

__all__ = ["N_GENERATED", "real_class_means", "placement", "izf_class_means", "diagnose", "run_diagnosis",
           "diagnosis_calls", "write_diagnosis_csv"]

N_GENERATED = 200  # generated features per class, as the Gaussian generator's softmax uses


def real_class_means(data: ZSLData) -> tuple[Tensor, Tensor]:
    """Every class (seen, then unseen) and the mean of its test images (C, d_v)."""
    classes = torch.cat([data.seen, data.unseen])
    v = torch.cat([data.v_test_seen, data.v_test_unseen]).double()
    y = torch.cat([data.y_test_seen, data.y_test_unseen])
    return classes, torch.stack([v[y == k].mean(0) for k in classes.tolist()])


def placement(gen_means: Tensor, classes: Tensor, real_means: Tensor, real_classes: Tensor,
              candidates: Tensor | None = None) -> dict[str, float]:
    """Mean ``error`` and share ``placed`` of the generated means (K, d) of ``classes`` (K,).

    ``real_means`` (C, d) belong to ``real_classes`` (C,); a generated mean is placed when its
    nearest real mean among ``candidates`` (default: all classes) is its own class's.
    """
    real_means, gen_means = real_means.double(), gen_means.double()
    match = classes[:, None] == real_classes[None, :]
    if not bool(match.any(1).all()):
        raise ValueError(f"classes {classes.tolist()} are not all among the real classes {real_classes.tolist()}")
    pos = match.int().argmax(1)
    pairwise = torch.cdist(real_means, real_means)
    scale = pairwise[~torch.eye(len(real_classes), dtype=torch.bool)].median()
    error = (gen_means - real_means[pos]).norm(dim=1) / scale
    cand = torch.arange(len(real_classes)) if candidates is None else \
        torch.nonzero(torch.isin(real_classes, candidates)).flatten()
    nearest = cand[torch.cdist(gen_means, real_means[cand]).argmin(1)]
    return {"error": float(error.mean()), "placed": float((nearest == pos).double().mean())}


@torch.no_grad()
def izf_class_means(model: IZF, classes: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """The mean of ``n`` generated features f^{-1}([a_y, z_f]) for each class in ``classes``: (K, d_v)."""
    model.eval()
    v = model.generate(model.att[classes], n, generator)
    return v.double().view(len(classes), n, -1).mean(1)


def diagnose(model: IZF, gauss: GaussianGenerator, data: ZSLData, seed: int,
             n: int = N_GENERATED) -> dict[str, float]:
    """Placement of IZF's and the Gaussian generator's class means, unseen and seen, in one flat record."""
    real_classes, real_means = real_class_means(data)
    gen = make_generator(seed, STREAM_DIAGNOSIS)
    out: dict[str, float] = {}
    for part, classes in (("unseen", data.unseen), ("seen", data.seen)):
        means = {"IZF": izf_class_means(model, classes, n, gen),
                 "Gaussian": gauss.class_means(data.att[classes])}
        for name, m in means.items():
            p = placement(m, classes, real_means, real_classes)
            out[f"{name} {part} error"], out[f"{name} {part} placed"] = p["error"], p["placed"]
            if part == "unseen":
                out[f"{name} unseen placed among unseen"] = placement(m, classes, real_means, real_classes,
                                                                      candidates=data.unseen)["placed"]
    return out


def _diagnosis_job(job: tuple[tuple[int, ...], int, str, str, dict[str, Any]]) -> str:
    unseen, seed, preset, out_dir, overrides = job
    config = IZFConfig.preset(preset, eval_every=0, seed=seed, **overrides)
    name = f"{split_name(unseen)}_seed{seed}"
    data = digits_split_data(unseen, config.feature_scaling)
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(data, config, Path(tmp) / "run", device="cpu", progress=False)
        model, _, _ = load_checkpoint(Path(tmp) / "run" / "checkpoint.pt", "cpu")
    gauss = GaussianGenerator(seed=seed).fit(data.train_split())
    record: dict[str, Any] = {"split": split_name(unseen), "seed": seed, "preset": preset, "epochs": config.epochs,
                              **({"overrides": json.dumps(overrides, sort_keys=True)} if overrides else {}),
                              **izf_columns(res)}
    record.update({f"Gaussian {k}": v for k, v in score_baseline(gauss, data).items()})
    record.update(diagnose(model, gauss, data, seed))
    write_json_atomic(Path(out_dir) / f"{name}.json", record)
    return name


def diagnosis_calls(out_dir: str | Path, splits: Iterable[Sequence[int]], seeds: Iterable[int],
                    preset: str = "quick", overrides: dict[str, Any] | None = None) -> list[Call]:
    """The (split, seed) runs not yet in ``out_dir``, as calls for :func:`~izf_lib.experiments.grid.run_jobs`.

    ``overrides`` change IZF's settings on top of ``preset`` (one folder per setting).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    IZFConfig.preset(preset, **overrides)  # an unknown setting fails here, not in a worker
    seeds = list(seeds)
    return [(_diagnosis_job, (tuple(s), int(k), preset, str(out), overrides)) for s in splits for k in seeds
            if not (out / f"{split_name(s)}_seed{int(k)}.json").exists()]


def run_diagnosis(out_dir: str | Path, splits: Iterable[Sequence[int]], seeds: Iterable[int], preset: str = "quick",
                  jobs: int = 1, progress: bool = True, overrides: dict[str, Any] | None = None) -> Path:
    """IZF (``preset`` + ``overrides``) and the Gaussian generator per split and seed, scored and diagnosed."""
    run_jobs(diagnosis_calls(out_dir, splits, seeds, preset, overrides), jobs, desc="diagnosis runs",
             progress=progress)
    return write_diagnosis_csv(out_dir)


def write_diagnosis_csv(out_dir: str | Path) -> Path:
    """Gather the runs into ``diagnosis_runs.csv``, one row per split and seed."""
    return gather_json_rows(Path(out_dir), "diagnosis_runs.csv", key=lambda r: (r["split"], r["seed"]))
