"""The reverse-pass collapse, reproduced where CI can run it: the development code's L_iMMD collapses the
generated unseen set of an AWA1-shaped surrogate within 30 epochs (about 600 optimizer steps), the default
does not and IZF-Softmax transfers.

The setting: AWA1's real classes and attributes, 256-d synthetic features, split sizes x 0.25 (4958
training images, 20 steps an epoch), data seed 7: the AWA1-shaped setting of
izf_lib.experiments.immd_forms, whose 100-epoch run of the development form (results/immd_forms)
falls below the collapse threshold at epoch 15.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from izf_lib.collapse import degenerate
from izf_lib.config import IZFConfig
from izf_lib.data import load_xlsa17
from izf_lib.experiment import CollapseWarning, fit
from izf_lib.prepare import prepare_synthetic

pytestmark = pytest.mark.slow

EPOCHS = 30
DEVELOPMENT_FORM = {"immd_form": "neg_mmd2_biased", "mmd_scale_basis": "fixed", "lc_reduction": "sum",
                    "lambda_c": 1.0}


@pytest.fixture(scope="module")
def surrogate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("surrogate")
    prepare_synthetic(root, like="AWA1", scale=0.25, d_v=256, seed=7, name="SYN_AWA1")
    return root


def _train(root: Path, tmp_path: Path, **overrides):
    config = IZFConfig(epochs=EPOCHS, eval_every=0, seed=0, **overrides)
    data = load_xlsa17("SYN_AWA1", root, feature_scaling=config.feature_scaling)
    return fit(data, config, tmp_path, device="cpu", progress=False, checkpoint_every=EPOCHS), data


def test_the_development_form_collapses_here(surrogate: Path, tmp_path: Path) -> None:
    """Keeps the setting honest: if this stops collapsing, the test below proves nothing."""
    with pytest.warns(CollapseWarning, match="collapsed"):
        result, _ = _train(surrogate, tmp_path, **DEVELOPMENT_FORM)
    assert degenerate(result.collapse) == "collapsed", result.collapse
    assert result.history[-1]["k_uu"] > 4.0  # of the kernel's bound 6 = K(0): a near-point generated set


def test_the_default_objective_does_not_collapse_and_softmax_transfers(surrogate: Path, tmp_path: Path) -> None:
    result, data = _train(surrogate, tmp_path)
    assert degenerate(result.collapse) is None, result.collapse
    chance = 100.0 / data.unseen.numel()
    assert result.czsl["softmax"]["T1"] >= 3 * chance, result.czsl
