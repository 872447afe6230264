"""The toy experiment of supplementary section 4.1 (Listing 1.1) and its measurements.

Four classes in 2-D with attributes (0,1), (0,0), (1,0) seen and (1,1) unseen; samples are
2a - 1 + N(0, (1/3)^2 I). Every generator is trained on the seen classes only and asked to
produce the unseen class from its attributes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import IZFConfig
from ..losses import mmd2
from ..model import IZF
from ..rng import STREAM_TOY_DATA, STREAM_TOY_HELDOUT, STREAM_TOY_SAMPLES, STREAM_TRAIN, make_generator, stream_seed
from .grid import Call, gather_json_rows, run_jobs, write_json_atomic

__all__ = ["ToyReader", "TOY_ATT", "UNSEEN_CENTRE", "TOY_SIGMA", "NEAR_K", "NEAR_SHARE_TRUE",
           "DIVERGED_CENTRE_ERROR", "COLLAPSED_SPREAD", "TOY_METRICS", "FULL_ITERATIONS", "FULL_SEEDS",
           "train_toy_izf", "toy_metrics", "run_status", "run_toy", "run_toy_grid", "toy_grid_calls",
           "write_toy_csv", "read_toy_grid"]

TOY_ATT = np.asarray([[0, 1], [0, 0], [1, 0], [1, 1]], dtype=np.float32)  # classes 0-2 seen, 3 unseen
UNSEEN_CENTRE = (1.0, 1.0)  # 2 * (1, 1) - 1
TOY_SIGMA = 1.0 / 3.0       # Listing 1.1: per-axis noise std of every class
NEAR_K = 2.0                # ours: "near (1, 1)" means within NEAR_K * TOY_SIGMA of it (Euclidean)
NEAR_SHARE_TRUE = 1.0 - math.exp(-NEAR_K**2 / 2)  # share of true unseen samples that are near (1, 1): 0.865
FULL_ITERATIONS = 2000      # ours: the supplementary gives no iteration count (5x the quick setting of the chapter)
FULL_SEEDS = 10             # ours: runs per model and beta in the stored full setting
TOY_METRICS = ("centre_error", "near_share", "mmd", "spread")
DIVERGED_CENTRE_ERROR = 3.0  # ours: a generated mean 3 units from (1, 1) lies outside all the data
COLLAPSED_SPREAD = 0.05      # ours: per-axis std below 0.05 (true 1/3) is a collapsed generator


class ToyReader:
    """Listing 1.1 of the supplementary, faithfully, with its bugs fixed.

    ``get_batch_tensor(part)`` returns, in the listing's order, ``[feat, label, label_emb,
    s_cls, u_cls, cls_emb, s_cls_emb, u_cls_emb]``: for ``part`` 'training' or 'seen' a batch
    with ``batch_size // 3`` samples of each seen class, for 'unseen' ``batch_size`` samples of
    the unseen class; features are zero-padded to 4-D when ``padding`` is set.

    Fixes: (1) the listing asserts ``self.batch_size % 12 == 0`` before ``batch_size`` is ever
    set (an AttributeError); here it is a constructor argument, checked after it is set.
    (2) ``super().__init__(**kwargs)`` on ``object`` raises for any keyword; dropped.
    (3) it draws from NumPy's global random state; here from a seeded generator, so runs
    repeat exactly. (4) device is an argument instead of a module-level global.
    """

    content = ["feat", "label", "label_emb", "s_cls", "u_cls", "cls_emb", "s_cls_emb", "u_cls_emb"]
    parts = ["training", "seen", "unseen"]

    def __init__(self, batch_size: int = 120, padding: bool = True, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.batch_size = int(batch_size)
        if self.batch_size % 12 != 0 or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive multiple of 12, got {batch_size}")
        self.padding = padding
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.seen_emb = TOY_ATT[:3]
        self.unseen_emb = TOY_ATT[3:]
        self.seen_cls_num = self.seen_emb.shape[0]
        self.unseen_cls_num = self.unseen_emb.shape[0]

    def get_batch_tensor(self, part: str = "training") -> list[Tensor]:
        """One batch of ``part`` as float32 tensors on the reader's device (see the class docstring)."""
        if part not in self.parts:
            raise ValueError(f"part must be one of {self.parts}, got '{part}'")
        b = self.batch_size
        seen_centers = np.repeat(self.seen_emb, b // self.seen_cls_num, axis=0)
        unseen_centers = np.repeat(self.unseen_emb, b // self.unseen_cls_num, axis=0)
        seen_labels = np.repeat(np.asarray([0, 1, 2], dtype=np.float32), b // self.seen_cls_num, axis=0)
        unseen_labels = np.repeat(np.asarray([3], dtype=np.float32), b // self.unseen_cls_num, axis=0)
        gaussian_sample_1 = self.rng.standard_normal((b, 2)) / 3
        gaussian_sample_2 = self.rng.standard_normal((b, 2)) / 3
        seen_samples = seen_centers * 2 - 1 + gaussian_sample_1
        unseen_samples = unseen_centers * 2 - 1 + gaussian_sample_2
        if self.padding:
            pad = np.zeros([b, 2], np.float32)
            seen_samples = np.concatenate([seen_samples, pad], axis=1)
            unseen_samples = np.concatenate([unseen_samples, pad], axis=1)
        common = [np.asarray([0, 1, 2]), np.asarray([3]), np.concatenate([self.seen_emb, self.unseen_emb], axis=0),
                  self.seen_emb, self.unseen_emb]
        if part == "unseen":
            feed = [unseen_samples, unseen_labels, unseen_centers, *common]
        else:
            feed = [seen_samples, seen_labels, seen_centers, *common]
        return [torch.tensor(np.asarray(x), dtype=torch.float32, device=self.device) for x in feed]


def toy_izf_config(seed: int, lambda_immd: float = 0.1) -> IZFConfig:
    """IZF on the 4-D padded toy data (c = 2 dims, z_f = 2 dims): small sub-networks, no dequantisation."""
    return IZFConfig(n_blocks=5, hidden=64, lr=1e-3, weight_decay=0.0, dequant=0.0, grad_clip=10.0,
                     lambda_immd=lambda_immd, seed=seed, batch_size=120,
                     immd_form="neg_mmd2_biased", mmd_scale_basis="fixed",  # the -MMD^2 of the toy code
                     lc_reduction="sum", lambda_c=1.0)  # and its L_C


def train_toy_izf(reader: ToyReader, iterations: int, lambda_immd: float = 0.1,
                  seed: int = 0) -> tuple[IZF, list[float]]:
    """Train IZF on seen toy batches; returns the model and the loss per iteration (NaN stops training).

    Weights come from ``seed``'s initialisation stream, the iMMD batches from its training stream.
    """
    cfg = toy_izf_config(seed, lambda_immd)
    model = IZF(torch.from_numpy(TOY_ATT), d_v=4, config=cfg).to(reader.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = make_generator(seed, STREAM_TRAIN, device=reader.device)
    unseen = torch.tensor([3], device=reader.device)
    losses: list[float] = []
    for _ in range(iterations):
        feat, label, *_ = reader.get_batch_tensor("training")
        out = model.objective(feat, label.long(), unseen, gen)
        if not torch.isfinite(out["loss"]):
            losses.append(float("nan"))
            break
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(out["loss"].detach()))
    return model, losses


def toy_metrics(generated: Tensor, true_unseen: Tensor) -> dict[str, float]:
    """Measured quality of generated unseen samples (2-D) against held-out true unseen samples.

    ``centre_error``: distance from the generated mean to (1, 1). ``near_share``: the share of
    generated samples within ``NEAR_K`` sigma of (1, 1); true samples score ``NEAR_SHARE_TRUE``
    and a diverged generator scores near 0. ``mmd``: biased MMD^2 (IMQ) to the true unseen
    samples. ``spread``: mean per-axis std of the generated samples (true 1/3; near 0 = collapse).
    """
    g = generated[:, :2].double()
    if not torch.isfinite(g).all():
        return {"centre_error": math.inf, "near_share": 0.0, "mmd": math.inf, "spread": math.nan}
    centre = torch.tensor(UNSEEN_CENTRE, dtype=torch.float64)
    return {
        "centre_error": float((g.mean(0) - centre).norm()),
        "near_share": float(((g - centre).norm(dim=1) <= NEAR_K * TOY_SIGMA).double().mean()),
        "mmd": float(mmd2(g, true_unseen[:, :2].double())),
        "spread": float(g.std(0).mean()),
    }


def run_status(diverged: bool, metrics: dict[str, float]) -> str:
    """'diverged' (non-finite loss or samples, or centre error > 3), 'collapsed' (spread < 0.05) or 'ok'."""
    if diverged or not math.isfinite(metrics["centre_error"]) or metrics["centre_error"] > DIVERGED_CENTRE_ERROR:
        return "diverged"
    if metrics["spread"] < COLLAPSED_SPREAD:
        return "collapsed"
    return "ok"


def run_toy(model_name: str, seed: int, iterations: int, beta: float = 0.1, n_eval: int = 600,
            device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train one generator ('IZF', 'CGAN' or 'CVAE') with iMMD weight ``beta`` and measure it.

    Returns the metrics, the loss curve, whether training diverged, and the samples for plotting.
    """
    from .toy_baselines import train_cgan, train_cvae

    dev = torch.device(device)
    reader = ToyReader(batch_size=120, padding=(model_name == "IZF"), seed=stream_seed(seed, STREAM_TOY_DATA),
                       device=dev)
    gen = make_generator(seed, STREAM_TOY_SAMPLES, device=dev)
    unseen_att = torch.from_numpy(TOY_ATT[3:]).to(dev)
    if model_name == "IZF":
        model, losses = train_toy_izf(reader, iterations, lambda_immd=beta, seed=seed)
        with torch.no_grad():
            generated = model.generate(unseen_att, n_eval, generator=gen)[:, :2]
    elif model_name in ("CGAN", "CVAE"):
        trainer = train_cgan if model_name == "CGAN" else train_cvae
        model, losses = trainer(reader, iterations, beta=beta, seed=seed)
        with torch.no_grad():
            generated = model.generate(unseen_att, n_eval, generator=gen)
    else:
        raise ValueError(f"model_name must be IZF, CGAN or CVAE, got '{model_name}'")
    eval_reader = ToyReader(batch_size=n_eval, padding=False, seed=stream_seed(seed, STREAM_TOY_HELDOUT))
    seen_feat, seen_label, *_ = eval_reader.get_batch_tensor("seen")
    unseen_feat, *_ = eval_reader.get_batch_tensor("unseen")
    diverged = not all(math.isfinite(x) for x in losses) or not torch.isfinite(generated).all().item()
    metrics = toy_metrics(generated.cpu(), unseen_feat)
    return {"model": model_name, "seed": seed, "beta": beta, "iterations": iterations,
            "status": run_status(diverged, metrics), **metrics, "losses": losses,
            "generated": generated.cpu(), "seen": seen_feat, "seen_label": seen_label,
            "unseen": unseen_feat}


def _run_name(model_name: str, beta: float, seed: int) -> str:
    return f"{model_name}_beta{beta:g}_seed{seed}"


def _grid_job(job: tuple[str, float, int, int, str, bool]) -> str:
    """One run of the grid: writes RUN.json (and RUN.npz with its generated samples if asked)."""
    model_name, beta, seed, iterations, out_dir, keep_samples = job
    r = run_toy(model_name, seed, iterations, beta=beta)
    name = _run_name(model_name, beta, seed)
    record = {k: r[k] for k in ("model", "beta", "seed", "iterations", "status", *TOY_METRICS)}
    record["final_loss"] = r["losses"][-1] if r["losses"] else math.nan
    record["steps_run"] = len(r["losses"])
    if keep_samples:
        np.savez_compressed(Path(out_dir) / f"{name}.npz", generated=r["generated"].numpy().astype(np.float32))
    write_json_atomic(Path(out_dir) / f"{name}.json", record)
    return name


def run_toy_grid(out_dir: str | Path, seeds: Iterable[int], iterations: int = FULL_ITERATIONS,
                 models: Sequence[str] = ("IZF", "CGAN", "CVAE"), betas: Sequence[float] = (0.1, 0.0),
                 jobs: int = 1, picture_seed: int | None = None, progress: bool = True) -> Path:
    """Run every (model, beta, seed) not already in ``out_dir`` and write ``out_dir/toy_runs.csv``.

    Resumable: a run whose JSON exists is skipped. Each run is seeded only by its own seed, so
    results do not depend on ``jobs`` or on the order of runs. ``picture_seed``'s generated
    samples are kept (``.npz``) for the chapter's figures.
    """
    calls = toy_grid_calls(out_dir, seeds, iterations, models, betas, picture_seed)
    run_jobs(calls, jobs, desc="toy runs", progress=progress)
    return write_toy_csv(out_dir)


def toy_grid_calls(out_dir: str | Path, seeds: Iterable[int], iterations: int = FULL_ITERATIONS,
                   models: Sequence[str] = ("IZF", "CGAN", "CVAE"), betas: Sequence[float] = (0.1, 0.0),
                   picture_seed: int | None = None) -> list[Call]:
    """The grid's runs not yet done in ``out_dir``, as calls for :func:`~izf_lib.experiments.grid.run_jobs`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    return [(_grid_job, (m, float(b), s, int(iterations), str(out), s == picture_seed))
            for m in models for b in betas for s in seeds
            if not (out / f"{_run_name(m, float(b), s)}.json").exists()]  # IZF first: the longest runs


def write_toy_csv(out_dir: str | Path) -> Path:
    """Gather the runs' JSON files in ``out_dir`` into ``toy_runs.csv`` (sorted by beta, model, seed)."""
    return gather_json_rows(Path(out_dir), "toy_runs.csv", key=lambda r: (-r["beta"], r["model"], r["seed"]))


def read_toy_grid(out_dir: str | Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The stored grid: its table (a DataFrame) and the kept samples by run name."""
    import pandas as pd

    out = Path(out_dir)
    csv = out / "toy_runs.csv"
    if not csv.exists():
        raise FileNotFoundError(f"{csv} not found: run `python -m izf_lib toy --out {out}` first")
    table = pd.read_csv(csv)
    missing = {"model", "beta", "seed", "status", *TOY_METRICS} - set(table.columns)
    if missing:
        raise ValueError(f"{csv}: missing columns {sorted(missing)}")
    samples = {p.stem: np.load(p)["generated"] for p in sorted(out.glob("*.npz"))}
    return table, samples
