"""The collapse measures of the reverse pass: exact on known sets; a contracted generator is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from izf_lib.collapse import (
    COLLAPSED_SPREAD_RATIO,
    collapse_summary,
    degenerate,
    generation_diagnostics,
    median_pairwise_distance,
    seen_statistics,
)
from izf_lib.config import IZFConfig
from izf_lib.losses import mmd2, mmd2_terms
from izf_lib.model import IZF


def test_median_pairwise_distance_on_a_hand_made_set_ignores_one_far_point() -> None:
    # 0, 1, 2 on a line and one point at 1000: distances 1, 2, 1 and 1000, 999, 998 -> the median pair is 2 or 998;
    # torch's median of an even count is the lower middle value, 2
    x = torch.tensor([[0.0], [1.0], [2.0], [1000.0]], dtype=torch.float64)
    assert median_pairwise_distance(x).item() == 2.0
    assert median_pairwise_distance(x[:1]).item() == 0.0


def test_seen_statistics_on_a_hand_made_set() -> None:
    # class 0: points 0 and 2 on a line (pairwise distance 2), class 1: points 10 and 10 (0); means 1 and 10
    v = torch.tensor([[0.0], [2.0], [10.0], [10.0]])
    stats = seen_statistics(v, torch.tensor([0, 0, 1, 1]))
    assert stats.means.flatten().tolist() == [1.0, 10.0]
    assert stats.spread == pytest.approx(1.0)  # (2 + 0) / 2, one pair per class
    assert stats.mean_gap == pytest.approx(9.0)


def test_mmd2_is_the_sum_of_its_terms_and_the_loss_keeps_them() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=gen), torch.randn(12, 4, generator=gen) + 1
    for unbiased in (False, True):
        k_xx, k_yy, k_xy = mmd2_terms(x, y, unbiased=unbiased)
        assert torch.equal(mmd2(x, y, unbiased=unbiased), k_xx + k_yy - 2.0 * k_xy)
    att = torch.rand(5, 3, generator=gen)
    model = IZF(att, 8, IZFConfig(n_blocks=2, hidden=16, seed=0))
    v, y = torch.rand(20, 8, generator=gen), torch.arange(3).repeat(7)[:20]
    model.fit_immd_kernel(v, y, 2)  # the default form's kernel comes from the seen training features
    out = model.objective(v, y, torch.tensor([3, 4]), gen)
    assert torch.equal(out["l_immd"], -(out["k_ss"] + out["k_uu"] - 2.0 * out["k_su"]))
    assert not out["k_uu"].requires_grad


class _Contracting(torch.nn.Module):
    """A stand-in generator that scales z_f by `factor` around a class centre: factor 0 is a collapse."""

    def __init__(self, att: torch.Tensor, d_v: int, factor: float) -> None:
        super().__init__()
        self.att, self.d_v, self.factor = att, d_v, factor

    def generate(self, att, n, generator=None):
        z = torch.randn(att.shape[0] * n, self.d_v, generator=generator)
        centre = torch.nn.functional.pad(att, (0, self.d_v - att.shape[1])).repeat_interleave(n, 0)
        return centre + self.factor * z


@pytest.mark.parametrize(("factor", "collapsed", "scattered"), [(1.0, False, False), (1e-3, True, False),
                                                               (1e3, False, True)])
def test_a_contracted_or_scattered_generator_is_flagged_and_a_spread_one_is_not(
        factor: float, collapsed: bool, scattered: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    d_v, att = 6, torch.eye(4)[:, :3] * 5
    v = torch.cat([torch.nn.functional.pad(att[k], (0, 3)) + torch.randn(50, d_v, generator=gen) for k in range(2)])
    stats = seen_statistics(v, torch.arange(2).repeat_interleave(50))
    history = [{"epoch": e, "gen": generation_diagnostics(_Contracting(att, d_v, factor), torch.tensor([2, 3]),
                                                          stats, torch.Generator().manual_seed(e))}
               for e in (1, 2)]
    summary = collapse_summary(history)
    assert summary["collapsed"] is collapsed
    assert (summary["final_spread_ratio"] < COLLAPSED_SPREAD_RATIO) is collapsed
    assert summary["first_epoch_below"] == (1 if collapsed else None)
    assert summary["scattered"] is scattered
    assert summary["first_epoch_above"] == (1 if scattered else None)
    assert degenerate(summary) == ("collapsed" if collapsed else "scattered" if scattered else None)
    assert history[-1]["gen"]["to_seen"] > 0


def test_no_generation_measures_means_no_verdict() -> None:
    assert collapse_summary([{"epoch": 1, "loss": 1.0}])["collapsed"] is None


def test_each_immd_form_is_its_formula_and_the_default_is_the_chosen_one() -> None:
    from izf_lib.config import IMMD_FORMS
    from izf_lib.experiments.immd_forms import CANDIDATES, ROUND2
    from izf_lib.losses import immd_from_terms, immd_loss

    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 4, generator=gen) + 2
    k_ss, k_uu, k_su = mmd2_terms(x, y)
    assert torch.equal(immd_from_terms(k_ss, k_uu, k_su), immd_loss(x, y))  # immd_loss: the development form
    assert torch.equal(immd_from_terms(k_ss, k_uu, k_su, "cross_only"), -(k_ss - 2.0 * k_su))
    assert IMMD_FORMS[0] == "neg_mmd2_biased"
    # the defaults are the form that izf_lib.experiments.immd_forms chose (results/immd_forms/choice.json)
    choice = json.loads((Path(__file__).resolve().parents[1] / "results" / "immd_forms" / "choice.json").read_text())
    default = IZFConfig()
    assert choice["overrides"] == {"immd_form": default.immd_form, "mmd_scale_basis": default.mmd_scale_basis}
    assert choice["chosen"] in {**CANDIDATES, **ROUND2} and choice["round1"]["chosen"] in CANDIDATES
    with pytest.raises(ValueError, match="immd_form must be one of"):
        IZFConfig(immd_form="repulsive?")
    with pytest.raises(ValueError, match="lc_reduction must be one of"):
        IZFConfig(lc_reduction="median")


@pytest.mark.parametrize("form", ["neg_mmd2_unbiased", "cross_only"])
def test_the_objective_uses_the_configured_form(form: str) -> None:
    gen = torch.Generator().manual_seed(4)
    att = torch.rand(5, 3, generator=gen)
    model = IZF(att, 8, IZFConfig(n_blocks=2, hidden=16, seed=0, immd_form=form))
    v, y = torch.rand(20, 8, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    out = model.objective(v, y, torch.tensor([3, 4]), torch.Generator().manual_seed(0))
    expected = -(out["k_ss"] - 2.0 * out["k_su"]) if form == "cross_only" else \
        -(out["k_ss"] + out["k_uu"] - 2.0 * out["k_su"])
    assert torch.equal(out["l_immd"].detach(), expected)


def test_settings_added_later_leave_stored_grid_fingerprints_unchanged() -> None:
    """Stored grids (results/) are found by config_key; a setting added later, at the value every stored run
    had, must not move them (the key of a config without it), while any other value must."""
    import hashlib
    import json

    from izf_lib.experiments.digits_splits import KEY_NEUTRAL, config_key

    dev = IZFConfig(**KEY_NEUTRAL)
    settings = {k: v for k, v in dev.to_dict().items() if k != "seed" and k not in KEY_NEUTRAL}
    assert config_key(dev) == hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    assert config_key(IZFConfig(**{**KEY_NEUTRAL, "immd_form": "cross_only"})) != config_key(dev)
    assert config_key(IZFConfig(**{**KEY_NEUTRAL, "mmd_scale_basis": "median"})) != config_key(dev)
    assert config_key(IZFConfig(**{**KEY_NEUTRAL, "lc_reduction": "mean"})) != config_key(dev)


def test_the_hinge_form_stops_the_push_at_its_margin() -> None:
    from izf_lib.losses import immd_from_terms

    k_ss, k_su = torch.tensor(1.0), torch.tensor(0.5)
    below = torch.tensor(0.2, requires_grad=True)  # MMD^2 = 1 + 0.2 - 1 = 0.2
    loss = immd_from_terms(k_ss, below, k_su, "neg_mmd2_hinge", margin=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(-0.2) and below.grad.item() == -1.0  # below the margin: the push acts
    above = torch.tensor(0.9, requires_grad=True)  # MMD^2 = 0.9 > 0.5
    loss = immd_from_terms(k_ss, above, k_su, "neg_mmd2_hinge", margin=0.5)
    loss.backward()
    assert loss.item() == pytest.approx(-0.5) and above.grad.item() == 0.0  # past it: nothing to gain
    with pytest.raises(ValueError, match="needs its margin"):
        immd_from_terms(k_ss, above, k_su, "neg_mmd2_hinge")


def test_the_hinge_margin_is_a_real_class_group_and_the_objective_needs_it() -> None:
    from izf_lib.losses import immd_bounds, immd_margin

    gen = torch.Generator().manual_seed(5)
    y = torch.arange(6).repeat_interleave(10)
    v = torch.randn(60, 4, generator=gen) * 0.3 + torch.nn.functional.one_hot(y % 4, 4) * 2
    bounds = immd_bounds(v, y)
    args = (v, y, 2, 32, (0.5, 1.0), bounds)
    first = immd_margin(*args, torch.Generator().manual_seed(0))
    assert first == immd_margin(*args, torch.Generator().manual_seed(0))  # its draws come from the generator alone
    # by hand, one draw: the same classes held out, the same batches, the bounded MMD^2 of mmd2_terms
    g = torch.Generator().manual_seed(0)
    one = immd_margin(*args, g, draws=1)
    g = torch.Generator().manual_seed(0)
    held = torch.arange(6)[torch.randperm(6, generator=g)[:2]]
    rest = v[~torch.isin(y, held)]
    x = rest[torch.randint(rest.shape[0], (32,), generator=g)]
    pick = held[torch.randint(2, (32,), generator=g)]
    rows = torch.empty(32, dtype=torch.long)
    for cls in pick.unique():
        at, members = (pick == cls).nonzero().squeeze(1), (y == cls).nonzero().squeeze(1)
        rows[at] = members[torch.randint(members.numel(), (at.numel(),), generator=g)]
    k_ss, k_uu, k_su = mmd2_terms(x, v[rows], (0.5, 1.0), bounds=bounds)
    assert one == pytest.approx(float(k_ss + k_uu - 2 * k_su))
    with pytest.raises(ValueError, match="two seen classes"):
        immd_margin(v[:10], y[:10], 2, 8, (1.0,), bounds, torch.Generator())
    model = IZF(torch.rand(8, 3, generator=gen), 4 + 4, IZFConfig(n_blocks=2, hidden=16, seed=0,
                                                                  immd_form="neg_mmd2_hinge"))
    v8 = torch.nn.functional.pad(v, (0, 4))
    with pytest.raises(ValueError, match="bounds and margin"):
        model.objective(v8[:20], y[:20], torch.tensor([6, 7]), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="n_unseen"):
        model.fit_immd_kernel(v8, y)
    model.fit_immd_kernel(v8, y, n_unseen=2)
    out = model.objective(v8[:20], y[:20], torch.tensor([6, 7]), torch.Generator().manual_seed(0))
    mmd = out["k_ss"] + out["k_uu"] - 2.0 * out["k_su"]
    assert torch.equal(out["l_immd"].detach(), -torch.clamp(mmd, max=model.immd_margin))
