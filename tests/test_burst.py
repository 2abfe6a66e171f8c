"""The finite-burst simulation (perfmodel/burst.py) against hand-computed schedules."""

import pytest

from perfmodel.burst import simulate_burst
from perfmodel.inference import estimate_inference


def linear(a_s, b_s):
    return lambda d: 0.0 if d == 0 else a_s + b_s * d


def test_single_request_is_prefill_then_decode_steps():
    r = simulate_burst(1, 4, isl=100, osl=11, budget_tokens=8192, decode_s=linear(0.010, 0.001),
                       prefill_s_per_token=1e-4)
    assert r.mean_ttft_s == pytest.approx(100 * 1e-4)
    assert r.mean_itl_s == pytest.approx(0.011)
    assert r.makespan_s == pytest.approx(0.01 + 10 * 0.011)
    assert r.mean_e2e_s == pytest.approx(r.makespan_s)


def test_all_prompts_in_one_iteration_when_budget_and_slots_allow():
    n, isl, osl = 8, 100, 5
    r = simulate_burst(n, 8, isl, osl, budget_tokens=1000, decode_s=linear(0.010, 0.001), prefill_s_per_token=1e-4)
    prefill = n * isl * 1e-4
    assert r.mean_ttft_s == pytest.approx(prefill)
    assert r.makespan_s == pytest.approx(prefill + (osl - 1) * (0.010 + 0.001 * n))


def test_budget_splits_prompts_and_counts_decode_tokens():
    # budget 150: iteration 1 takes prompt A (100) + 50 of B; iteration 2: A decodes (1 token), B's last 50
    # plus 99 of C ... each prompt's first token comes when its last chunk runs
    r = simulate_burst(3, 3, isl=100, osl=2, budget_tokens=150, decode_s=linear(0.0, 0.0),
                       prefill_s_per_token=1e-3)
    # iteration 1: 150 prompt tokens (A done); 2: budget 149 (A decodes) -> B done, 99 of C;
    # 3: B decodes, budget 149 -> C's last 1 token; 4: C decodes
    t1, t2, t3 = 0.150, 0.150 + 0.149, 0.150 + 0.149 + 0.001
    assert r.mean_ttft_s == pytest.approx((t1 + t2 + t3) / 3)
    assert r.makespan_s == pytest.approx(t3)


def test_cap_of_one_runs_requests_back_to_back():
    n, isl, osl = 5, 50, 4
    step = linear(0.002, 0.0)
    r = simulate_burst(n, 1, isl, osl, budget_tokens=8192, decode_s=step, prefill_s_per_token=1e-4)
    one = isl * 1e-4 + (osl - 1) * 0.002
    # the next prompt is admitted in the iteration after the previous request's last token
    assert r.makespan_s == pytest.approx(n * one)
    assert r.mean_itl_s == pytest.approx(0.002)


def test_long_burst_approaches_the_steady_state_formula():
    """Ramp-up and drain are O(cap) of n requests: at n = 40 x cap the two agree within a few percent."""
    common = dict(tp=1, precision="fp8", engine="trtllm", breakdown=False)
    steady = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 200, batch=64, **common)
    burst = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 200, batch=64, requests=64 * 40, **common)
    assert burst.output_tokens_per_s == pytest.approx(steady.output_tokens_per_s, rel=0.05)
    assert burst.output_tokens_per_s <= steady.output_tokens_per_s * 1.001


def test_burst_itl_is_below_the_steady_state_interleaving():
    """At QPS = inf each request sees only the prompts queued behind it, not a whole cycle's worth."""
    common = dict(tp=1, precision="bf16", engine="trtllm", breakdown=False)
    steady = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 467, 16, batch=500, **common)
    burst = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 467, 16, requests=500, **common)
    assert burst.tpot_ms < steady.tpot_ms
    assert burst.ttft_ms > 10 * steady.ttft_ms  # queue-dominated, as the Triton table shows


def test_cli_rejects_a_non_positive_burst(tmp_path):
    from typer.testing import CliRunner

    from perfmodel.cli import app

    out = CliRunner().invoke(app, ["estimate", "infer", "--model", "llama-3.1-8b", "--system", "1 x h100-sxm",
                                   "--isl", "100", "--osl", "10", "--requests", "0"])
    assert out.exit_code == 2
    assert "--requests" in out.output and "Traceback" not in out.output


def test_requests_with_their_own_output_lengths_by_hand():
    """Two prompts admitted in the first 1 s iteration, one with 2 output tokens and one with 4: the first
    finishes at 2 s, the second at 4 s. TTFT 1 s each, ITL 1 s each, mean latency 3 s, makespan 4 s."""
    r = simulate_burst(2, 2, 1, 3, 100, lambda d: 1.0, 0.0, outputs=[2, 4])
    assert (r.makespan_s, r.mean_ttft_s, r.mean_itl_s, r.mean_e2e_s) == (4.0, 1.0, 1.0, 3.0)


def test_spread_outputs_are_a_fair_deterministic_mix():
    from perfmodel.burst import spread_outputs

    pts = list(range(1, 201))
    a = spread_outputs(500, pts)
    assert a == spread_outputs(500, pts) and len(a) == 500
    assert abs(sum(a) / 500 - 100.5) < 2
    assert min(a[:50]) < 30 and max(a[:50]) > 170  # any stretch of requests mixes short and long


def test_a_spread_of_outputs_lengthens_a_burst(db):
    """Same mean output, 500 requests at once: with a spread the run ends with the longest requests decoding
    at a small batch, so output throughput falls."""
    from perfmodel.inference import estimate_inference

    kw = dict(requests=500, db=db, breakdown=False)
    fixed = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 202, 214, **kw)
    spread = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 202, 214, osl_std=150, **kw)
    assert spread.output_tokens_per_s < 0.8 * fixed.output_tokens_per_s


def test_drain_of_an_in_flight_batch_by_hand():
    """100 sequences of 200 output tokens, met uniformly far through: k tokens in, 100 (200 - k) / 200 remain;
    at least half a sequence is expected until k = 199, so 200 iterations of 10 ms = 2 s. Outputs of 100 and
    300 tokens (equal weight): the long ones are met three times as often and set the end, at k = 298."""
    import numpy as np

    from perfmodel.burst import drain_time_s

    flat = lambda c: np.full_like(np.asarray(c, dtype=float), 0.010)  # noqa: E731
    assert drain_time_s(100, [200], flat) == pytest.approx(2.00)
    assert drain_time_s(100, [100, 300], flat) == pytest.approx(2.99)
    # steps that shrink with the batch (0.1 ms a sequence) drain faster than 200 full-batch steps of 10 ms
    assert drain_time_s(100, [200], lambda c: 0.0001 * np.asarray(c)) < 200 * 0.010
