"""Plan search: the vectorised search agrees with one-at-a-time estimates (brute force), the ILP partition is
optimal on small cases and never worse than the even split, infeasible requests get a useful message."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from perfmodel.cli import app
from perfmodel.errors import InputError
from perfmodel.models import get_model
from perfmodel.solvers.partition import even_split, partition_stages
from perfmodel.solvers.plan_serve import plan_serving
from perfmodel.solvers.plan_train import PLAN_KEYS, enumerate_plans, plan_training
from perfmodel.specdb import SystemRef
from perfmodel.training import RECOMPUTE, estimate_training, evaluate_plans


def test_vectorised_search_matches_brute_force(db):
    m = get_model("llama-2-7b")
    ref = db.resolve_system("dgx-h100")
    ref = SystemRef(ref.system, ref.accelerator, 16)
    plans = enumerate_plans(m, 16, 4096, 64, 8, micro_batches=(1, 2), zeros=(1, 3), vps=(1, 2), cps=(1, 2))
    ev = evaluate_plans(db, ref, m, plans, 4096, 64, "bf16")
    brute = []
    for i in range(len(plans["tp"])):
        p = {k: int(plans[k][i]) for k in PLAN_KEYS}
        r = estimate_training(m, ref, 16, seq_len=4096, global_batch=64, tp=p["tp"], pp=p["pp"], dp=p["dp"],
                              cp=p["cp"], ep=p["ep"], vp=p["vp"], micro_batch=p["mb"], sequence_parallel=bool(p["sp"]),
                              recompute=RECOMPUTE[p["rec"]], zero=p["zero"], db=db)
        brute.append((r.step_time_s, r.fits))
    times = np.array([b[0] for b in brute])
    assert np.allclose(ev["step_time_s"], times, rtol=1e-9)
    fits = np.array([b[1] for b in brute])
    assert (ev["fits"] == fits).all()
    best_brute = np.argmin(np.where(fits, times, np.inf))
    best_vec = np.argmin(np.where(ev["fits"], ev["step_time_s"], np.inf))
    assert best_brute == best_vec


def _brute_partition(t, stages, first, last):
    best = None
    L = len(t)
    for cuts in itertools.combinations(range(1, L), stages - 1):
        bounds = (0, *cuts, L)
        times = [sum(t[bounds[s]:bounds[s + 1]]) for s in range(stages)]
        times[0] += first
        times[-1] += last
        best = max(times) if best is None else min(best, max(times))
    return best


@settings(max_examples=15, deadline=None)
@given(t=st.lists(st.floats(0.5, 3.0), min_size=4, max_size=10), stages=st.integers(2, 4),
       last=st.floats(0, 6), first=st.floats(0, 2))
def test_partition_is_optimal_and_never_worse_than_even(t, stages, last, first):
    if stages > len(t):
        stages = len(t)
    part = partition_stages(t, stages, first_extra=first, last_extra=last)
    assert part.max_stage_time <= part.even_max_stage_time + 1e-9
    assert part.max_stage_time == pytest.approx(_brute_partition(t, stages, first, last), rel=1e-6)
    assert sum(part.layers_per_stage) == len(t) and min(part.layers_per_stage) >= 1


def test_partition_handles_vocabulary_imbalance():
    """A heavy LM head on the last stage: the ILP gives that stage fewer layers."""
    part = partition_stages([1.0] * 32, 4, last_extra=6.0)
    assert part.layers_per_stage[-1] < 8 and part.max_stage_time < part.even_max_stage_time
    assert even_split(32, 4) == [8, 8, 8, 8]


def test_partition_memory_cap():
    part = partition_stages([1.0] * 12, 3, layer_mem=[1.0] * 12, mem_cap=4.5, last_extra=3.0, last_mem=0.0)
    assert max(part.layers_per_stage) <= 4
    with pytest.raises(InputError, match="fits"):
        partition_stages([1.0] * 12, 2, layer_mem=[1.0] * 12, mem_cap=5.0)


def test_plan_train_winner_fits_and_beats_the_rest(db):
    res = plan_training("llama-3.1-8b", "dgx-h100", 16, 4096, 128, top=4, db=db)
    assert res.evaluated > 100 and res.feasible > 0
    assert all(p.fits for p in res.plans)
    times = [p.step_time_s for p in res.plans]
    assert times[0] == min(times)
    assert res.why and "runner-up" in res.why[0]


def test_plan_train_objectives(db):
    t = plan_training("llama-3.1-8b", "dgx-h100", [8, 16], 4096, 128, objective="time", top=3, db=db)
    c = plan_training("llama-3.1-8b", "dgx-h100", [8, 16], 4096, 128, objective="cost", top=3, db=db)
    assert min(p.gpus for p in c.plans) <= min(p.gpus for p in t.plans) or c.plans[0].gpus == t.plans[0].gpus
    with pytest.raises(InputError, match="--objective"):
        plan_training("llama-3.1-8b", "dgx-h100", 8, 4096, 128, objective="speed", db=db)


def test_plan_train_nothing_fits_names_smallest_gpu_count(db):
    with pytest.raises(InputError) as ei:
        plan_training("llama-3.1-405b", "dgx-h100", 8, 8192, 64, db=db)
    msg = str(ei.value)
    assert "fits no layout" in msg and "smallest" in msg and "GPUs" in msg


def test_plan_serve_budget_and_rate(db):
    budget = plan_serving("llama-3.1-8b", "dgx-h100", 1000, 200, 2000, 50, gpus=8, db=db)
    assert budget.plans and all(p.gpus <= 8 for p in budget.plans)
    per_gpu = [p.rate / p.gpus for p in budget.plans]
    assert per_gpu == sorted(per_gpu, reverse=True)
    target = plan_serving("llama-3.1-8b", "dgx-h100", 1000, 200, 2000, 50, rate=40.0, db=db)
    assert all(p.rate >= 40.0 - 1e-9 for p in target.plans)
    assert target.plans[0].gpus == min(p.gpus for p in target.plans)


def test_plan_serve_impossible_slo_says_what_would_help(db):
    with pytest.raises(InputError) as ei:
        plan_serving("llama-3.1-70b", "dgx-h100", 1000, 200, 2000, 0.5, gpus=8, precision="bf16", db=db)
    msg = str(ei.value)
    assert "meets the SLOs" in msg and "loosen" in msg and "fp8" in msg


def test_plan_cli_json():
    runner = CliRunner()
    res = runner.invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "--system", "dgx-h100", "--gpus", "8",
                              "--seq-len", "4096", "--global-batch", "64", "--top", "3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["plans"]) == 3
    for key in ("tp", "pp", "dp", "step_time_s", "tokens_per_s_per_gpu", "mfu", "memory_per_gpu_bytes"):
        assert key in doc["plans"][0]
    res = runner.invoke(app, ["plan", "serve", "--model", "llama-3.1-8b", "--system", "dgx-h100", "--gpus", "8",
                              "--isl", "1000", "--osl", "200", "--slo-ttft-ms", "2000", "--slo-tpot-ms", "50",
                              "--top", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["plans"]) == 2
    res = runner.invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "--system", "dgx-h100", "--gpus", "8x",
                              "--seq-len", "4096", "--global-batch", "64"])
    assert res.exit_code == 2 and "--gpus" in res.stderr


def test_heterogeneous_pools_split_the_batch_by_speed(db):
    from perfmodel.solvers.plan_train import plan_training_hetero

    plans = plan_training_hetero("llama-3.1-8b", [("dgx-h100", 16), ("dgx-a100", 16)], 4096, 128, top=2, db=db)
    best = plans[0]
    h100, a100 = best.groups
    assert h100["dp"] * h100["micro_batches"] + a100["dp"] * a100["micro_batches"] == 128 // best.layout["mb"]
    assert h100["micro_batches"] >= a100["micro_batches"]  # the faster pool takes more of the batch
    assert best.step_time_s == pytest.approx(max(h100["step_s"], a100["step_s"]))
    res = CliRunner().invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "--system", "dgx-h100:16,dgx-a100:16",
                                   "--seq-len", "4096", "--global-batch", "128", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["heterogeneous"] is True
    res = CliRunner().invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "--system", "dgx-h100:x",
                                   "--seq-len", "4096", "--global-batch", "128"])
    assert res.exit_code == 2 and "SYSTEM:GPUS" in res.stderr


def test_serving_plans_with_a_length_spread_are_never_better(db):
    """Spread request lengths bring more context per decode step, a longer TPOT tail and a longer prompt
    queue, so the best plan's goodput per GPU can only fall."""
    kw = dict(gpus=8, precision="fp8", top=1, db=db)
    fixed = plan_serving("llama-3.1-8b", "dgx-h100", 1000, 500, 1000, 50, **kw)
    spread = plan_serving("llama-3.1-8b", "dgx-h100", 1000, 500, 1000, 50, isl_std=500, osl_std=400, **kw)
    assert spread.plans[0].rate <= fixed.plans[0].rate
