"""Score a trained IZF model: CZSL T1 and GZSL U, S, H for each classifier, in percent."""

from __future__ import annotations

import torch
from torch import Tensor

from .classifiers import nbc_predict, train_softmax
from .config import IZFConfig
from .data import TrainSplit, ZSLData
from .metrics import czsl_t1, gzsl_scores
from .model import IZF

__all__ = ["CLASSIFIERS", "score", "score_benchmark"]

CLASSIFIERS = ("nbc", "softmax")


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
) -> dict[str, dict[str, dict[str, float]]]:
    """CZSL and GZSL accuracies (percent) of each classifier on held-out seen / unseen images.

    Classifiers are fit from ``train`` only; the held-out images are used for prediction.
    """
    unknown = set(classifiers) - set(CLASSIFIERS)
    if unknown:
        raise ValueError(f"unknown classifiers {sorted(unknown)}; choose from {CLASSIFIERS}")
    device = model.att.device
    unseen, both = train.unseen.to(device), torch.cat([train.seen, train.unseen]).to(device)
    result: dict[str, dict[str, dict[str, float]]] = {"czsl": {}, "gzsl": {}}
    for clf in classifiers:
        if clf == "nbc":
            pred_czsl = nbc_predict(model, v_unseen, unseen)
            pred_seen, pred_unseen = nbc_predict(model, v_seen, both), nbc_predict(model, v_unseen, both)
        else:
            clfs = train_softmax(model, train, config.softmax_steps, config.softmax_lr, config.softmax_batch, generator)
            pred_czsl = clfs["czsl"].predict(v_unseen)
            pred_seen, pred_unseen = clfs["gzsl"].predict(v_seen), clfs["gzsl"].predict(v_unseen)
        result["czsl"][clf] = {"T1": 100.0 * czsl_t1(y_unseen, pred_czsl.cpu())}
        gz = gzsl_scores(y_seen, pred_seen.cpu(), y_unseen, pred_unseen.cpu())
        result["gzsl"][clf] = {k: 100.0 * x for k, x in gz.items()}
    return result


def score_benchmark(
    model: IZF, data: ZSLData, classifiers: tuple[str, ...], config: IZFConfig, generator: torch.Generator
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`score` on the benchmark's test_seen and test_unseen images."""
    return score(model, data.train_split(), data.v_test_seen, data.y_test_seen, data.v_test_unseen,
                 data.y_test_unseen, classifiers, config, generator)
