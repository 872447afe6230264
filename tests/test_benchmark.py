"""DIGITS splits, the simple ZSL baselines and the results collector."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from izf_lib.data import TrainSplit, load_xlsa17
from izf_lib.experiments.digits_splits import digit_splits, score_baseline
from izf_lib.experiments.zsl_baselines import BASELINES, ESZSL, AttributeRidge, GaussianGenerator
from izf_lib.results import BENCHMARK_COLUMNS, collect


def test_digit_splits_cover_all_combinations_and_subsets() -> None:
    splits = digit_splits(3)
    assert len(splits) == 120 and len(set(splits)) == 120 and splits[0] == (0, 1, 2)
    sub = digit_splits(3, limit=8)
    assert len(sub) == 8 and set(sub) <= set(splits) and sub == digit_splits(3, limit=8)
    assert digit_splits(3, limit=0) == []  # chapter 08 with n_splits 0: the default split alone
    with pytest.raises(ValueError, match="limit must be >= 0"):
        digit_splits(3, limit=-1)


def _separable_split() -> TrainSplit:
    """Classes whose feature means are a linear map of their attributes: every baseline can transfer."""
    gen = torch.Generator().manual_seed(0)
    att = torch.rand(8, 4, generator=gen)
    proj = torch.randn(4, 20, generator=gen)
    y = torch.arange(6).repeat_interleave(40)
    v = att[y] @ proj + 0.05 * torch.randn(len(y), 20, generator=gen)
    return TrainSplit(v, y, att, torch.arange(6), torch.tensor([6, 7])), proj


@pytest.mark.parametrize("cls", [AttributeRidge, ESZSL, pytest.param(GaussianGenerator, marks=pytest.mark.slow)])
def test_baselines_recognise_unseen_classes_on_linear_data(cls) -> None:
    split, proj = _separable_split()
    model = cls().fit(split)
    v_u = split.att[torch.tensor([6, 7])].repeat_interleave(20, 0) @ proj
    y_u = torch.tensor([6, 7]).repeat_interleave(20)
    acc = (model.predict(v_u, split.unseen) == y_u).float().mean().item()
    assert acc > 0.9, acc


@pytest.mark.slow
def test_score_baseline_on_digits(tmp_path: Path) -> None:
    from izf_lib.prepare import prepare_digits

    prepare_digits(tmp_path)
    data = load_xlsa17("DIGITS", tmp_path)
    scores = score_baseline(AttributeRidge().fit(data.train_split()), data)
    assert set(scores) == {"T1", "U", "S", "H"}
    assert scores["T1"] > 100 / 3  # above chance on the unseen digits
    assert set(BASELINES) == {"ridge + nearest attribute", "ESZSL", "Gaussian generator + softmax"}


def test_collect_gathers_runs_and_splits(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = {"dataset": "X", "seed": 2, "config": {"epochs": 5},
           "selection": {"rule": "final", "epochs": {"nbc": 5}},
           "czsl": {"nbc": {"T1": 50.0}}, "gzsl": {"nbc": {"U": 10.0, "S": 90.0, "H": 18.0}},
           "environment": {"device": "cpu"}, "data": {}, "sigma": 0.1, "history": [], "val_history": None,
           "timings": {}}
    (runs / "X" / "seed2").mkdir(parents=True)
    (runs / "X" / "seed2" / "results.json").write_text(json.dumps(res))
    (runs / "digits_splits").mkdir()
    (runs / "digits_splits" / "d.csv").write_text("split,seed,method,T1,U,S,H\n3-6-9,0,ESZSL,1,2,3,4\n")
    m = collect(runs, tmp_path / "results", {"quick": True})
    assert m["benchmark_rows"] == 1 and m["digits_split_rows"] == 1
    rows = list(csv.DictReader((tmp_path / "results" / "benchmark_runs.csv").open()))
    assert list(rows[0]) == BENCHMARK_COLUMNS
    assert rows[0]["dataset"] == "X" and float(rows[0]["H"]) == 18.0 and rows[0]["selection"] == "final"
    assert json.loads((tmp_path / "results" / "manifest.json").read_text())["quick"] is True
    assert m["flagged"] == []


def test_flagged_rows_name_collapsed_and_one_sided_runs() -> None:
    from izf_lib.results import flagged_rows

    base = {"dataset": "SUN", "seed": 0, "T1": 50.0, "H": 0.0, "collapsed": "", "scattered": ""}
    rows = [{**base, "classifier": "nbc", "U": 40.0, "S": 60.0, "H": 48.0},
            {**base, "classifier": "softmax", "U": 0.0, "S": 80.9},
            {**base, "seed": 1, "classifier": "softmax", "U": 55.0, "S": 70.0, "collapsed": "True"},
            {**base, "seed": 2, "classifier": "softmax", "U": 0.0, "S": 0.0}]  # nothing right: not one-sided
    assert flagged_rows(rows) == [
        "SUN seed 0 IZF-Softmax: one-sided (every GZSL prediction seen: U 0.0, S 80.9)",
        "SUN seed 1 IZF-Softmax: collapsed",
    ]


def test_upsert_replaces_same_key_and_keeps_others(tmp_path: Path) -> None:
    from izf_lib.results import upsert_benchmark_rows

    base = {"selection": "final", "epoch": 5, "T1": 1.0, "U": 2.0, "S": 3.0, "H": 2.4, "epochs": 5,
            "quick": True, "device": "cpu"}
    upsert_benchmark_rows(tmp_path, [{"dataset": "D", "seed": 0, "classifier": "nbc", **base},
                                     {"dataset": "D", "seed": 1, "classifier": "nbc", **base}])
    upsert_benchmark_rows(tmp_path, [{"dataset": "D", "seed": 1, "classifier": "nbc", **base, "H": 9.5}])
    rows = list(csv.DictReader((tmp_path / "benchmark_runs.csv").open()))
    assert [(r["seed"], float(r["H"])) for r in rows] == [("0", 2.4), ("1", 9.5)]
