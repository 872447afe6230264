"""Training end to end: learning, resume, determinism, test-data blindness, divergence, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from izf_lib.__main__ import main
from izf_lib.config import IZFConfig
from izf_lib.data import TrainSplit, load_xlsa17, validation_split
from izf_lib.experiment import RunResult, fit
from izf_lib.train import CheckpointError, TrainingDivergedError, load_checkpoint, train_model

from helpers import without_keys

CPU = torch.device("cpu")
SMALL = IZFConfig(hidden=64, epochs=30, batch_size=64, eval_every=0, softmax_steps=300, softmax_lr=1e-2, lr=1e-3,
                  seed=0)


class Poison:
    """Stands in for test data: any use raises, so a training path that reads it fails."""

    def __getattr__(self, name):
        raise AssertionError(f"training touched test data (attribute {name})")

    def __getitem__(self, key):
        raise AssertionError("training touched test data (indexing)")

    def __len__(self):
        raise AssertionError("training touched test data (len)")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"training touched test data ({func})")


@pytest.mark.slow
def test_end_to_end_loss_falls_and_both_classifiers_beat_chance(synthetic_dir: Path, tmp_path: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    res = fit(data, SMALL, tmp_path, device="cpu", progress=False)
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < losses[0] - 0.5
    chance = 100.0 / len(data.unseen)
    for clf in ("nbc", "softmax"):
        assert res.czsl[clf]["T1"] > 2 * chance, res.czsl
        assert res.gzsl[clf]["U"] > 0 and res.gzsl[clf]["S"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["gzsl"]["softmax"]) == {"U", "S", "H"} and "T1" in saved["czsl"]["nbc"]
    assert saved["selection"]["rule"] == "final" and saved["selection"]["optimistic"] is False
    assert len(saved["history"]) == SMALL.epochs and saved["timings"]["train_seconds"] > 0


def test_resume_continues_to_the_same_result(synthetic_dir: Path, tmp_path: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    cfg = replace(SMALL, epochs=4)
    full, hist_full = train_model(split, cfg, CPU, checkpoint=tmp_path / "a.pt", progress=False)
    train_model(split, replace(cfg, epochs=2), CPU, checkpoint=tmp_path / "b.pt", progress=False)
    resumed, hist_res = train_model(split, cfg, CPU, checkpoint=tmp_path / "b.pt", resume=True, progress=False)
    assert [r["loss"] for r in hist_res] == [r["loss"] for r in hist_full]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_same_seed_same_model_on_cpu(synthetic_dir: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    cfg = replace(SMALL, epochs=2)
    a, _ = train_model(split, cfg, CPU, progress=False)
    b, _ = train_model(split, cfg, CPU, progress=False)
    c, _ = train_model(split, replace(cfg, seed=1), CPU, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_training_paths_never_read_test_data(synthetic_dir: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    for key in ("v_test_seen", "y_test_seen", "v_test_unseen", "y_test_unseen"):
        setattr(data, key, Poison())
    cfg = replace(SMALL, epochs=1)
    train_model(data.train_split(), cfg, CPU, progress=False)  # the main training path
    split, _ = validation_split(data, 1, seed=0)                # the validation-selection path
    train_model(split, cfg, CPU, progress=False)
    with pytest.raises(AssertionError, match="touched test data"):  # the guard itself works
        torch.cat([data.v_test_seen])


def test_trained_weights_do_not_depend_on_test_data(synthetic_dir: Path, tmp_path: Path) -> None:
    """Evaluation every epoch reads test data; the trained weights must not change with it."""
    data = load_xlsa17("SYN", synthetic_dir)
    cfg = replace(SMALL, epochs=2, eval_every=1, softmax_steps=5)
    fit(data, cfg, tmp_path / "a", device="cpu", progress=False)
    gen = torch.Generator().manual_seed(5)
    data.v_test_seen = torch.rand(data.v_test_seen.shape, generator=gen)
    data.v_test_unseen = torch.rand(data.v_test_unseen.shape, generator=gen)
    data.y_test_unseen = data.y_test_unseen.flip(0)
    fit(data, cfg, tmp_path / "b", device="cpu", progress=False)
    a, _, _ = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b, _, _ = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_validation_split_uses_trainval_classes_only(synthetic_dir: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    split, (v_s, y_s, v_u, y_u) = validation_split(data, 1, seed=0)
    train_names, val_names = data.folds[1]
    assert sorted(data.class_names[k] for k in split.unseen.tolist()) == sorted(val_names)
    assert set(split.y.tolist()) == set(split.seen.tolist())
    assert set(y_u.tolist()) == set(split.unseen.tolist())
    assert not set(split.unseen.tolist()) & set(data.unseen.tolist())
    assert len(split.y) + len(y_s) + len(y_u) == len(data.y_trainval)


@pytest.mark.parametrize("rule", ["val", "best_test"])
def test_selection_rules_are_explicit(synthetic_dir: Path, tmp_path: Path, rule: str) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    cfg = replace(SMALL, epochs=4, eval_every=2, softmax_steps=20, selection=rule)
    res = fit(data, cfg, tmp_path, device="cpu", progress=False)
    assert res.selection["rule"] == rule
    assert res.selection["optimistic"] is (rule == "best_test")
    source = res.val_history if rule == "val" else res.history
    evaluated = {r["epoch"]: r["eval"] for r in source if r["eval"]}
    assert set(evaluated) == {2, 4}
    for clf, epoch in res.selection["epochs"].items():
        assert evaluated[epoch]["gzsl"][clf]["H"] == max(e["gzsl"][clf]["H"] for e in evaluated.values())
        test_eval = {r["epoch"]: r["eval"] for r in res.history}[epoch]
        assert res.gzsl[clf] == test_eval["gzsl"][clf]


@pytest.mark.parametrize("cuda_graphs", ["off", "on"])  # on: the fixed-shape step (izf_lib.step) names it too
def test_non_finite_loss_raises_and_saves_state(tmp_path: Path, cuda_graphs: str) -> None:
    att = torch.rand(4, 2)
    v = torch.rand(16, 6)
    v[3, 0] = 1e38  # overflows inside the flow
    split = TrainSplit(v, torch.tensor([0, 1] * 8), att, torch.tensor([0, 1]), torch.tensor([2, 3]))
    with pytest.raises(TrainingDivergedError, match="non-finite at epoch 1, step 0"):
        train_model(split, replace(SMALL, hidden=8, batch_size=16), CPU, checkpoint=tmp_path / "c.pt", progress=False,
                    cuda_graphs=cuda_graphs)
    assert (tmp_path / "diverged_state.pt").is_file()


def test_command_line_prepare_train_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir, run = tmp_path / "data", tmp_path / "run"
    assert main(["prepare", "digits", "--out", str(data_dir)]) == 0
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"hidden": 32, "softmax_steps": 30, "eval_every": 0}))
    assert main(["train", "--dataset", "DIGITS", "--data-dir", str(data_dir), "--out", str(run), "--epochs", "2",
                 "--config", str(cfg), "--classifier", "both", "--quiet"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["config"]["hidden"] == 32 and res["config"]["epochs"] == 2
    assert res["environment"]["precision"]["requested"] == "auto"  # the flag's default, resolved and recorded
    assert res["config"]["precision"] == res["environment"]["precision"]["precision"]
    assert {"nbc", "softmax"} <= set(res["czsl"]) and {"U", "S", "H"} == set(res["gzsl"]["nbc"])
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--device", "cpu"]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    for clf in ("nbc", "softmax"):  # the same classifiers as in training, so exactly the same scores
        assert ev["czsl"][clf] == res["czsl"][clf] and ev["gzsl"][clf] == res["gzsl"][clf], clf
    assert main(["train", "--dataset", "NOPE", "--data-dir", str(data_dir), "--out", str(run), "--quiet"]) == 2
    assert "NOPE does not exist" in capsys.readouterr().err


def test_config_file_rejects_unknown_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"lamda_c": 2.0}))
    with pytest.raises(ValueError, match="unknown IZF config keys \\['lamda_c'\\]"):
        IZFConfig.from_file(cfg)


def test_final_scores_do_not_depend_on_the_evaluation_schedule(synthetic_dir: Path, tmp_path: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    cfg = replace(SMALL, epochs=3, softmax_steps=20)
    a = fit(data, replace(cfg, eval_every=0), tmp_path / "a", device="cpu", progress=False)
    b = fit(data, replace(cfg, eval_every=1), tmp_path / "b", device="cpu", progress=False)
    assert len([r for r in b.history if r["eval"]]) == 3 and len([r for r in a.history if r["eval"]]) == 1
    assert a.czsl == b.czsl and a.gzsl == b.gzsl


def test_same_seed_gives_identical_results_json_apart_from_timings(synthetic_dir: Path, tmp_path: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    cfg = replace(SMALL, epochs=2, eval_every=1, softmax_steps=20)
    fit(data, cfg, tmp_path / "a", device="cpu", progress=False)
    fit(data, cfg, tmp_path / "b", device="cpu", progress=False)
    fit(data, replace(cfg, seed=1), tmp_path / "c", device="cpu", progress=False)
    a, b, c = (without_keys(json.loads((tmp_path / x / "results.json").read_text())) for x in "abc")
    assert a == b
    assert a["gzsl"]["softmax"] != c["gzsl"]["softmax"] or a["history"] != c["history"]


def test_a_crafted_pickle_checkpoint_is_refused_and_a_real_one_loads(synthetic_dir: Path, tmp_path: Path) -> None:
    split = load_xlsa17("SYN", synthetic_dir).train_split()
    train_model(split, replace(SMALL, epochs=1), CPU, checkpoint=tmp_path / "real.pt", progress=False)
    model, config, meta = load_checkpoint(tmp_path / "real.pt")
    assert meta["epoch"] == 1 and config.hidden == SMALL.hidden

    marker = tmp_path / "code_ran"

    class Payload:  # unpickling this would create the marker file
        def __reduce__(self):
            return (Path.touch, (marker,))

    state = torch.load(tmp_path / "real.pt", weights_only=True)
    state["meta"] = Payload()
    torch.save(state, tmp_path / "crafted.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "crafted.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load"):  # resuming from it is refused too
        train_model(split, replace(SMALL, epochs=2), CPU, checkpoint=tmp_path / "crafted.pt", resume=True,
                    progress=False)
    assert not marker.exists()


def test_no_torch_load_in_the_project_executes_pickled_code() -> None:
    root = Path(__file__).resolve().parents[1]
    flag = "weights_only=" + "False"
    offenders = [str(f.relative_to(root)) for d in ("izf_lib", "scripts", "benchmarks", "tests")
                 for f in (root / d).rglob("*.py") if flag in f.read_text()]
    assert not offenders, offenders


def test_run_result_round_trips_through_results_json(synthetic_dir: Path, tmp_path: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    res = fit(data, replace(SMALL, epochs=1, softmax_steps=5), tmp_path, device="cpu", progress=False)
    back = RunResult.read(tmp_path / "results.json")
    assert back == res and RunResult.read(tmp_path) == res
    assert set(back.scores("nbc")) == {"T1", "U", "S", "H"}
    (tmp_path / "bad.json").write_text('{"dataset": "X"}')
    with pytest.raises(ValueError, match="bad.json: not a results.json .*missing keys \\['data'"):
        RunResult.read(tmp_path / "bad.json")


def test_presets_are_named_overrides_of_the_defaults() -> None:
    assert IZFConfig.preset("full") == IZFConfig()
    quick = IZFConfig.preset("quick", seed=3)
    assert (quick.epochs, quick.eval_every, quick.softmax_steps, quick.seed) == (30, 10, 500, 3)
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        IZFConfig.preset("fast")
