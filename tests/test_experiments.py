"""Experiment code behind the ablation chapter: the oracle check, the grids, the stacking curves."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from izf_lib.config import IZFConfig
from izf_lib.data import load_xlsa17
from izf_lib.experiment import fit
from izf_lib.experiments.ablation import stacking_curve
from izf_lib.experiments.digits_splits import config_key, run_digits_grid
from izf_lib.experiments.oracle import bayes_predict, make_oracle, run_oracle
from izf_lib.flows import split_z
from izf_lib.prepare import prepare_digits
from izf_lib.train import load_checkpoint


def test_oracle_samples_follow_the_model_they_were_drawn_from() -> None:
    problem = make_oracle(0, sigma=0.2, n_train=400)
    d = problem.data
    with torch.no_grad():
        c, z_f = split_z(problem.flow(d.v_trainval)[0], d.d_a)
    noise = (c - d.att[d.y_trainval]) / problem.sigma  # should be N(0, I), as z_f
    for x in (noise, z_f):
        assert x.mean(0).abs().max() < 0.1 and (x.std(0) - 1).abs().max() < 0.1
    assert not set(d.unseen.tolist()) & set(d.y_trainval.tolist())
    # the Bayes rule is the nearest attribute in c-space: on the noiseless latent it is always right
    with torch.no_grad():
        clean = problem.flow.inverse(torch.cat([d.att[d.unseen], torch.zeros(len(d.unseen), d.d_v - d.d_a)], 1))
    assert torch.equal(bayes_predict(problem, clean, d.unseen), d.unseen)


@pytest.mark.slow
def test_izf_learns_the_oracle_model_nearly_as_well_as_bayes() -> None:
    """Measured with the stored oracle grid (results/oracle, likelihood only, 40 epochs): on seeds 0 and 1
    IZF-NBC's CZSL T1 was 1.7 and 9.3 points below the Bayes rule and the held-out log-likelihood 0.11
    and 0.45 nats per dimension below the truth; chance is 33.3. (Over seeds 0-9 the largest gap was 26
    points, seed 8, which closes to 2 points with 120 epochs: see the ablation chapter.) The tolerances
    leave a margin over the measurements on the seeds tested here."""
    for seed in (0, 1):
        r = run_oracle(seed)
        assert r["bayes_T1"] - r["nbc_T1"] <= 12.0, r
        assert r["nbc_T1"] >= r["chance_T1"] + 25.0, r
        assert r["true_ll_unseen"] - r["learned_ll_unseen"] <= 0.6, r
        assert r["learned_ll_unseen"] <= r["true_ll_unseen"] + 0.05, r  # cannot beat the true density


def _tiny() -> IZFConfig:
    return IZFConfig(epochs=2, hidden=16, eval_every=0, softmax_steps=20, seed=0)


def test_stacking_curve_passes_through_the_reported_point(tmp_path) -> None:
    prepare_digits(tmp_path)
    data = load_xlsa17("DIGITS", tmp_path)
    res = fit(data, _tiny(), tmp_path / "run", device="cpu", progress=False)
    model, config, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    curves = stacking_curve(model, data, config, res.selection["epochs"]["softmax"])
    for method, reported in (("IZF-Softmax", res.scores("softmax")), ("IZF-NBC", res.scores("nbc"))):
        pts = curves[method]
        # gamma sweeps from every image predicted seen (U = 0) to every image predicted unseen (S = 0)
        assert pts[0]["U"] == 0.0 and pts[-1]["S"] == 0.0 and pts[0]["S"] >= pts[-1]["S"]
        # the unshifted classifier (gamma = 0) is the one scored: U and S lie within the curve's range
        assert min(p["U"] for p in pts) <= reported["U"] <= max(p["U"] for p in pts)
    assert set(curves) == {"IZF-NBC", "IZF-Softmax", "Gaussian generator + softmax"}


@pytest.mark.slow
def test_digits_grid_rows_do_not_depend_on_workers_and_resume(tmp_path) -> None:
    cfg = _tiny()
    a = run_digits_grid([(3, 6, 9), (0, 1, 2)], [0], cfg, tmp_path / "a", jobs=1, progress=False)
    b = run_digits_grid([(3, 6, 9), (0, 1, 2)], [0], cfg, tmp_path / "b", jobs=2, progress=False)
    first = a.read_text()
    assert first == b.read_text()
    rows = list(csv.DictReader(a.open()))
    assert len(rows) == 10 and {r["split"] for r in rows} == {"3-6-9", "0-1-2"}
    assert not any((tmp_path / "a" / "runs").rglob("checkpoint.pt"))  # checkpoints removed unless asked
    (tmp_path / "a" / "rows" / config_key(cfg) / "0-1-2_seed0.csv").unlink()
    again = run_digits_grid([(3, 6, 9), (0, 1, 2)], [0], cfg, tmp_path / "a", progress=False)
    assert again.read_text() == first  # the removed run is redone with the same numbers
    other = IZFConfig.from_dict({**cfg.to_dict(), "hidden": 8})
    assert run_digits_grid([(3, 6, 9)], [0], other, tmp_path / "a", progress=False).read_text() != first  # not reused


def test_fit_warns_of_a_one_sided_gzsl_classifier(tmp_path, monkeypatch) -> None:
    import izf_lib.experiment as experiment

    real = experiment.score_benchmark

    def softmax_sees_no_unseen(*args, **kwargs):  # as a softmax trained on misplaced unseen features scores
        out = real(*args, **kwargs)
        out["gzsl"]["softmax"].update(U=0.0, H=0.0)
        return out

    monkeypatch.setattr(experiment, "score_benchmark", softmax_sees_no_unseen)
    prepare_digits(tmp_path)
    data = load_xlsa17("DIGITS", tmp_path)
    with pytest.warns(experiment.OneSidedWarning, match="IZF-Softmax recognises no unseen test image in GZSL"):
        res = fit(data, _tiny(), tmp_path / "run", device="cpu", progress=False)
    assert res.one_sided() == {"softmax": "seen"}


def test_feature_scaling_and_softmax_balance_are_checked(tmp_path) -> None:
    prepare_digits(tmp_path)
    std = load_xlsa17("DIGITS", tmp_path, feature_scaling="standard")
    assert std.feature_scaling == "standard"
    assert torch.allclose(std.v_trainval.mean(0), torch.zeros(std.d_v), atol=1e-4)
    with pytest.raises(ValueError, match="feature_scaling must be one of"):
        load_xlsa17("DIGITS", tmp_path, feature_scaling="l2")
    with pytest.raises(ValueError, match="softmax_unseen_ratio must be positive"):
        IZFConfig(softmax_unseen_ratio=0.0)
    with pytest.raises(ValueError, match="loaded with feature_scaling 'standard'"):
        fit(std, _tiny(), tmp_path / "run", device="cpu", progress=False)


def test_a_grid_folder_of_another_objective_is_never_resumed_into(tmp_path) -> None:
    from izf_lib.config import IZFConfig
    from izf_lib.experiments.grid import OBJECTIVE_KEYS, claim_folder, read_stamp

    assert read_stamp(tmp_path / "none") is None
    old = tmp_path / "old"
    old.mkdir()
    (old / "run_seed0.json").write_text("{}")  # runs stored before stamps existed: the development form
    assert read_stamp(old) == OBJECTIVE_KEYS
    claim_folder(old, IZFConfig(**OBJECTIVE_KEYS))  # the same objective: resumable, and now stamped
    assert read_stamp(old) == OBJECTIVE_KEYS
    with pytest.raises(ValueError, match="holds runs trained with"):
        claim_folder(old, IZFConfig(immd_form="neg_mmd2_bounded"))
    fresh = tmp_path / "fresh"
    claim_folder(fresh, IZFConfig(immd_form="neg_mmd2_bounded"))
    assert read_stamp(fresh)["immd_form"] == "neg_mmd2_bounded"
    # a stamp written before lc_reduction existed: its runs summed L_C, and are not resumed into by "mean" runs
    older = tmp_path / "older"
    older.mkdir()
    (older / "objective.stamp").write_text('{"immd_form": "neg_mmd2_hinge", "mmd_scale_basis": "fixed"}\n')
    assert read_stamp(older)["lc_reduction"] == "sum"
    claim_folder(older, IZFConfig(immd_form="neg_mmd2_hinge", lc_reduction="sum", lambda_c=1.0))
    with pytest.raises(ValueError, match="holds runs trained with"):
        claim_folder(older, IZFConfig(immd_form="neg_mmd2_hinge", lc_reduction="mean", lambda_c=1.0))
    # nor, lacking lambda_c, by runs of another L_C weight: its runs weighted L_C by 1
    assert read_stamp(older)["lambda_c"] == 1.0
    with pytest.raises(ValueError, match="'lambda_c': 10.0"):
        claim_folder(older, IZFConfig(immd_form="neg_mmd2_hinge", lc_reduction="sum", lambda_c=10.0))


def _form_row(candidate: str, h: float, verdict: str = "ok", setting: str = "s", seed: int = 0) -> dict:
    if verdict == "diverged":
        return {"candidate": candidate, "setting": setting, "seed": seed, "error": "TrainingDivergedError: ..."}
    return {"candidate": candidate, "setting": setting, "seed": seed, "scores": {"softmax": {"H": h}},
            "collapse": {"collapsed": verdict == "collapsed", "scattered": verdict == "scattered"}}


def test_the_immd_form_rule_takes_the_first_sound_form_within_one_standard_error_of_the_best() -> None:
    from izf_lib.experiments.immd_forms import CANDIDATES, DEV, REFERENCE, choose

    names = list(CANDIDATES)
    no_immd = next(iter(REFERENCE))
    rows = [_form_row(DEV, 90.0, "collapsed"), _form_row(DEV, 91.0),             # one unsound run: not eligible
            _form_row(names[1], 50.0), _form_row(names[1], 52.0),                # sound, far below
            _form_row(names[2], 80.0), _form_row(names[2], 90.0),                # sound, mean 85, s.e. 5
            _form_row(names[3], 88.0), _form_row(names[3], 90.0, "diverged"),    # a diverged run: not eligible
            _form_row(names[4], 88.0), _form_row(names[4], 90.0),                # best: mean 89, s.e. 1
            _form_row(no_immd, 99.0), _form_row(no_immd, 99.0)]                  # the reference: never chosen
    choice = choose(rows)
    assert choice["best"] == names[4] and choice["chosen"] == names[4]   # names[2]: 85 < 89 - 1
    table = {t["candidate"]: t for t in choice["table"]}
    assert not table[DEV]["eligible"] and not table[names[3]]["eligible"] and not table[no_immd]["eligible"]
    assert table[names[3]]["verdicts"] == {"diverged": 1, "ok": 1}
    rows += [_form_row(names[2], 88.5), _form_row(names[2], 88.5)]       # now mean 86.75, s.e. 2.1 of 89.0 +- 1.0
    assert choose(rows)["chosen"] == names[4]
    tied = [_form_row(names[1], 88.0), _form_row(names[1], 89.0), _form_row(names[4], 88.0), _form_row(names[4], 90.0)]
    assert choose(tied)["chosen"] == names[1]  # within one s.e. of the best: the fewer departures win
    assert choose([_form_row(DEV, 1.0, "collapsed")])["chosen"] == DEV  # nothing eligible: the dev form stays
    assert choose(tied + [_form_row(names[4], 99.0, seed=1)])["chosen"] == names[1]  # round 2's seeds: not round 1's


def test_round_two_replaces_the_incumbent_only_beyond_one_standard_error_of_the_paired_gain() -> None:
    from izf_lib.experiments.immd_forms import ROUND2, SETTINGS, choose_round2

    inc, (chal,) = "neg_mmd2_bounded, fixed scales", list(ROUND2)
    a, b = list(SETTINGS)

    def rows(gains: list[float], chal_verdict: str = "ok", inc_verdict: str = "ok") -> list[dict]:
        out = []
        for (setting, seed), gain in zip([(a, 0), (a, 1), (b, 0), (b, 1)], gains, strict=True):
            out += [_form_row(inc, 40.0, inc_verdict, setting, seed), _form_row(chal, 40.0 + gain, chal_verdict,
                                                                               setting, seed)]
        return out

    won = choose_round2(rows([10.0, 12.0, 8.0, 10.0]))    # mean gain 10, s.e. 0.8
    assert won["chosen"] == chal and won["table"][0]["pairs"] == 4
    assert won["table"][0]["softmax_H_diff_mean"] == pytest.approx(10.0)
    assert choose_round2(rows([30.0, -20.0, 1.0, -1.0]))["chosen"] == inc  # mean 2.5, s.e. 10.3: noise
    assert choose_round2(rows([10.0, 12.0, 8.0, 10.0], chal_verdict="scattered"))["chosen"] == inc
    assert choose_round2(rows([-5.0, -5.0, -5.0, -5.0], inc_verdict="collapsed"))["chosen"] == chal
    both_bad = choose_round2(rows([10.0, 12.0, 8.0, 10.0], "scattered", "collapsed"))
    assert both_bad["chosen"] == inc and "neither" in both_bad["reason"]
    other = [dict(r, setting="not a choice setting") for r in rows([50.0, 50.0, 50.0, 50.0])]
    assert choose_round2(rows([-1.0, 1.0, -1.0, 1.0]) + other)["table"][0]["pairs"] == 4  # held-out runs: no part


def _scale_record(like: str, seed: int, nbc_t1: float, sm_t1: float, sm_u: float, verdict: str = "ok") -> dict:
    return {"like": like, "scale": 1.0, "seed": seed, "setting": f"{like}-shaped", "objective": {"immd_form": "x"},
            "chance_T1": 10.0, "scores": {"nbc": {"T1": nbc_t1}, "softmax": {"T1": sm_t1, "U": sm_u}},
            "collapse": {"collapsed": verdict == "collapsed", "scattered": verdict == "scattered"}}


def test_the_at_scale_verdict_needs_every_awa1_run_sound_close_to_nbc_and_u_of_50() -> None:
    from izf_lib.experiments.at_scale import verdict

    ok = [_scale_record("AWA1", 0, 95.0, 86.0, 60.0), _scale_record("AWA1", 1, 95.0, 85.0, 50.0),
          _scale_record("CUB", 0, 80.0, 10.0, 0.0)]  # another shape: not judged
    v = verdict(ok)
    assert v["passed"] and len(v["runs"]) == 2
    far = verdict([*ok, _scale_record("AWA1", 2, 95.0, 84.9, 70.0)])
    assert not far["passed"] and "more than 10 below" in far["runs"][-1]["why"]
    low_u = verdict([_scale_record("AWA1", 0, 95.0, 95.0, 49.9)])
    assert not low_u["passed"] and "U 49.9" in low_u["runs"][0]["why"]
    collapsed = verdict([_scale_record("AWA1", 0, 95.0, 95.0, 90.0, "collapsed")])
    assert not collapsed["passed"] and "collapsed" in collapsed["runs"][0]["why"]
    diverged = verdict([{"like": "AWA1", "scale": 1.0, "seed": 0, "error": "TrainingDivergedError"}])
    assert diverged["runs"][0]["why"] == "diverged" and not diverged["passed"]
    assert not verdict([])["passed"]  # no run: nothing shown


def test_other_shapes_need_every_run_sound_and_three_times_chance() -> None:
    from izf_lib.experiments.at_scale import transfer_verdict

    ok = [_scale_record("CUB", 0, 80.0, 30.0, 0.0), _scale_record("AWA1", 0, 95.0, 10.0, 0.0)]  # AWA1: not judged
    v = transfer_verdict(ok, "CUB")
    assert v["passed"] and len(v["runs"]) == 1
    low = transfer_verdict([*ok, _scale_record("CUB", 1, 80.0, 29.9, 0.0)], "CUB")
    assert not low["passed"] and "below 3 x chance" in low["runs"][-1]["why"]
    scattered = transfer_verdict([_scale_record("CUB", 0, 80.0, 90.0, 0.0, "scattered")], "CUB")
    assert not scattered["passed"] and "scattered" in scattered["runs"][0]["why"]
    diverged = transfer_verdict([{"like": "SUN", "scale": 1.0, "seed": 0, "error": "TrainingDivergedError"}], "SUN")
    assert not diverged["passed"] and diverged["runs"][0]["why"] == "diverged"
    assert not transfer_verdict(ok, "SUN")["passed"]  # no SUN run: nothing shown
    assert v["runs"][0]["flags"] == []


def test_a_one_sided_gzsl_classifier_is_flagged_beside_the_bar() -> None:
    from izf_lib.experiments.at_scale import flags, transfer_verdict

    r = _scale_record("SUN", 0, 95.0, 58.0, 0.0)
    r["scores"]["softmax"]["S"] = 80.9
    v = transfer_verdict([r], "SUN")
    assert v["passed"]  # the bar, declared before the runs, is unchanged
    (flag,) = v["runs"][0]["flags"]
    assert flag == flags(r)[0] and flag.startswith("IZF-Softmax recognises no unseen image") and "S 80.9" in flag
    r["scores"]["softmax"]["U"] = 0.1
    assert flags(r) == []


def test_lc_reduction_choice_follows_its_declared_rule() -> None:
    from izf_lib.experiments.at_scale import lc_reduction_choice

    def rec(like: str, seed: int, u: float, h: float, verdict: str = "ok") -> dict:
        r = _scale_record(like, seed, 90.0, 80.0, u, verdict)
        r["scores"]["softmax"].update(S=80.0, H=h)
        return r

    sums = [rec("SUN", 0, 0.0, 0.0), rec("CUB", 0, 80.0, 88.0), rec("AWA1", 0, 98.0, 99.0)]
    mean_ok = [rec("SUN", 0, 60.0, 70.0), rec("CUB", 0, 78.0, 83.5)]
    c = lc_reduction_choice(sums, mean_ok)
    assert c["chosen"] == "mean" and [p["passed"] for p in c["pairs"]] == [True, True]
    # a pair of sum's that is not sound (SUN: one-sided) only needs mean to be sound
    assert c["pairs"][0]["sum_sound"] is False and c["pairs"][0]["mean_sound"] is True
    lower = lc_reduction_choice(sums, [rec("SUN", 0, 60.0, 70.0), rec("CUB", 0, 78.0, 82.9)])
    assert lower["chosen"] == "sum" and "more than 5 below sum's 88.0" in lower["reason"]
    one_sided = lc_reduction_choice(sums, [rec("SUN", 0, 0.0, 0.0), rec("CUB", 0, 80.0, 88.0)])
    assert one_sided["chosen"] == "sum" and "not sound" in one_sided["reason"]
    collapsed = lc_reduction_choice(sums, [rec("SUN", 0, 60.0, 70.0), rec("CUB", 0, 80.0, 88.0, "collapsed")])
    assert collapsed["chosen"] == "sum" and "collapsed" in collapsed["reason"]
    only_sun = lc_reduction_choice(sums, [rec("SUN", 0, 60.0, 70.0)])
    assert only_sun["chosen"] == "sum" and "needs SUN and one other shape" in only_sun["reason"]
    unpaired = lc_reduction_choice(sums, [rec("SUN", 0, 60.0, 70.0), rec("CUB", 1, 80.0, 88.0)])  # no CUB seed 1 sum
    assert unpaired["chosen"] == "sum" and len(unpaired["pairs"]) == 1


def test_lambda_c_choice_follows_its_declared_rule() -> None:
    from izf_lib.experiments.at_scale import LAMBDA_C_CANDIDATE, folder_name, lambda_c_choice

    def rec(like: str, lam: float, nbc_h: float, sm_h: float, u: float = 80.0, verdict: str = "ok") -> dict:
        r = _scale_record(like, 0, 90.0, 80.0, u, verdict)
        r["scores"]["softmax"].update(S=80.0, H=sm_h)
        r["scores"]["nbc"].update(H=nbc_h)
        r["objective"] = {**r.get("objective", {}), "lc_reduction": "mean", "lambda_c": lam}
        return r

    base = [rec("SUN", 1.0, 64.0, 64.0), rec("CUB", 1.0, 72.0, 92.0), rec("AWA1", 1.0, 78.0, 98.0)]
    lam = LAMBDA_C_CANDIDATE
    good = lambda_c_choice(base, [rec("SUN", lam, 70.0, 60.0), rec("CUB", lam, 90.0, 95.0)])
    assert good["chosen"] == lam and good["nbc_gain"] == pytest.approx((6.0 + 18.0) / 2)
    # IZF-Softmax H 5.1 below base's on SUN: fails, even with a large IZF-NBC gain
    softmax_cost = lambda_c_choice(base, [rec("SUN", lam, 70.0, 58.9), rec("CUB", lam, 90.0, 95.0)])
    assert softmax_cost["chosen"] == 1.0 and "IZF-Softmax H 58.9 more than 5 below 64.0" in softmax_cost["reason"]
    nbc_lower = lambda_c_choice(base, [rec("SUN", lam, 63.9, 64.0), rec("CUB", lam, 90.0, 95.0)])
    assert nbc_lower["chosen"] == 1.0 and "IZF-NBC H 63.9 below 64.0" in nbc_lower["reason"]
    small_gain = lambda_c_choice(base, [rec("SUN", lam, 65.0, 64.0), rec("CUB", lam, 75.0, 92.0)])
    assert small_gain["chosen"] == 1.0 and "gained 2.0 on average" in small_gain["reason"]
    one_sided = lambda_c_choice(base, [rec("SUN", lam, 70.0, 0.0, u=0.0), rec("CUB", lam, 90.0, 95.0)])
    assert one_sided["chosen"] == 1.0 and "not sound" in one_sided["reason"]
    no_sun = lambda_c_choice(base, [rec("AWA1", lam, 90.0, 98.0), rec("CUB", lam, 90.0, 95.0)])
    assert no_sun["chosen"] == 1.0 and "needs SUN and one other shape" in no_sun["reason"]
    # runs of another objective are refused, not paired: a record without lambda_c was trained with 1
    unstamped = rec("SUN", lam, 70.0, 60.0)
    del unstamped["objective"]["lambda_c"]
    with pytest.raises(ValueError, match="lambda_c"):
        lambda_c_choice(base, [unstamped, rec("CUB", lam, 90.0, 95.0)])
    assert folder_name(IZFConfig.lc_reduction, IZFConfig.lambda_c) == "at_scale"
    assert folder_name("mean", 10.0) == "at_scale_lambda_c10" and folder_name("sum", 1.0) == "at_scale_lc_sum"


def test_lambda_c_seeded_choice_weighs_the_seed_noise_and_needs_every_shape() -> None:
    from izf_lib.experiments.at_scale import LAMBDA_C_CANDIDATE, SHAPES, lambda_c_seeded_choice

    def rec(like: str, seed: int, lam: float, nbc_h: float, sm_h: float = 90.0, u: float = 80.0) -> dict:
        r = _scale_record(like, seed, 90.0, 80.0, u)
        r["scores"]["softmax"].update(S=80.0, H=sm_h)
        r["scores"]["nbc"].update(H=nbc_h)
        r["objective"] = {"lc_reduction": "mean", "lambda_c": lam}
        return r

    lam = LAMBDA_C_CANDIDATE
    base = [rec(like, s, 1.0, 70.0) for like in SHAPES for s in (0, 1)]
    # AWA1: -4 and -2 (mean -3, s.e. 1: below -2 s.e.); CUB, SUN: +20 on both seeds
    gains = {"AWA1": (-4.0, -2.0), "CUB": (20.0, 20.0), "SUN": (20.0, 20.0)}
    cand = [rec(like, s, lam, 70.0 + gains[like][s]) for like in SHAPES for s in (0, 1)]
    c = lambda_c_seeded_choice(base, cand)
    assert c["decidable"] and c["chosen"] == 1.0 and "AWA1 (IZF-NBC H -3.0 (s.e. 1.0) below -2 s.e.)" in c["reason"]
    # the same mean loss with more spread between seeds (-8 and +2: s.e. 5) lies within the noise
    gains["AWA1"] = (-8.0, 2.0)
    cand = [rec(like, s, lam, 70.0 + gains[like][s]) for like in SHAPES for s in (0, 1)]
    c = lambda_c_seeded_choice(base, cand)
    assert c["chosen"] == lam and c["nbc_gain"] == pytest.approx((-3.0 + 20.0 + 20.0) / 3)
    # one seed on a shape: not decidable, whatever the scores
    c = lambda_c_seeded_choice(base, [r for r in cand if not (r["like"] == "SUN" and r["seed"] == 1)])
    assert not c["decidable"] and c["chosen"] == 1.0 and "SUN 1 pair(s), needs 2" in c["reason"]
    # ... unless a shape with its pairs fails: the candidate must pass every shape, so that decides
    gains["AWA1"] = (-4.0, -2.0)
    cand = [rec(like, s, lam, 70.0 + gains[like][s]) for like in SHAPES for s in (0, 1)]
    c = lambda_c_seeded_choice(base, [r for r in cand if not (r["like"] == "SUN" and r["seed"] == 1)])
    assert c["decidable"] and c["chosen"] == 1.0 and c["reason"].startswith("failed AWA1 (IZF-NBC H -3.0")
    assert c["reason"].endswith("the missing pairs (SUN 1 pair(s), needs 2) cannot change that")
    gains["AWA1"] = (-8.0, 2.0)
    cand = [rec(like, s, lam, 70.0 + gains[like][s]) for like in SHAPES for s in (0, 1)]
    # IZF-Softmax H more than 5 lower on average on one shape, or an unsound run, fails it
    worse = [rec(r["like"], r["seed"], lam, r["scores"]["nbc"]["H"], sm_h=84.0 if r["like"] == "CUB" else 90.0)
             for r in cand]
    assert "CUB (IZF-Softmax H -6.0 more than 5 lower)" in lambda_c_seeded_choice(base, worse)["reason"]
    one_sided = [rec(r["like"], r["seed"], lam, r["scores"]["nbc"]["H"], u=0.0 if r["like"] == "SUN" else 80.0)
                 for r in cand]
    assert "SUN (not sound on seeds [0, 1])" in lambda_c_seeded_choice(base, one_sided)["reason"]


@pytest.mark.slow  # trains a 2048-d surrogate
def test_an_at_scale_run_scores_izf_and_the_gaussian_generator_and_resumes(tmp_path: Path) -> None:
    from izf_lib.experiments.at_scale import at_scale_calls, read_records, write_at_scale_csv

    calls = at_scale_calls(tmp_path, scale=0.02, seeds=[0], epochs=1, device="cpu", shapes=("AWA1",),
                           extra={"hidden": 16, "softmax_steps": 5, "precision": "fp32"}, threads=2)
    assert len(calls) == 1
    fn, job = calls[0]
    threads = torch.get_num_threads()
    fn(job)
    assert torch.get_num_threads() == threads  # the run's own thread count is not left behind
    (record,) = read_records(tmp_path)
    assert record["threads"] == 2 and record["precision"]["precision"] == "fp32"
    assert record["d_v"] == 2048 and set(record["scores"]) == {"nbc", "softmax", "gaussian"}
    assert record["objective"]["immd_form"] == IZFConfig().immd_form and record["chance_T1"] == 10.0
    assert record["collapse"]["collapsed"] in (True, False) and len(record["history"]) == 1
    assert {"l_flow", "l_c", "l_immd"} <= record["history"][0].keys()
    assert at_scale_calls(tmp_path, scale=0.02, seeds=[0], epochs=1, shapes=("AWA1",)) == []  # done: resumed
    with write_at_scale_csv(tmp_path).open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["IZF-NBC", "IZF-Softmax", "Gaussian generator"]
    with pytest.raises(ValueError, match="unknown benchmark shapes"):
        at_scale_calls(tmp_path, shapes=("NOPE",))


@pytest.mark.slow  # trains 2048-d surrogates
def test_at_scale_seeds_trained_together_write_the_records_they_write_alone(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from izf_lib.experiments import at_scale

    kw = {"scale": 0.02, "seeds": [0, 1], "epochs": 1, "device": "cpu", "shapes": ("AWA1",),
          "extra": {"hidden": 16, "softmax_steps": 5, "precision": "fp32"}, "data_root": tmp_path / "data"}
    calls = at_scale.at_scale_calls(tmp_path / "together", together=True, **kw)
    assert len(calls) == 1 and calls[0][1][3] == [0, 1]  # one call per shape, its seeds as a list
    calls[0][0](calls[0][1])
    for fn, job in at_scale.at_scale_calls(tmp_path / "alone", **kw):
        fn(job)
    clocks = {"seconds", "runs_together"}
    together, alone = (sorted(at_scale.read_records(tmp_path / d), key=lambda r: r["seed"])
                       for d in ("together", "alone"))
    assert [r["runs_together"] for r in together] == [2, 2] and all("runs_together" not in r for r in alone)
    assert [{k: v for k, v in r.items() if k not in clocks} for r in together] == [
        {k: v for k, v in r.items() if k not in clocks} for r in alone]
    assert at_scale.at_scale_calls(tmp_path / "together", together=True, **kw) == []  # done: resumed

    def fails(*args, **kwargs):
        raise RuntimeError("a run of the group diverged")

    monkeypatch.setattr(at_scale, "fit_together", fails)  # a failing group falls back to one seed at a time
    (fn, job), = at_scale.at_scale_calls(tmp_path / "fallback", together=True, **kw)
    with pytest.warns(RuntimeWarning, match="running them one by one"):
        fn(job)
    assert len(at_scale.read_records(tmp_path / "fallback")) == 2


def test_jobs_none_runs_one_worker_per_usable_core_and_keeps_the_order() -> None:
    from izf_lib.experiments.grid import run_jobs, usable_cores

    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    assert run_jobs([(str, i) for i in range(5)], jobs=None, progress=False) == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_jobs([(str, 0)], jobs=0)
