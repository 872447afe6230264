"""Where generators put class means (experiments.diagnosis), and the ablation grid over several splits."""

from __future__ import annotations

import pytest
import torch

from izf_lib.data import load_xlsa17
from izf_lib.experiments.ablation import DEFAULT_SPLIT, SPLIT_SETTINGS, SPLIT_SUBSET, ablation_calls
from izf_lib.experiments.diagnosis import placement, real_class_means
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
