"""Length-biased decode context (perfmodel.lengths) and its effect on serving estimates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from perfmodel.errors import InputError
from perfmodel.inference import estimate_inference
from perfmodel.lengths import Lengths


def test_fixed_lengths_give_the_usual_context():
    L = Lengths(1000, 200)
    assert L.decode_context == 1100 and L.final_context == 1200 and not L.varies
    assert L.prompt_cv2 == 0.0 and Lengths(1000, 200, isl_std=500).prompt_cv2 == 0.25


def test_length_biased_context_by_hand():
    """Outputs of 100 or 300 tokens, equally often, after 50-token prompts: a decode step meets the long
    ones three times as often. Mean context = (100 x (50 + 50) + 300 x (50 + 150)) / 400 = 175; mean final
    length = (100 x 150 + 300 x 350) / 400 = 300. The formula with mean 200 and std 100 gives the same."""
    L = Lengths(50, 200, osl_std=100)
    assert L.decode_context == pytest.approx(175)
    assert L.final_context == pytest.approx(300)


def test_correlated_inputs_add_their_covariance():
    """Two requests, (i, o) = (100, 100) and (300, 300): corr 1, stds 100. Time-weighted context =
    (100 x (100 + 50) + 300 x (300 + 150)) / 400 = 375 = 200 + 100 x 100 / 200 + (200^2 + 100^2) / 400."""
    L = Lengths(200, 200, isl_std=100, osl_std=100, corr=1.0)
    assert L.decode_context == pytest.approx(375)


@pytest.mark.parametrize("kw", [dict(osl_std=-1.0), dict(isl_std=-5.0), dict(corr=1.5), dict(osl_std=float("nan")),
                                dict(isl_std=float("inf")), dict(isl=float("nan")), dict(osl=float("inf")),
                                dict(osl_std=1001.0), dict(isl_std=1e200)])
def test_bad_spreads_are_input_errors(kw):
    with pytest.raises(InputError):
        Lengths(**{"isl": 100.0, "osl": 100.0, **kw})


def test_a_vanishing_spread_is_a_fixed_length(db):
    """A spread of 1e-200 tokens (the gamma's shape parameter (mean/std)^2 would overflow a float) gives the
    fixed-length answer, in the server path that takes quantiles of both lengths."""
    kw = dict(scenario="server", rate=5.0, db=db, breakdown=False)
    fixed = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 500, **kw)
    tiny = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 500, isl_std=1e-200, osl_std=1e-200, **kw)
    assert tiny.ttft_p99_ms == pytest.approx(fixed.ttft_p99_ms) and tiny.tpot_ms == pytest.approx(fixed.tpot_ms)
    assert np.all(Lengths(500, 500, osl_std=1e-200).output_points() == 500.0)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.floats(0, 600), st.floats(0, 600))
def test_more_spread_is_never_faster(db, a, b):
    """More spread in output lengths never buys capacity, and at the same batch never buys throughput (each
    step sees more context). Across batches the GEMM tile model's sawtooth can move throughput either way by
    a few percent, so the batch is held fixed for the speed comparison."""
    lo, hi = sorted((a, b))
    free = [estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 300, osl_std=s, db=db, breakdown=False)
            for s in (lo, hi)]
    assert free[1].max_batch_fits <= free[0].max_batch_fits
    batch = free[1].batch
    fixed = [estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 300, osl_std=s, batch=batch, db=db,
                                breakdown=False) for s in (lo, hi)]
    assert fixed[1].output_tokens_per_s <= fixed[0].output_tokens_per_s * (1 + 1e-9)


def test_spread_is_reported(db):
    """500 in, 300 +- 250 out: context 500 + (300^2 + 250^2) / 600 = 754, final 500 + 152,500 / 300 = 1,008."""
    r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 500, 300, osl_std=250, db=db, breakdown=False)
    assert any("context of 754 tokens" in a and "sequences of 1,008" in a for a in r.assumptions)


def test_tpot_tail_by_hand():
    """Step 30 ms, prefill 20 ms, 10 requests/s, TPOT 32 ms. One length (100 tokens): N ~ Poisson(32), whose
    99th percentile is 46, so p99 = 30 + 20 x 46 / 100 = 39.2 ms. Half the requests at 4 tokens
    (Poisson(1.28) arrivals each) and half at 196: the short half alone must hold 98% of its requests under
    the tail, whose Poisson(1.28) 98th percentile is 4 prompts: 30 + 20 x 4 / 4 = 50 ms."""
    from scipy.stats import poisson

    from perfmodel.inference import tpot_p99

    assert poisson.ppf(0.99, 32.0) == 46
    assert tpot_p99(0.030, 0.020, 10.0, 0.032, np.array([100.0])) == pytest.approx(0.0392)
    mixed = tpot_p99(0.030, 0.020, 10.0, 0.032, np.array([4.0, 196.0]))
    assert poisson.ppf(0.98, 1.28) == 4
    assert mixed == pytest.approx(0.050, abs=2e-4)
    assert mixed > tpot_p99(0.030, 0.020, 10.0, 0.032, np.array([100.0, 100.0]))


@pytest.mark.parametrize("mu, cv2", [(2.0, 1.0), (5.0, 0.6), (20.0, 0.5), (50.0, 0.3)])
def test_tpot_tail_with_varied_prompts_matches_a_compound_poisson_simulation(mu, cv2):
    """Prompts whose prefill times are gamma-distributed (mean 20 ms, squared CV cv2): the request meets
    N ~ Poisson(mu) of them and stalls for their sum S. The two-moment match in tpot_p99 lands within 5% of
    a 400,000-draw simulation of step + S / o, and its tail is wider than that of fixed prompts."""
    from perfmodel.inference import tpot_p99

    step, p, lam, tpot = 0.030, 0.020, 10.0, 0.040
    o = mu / (lam * tpot)
    rng = np.random.default_rng(7)
    n = rng.poisson(mu, 400_000)
    k = 1.0 / cv2
    s = np.where(n > 0, rng.gamma(np.maximum(n, 1) * k, p / k), 0.0)  # a sum of n gamma(k) is gamma(n k)
    simulated = np.quantile(step + s / o, 0.99)
    model = tpot_p99(step, p, lam, tpot, np.array([o]), cv2)
    assert model == pytest.approx(simulated, rel=0.05)
    assert model > tpot_p99(step, p, lam, tpot, np.array([o]))


def test_output_points_are_rescaled_to_the_mean():
    L = Lengths(100, 300, osl_points=(50.0, 150.0))
    assert list(L.output_points()) == [150.0, 450.0]
    assert list(Lengths(100, 300).output_points()) == [300.0]
    g = Lengths(100, 300, osl_std=240).output_points()  # a gamma of that mean and spread
    assert len(g) == 200 and g.mean() == pytest.approx(300) and g.std() == pytest.approx(240, rel=0.02)
    with pytest.raises(InputError):
        Lengths(100, 300, osl_points=(0.0, 10.0))


def test_prompt_spread_lengthens_the_queue_by_pollaczek_khinchine(db):
    """M/G/1: the mean wait for the prefill is rho p (1 + cv^2) / (2 (1 - rho)). Prompts whose length varies
    with cv = 1 double the M/D/1 wait of fixed prompts at the same rate (the decode steps barely move). The
    varied prompts' mean prefill p is itself a little longer (attention goes as E[i^2]), and so is their own
    prefill inside the TTFT, by about the same p_spread - p_fixed."""
    kw = dict(scenario="server", rate=10.0, db=db, breakdown=False)
    fixed = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 2000, 200, **kw)
    spread = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 2000, 200, isl_std=2000, **kw)

    def wait(p, cv2):
        rho = 10.0 * p / 1e3
        return rho * p * (1 + cv2) / (2 * (1 - rho))

    pf, ps = fixed.prefill_ms_per_request, spread.prefill_ms_per_request
    assert ps > pf
    assert spread.ttft_ms - fixed.ttft_ms == pytest.approx(wait(ps, 1.0) - wait(pf, 0.0) + (ps - pf), rel=0.05)


def test_prompt_spread_raises_prefill_attention_by_the_second_moment(db):
    """Prompts of 2,000 +- 1,500 tokens: causal attention pairs go as E[i^2] = 2,000^2 + 1,500^2, so the
    prefill attention FLOPs per prompt are L(L + 1) / (2,000 x 2,001) = 1.5624x those of fixed 2,000-token
    prompts, with L = sqrt(E[i^2]) = 2,500; the projections and MLPs (linear in i) are unchanged."""
    assert Lengths(2000, 100, isl_std=1500).prompt_attention_length == pytest.approx(2500)

    def prefill(**kw):
        r = estimate_inference("llama-3.1-8b", "1 x h100-sxm", 2000, 100, db=db, **kw)
        return {row.name: row.flops for row in r.breakdown if row.phase == "prefill"}

    fixed, spread = prefill(), prefill(isl_std=1500)
    assert spread["attention"] / fixed["attention"] == pytest.approx(2500 * 2501 / (2000 * 2001))
    assert spread["mlp_up"] == fixed["mlp_up"]
