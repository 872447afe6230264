"""Where generators put class means (experiments.diagnosis), and the ablation grid over several splits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from izf_lib.data import load_xlsa17
from izf_lib.experiments.ablation import (
    DEFAULT_SPLIT,
    SPLIT_SETTINGS,
    SPLIT_SUBSET,
    ablation_calls,
    tune_calls,
    tuned_calls,
    write_tuned_csv,
)
from izf_lib.experiments.diagnosis import diagnosis_calls, placement, real_class_means
from izf_lib.experiments.zsl_baselines import GaussianGenerator
from izf_lib.prepare import prepare_digits


def test_placement_on_a_hand_computed_case() -> None:
    real_classes = torch.tensor([0, 1, 2])
    real = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])  # pairwise distances 4, 3, 5: median 4
    gen = torch.tensor([[1.0, 0.0], [0.0, 2.5]])  # class 1: 3 from its mean, nearest class 0; class 2: 0.5 off
    p = placement(gen, torch.tensor([1, 2]), real, real_classes)
    assert p["error"] == pytest.approx((3 / 4 + 0.5 / 4) / 2)
    assert p["placed"] == 0.5
    among = placement(gen, torch.tensor([1, 2]), real, real_classes, candidates=torch.tensor([1, 2]))
    assert among["placed"] == 1.0  # (1, 0) is nearer (4, 0) than (0, 3)
    shuffled = placement(gen, torch.tensor([1, 2]), real[[2, 0, 1]], torch.tensor([2, 0, 1]))
    assert shuffled == p  # the order of the real classes does not matter
    with pytest.raises(ValueError, match="not all among the real classes"):
        placement(gen, torch.tensor([1, 7]), real, real_classes)


def test_real_class_means_and_the_gaussian_generators_affine_class_means(tmp_path) -> None:
    prepare_digits(tmp_path)
    data = load_xlsa17("DIGITS", tmp_path)
    classes, means = real_class_means(data)
    assert classes.tolist() == torch.cat([data.seen, data.unseen]).tolist()
    first = data.v_test_seen[data.y_test_seen == classes[0]].double().mean(0)
    assert torch.allclose(means[0], first)
    gauss = GaussianGenerator(seed=0).fit(data.train_split())
    a = data.att[data.unseen].double()
    mid = gauss.class_means(0.5 * (a[0] + a[1])[None])[0]
    assert torch.allclose(mid, 0.5 * (gauss.class_means(a[:1])[0] + gauss.class_means(a[1:2])[0]))
    assert gauss.class_means(a).shape == (len(data.unseen), data.v_test_seen.shape[1])


def test_ablation_runs_on_other_splits_get_their_own_files(tmp_path) -> None:
    assert SPLIT_SUBSET[0] == DEFAULT_SPLIT and len(set(SPLIT_SUBSET)) == len(SPLIT_SUBSET) == 10
    calls = ablation_calls(tmp_path, [0], SPLIT_SETTINGS[:2], SPLIT_SUBSET[:2])
    jobs = [args for _, args in calls]
    assert len(jobs) == 4
    assert [j[3] for j in jobs] == [True, False, False, False]  # curves: defaults on the default split only
    (tmp_path / "00_seed0.json").write_text("{}")  # the default split's file name is unchanged
    other = "-".join(map(str, SPLIT_SUBSET[1]))
    (tmp_path / f"01_{other}_seed0.json").write_text("{}")
    left = [(args[0], args[4]) for _, args in ablation_calls(tmp_path, [0], SPLIT_SETTINGS[:2], SPLIT_SUBSET[:2])]
    assert left == [(SPLIT_SETTINGS[1], DEFAULT_SPLIT), (SPLIT_SETTINGS[0], SPLIT_SUBSET[1])]


def test_tuned_grid_tunes_each_split_first_and_resumes_from_its_files(tmp_path) -> None:
    splits = SPLIT_SUBSET[:2]
    other = "-".join(map(str, splits[1]))
    assert [args[0] for _, args in tune_calls(tmp_path, splits)] == list(splits)
    with pytest.raises(FileNotFoundError, match=f"no chosen_config.json for splits \\['{other}'\\]"):
        (tmp_path / "tune").mkdir()
        (tmp_path / "tune" / "chosen_config.json").write_text("{}")
        tuned_calls(tmp_path, splits, [0])
    for folder, objective in (("tune", 50.0), (f"tune_{other}", 40.0)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "chosen_config.json").write_text('{"lambda_immd": 0.0}')
        (tmp_path / folder / "tune_summary.json").write_text(json.dumps(
            {"trials_run": 16, "seconds": 1.0, "threads": 1, "chosen_trial": 3, "chosen_objective": objective,
             "validation_classes": [["digit_1", "digit_8"], ["digit_0", "digit_4"]],
             "chosen_params": {"lambda_immd": 0.0},
             "evaluations_per_trial": 3, "best_trial": 3, "best_objective": objective, "chosen_objective_se": 1.0,
             "reason": "trial 3 beats the preset"}))
    assert tune_calls(tmp_path, splits) == []
    with pytest.raises(FileNotFoundError, match="no tuned runs"):
        write_tuned_csv(tmp_path)
    assert len(tuned_calls(tmp_path, splits, [0, 1])) == 4
    # a run counts as done only once both its rows and its diagnosis exist; the default split keeps its old names
    (tmp_path / "rows" / "seed0.csv").write_text("split,seed,method,T1\n3-6-9,0,IZF-Softmax,50\n")
    (tmp_path / "rows" / f"{other}_seed1.csv").write_text(f"split,seed,method,T1\n{other},1,IZF-Softmax,40\n")
    (tmp_path / "diagnosis").mkdir()
    (tmp_path / "diagnosis" / "3-6-9_seed0.json").write_text('{"split": "3-6-9", "seed": 0, "IZF unseen error": 1}')
    left = [(args[0], args[1]) for _, args in tuned_calls(tmp_path, splits, [0, 1])]
    assert left == [(DEFAULT_SPLIT, 1), (splits[1], 0), (splits[1], 1)]
    write_tuned_csv(tmp_path)
    tunes = pd.read_csv(tmp_path / "tunes.csv", dtype={"split": str})
    assert tunes["split"].tolist() == ["3-6-9", other] and tunes["chosen_objective"].tolist() == [50.0, 40.0]
    assert tunes["validation_classes"].tolist() == ["digit_1 digit_8 | digit_0 digit_4"] * 2  # one group per fold
    assert tunes["reason"].tolist() == ["trial 3 beats the preset"] * 2 and tunes["best_trial"].tolist() == [3, 3]
    assert tunes["lambda_immd"].tolist() == [0.0, 0.0] and tunes["hidden"].tolist() == [1024, 1024]  # + defaults
    runs = pd.read_csv(tmp_path / "tuned_runs.csv", dtype={"split": str})
    assert runs["split"].tolist() == ["3-6-9", other]
    assert (tmp_path / "diagnosis" / "diagnosis_runs.csv").is_file()


def test_diagnosis_of_a_setting_checks_its_overrides_and_passes_them_to_every_run(tmp_path) -> None:
    calls = diagnosis_calls(tmp_path, SPLIT_SUBSET[:2], [0, 1], overrides={"lambda_immd": 0.0})
    assert [(args[0], args[1], args[4]) for _, args in calls] == [
        (sp, k, {"lambda_immd": 0.0}) for sp in SPLIT_SUBSET[:2] for k in (0, 1)]
    with pytest.raises(ValueError, match="unknown IZF config keys \\['lambda_mmd'\\]"):
        diagnosis_calls(tmp_path, SPLIT_SUBSET[:1], [0], overrides={"lambda_mmd": 0.0})


def test_run_grids_refuses_a_tune_without_trials(tmp_path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_grids.py"
    cmd = [sys.executable, str(script), "--only", "tuned", "--tune-trials", "0", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--tune-trials must be >= 1, got 0" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before any folder is claimed


@pytest.mark.slow  # trains a 2048-d surrogate for one epoch
def test_run_grids_writes_another_lc_reduction_into_its_own_at_scale_folder(tmp_path) -> None:
    from izf_lib.config import LC_REDUCTIONS, IZFConfig

    other = next(r for r in LC_REDUCTIONS if r != IZFConfig.lc_reduction)
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_grids.py"
    cmd = [sys.executable, str(script), "--only", "at_scale", "--smoke", "--lc-reduction", other, "--jobs", "1",
           "--out", str(tmp_path), "--together"]  # --together: the script's flag reaches at_scale_calls
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "at_scale").exists()  # the default's folder is left alone
    folder = tmp_path / f"at_scale_lc_{other}"
    assert json.loads((folder / "objective.stamp").read_text())["lc_reduction"] == other
    (path,) = folder.glob("records/*/seed0.json")
    record = json.loads(path.read_text())
    assert record["overrides"]["lc_reduction"] == other and record["objective"]["lc_reduction"] == other
    assert (folder / "at_scale_runs.csv").is_file()


def test_run_grids_refuses_to_mix_objectives_in_the_no_immd_diagnosis(tmp_path) -> None:
    """lambda_3 = 0 makes the iMMD form moot, not L_C's reduction: runs stored without a stamp
    (the summed L_C) must not be resumed under another default."""
    from izf_lib.config import IZFConfig

    if IZFConfig.lc_reduction == "sum":
        pytest.skip("the default is the legacy objective: nothing to mix")
    legacy = tmp_path / "diagnosis_no_immd"
    (legacy / "runs").mkdir(parents=True)
    (legacy / "runs" / "0-1-2_seed0.json").write_text("{}\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_grids.py"
    cmd = [sys.executable, str(script), "--only", "diagnosis", "--smoke", "--jobs", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "diagnosis_no_immd holds runs trained with" in done.stderr
    assert "'lc_reduction': 'sum'" in done.stderr
    assert not (legacy / "objective.stamp").exists()
