"""Precision policies: bf16 changes only the sub-networks' matmuls, stays invertible, and trains comparably."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.utils._python_dispatch import TorchDispatchMode

from izf_lib import losses, precision
from izf_lib.config import IZFConfig
from izf_lib.data import load_xlsa17
from izf_lib.experiment import fit
from izf_lib.flows import IZFFlow
from izf_lib.model import IZF
from izf_lib.precision import autocast_dtype, matmul_precision

from helpers import randomised


def _flow_and_reference(precision: str) -> tuple[IZFFlow, torch.Tensor, torch.Tensor]:
    flow = randomised(IZFFlow(12, n_blocks=3, hidden=32, seed=0), std=0.3, seed=0)
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(1))
    ref = torch.stack([torch.linalg.slogdet(jacobian(lambda r: flow.double()(r[None])[0][0], row)).logabsdet
                       for row in x.double()])
    return flow.float().set_precision(precision), x, ref


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_fp32_and_cpu_tf32_match_the_float64_log_det(precision: str) -> None:
    flow, x, ref = _flow_and_reference(precision)
    with torch.no_grad():
        z, log_det = flow(x)
    assert z.dtype == log_det.dtype == torch.float32
    torch.testing.assert_close(log_det.double(), ref, rtol=0, atol=1e-4)  # measured: 2.7e-6


def test_bf16_keeps_float32_outputs_an_exact_inverse_and_a_close_log_det() -> None:
    flow, x, ref = _flow_and_reference("bf16")
    with torch.no_grad():
        z, log_det = flow(x)
        back = flow.inverse(z)
    assert z.dtype == log_det.dtype == back.dtype == torch.float32  # only the sub-networks ran in bf16
    assert (back - x).abs().max() < 1e-3  # measured: 2.3e-5 (the inverse replays the same bf16 sub-networks)
    err = (log_det.double() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.06  # measured: 0.021 relative to |log det| = 3.5; non-zero: bf16 really ran


class _WeightCasts(TorchDispatchMode):
    """Counts the bf16 casts of float32 tensors of the given shapes (the sub-networks' weights)."""

    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes, self.count = shapes, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (PyTorch's protocol)
        kwargs = kwargs or {}
        if (func is torch.ops.aten._to_copy.default and kwargs.get("dtype") is torch.bfloat16
                and tuple(args[0].shape) in self.shapes):
            self.count += 1
        return func(*args, **kwargs)


def _small_bf16_model(seed: int = 0) -> tuple[IZF, torch.Tensor, torch.Tensor, torch.Tensor]:
    att = torch.rand(6, 3, generator=torch.Generator().manual_seed(seed))
    model = IZF(att, 12, IZFConfig(n_blocks=2, hidden=16, precision="bf16", immd_form="neg_mmd2_biased"))
    randomised(model.flow, std=0.3, seed=seed)
    v = torch.randn(8, 12, generator=torch.Generator().manual_seed(seed + 1))
    return model, v, torch.arange(8) % 4, torch.tensor([4, 5])


def test_bf16_objective_casts_each_weight_once_for_all_its_passes() -> None:
    model, v, y, unseen = _small_bf16_model()
    weights = [p for n, p in model.flow.named_parameters() if n.endswith("weight")]
    shapes = {tuple(w.shape) for w in weights}
    with _WeightCasts(shapes) as once:
        model.objective(v, y, unseen, torch.Generator().manual_seed(2))["loss"]
    with _WeightCasts(shapes) as per_pass:  # the three passes run apart, each casting anew
        c, z_f, log_det = model.encode(v)
        losses.centralizing_loss(model.flow, v, y, model.att)
        model.generate_classes(unseen[:1].repeat(8), torch.Generator().manual_seed(2))
    assert once.count == len(weights)
    assert per_pass.count == 3 * len(weights)
    assert all(c._casts is None for c in model.flow.couplings)  # nothing cached outside the block


def test_shared_casts_change_no_value_and_only_round_the_bf16_gradients() -> None:
    model, v, y, unseen = _small_bf16_model()

    def loss_and_grads(shared: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        if shared:
            loss = model.objective(v, y, unseen, torch.Generator().manual_seed(2))["loss"]
        else:  # the same objective with a fresh cast at every sub-network call
            loss = model._objective(v, y, unseen, torch.Generator().manual_seed(2), None, None)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (l_shared, g_shared), (l_fresh, g_fresh) = loss_and_grads(True), loss_and_grads(False)
    assert torch.equal(l_shared, l_fresh)  # the same bf16 weights, the same forward values
    assert len(g_shared) == len(g_fresh) == len(list(model.parameters()))
    for a, b in zip(g_shared, g_fresh, strict=True):  # the three uses' gradients summed in bf16, not float32
        torch.testing.assert_close(a, b, rtol=0, atol=0.02 * b.abs().max().item())  # measured: 3.4e-3 of the max
    with model.flow.shared_casts(), model.flow.shared_casts():  # nested: the outer casts serve both
        inner = model.flow.couplings[0]._casts
        assert inner is not None
    assert model.flow.couplings[0]._casts is None


def test_shared_casts_are_a_no_op_in_fp32() -> None:
    flow, x, _ = _flow_and_reference("fp32")
    with torch.no_grad():
        plain = flow(x)[0]
        with flow.shared_casts():
            assert all(c._casts is None for c in flow.couplings)
            shared = flow(x)[0]
    assert torch.equal(plain, shared)


def test_precision_settings_are_checked_and_restored() -> None:
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp32") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        IZFConfig(precision="fp16")
    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_precision("tf32", torch.device("cpu")):  # no effect on a CPU
        assert torch.backends.cuda.matmul.allow_tf32 == before
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.slow
def test_bf16_training_reaches_the_accuracy_of_fp32(synthetic_dir: Path, tmp_path: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    cfg = IZFConfig(hidden=64, epochs=30, batch_size=64, eval_every=0, softmax_steps=300, softmax_lr=1e-2, lr=1e-3)
    scores = {p: fit(data, replace(cfg, precision=p), tmp_path / p, device="cpu", progress=False)
              for p in ("fp32", "bf16")}
    for clf in ("nbc", "softmax"):
        a, b = scores["fp32"].scores(clf), scores["bf16"].scores(clf)
        assert abs(a["T1"] - b["T1"]) < TOLERANCE and abs(a["H"] - b["H"]) < TOLERANCE, (clf, a, b)


# Measured on this surrogate (seeds 0, 1, 2; CPU): the largest bf16-fp32 gap in T1 or H of either classifier
# was 2.65 points (IZF-Softmax T1, seed 0), against a seed-to-seed spread of fp32 T1 of 18 points. Twice that:
TOLERANCE = 5.0  # percentage points


# The flags lines of a few CPUs, as /proc/cpuinfo prints them: the first in full (an AMD EPYC, Zen 3, AVX2 only),
# the others abridged to their SIMD and matrix flags.
CPUINFO = {
    "zen3_avx2": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
                 "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid "
                 "extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt "
                 "tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a "
                 "misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 "
                 "smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero "
                 "xsaveerptr wbnoinvd arat umip pku ospke vaes vpclmulqdq rdpid fsrm",
    "skylake_avx512": "sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl",
    "zen4_avx512_bf16": "sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl "
                        "avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg avx512_vpopcntdq",
    "sapphire_rapids_amx": "sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl "
                           "avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8",
}


def _cpuinfo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: x\nflags\t\t: {CPUINFO[name]}\n\nprocessor\t: 1\n")
    return path


@pytest.mark.parametrize(("cpu", "measured", "expected"), [
    ("zen3_avx2", ("amx_bf16",), "fp32"), ("skylake_avx512", ("amx_bf16",), "fp32"),  # no bf16 units at all
    ("sapphire_rapids_amx", ("amx_bf16",), "bf16"),  # the measured kind of unit
    ("zen4_avx512_bf16", ("amx_bf16",), "fp32"),  # bf16 units, but not the kind measured
    ("zen4_avx512_bf16", ("amx_bf16", "avx512_bf16"), "bf16"),
    ("zen4_avx512_bf16", (), "fp32"), ("sapphire_rapids_amx", (), "fp32"),  # units, but nothing measured on a CPU
])
def test_auto_precision_on_a_cpu_follows_its_bf16_units_and_the_measurements(
        monkeypatch: pytest.MonkeyPatch, cpu: str, measured: tuple[str, ...], expected: str) -> None:
    monkeypatch.setitem(precision.BF16_MEASURED, "cpu", bool(measured))
    monkeypatch.setattr(precision, "BF16_MEASURED_CPU_UNITS", measured)
    choice = precision.choose_precision("auto", "cpu", flags=CPUINFO[cpu].split(), environ={})
    assert (choice.requested, choice.precision) == ("auto", expected)
    if cpu in ("zen3_avx2", "skylake_avx512"):
        assert "no bf16 matrix units" in choice.reason and "avx512_bf16" in choice.reason
    elif expected == "fp32":
        assert "were measured" in choice.reason and ("only on CPUs with amx_bf16" in choice.reason) == bool(measured)
    else:
        assert "measured faster" in choice.reason
    assert expected in str(choice) and "auto: " in str(choice)


def test_auto_precision_respects_a_onednn_cap_and_unreadable_flags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(precision.BF16_MEASURED, "cpu", True)
    amx = _cpuinfo(tmp_path, "sapphire_rapids_amx")
    capped = precision.choose_precision("auto", "cpu", cpuinfo=amx, environ={"ONEDNN_MAX_CPU_ISA": "avx2"})
    assert capped.precision == "fp32" and "ONEDNN_MAX_CPU_ISA=AVX2" in capped.reason
    for isa in ("AVX512_CORE_AMX", "AVX512_CORE_BF16", "ALL"):  # caps that keep the bf16 code
        assert precision.choose_precision("auto", "cpu", cpuinfo=amx,
                                          environ={"ONEDNN_MAX_CPU_ISA": isa}).precision == "bf16", isa
    missing = precision.choose_precision("auto", "cpu", cpuinfo=tmp_path / "absent", environ={})
    assert missing.precision == "fp32" and "could not be read" in missing.reason
    assert precision.cpu_flags(tmp_path / "absent") is None
    assert "amx_bf16" in precision.cpu_flags(amx) and "avx2" in precision.cpu_flags(amx)


def test_auto_precision_on_cuda_and_explicit_requests(tmp_path: Path) -> None:
    cuda = torch.device("cuda")
    assert precision.choose_precision("auto", cuda, cuda_capability=(9, 0)).precision == "tf32"  # H100, H200
    assert precision.choose_precision("auto", cuda, cuda_capability=(8, 0)).precision == "tf32"  # A100
    old = precision.choose_precision("auto", cuda, cuda_capability=(7, 0))  # V100: no TF32
    assert old.precision == "fp32" and "7.0" in old.reason
    avx2 = _cpuinfo(tmp_path, "zen3_avx2")
    asked = precision.choose_precision("bf16", "cpu", cpuinfo=avx2)  # asked for is kept, with the warning in reason
    assert (asked.requested, asked.precision) == ("bf16", "bf16") and "much slower" in asked.reason
    assert precision.choose_precision("tf32", "cpu", cpuinfo=avx2).reason == "asked for; on a CPU it is fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.choose_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="resolved for a device"):
        autocast_dtype("auto")
    assert IZFConfig(precision="auto").precision == "auto"  # a config may ask; fit resolves it


def test_fit_resolves_auto_and_records_the_choice(synthetic_dir: Path, tmp_path: Path) -> None:
    data = load_xlsa17("SYN", synthetic_dir)
    cfg = IZFConfig(hidden=16, epochs=1, batch_size=64, eval_every=0, softmax_steps=5, precision="auto")
    res = fit(data, cfg, tmp_path, device="cpu", progress=False)
    expected = precision.choose_precision("auto", "cpu")
    assert res.config["precision"] == expected.precision in precision.PRECISIONS
    assert res.environment["precision"] == expected.to_dict()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["environment"]["precision"]["requested"] == "auto"
