"""Score a trained IZF model: CZSL T1 and GZSL U, S, H for each classifier, in percent."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .classifiers import nbc_predict, train_softmax
from .config import CLASSIFIERS, IZFConfig
from .data import TrainSplit, ZSLData
from .metrics import czsl_t1, gzsl_scores
from .model import IZF
from .rng import STREAM_TEST_EVAL, STREAM_VAL_EVAL, make_generator

__all__ = ["CLASSIFIERS", "Predictions", "evaluation_generator", "score", "score_benchmark"]


def evaluation_generator(seed: int, epoch: int, device: str | torch.device,
                         validation: bool = False) -> torch.Generator:
    """The generator behind the scores of ``epoch``: the same in training-time evaluation and ``evaluate``,
    so a checkpoint rescored later rebuilds the very IZF-Softmax classifiers that were scored."""
    return make_generator(seed, STREAM_VAL_EVAL if validation else STREAM_TEST_EVAL, epoch, device)


@dataclass(frozen=True)
class Predictions:
    """The class ids one classifier predicted for the images it was scored on (CPU tensors).

    ``czsl``: for the unseen images among Y^u; ``gzsl_seen`` / ``gzsl_unseen``: for the seen and
    unseen images among Y^s and Y^u. Per-class figures built from these agree with the scores.
    """

    czsl: Tensor
    gzsl_seen: Tensor
    gzsl_unseen: Tensor


def score(
    model: IZF,
    train: TrainSplit,
    v_seen: Tensor,
    y_seen: Tensor,
    v_unseen: Tensor,
    y_unseen: Tensor,
    classifiers: tuple[str, ...],
    config: IZFConfig,
    generator: torch.Generator,
    return_predictions: bool = False,
):
    """CZSL and GZSL accuracies (percent) of each classifier on held-out seen / unseen images.

    Classifiers are fit from ``train`` only; the held-out images are used for prediction.
    With ``return_predictions`` it returns ``(scores, {classifier: Predictions})``: the very
    predictions the scores were computed from.
    """
    unknown = set(classifiers) - set(CLASSIFIERS)
    if unknown:
        raise ValueError(f"unknown classifiers {sorted(unknown)}; choose from {CLASSIFIERS}")
    device = model.att.device
    unseen, both = train.unseen.to(device), torch.cat([train.seen, train.unseen]).to(device)
    result: dict[str, dict[str, dict[str, float]]] = {"czsl": {}, "gzsl": {}}
    predictions: dict[str, Predictions] = {}
    for clf in classifiers:
        if clf == "nbc":
            pred_czsl = nbc_predict(model, v_unseen, unseen)
            pred_seen, pred_unseen = nbc_predict(model, v_seen, both), nbc_predict(model, v_unseen, both)
        else:
            clfs = train_softmax(model, train, config.softmax_steps, config.softmax_lr, config.softmax_batch, generator,
                                 unseen_ratio=config.softmax_unseen_ratio, pool=config.softmax_pool)
            pred_czsl = clfs["czsl"].predict(v_unseen)
            pred_seen, pred_unseen = clfs["gzsl"].predict(v_seen), clfs["gzsl"].predict(v_unseen)
        result["czsl"][clf] = {"T1": 100.0 * czsl_t1(y_unseen, pred_czsl.cpu())}
        gz = gzsl_scores(y_seen, pred_seen.cpu(), y_unseen, pred_unseen.cpu())
        result["gzsl"][clf] = {k: 100.0 * x for k, x in gz.items()}
        predictions[clf] = Predictions(pred_czsl.cpu(), pred_seen.cpu(), pred_unseen.cpu())
    return (result, predictions) if return_predictions else result


def score_benchmark(
    model: IZF, data: ZSLData, classifiers: tuple[str, ...], config: IZFConfig, generator: torch.Generator,
    return_predictions: bool = False,
):
    """:func:`score` on the benchmark's test_seen and test_unseen images."""
    return score(model, data.train_split(), data.v_test_seen, data.y_test_seen, data.v_test_unseen,
                 data.y_test_unseen, classifiers, config, generator, return_predictions)
