"""Serving estimates: hand-checked decode and prefill bounds, memory, MoE and MLA formulas, bad plans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from perfmodel.errors import InputError
from perfmodel.inference import estimate_inference
from perfmodel.memory import kv_bytes_per_token, weight_bytes_per_gpu
from perfmodel.models import catalog
from perfmodel.ops import Shard, expected_distinct_experts
from perfmodel.roofline import device_rates
from perfmodel.specdb import load_database


def test_llama8b_batch1_decode_is_weight_bound(db):
    """TPOT at batch 1 = weight bytes / achievable HBM bandwidth + one floor per kernel (+ tiny KV/activations)."""
    m = catalog()["llama-3.1-8b"]
    r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 64, 2, batch=1, precision="bf16",
                           engine="default:host_overhead_ms=0", db=db)
    rates = device_rates(db.accelerator("h100-sxm"))
    read = (m.params_total - m.embedding_params()) * 2  # the embedding table is gathered, not streamed
    weight_s = read / (3350e9 * rates.mem_fraction)
    kernels = 8 * m.layers + 4  # norm, qkv, attention, o, norm, up, act, down per layer; embed, norm, head, sample
    expected_ms = (weight_s + kernels * rates.floor_s) * 1e3
    assert r.decode_step_ms == pytest.approx(expected_ms, rel=0.03)
    assert r.bound["decode"] == "memory"


def test_long_prefill_is_compute_bound(db):
    r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 8192, 16, batch=1, db=db)
    assert r.bound["prefill"] == "compute"
    assert r.time_share["prefill"]["compute"] > 0.8


def test_expected_distinct_experts():
    assert expected_distinct_experts(8, 2, 1) == pytest.approx(2.0)
    assert expected_distinct_experts(8, 2, 2) == pytest.approx(8 * (1 - 0.75**2))  # 3.5
    assert expected_distinct_experts(256, 8, 10_000) == pytest.approx(256, rel=1e-6)
    rng = np.random.default_rng(0)
    E, k, T = 64, 6, 20
    draws = [len({e for _ in range(T) for e in rng.choice(E, k, replace=False)}) for _ in range(2000)]
    assert np.mean(draws) == pytest.approx(expected_distinct_experts(E, k, T), rel=0.02)


def test_kv_bytes_per_token():
    m70 = catalog()["llama-3.1-70b"]
    assert kv_bytes_per_token(m70, Shard(tp=1), 1, 2.0) == 80 * 2 * 8 * 128 * 2  # 327,680 B
    assert kv_bytes_per_token(m70, Shard(tp=8), 1, 2.0) == 80 * 2 * 1 * 128 * 2  # one KV head per rank
    assert kv_bytes_per_token(m70, Shard(tp=16), 1, 2.0) == 80 * 2 * 1 * 128 * 2  # replicated past k
    ds = catalog()["deepseek-v3"]
    assert kv_bytes_per_token(ds, Shard(tp=1), 1, 2.0) == 61 * (512 + 64) * 2  # 70,272 B: the MLA latent
    assert kv_bytes_per_token(ds, Shard(tp=8), 1, 1.0) == 61 * (512 + 64)  # latent replicated across TP


def test_larger_tp_means_fewer_weight_bytes():
    m = catalog()["llama-3.1-70b"]
    sizes = [weight_bytes_per_gpu(m, Shard(tp=t), 1, 1.0).total for t in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] / sizes[3] == pytest.approx(8, rel=0.01)


def test_moe_weights_split_over_ep_with_attention_dp():
    m = catalog()["deepseek-v3"]
    one = weight_bytes_per_gpu(m, Shard(tp=8, ep=8, attention_dp=True), 1, 1.0)
    two = weight_bytes_per_gpu(m, Shard(tp=16, ep=16, attention_dp=True), 1, 1.0)
    assert two.experts < one.experts
    assert two.attention == one.attention  # attention replicated under attention-DP


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        (dict(model="llama-3.1-8b", tp=3), "--tp 3"),
        (dict(model="llama-3.1-70b", tp=16, gpus=16, system="dgx-h100"), None),
        (dict(model="mixtral-8x7b", tp=2, ep=3), "--ep 3"),
        (dict(model="llama-3.1-8b", ep=2, tp=2), "--ep 2"),
        (dict(model="llama-3.1-8b", precision="fp7"), "--precision"),
        (dict(model="llama-3.1-8b", batch=0), "--batch"),
    ],
)
def test_bad_plans(db, kwargs, flag):
    system = kwargs.pop("system", "8 x h100-sxm")
    model = kwargs.pop("model")
    if flag is None:  # a valid plan: TP past the KV heads replicates them
        estimate_inference(model, system, 128, 128, db=db, **kwargs)
        return
    kwargs.setdefault("gpus", kwargs.get("tp", 1) * kwargs.get("pp", 1))
    with pytest.raises(InputError) as ei:
        estimate_inference(model, system, 128, 128, db=db, **kwargs)
    assert flag in str(ei.value)


def test_model_that_does_not_fit_says_by_how_much(db):
    with pytest.raises(InputError) as ei:
        estimate_inference("llama-3.1-405b", "1 x h100-sxm", 128, 128, db=db)
    msg = str(ei.value)
    assert "does not fit" in msg and "short by" in msg and "GiB" in msg


def test_batch_larger_than_fits(db):
    with pytest.raises(InputError, match="--batch"):
        estimate_inference("llama-3.1-70b", "2 x h100-sxm", 4096, 4096, tp=2, batch=100_000, db=db)


def _scaled_db(tmp_path, device: str, field: str, factor: float):
    base = load_database()
    acc = base.accelerator(device)
    value = getattr(acc, field).value * factor
    d = tmp_path / f"{field}-{factor}"
    d.mkdir()
    (d / "o.yaml").write_text(f"extends: {device}\n{field}: {{value: {value}, assumed: 'what-if'}}\n")
    return load_database((str(d),))


@settings(max_examples=8, deadline=None)
@given(factor=st.floats(1.05, 3.0), isl=st.sampled_from([128, 2048]), batch=st.sampled_from([1, 32, 256]))
def test_more_bandwidth_is_never_slower(tmp_path_factory, factor, isl, batch):
    tmp = tmp_path_factory.mktemp("bw")
    base = load_database()
    fast = _scaled_db(tmp, "h100-sxm", "memory_bandwidth_gbps", factor)
    kw = dict(isl=isl, osl=256, batch=batch, precision="fp8")
    slow_r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", db=base, **kw)
    fast_r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", db=fast, **kw)
    assert fast_r.decode_step_ms <= slow_r.decode_step_ms + 1e-9
    assert fast_r.output_tokens_per_s >= slow_r.output_tokens_per_s - 1e-9


def test_server_scenario_and_slo(db):
    off = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 1000, 200, precision="fp8", db=db)
    low = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 1000, 200, precision="fp8", scenario="server",
                             rate=1.0, slo_ttft_ms=2000, slo_tpot_ms=100, db=db)
    assert low.output_tokens_per_s == pytest.approx(200.0)
    assert low.slo_attainment > 0.99
    assert low.tpot_ms < off.tpot_ms  # a lightly loaded server decodes small batches
    cap = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 1000, 200, precision="fp8", scenario="server",
                             slo_ttft_ms=2000, slo_tpot_ms=50, db=db)
    assert cap.max_rate_within_slo > 1.0
    assert cap.tpot_ms <= cap.tpot_p99_ms <= 50 + 1e-6  # MLPerf's rule: the p99 TPOT meets the SLO
    with pytest.raises(InputError, match="--rate"):
        estimate_inference("llama-3.1-8b", "1 x h100-sxm", 1000, 200, scenario="server", rate=1e6, db=db)


def test_disaggregated_costs_kv_transfer(db):
    r = estimate_inference("llama-3.1-70b", "dgx-h100", 4000, 500, tp=2, precision="fp8", prefill_gpus=2,
                           decode_gpus=6, db=db)
    assert r.scenario == "disaggregated" and r.kv_transfer_ms > 0
    kv = 80 * 2 * 4 * 128 * 1 * 4000  # bytes per request on one rank: 80 layers, 4 KV heads/rank, fp8
    assert r.kv_transfer_ms < kv / 100e9 * 1e3 * 10  # NVLink-class, not PCIe-class


def test_cost_and_energy_present_for_priced_device(db):
    r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 1000, 1000, precision="fp8", db=db)
    price = db.accelerator("h100-sxm").price_per_hour_usd.value
    assert r.cost_per_million_output_tokens_usd == pytest.approx(price / 3600 / r.output_tokens_per_s * 1e6)
    assert 0 < r.energy_per_output_token_j < 10
    assert r.memory_per_gpu_bytes["weights"] > 8e9


def test_server_p99_tpot_is_a_poisson_count_of_interleaved_prompts(db):
    """TPOT of one request = step + (prompts arriving during its decode) x prefill / osl, the count Poisson."""
    from scipy.stats import poisson

    osl = 200
    r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 1000, osl, precision="fp8", scenario="server",
                           rate=20.0, db=db)
    step_s, p_s, tpot_s = r.decode_step_ms / 1e3, r.prefill_ms_per_request / 1e3, r.tpot_ms / 1e3
    assert tpot_s == pytest.approx(step_s / (1 - 20.0 * p_s), rel=1e-6)  # mean: prefill share stretches it
    arrivals = 20.0 * osl * tpot_s
    assert r.tpot_p99_ms / 1e3 == pytest.approx(step_s + p_s * poisson.ppf(0.99, arrivals) / osl, rel=1e-6)
    assert r.ttft_p99_ms > r.ttft_ms


def test_pipeline_stages_overlap_micro_batches_by_hand(db):
    """Pipeline parallelism in serving: C sequences run as pp micro-batches of C/pp. Each sequence gains a
    token every time one micro-batch has passed through the whole model (the other stages work on the other
    micro-batches meanwhile), and pp prompt chunks are in flight at once, so offline
    tokens/s = C osl / (osl t_decode(C/pp through all layers) + C p / pp)."""
    kw = dict(precision="fp8", db=db, breakdown=False)
    pp2 = estimate_inference("llama-3.1-70b", "2 x h100-sxm", 1000, 200, tp=1, pp=2, **kw)
    C, step_s, p_s = pp2.batch, pp2.decode_step_ms / 1e3, pp2.prefill_ms_per_request / 1e3
    assert pp2.output_tokens_per_s == pytest.approx(C * 200 / (200 * step_s + C * p_s / 2), rel=1e-9)
    assert pp2.tpot_ms == pytest.approx((200 * step_s + (C - 1) * p_s / 2) / 200 * 1e3, rel=1e-9)
    # the same two GPUs as TP2 hold the same weights per GPU; a pipeline that overlaps its stages does not
    # lose half its throughput to idle stages (it only pays the stage hand-offs and TP's absent all-reduce)
    tp2 = estimate_inference("llama-3.1-70b", "2 x h100-sxm", 1000, 200, tp=2, pp=1, **kw)
    assert 0.7 < pp2.output_tokens_per_s / tp2.output_tokens_per_s < 1.4


def test_a_borrowed_gemm_fraction_is_listed_as_an_assumption(db):
    """MI355X has no measured FP4 GEMM rate, so an FP4 estimate says it borrows the BF16 fraction; B200's
    FP4 fraction is measured (DeepGEMM #348: 5,702 / 9,000 TF), so its estimate does not."""
    mi = estimate_inference("llama-3.1-8b", "1 x mi355x", 1000, 1000, precision="fp4", db=db)
    assert any("no measured fp4 GEMM fraction" in a for a in mi.assumptions)
    b = estimate_inference("llama-3.1-8b", "1 x b200", 1000, 1000, precision="fp4", db=db)
    assert not any("GEMM fraction" in a for a in b.assumptions)
    assert device_rates(db.accelerator("b200"), sustained=False).achievable_tflops("fp4") == pytest.approx(9000 * 0.63)


@pytest.mark.parametrize("kw,flag", [(dict(rate=float("nan")), "--rate"), (dict(rate=-2.0), "--rate"),
                                     (dict(slo_tpot_ms=float("nan")), "--slo-tpot-ms"),
                                     (dict(slo_ttft_ms=0.0, slo_tpot_ms=50.0), "--slo-ttft-ms")])
def test_server_numbers_must_be_positive_and_finite(db, kw, flag):
    with pytest.raises(InputError, match=flag):
        estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 300, scenario="server", db=db, **kw)


def test_ttft_tail_counts_each_prompts_own_prefill():
    """TTFT = own prefill S + queueing wait W, P(W > t) = rho exp(-t / theta). One prompt length:
    p99 = S + theta ln(rho / 0.01). Prompts whose prefill is 0.5 s or 1.5 s (equally often), rho 0.5,
    theta 1 s: P(TTFT > x) = 0.25 (e^(0.5 - x) + e^(1.5 - x)) = 0.01 at x = ln((e^0.5 + e^1.5) / 0.04)."""
    import math

    from perfmodel.inference import ttft_exceeds, ttft_quantile

    assert ttft_quantile(0.99, 0.1, [1.0], 0.5, 1.0) == pytest.approx(0.1 + 1.0 + math.log(50), rel=1e-9)
    two = ttft_quantile(0.99, 0.0, [0.5, 1.5], 0.5, 1.0)
    assert two == pytest.approx(math.log((math.exp(0.5) + math.exp(1.5)) / 0.04), rel=1e-9)
    assert two > ttft_quantile(0.99, 0.0, [1.0], 0.5, 1.0)  # same mean prefill, wider tail
    assert ttft_exceeds(two, 0.0, [0.5, 1.5], 0.5, 1.0) == pytest.approx(0.01, rel=1e-6)
    assert ttft_exceeds(0.4, 0.0, [0.5, 1.5], 0.5, 1.0) == 1.0  # before any prefill can finish


def test_lm_head_stays_bf16_under_fp8_weights(db):
    """The LM head is not quantized (TensorRT-LLM/ModelOpt exclude lm_head): at batch 512 its GEMM is
    compute-bound, so it runs at the BF16 rate, half the FP8 one, on the [512, 4096] x [4096, vocab] shape."""
    from perfmodel.roofline import gemm_time

    m = catalog()["llama-3.1-8b"]
    r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 128, 128, batch=512, precision="fp8", db=db)
    head = next(o for o in r.breakdown if o.phase == "decode" and o.name == "lm_head")
    rates = device_rates(db.accelerator("h100-sxm"))
    bf16_s = gemm_time(rates, 512, m.vocab, m.hidden, "bf16", 2.0, 2.0)[0]
    fp8_s = gemm_time(rates, 512, m.vocab, m.hidden, "fp8", 1.0, 2.0)[0]
    assert head.time_us == pytest.approx(bf16_s * 1e6, rel=1e-9)
    assert head.bound == "compute" and bf16_s > 1.5 * fp8_s


def test_weight_streaming_fraction_times_memory_bound_gemms_only(db):
    """gb300 streams GEMM weights at its weight_streaming_fraction (0.73, carried from B200's GEMM tables) and
    runs elementwise kernels at its triad fraction (0.89): a batch-1 GEMM over 1 GB of FP8 weights takes
    1e9 / (8,000 GB/s x 0.73) plus one floor; a 1 GB memory op 1e9 / (8,000 GB/s x 0.89) plus one floor. A
    device without the field (h100-sxm) streams both at its one fraction."""
    from perfmodel.roofline import gemm_time, memory_time

    r = device_rates(db.accelerator("gb300"))
    n = k = 31623  # ~1.0e9 one-byte weights
    t_gemm = gemm_time(r, 1, n, k, "fp8", 1.0, 1.0)[0]
    nbytes = k * 1.0 + k * n * 1.0 + n * 2.0  # activation row, weights, BF16 output row
    assert t_gemm == pytest.approx(nbytes / (8000e9 * 0.73) + r.floor_s, rel=2e-3)
    assert memory_time(r, 1e9)[0] == pytest.approx(1e9 / (8000e9 * 0.89) + r.floor_s)
    h = device_rates(db.accelerator("h100-sxm"))
    assert h.gemm_gbps == h.achievable_gbps


def test_a_sustained_ratio_measured_for_one_dtype_is_not_lent_to_another(db):
    """gb200 carries sustained ratios of 1 for FP8 and FP4 (its fractions come from Azure's runs after
    10,000 warm-up products, already at the loaded clock); BF16, a short MAMF sweep, keeps the roofline's
    fallback 0.86 rather than borrowing FP8's 1, and an estimate in BF16 says so among its assumptions."""
    from perfmodel.roofline import FALLBACK_SUSTAINED_RATIO, fallback_notes

    r = device_rates(db.accelerator("gb200"))
    assert r.achievable_tflops("fp8") == pytest.approx(5000 * 0.58)
    assert r.achievable_tflops("fp4") == pytest.approx(10000 * 0.76)
    assert r.achievable_tflops("bf16") == pytest.approx(2500 * 0.73 * FALLBACK_SUSTAINED_RATIO)
    assert any("bf16 sustained GEMM ratio" in n for n in fallback_notes(r, "bf16"))
    assert not any("sustained" in n for n in fallback_notes(r, "fp8"))
    h = device_rates(db.accelerator("h100-sxm"))
    assert h.achievable_tflops("int8") == pytest.approx(1978.9 * 0.8 * 0.867)  # BF16 fraction and ratio, as before
