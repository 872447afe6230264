"""Metrics on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from izf_lib.metrics import czsl_t1, gzsl_scores, harmonic_mean, one_sided, per_class_accuracy


def test_per_class_accuracy_averages_classes_not_samples() -> None:
    # class 0: 3 of 4 right; class 1: 0 of 1 right -> (0.75 + 0) / 2, not 3/5
    assert per_class_accuracy([0, 0, 0, 0, 1], [0, 0, 0, 1, 0]) == pytest.approx(0.375)


def test_class_never_predicted_scores_zero() -> None:
    # class 2 is never predicted: 1.0, 0.5, 0.0 -> 0.5
    assert per_class_accuracy([0, 1, 1, 2, 2], [0, 1, 0, 0, 1]) == pytest.approx(0.5)


def test_predictions_outside_the_label_set_count_as_wrong() -> None:
    assert per_class_accuracy(torch.tensor([3, 3, 4]), torch.tensor([9, 3, 9])) == pytest.approx(0.25)


def test_explicit_class_without_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="class 7 has no samples"):
        per_class_accuracy([0, 1], [0, 1], classes=[0, 1, 7])


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        per_class_accuracy([0, 1, 2], [0, 1])


def test_harmonic_mean_cases() -> None:
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.2, 0.8) == pytest.approx(0.32)
    assert harmonic_mean(0.0, 0.9) == 0.0
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_gzsl_and_czsl_on_a_hand_computed_case() -> None:
    # seen classes 0, 1; unseen 2, 3
    seen_true, seen_pred = [0, 0, 1, 1], [0, 2, 1, 1]        # S = (0.5 + 1.0) / 2 = 0.75
    unseen_true, unseen_pred = [2, 2, 3, 3], [2, 0, 0, 1]    # U = (0.5 + 0.0) / 2 = 0.25
    scores = gzsl_scores(seen_true, seen_pred, unseen_true, unseen_pred)
    assert scores["S"] == pytest.approx(0.75)
    assert scores["U"] == pytest.approx(0.25)
    assert scores["H"] == pytest.approx(2 * 0.25 * 0.75 / 1.0)
    assert czsl_t1([2, 2, 3], [2, 3, 3]) == pytest.approx((0.5 + 1.0) / 2)


def test_per_class_accuracies_by_class() -> None:
    from izf_lib.metrics import per_class_accuracies

    assert per_class_accuracies([0, 0, 5, 5, 5], [0, 1, 5, 5, 0]) == {0: 0.5, 5: pytest.approx(2 / 3)}


def test_one_sided_names_the_side_a_gzsl_classifier_keeps_to() -> None:
    # seen classes {0, 1}, unseen {2}: every image predicted as class 0 recognises no unseen image
    y_seen, y_unseen = torch.tensor([0, 0, 1]), torch.tensor([2, 2])
    all_seen = gzsl_scores(y_seen, torch.tensor([0, 0, 0]), y_unseen, torch.tensor([0, 0]))
    assert all_seen["U"] == 0.0 and all_seen["S"] == 0.5 and one_sided(all_seen) == "seen"
    all_unseen = gzsl_scores(y_seen, torch.tensor([2, 2, 2]), y_unseen, torch.tensor([2, 2]))
    assert one_sided(all_unseen) == "unseen"
    both = gzsl_scores(y_seen, torch.tensor([0, 1, 1]), y_unseen, torch.tensor([2, 0]))
    assert one_sided(both) is None
    assert one_sided({"U": 0.0, "S": 0.0}) is None  # nothing recognised: no side kept
