"""tune: settings chosen on a class-level validation fold, never on test images."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch

import izf_lib.tune as tune_module
from izf_lib.__main__ import _parser, main
from izf_lib.config import DEFAULT_PRESET, PRESETS, IZFConfig
from izf_lib.data import DataError, load_xlsa17
from izf_lib.prepare import prepare_digits

TINY_SPACE = {"hidden": [8, 16], "epochs": [1, 2], "softmax_steps": [10]}
# trial 0 is the preset itself: a preset of the same size as the trials keeps these tests in seconds
TINY_PRESET = {"hidden": 8, "epochs": 2, "softmax_steps": 10, "eval_every": 0}


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY_PRESET)
    return "tiny"


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare_digits(root)
    return root


def _poisoned(*args, **kwargs):
    """The dataset with every test feature NaN and every test label out of range: reading them would show."""
    data = load_xlsa17(*args, **kwargs)
    return dataclasses.replace(
        data, v_test_seen=torch.full_like(data.v_test_seen, float("nan")),
        y_test_seen=torch.full_like(data.y_test_seen, -1),
        v_test_unseen=torch.full_like(data.v_test_unseen, float("nan")),
        y_test_unseen=torch.full_like(data.y_test_unseen, -1))


@pytest.mark.slow
def test_tune_never_reads_test_images_and_writes_a_loadable_choice(digits_dir, tmp_path, monkeypatch,
                                                                  tiny_preset) -> None:
    clean = tune_module.tune("DIGITS", str(digits_dir), tmp_path / "a", preset=tiny_preset, trials=3,
                             space=TINY_SPACE, progress=False)
    monkeypatch.setattr(tune_module, "load_xlsa17", _poisoned)
    poisoned = tune_module.tune("DIGITS", str(digits_dir), tmp_path / "b", preset=tiny_preset, trials=3,
                                space=TINY_SPACE, progress=False)
    a = json.loads((tmp_path / "a" / "trials.json").read_text())
    b = json.loads((tmp_path / "b" / "trials.json").read_text())
    assert [e["val"] for r in a for e in r["evaluations"]] == [e["val"] for r in b for e in r["evaluations"]]
    assert len(a) == 3
    assert clean["chosen_params"] == poisoned["chosen_params"]
    assert a[0]["params"] == {}  # trial 0 is the preset itself
    folds = clean["validation_classes"]  # one list of pseudo-unseen classes per fold
    assert folds and all(len(f) >= tune_module.MIN_VAL_CLASSES for f in folds)
    chosen = IZFConfig.overrides_from_file(tmp_path / "a" / "chosen_config.json")
    assert chosen == tune_module.chosen_config(tiny_preset, clean["chosen_params"])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_kept_preset_is_exactly_the_run_train_does(preset) -> None:
    # chosen_config.json when no trial beats the preset: train --config gives train --preset's run, bit for bit
    assert IZFConfig.from_dict(tune_module.chosen_config(preset, {})) == IZFConfig.preset(preset)
    overrides = {"hidden": 256, "lambda_immd": 0.0}
    assert IZFConfig.from_dict(tune_module.chosen_config(preset, overrides)) == IZFConfig.preset(preset, **overrides)
    with pytest.raises(ValueError, match="unknown preset 'paper'"):
        tune_module.chosen_config("paper", {})


def test_tune_starts_from_the_preset_train_runs() -> None:
    # so that `tune` then `train --config chosen_config.json` can only lose to `train` by the selection noise
    parser = _parser()
    train = parser.parse_args(["train", "--dataset", "D", "--out", "o"])
    tune = parser.parse_args(["tune", "--dataset", "D", "--out", "o"])
    assert train.preset == tune.preset == DEFAULT_PRESET
    assert inspect.signature(tune_module.tune).parameters["preset"].default == DEFAULT_PRESET


def test_train_runs_with_the_chosen_config(digits_dir, tmp_path) -> None:
    (tmp_path / "chosen.json").write_text(json.dumps({"epochs": 1, "hidden": 8, "softmax_steps": 10, "eval_every": 0}))
    assert main(["train", "--dataset", "DIGITS", "--data-dir", str(digits_dir), "--out", str(tmp_path / "run"),
                 "--config", str(tmp_path / "chosen.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"]["hidden"] == 8


def test_tune_rejects_bad_input_with_clear_messages(digits_dir, tmp_path, capsys) -> None:
    with pytest.raises(DataError, match="no validation fold 7"):
        tune_module.tune("DIGITS", str(digits_dir), tmp_path, fold=7, space=TINY_SPACE, progress=False)
    with pytest.raises(DataError, match="needs at least 2 pseudo-unseen"):
        tune_module.tune("DIGITS", str(digits_dir), tmp_path, fold=1, space=TINY_SPACE, progress=False)
    with pytest.raises(ValueError, match="search space is empty"):
        tune_module.tune("DIGITS", str(digits_dir), tmp_path, space={}, progress=False)
    with pytest.raises(ValueError, match="unknown IZF settings"):
        tune_module.tune("DIGITS", str(digits_dir), tmp_path, space={"width": [1]}, progress=False)
    (tmp_path / "space.json").write_text("[1, 2]")
    assert main(["tune", "--dataset", "DIGITS", "--data-dir", str(digits_dir), "--out", str(tmp_path),
                 "--space", str(tmp_path / "space.json")]) == 2
    assert "space.json" in capsys.readouterr().err


def _trial(i: int, objectives: list[float]) -> dict:
    return {"trial": i, "params": {"hidden": i}, "objective": sum(objectives) / len(objectives),
            "evaluations": [{"objective": o} for o in objectives]}


@pytest.mark.parametrize(("preset", "other", "chosen"), [
    ([60.0, 62.0, 58.0], [70.0, 72.0, 68.0], 1),   # +10 on every fold: beyond 2 s.e. (s.e. 0)
    ([60.0, 62.0, 58.0], [75.0, 55.0, 60.0], 0),   # +3.3 on average, but the paired differences spread
    ([60.0], [74.6], 0),                           # one evaluation: no error can be measured, the preset stays
    ([70.0, 70.0, 70.0], [60.0, 65.0, 69.0], 0),   # the preset is best
])
def test_choose_trial_keeps_the_preset_unless_beaten_beyond_the_noise(preset, other, chosen) -> None:
    best, picked, reason = tune_module.choose_trial([_trial(0, preset), _trial(1, other)])
    assert picked["trial"] == chosen, reason
    assert best["objective"] == max(sum(preset) / len(preset), sum(other) / len(other))


@pytest.mark.slow
def test_every_trial_is_scored_on_every_fold(digits_dir, tmp_path, tiny_preset) -> None:
    summary = tune_module.tune("DIGITS", str(digits_dir), tmp_path, preset=tiny_preset, trials=2, space=TINY_SPACE,
                               progress=False, seeded_folds=2, repeats=2)
    trials = json.loads((tmp_path / "trials.json").read_text())
    assert summary["evaluations_per_trial"] == 4 and all(len(t["evaluations"]) == 4 for t in trials)
    assert len({e["fold"] for e in trials[0]["evaluations"]}) == 2  # two different class splits
    assert {e["seed"] for e in trials[0]["evaluations"]} == {0, 1}
    assert trials[0]["objective"] == pytest.approx(sum(e["objective"] for e in trials[0]["evaluations"]) / 4)
    assert summary["reason"] and summary["rule"] == tune_module.SELECTION_RULE
