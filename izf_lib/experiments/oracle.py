"""The oracle check: data drawn from a known IZF model, so the best possible accuracy is computable.

A fixed random invertible flow f* and class attributes a_y define the model exactly as IZF
assumes it: v = f*^{-1}([a_y + sigma * eps, z_f]) with eps, z_f ~ N(0, I). The Bayes-optimal
classifier (equal priors) is then argmax_y log p*(v|y) = argmin_y ||c*(v) - a_y||, with
c*(v) the first d_a outputs of f*: the z_f and log-det terms do not depend on y. An IZF
trained on the seen classes should classify the unseen ones nearly as well, and its held-out
log-likelihood should approach the true one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import IZFConfig
from ..data import ZSLData
from ..density import conditional_log_prob
from ..experiment import fit
from ..flows import IZFFlow, split_z
from ..metrics import czsl_t1, gzsl_scores
from ..rng import STREAM_ORACLE, make_generator, randomise_parameters_
from .grid import Call, gather_json_rows, run_jobs, write_json_atomic

__all__ = ["OracleProblem", "make_oracle", "bayes_predict", "true_log_prob", "oracle_config", "run_oracle",
           "ORACLE_OBJECTIVES", "run_oracle_grid",
           "oracle_grid_calls", "write_oracle_csv"]


@dataclass
class OracleProblem:
    """A zero-shot benchmark sampled from a known IZF model: the data, the true flow f* and sigma."""

    data: ZSLData
    flow: IZFFlow
    sigma: float


@torch.no_grad()
def make_oracle(seed: int, n_classes: int = 12, n_unseen: int = 3, d_a: int = 4, d_v: int = 8,
                sigma: float = 0.15, n_train: int = 300, n_test: int = 200, blocks: int = 2, hidden: int = 16,
                weight_std: float = 0.3) -> OracleProblem:
    """Draw f* (``blocks`` couplings with N(0, weight_std^2) weights), attributes U(0, 1)^d_a and the samples.

    Seen classes get ``n_train`` trainval and ``n_test`` test_seen samples each, unseen classes
    ``n_test`` test_unseen samples each. Every draw comes from ``seed``'s oracle stream.
    """
    if not 0 < n_unseen < n_classes or not 0 < d_a < d_v:
        raise ValueError(f"need 0 < n_unseen < n_classes and 0 < d_a < d_v, got {n_unseen}, {n_classes}, {d_a}, {d_v}")
    gen = make_generator(seed, STREAM_ORACLE)
    flow = IZFFlow(d_v, blocks, hidden, clamp=2.0, seed=seed)
    randomise_parameters_(flow, weight_std, gen)
    att = torch.rand(n_classes, d_a, generator=gen)
    unseen = torch.sort(torch.randperm(n_classes, generator=gen)[:n_unseen]).values
    seen = torch.tensor([k for k in range(n_classes) if k not in set(unseen.tolist())])

    def sample(classes: Tensor, n: int) -> tuple[Tensor, Tensor]:
        y = classes.repeat_interleave(n)
        c = att[y] + sigma * torch.randn(len(y), d_a, generator=gen)
        z_f = torch.randn(len(y), d_v - d_a, generator=gen)
        return flow.inverse(torch.cat([c, z_f], 1)), y

    v_tr, y_tr = sample(seen, n_train)
    v_ts, y_ts = sample(seen, n_test)
    v_tu, y_tu = sample(unseen, n_test)
    data = ZSLData(name=f"ORACLE{seed}", v_trainval=v_tr, y_trainval=y_tr, v_test_seen=v_ts, y_test_seen=y_ts,
                   v_test_unseen=v_tu, y_test_unseen=y_tu, att=att, seen=seen, unseen=unseen,
                   class_names=[f"class_{k}" for k in range(n_classes)], source="izf_lib.experiments.oracle",
                   feature_scaling="none")
    return OracleProblem(data, flow, sigma)


@torch.no_grad()
def bayes_predict(problem: OracleProblem, v: Tensor, classes: Tensor) -> Tensor:
    """The Bayes-optimal prediction among ``classes`` (equal priors): the nearest a_y to c*(v)."""
    c, _ = split_z(problem.flow(v)[0], problem.data.d_a)
    return classes[torch.cdist(c, problem.data.att[classes]).argmin(1)]


@torch.no_grad()
def true_log_prob(problem: OracleProblem, v: Tensor, y: Tensor) -> Tensor:
    """log p*(v|y) under the true model (change of variables through f*); shape (B,)."""
    return conditional_log_prob(problem.flow, v, problem.data.att[y], problem.sigma)


ORACLE_OBJECTIVES: dict[str, dict[str, float]] = {
    "likelihood only": {"lambda_c": 0.0, "lambda_immd": 0.0},  # the objective the oracle's model is the MLE of
    "full objective": {"lambda_c": IZFConfig.lambda_c, "lambda_immd": IZFConfig.lambda_immd},  # the defaults' weights
}


def oracle_config(seed: int, sigma: float, **overrides: Any) -> IZFConfig:
    """IZF for the oracle data (ours): sigma known, small sub-networks, no feature scaling, likelihood only.

    40 epochs of batches of 64 (about 1700 steps) bring the held-out log-likelihood within a
    few tenths of a nat per dimension of the truth; the softmax gets a larger step size than the
    defaults because these features are unscaled.
    """
    base = {"n_blocks": 3, "hidden": 64, "sigma": sigma, "epochs": 40, "eval_every": 0, "lr": 2e-3,
            "batch_size": 64, "dequant": 0.0, "softmax_steps": 1000, "softmax_lr": 1e-2,
            "feature_scaling": "none", "seed": seed, **ORACLE_OBJECTIVES["likelihood only"]}
    return IZFConfig.from_dict({**base, **overrides})


def run_oracle(seed: int, device: str = "cpu", problem_kwargs: dict[str, Any] | None = None,
               **config_overrides: Any) -> dict[str, Any]:
    """Train IZF on one oracle problem's seen classes; Bayes vs learned accuracy and log-likelihood.

    Returns per-classifier CZSL T1 and GZSL H beside the Bayes classifier's, and the mean
    held-out log p(v|y) per dimension under the true and the learned model (test_unseen and
    test_seen images; never used in training).
    """
    problem = make_oracle(seed, **(problem_kwargs or {}))
    data = problem.data
    config = oracle_config(seed, problem.sigma, **config_overrides)
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(data, config, tmp, device=device, progress=False)
        from ..train import load_checkpoint

        model, _, _ = load_checkpoint(f"{tmp}/checkpoint.pt", "cpu")
    both = torch.cat([data.seen, data.unseen])
    bayes_t1 = 100 * czsl_t1(data.y_test_unseen, bayes_predict(problem, data.v_test_unseen, data.unseen))
    bayes_g = gzsl_scores(data.y_test_seen, bayes_predict(problem, data.v_test_seen, both),
                          data.y_test_unseen, bayes_predict(problem, data.v_test_unseen, both))
    with torch.no_grad():
        learned = {part: float(model.log_prob(v, y).mean()) / data.d_v
                   for part, v, y in (("unseen", data.v_test_unseen, data.y_test_unseen),
                                      ("seen", data.v_test_seen, data.y_test_seen))}
    true = {part: float(true_log_prob(problem, v, y).mean()) / data.d_v
            for part, v, y in (("unseen", data.v_test_unseen, data.y_test_unseen),
                               ("seen", data.v_test_seen, data.y_test_seen))}
    out: dict[str, Any] = {"seed": seed, "bayes_T1": bayes_t1, "bayes_H": 100 * bayes_g["H"]}
    for clf in ("nbc", "softmax"):
        out[f"{clf}_T1"], out[f"{clf}_H"] = res.czsl[clf]["T1"], res.gzsl[clf]["H"]
    for part in ("unseen", "seen"):
        out[f"true_ll_{part}"], out[f"learned_ll_{part}"] = true[part], learned[part]
    out["chance_T1"] = 100.0 / len(data.unseen)
    return out


def _oracle_job(job: tuple[str, int, str]) -> str:
    objective, seed, out_dir = job
    row = {"objective": objective, **run_oracle(seed, **ORACLE_OBJECTIVES[objective])}
    name = f"{objective.replace(' ', '_')}_seed{seed}"
    write_json_atomic(Path(out_dir) / f"{name}.json", row)
    return name


def run_oracle_grid(out_dir: str | Path, seeds: Iterable[int], objectives: Sequence[str] = tuple(ORACLE_OBJECTIVES),
                    jobs: int = 1, progress: bool = True) -> Path:
    """:func:`run_oracle` for every objective and seed not yet in ``out_dir``; writes ``oracle_runs.csv``."""
    run_jobs(oracle_grid_calls(out_dir, seeds, objectives), jobs, desc="oracle runs", progress=progress)
    return write_oracle_csv(out_dir)


def oracle_grid_calls(out_dir: str | Path, seeds: Iterable[int],
                      objectives: Sequence[str] = tuple(ORACLE_OBJECTIVES)) -> list[Call]:
    """The oracle runs not yet done in ``out_dir``, as calls for :func:`~izf_lib.experiments.grid.run_jobs`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [(_oracle_job, (o, int(s), str(out))) for o in objectives for s in seeds
            if not (out / f"{o.replace(' ', '_')}_seed{int(s)}.json").exists()]


def write_oracle_csv(out_dir: str | Path) -> Path:
    """Gather the oracle runs in ``out_dir`` into ``oracle_runs.csv``."""
    return gather_json_rows(Path(out_dir), "oracle_runs.csv", key=lambda r: (r["objective"], r["seed"]))
