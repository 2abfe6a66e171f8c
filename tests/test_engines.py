"""Serving-engine settings: the trtllm-bench tuning heuristic and engine lookup."""

from __future__ import annotations

import pytest

from perfmodel.engines import engine_from_text, get_engine, trtllm_bench_limits, tune
from perfmodel.errors import InputError
from perfmodel.inference import estimate_inference
from perfmodel.models import get_model


@pytest.mark.parametrize("requests, isl, osl, pp, expected", [
    # capacity for far more than 4,096 requests: the 4,096 cap, and 4,096 x (1 + 1) = 8,192 tokens, as in
    # the sample trtllm-bench output of NVIDIA's perf-overview page (Llama-2-7B, 128/128)
    (1e6, 128, 128, 1, (4096, 8192)),
    # 44 requests: batch floor 64; 44 x (1 + 1) = 88 tokens -> the 2,048 floor
    (44.0, 1000, 1000, 1, (64, 2048)),
    # 200 requests -> 224 (multiple of 32); 200 x 17 = 3,400 -> 3,584 (multiple of 256)
    (200.0, 2048, 128, 1, (224, 3584)),
    # 500 -> 512 (multiple of 128); 500 x 5 = 2,500 -> 2,560
    (500.0, 2000, 500, 1, (512, 2560)),
    # 1,500 -> 1,536 (multiple of 256); 1,500 x 3 = 4,500 -> 4,608 (multiple of 512)
    (1500.0, 1000, 500, 1, (1536, 4608)),
    # 3,000 x 17 = 51,000 tokens -> the 32,768 cap
    (3000.0, 2048, 128, 1, (3072, 32768)),
    # pipeline stages divide the batch: 4,096 / 4 = 1,024 -> 1,024; 1,024 x 2 = 2,048
    (1e5, 128, 128, 4, (1024, 2048)),
])
def test_trtllm_bench_limits(requests, isl, osl, pp, expected):
    assert trtllm_bench_limits(requests, isl, osl, pp) == expected


def test_tune_counts_every_parameter_and_all_kv_heads():
    """70B FP8 on one 80 GiB GPU: (85.9 GB - 70.6e9 B) x 0.95 / (160 KiB x 2,000 tokens) = 44 requests."""
    arch = get_model("llama-3.1-70b")
    kv_token = 2 * arch.layers * arch.n_kv_heads * arch.d_head * 1.0
    eng = tune(get_engine("trtllm-bench"), arch.params_total, kv_token, 85.9e9, 1.0, 1000, 1000, 1)
    requests = (85.9e9 - arch.params_total) * 0.95 / (kv_token * 2000)
    assert 40 < requests < 50
    assert (eng.max_batch, eng.max_num_tokens) == trtllm_bench_limits(requests, 1000, 1000, 1) == (64, 2048)
    untuned = get_engine("trtllm")
    assert tune(untuned, arch.params_total, kv_token, 85.9e9, 1.0, 1000, 1000, 1) is untuned


def test_engine_names_and_free_text():
    assert get_engine("trtllm-bench").tuned
    assert get_engine("TensorRT-LLM").name == "trtllm"
    assert engine_from_text("TensorRT-LLM 0.17 (trtllm-bench)") == "trtllm-bench"
    assert engine_from_text("TensorRT-LLM 0.17 (gptManagerBenchmark)") == "trtllm-bench"
    assert engine_from_text("TensorRT-LLM (MLPerf harness)") == "trtllm"
    with pytest.raises(InputError, match="--engine"):
        get_engine("tgi")
    with pytest.raises(InputError, match="did you mean trtllm-bench"):
        get_engine("trtlm-bench")


def test_trtllm_bench_sizes_the_token_budget_from_the_workload(db):
    """A prefill-heavy 70B run on one H100 gets the 2,048-token floor, not the static 8,192: the smaller
    activation buffer leaves more memory for KV, and the result reports the tuned engine."""
    kw = dict(system="1 x h100-sxm", isl=2048, osl=128, precision="fp8", kv_precision="fp8", requests=3000,
              db=db, breakdown=False)
    tuned = estimate_inference("llama-3.1-70b", engine="trtllm-bench", **kw)
    static = estimate_inference("llama-3.1-70b", engine="trtllm", **kw)
    assert tuned.engine == "trtllm-bench"
    assert tuned.memory_per_gpu_bytes["activations"] < static.memory_per_gpu_bytes["activations"] / 4
    assert tuned.max_batch_fits > static.max_batch_fits
    forced = estimate_inference("llama-3.1-70b", engine="trtllm-bench", chunk_tokens=8192, **kw)
    assert forced.memory_per_gpu_bytes["activations"] > 3.5 * tuned.memory_per_gpu_bytes["activations"]


def test_engine_settings_in_the_engines_own_flag_names():
    eng = get_engine("vllm:max_num_seqs=512,max-num-batched-tokens=1024")
    assert (eng.max_batch, eng.max_num_tokens, eng.memory_fraction) == (512, 1024, 0.9)
    assert eng.label == "vllm:max_batch=512,max_num_tokens=1024"
    assert get_engine("trtllm:kv_cache_free_gpu_mem_fraction=0.95").memory_fraction == 0.95
    for bad, msg in (("vllm:max_num_seq=512", "did you mean max_num_seqs"),
                     ("vllm:gpu_memory_utilization=1.5", "fraction in \\(0, 1\\]"),
                     ("vllm:max_num_seqs=0", "positive whole number"),
                     ("vllm:max_num_seqs", "positive whole number"),
                     ("vllm:block_size=16.5", "positive whole number")):
        with pytest.raises(InputError, match=msg):
            get_engine(bad)


def test_settings_a_user_pins_survive_workload_tuning():
    arch = get_model("llama-3.1-70b")
    kv_token = 2 * arch.layers * arch.n_kv_heads * arch.d_head * 1.0
    eng = tune(get_engine("trtllm-bench:max_num_tokens=8192"), arch.params_total, kv_token, 85.9e9, 1.0, 1000, 1000, 1)
    assert (eng.max_batch, eng.max_num_tokens) == (64, 8192)


def test_free_text_settings_reach_the_engine():
    text = "vLLM 0.10.0 (--max-num-seqs 512 --max-num-batched-tokens 1024, README); software: vLLM 0.10.0"
    assert engine_from_text(text) == "vllm:max_num_seqs=512,max_num_batched_tokens=1024"
    assert engine_from_text("TensorRT-LLM (MLPerf TRT harness, gpu_batch_size 2048)") == "trtllm:gpu_batch_size=2048"
    assert get_engine(engine_from_text("TensorRT-LLM (MLPerf TRT harness, gpu_batch_size 256)")).max_batch == 256
    assert engine_from_text("PyTorch eager") is None


def test_a_batch_cap_binds_the_offline_concurrency(db):
    kw = dict(system="1 x h100-sxm", isl=128, osl=2048, precision="fp8", db=db, breakdown=False)
    free = estimate_inference("llama-3.1-8b", engine="vllm:max_num_seqs=1024", **kw)
    capped = estimate_inference("llama-3.1-8b", engine="vllm:max_num_seqs=64", **kw)
    assert capped.batch == 64 < free.batch and capped.output_tokens_per_s < free.output_tokens_per_s
    assert capped.engine == "vllm:max_batch=64"


def test_kv_budgets_of_whole_device_and_fraction_of_free_engines():
    """vLLM takes 0.9 of the whole device; TensorRT-LLM gives the KV cache 0.9 of what is free once the
    weights, the activations and the 0.82 GB CUDA context are allocated (its memory guide's H100 log)."""
    from perfmodel.memory import GB, RUNTIME_CONTEXT_GB, plan_memory
    from perfmodel.ops import Shard

    m = get_model("llama-3.1-8b")
    vllm, trt = get_engine("vllm"), get_engine("trtllm")
    pv = plan_memory(m, Shard(), 1, 80.0, vllm, 2.0, 2.0, 2.0, 2048)
    assert pv.reserve == pytest.approx(0.1 * 80 * GB)
    pt = plan_memory(m, Shard(), 1, 80.0, trt, 2.0, 2.0, 2.0, 2048)
    free = 80 * GB - pt.weights.total - pt.activations - RUNTIME_CONTEXT_GB * GB
    assert pt.reserve == pytest.approx(RUNTIME_CONTEXT_GB * GB + 0.1 * free)
    assert pt.kv_budget == pytest.approx(0.9 * free)


def test_host_overhead_is_paid_once_an_iteration(db):
    """--engine "trtllm:host_overhead_ms=N": every engine iteration (a decode step, a prefill chunk) idles the
    GPU N ms while the host schedules, so at a fixed batch the decode step and the prefill step grow by
    exactly the difference and the breakdown shows it; 0 turns it off."""
    eng = get_engine("trtllm:host_overhead_ms=1")
    assert eng.host_overhead_s == pytest.approx(1e-3) and eng.label == "trtllm:host_overhead_ms=1"
    kw = dict(precision="fp8", batch=256, db=db)
    base = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 128, 128, engine="trtllm:host_overhead_ms=0", **kw)
    slow = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 128, 128, engine="trtllm:host_overhead_ms=1", **kw)
    assert slow.decode_step_ms == pytest.approx(base.decode_step_ms + 1.0, rel=1e-9)
    assert slow.prefill_step_ms == pytest.approx(base.prefill_step_ms + 1.0, rel=1e-9)
    assert slow.output_tokens_per_s < base.output_tokens_per_s
    assert any(r.name == "host_overhead" and r.time_us == pytest.approx(1000) for r in slow.breakdown)
    assert not any(r.name == "host_overhead" for r in base.breakdown)
    with pytest.raises(InputError, match="milliseconds, 0 or more"):
        get_engine("trtllm:host_overhead_ms=-2")


def test_tensorrt_executor_carries_its_measured_host_time(db):
    """TensorRT-LLM's C++ executor engines carry TRT_EXECUTOR_HOST_MS per iteration: the mean of the four
    light-load gaps (7-6.19, 5-4.75, 18-16.92, 15-13.52 ms) of NVIDIA's 0.14 online table. vLLM and SGLang
    carry none, a PyTorch-backend description gets 0 (its overlap scheduler hides the host work), and the
    estimate says where the time came from."""
    from perfmodel.engines import TRT_EXECUTOR_HOST_MS, engine_from_text

    gaps = [7 - 6.19, 5 - 4.75, 18 - 16.92, 15 - 13.52]
    assert TRT_EXECUTOR_HOST_MS == pytest.approx(sum(gaps) / 4, abs=0.01)
    for name in ("default", "trtllm", "trtllm-bench", "tensorrt-llm"):
        assert get_engine(name).host_overhead_s == pytest.approx(TRT_EXECUTOR_HOST_MS / 1e3)
    assert get_engine("vllm").host_overhead_s == 0 and get_engine("sglang").host_overhead_s == 0
    assert engine_from_text("TensorRT-LLM v1.0 (trtllm-bench, PyTorch backend)") == "trtllm-bench:host_overhead_ms=0"
    assert engine_from_text("TensorRT-LLM 0.17 (trtllm-bench)") == "trtllm-bench"
    kw = dict(precision="fp8", batch=64, db=db)
    off = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 128, 128, engine="trtllm:host_overhead_ms=0", **kw)
    on = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 128, 128, engine="trtllm", **kw)
    assert on.decode_step_ms == pytest.approx(off.decode_step_ms + TRT_EXECUTOR_HOST_MS, rel=1e-9)
    assert any("0.9 ms of executor host time" in a for a in on.assumptions)
    assert not any("executor host time" in a for a in off.assumptions)
