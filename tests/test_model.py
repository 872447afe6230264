"""The IZF model and its classifiers."""

from __future__ import annotations

import torch

from izf_lib.classifiers import density_argmax_predict, nbc_predict
from izf_lib.config import IZFConfig
from izf_lib.model import IZF


def _model(seed: int = 0) -> IZF:
    torch.manual_seed(seed)
    att = torch.rand(5, 3)
    model = IZF(att, d_v=8, config=IZFConfig(hidden=16, n_blocks=3))
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def test_generate_inverts_encode() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(0)
    v = model.generate(model.att[:2], n=4, generator=gen)
    assert v.shape == (8, 8)
    c, z_f, _ = model.encode(v)
    torch.testing.assert_close(c, model.att[:2].repeat_interleave(4, 0), atol=1e-4, rtol=0)


def test_class_log_prob_matches_log_prob_per_class() -> None:
    model = _model()
    v = torch.randn(6, 8)
    classes = torch.tensor([0, 2, 4])
    table = model.class_log_prob(v, classes)
    for j, k in enumerate(classes.tolist()):
        torch.testing.assert_close(table[:, j], model.log_prob(v, torch.full((6,), k)))


def test_nbc_equals_full_density_argmax() -> None:
    model = _model(3)
    v = torch.randn(200, 8)
    classes = torch.tensor([1, 3, 4])
    assert torch.equal(nbc_predict(model, v, classes), density_argmax_predict(model, v, classes))


def test_objective_reaches_every_parameter() -> None:
    model = _model()
    v, y = torch.rand(10, 8), torch.tensor([0, 1, 2] * 3 + [0])
    model.fit_immd_kernel(v, y, 2)  # unseen classes 3 and 4
    out = model.objective(v, y, torch.tensor([3, 4]))
    assert set(out) == {"l_flow", "l_c", "l_immd", "loss", "k_ss", "k_uu", "k_su"}  # k_*: iMMD terms, recorded
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sigma_default_matches_dev_code_weight() -> None:
    cfg = IZFConfig()
    assert abs(1.0 / (2 * cfg.sigma_for(2048, 85) ** 2 * 2048) - cfg.w_c / 85) < 1e-9
    assert IZFConfig(sigma=0.5).sigma_for(2048, 85) == 0.5


def test_one_reverse_pass_for_l_c_and_immd_equals_two_separate_passes() -> None:
    """The objective runs L_C's centres and iMMD's generated features through one reverse pass:
    each row alone, so the loss terms and gradients equal those of the two passes run apart."""
    from izf_lib import losses

    model = _model(1).double()
    model.att = model.att.double()
    v, y, unseen = torch.rand(10, 8, dtype=torch.float64), torch.tensor([0, 1, 2] * 3 + [0]), torch.tensor([3, 4])
    model.fit_immd_kernel(v, y, 2)
    out = model.objective(v, y, unseen, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    pick = torch.randint(unseen.numel(), (10,), generator=gen)
    v_gen = model.generate_classes(unseen[pick], gen)  # the separate passes, drawn in the same order
    l_c = losses.centralizing_loss(model.flow, v, y, model.att, reduction=model.config.lc_reduction)
    k_ss, k_uu, k_su = losses.mmd2_terms(v, v_gen, model.kernel_scales, bounds=model.immd_bounds)
    l_immd = losses.immd_from_terms(k_ss, k_uu, k_su, model.config.immd_form, model.immd_margin)
    torch.testing.assert_close(out["l_c"], l_c, rtol=1e-12, atol=0)
    torch.testing.assert_close(out["l_immd"], l_immd, rtol=1e-12, atol=0)
    params = list(model.flow.parameters())
    merged = torch.autograd.grad(out["l_c"] + out["l_immd"], params)
    apart = torch.autograd.grad(l_c + l_immd, params)
    for g_merged, g_apart in zip(merged, apart, strict=True):
        torch.testing.assert_close(g_merged, g_apart, rtol=1e-10, atol=1e-12)
