"""GPU mix ILP: brute force on tiny instances, never worse than the best single device, traces, bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.optimize import linprog
from typer.testing import CliRunner

from perfmodel.cli import app
from perfmodel.errors import InputError
from perfmodel.solvers.gpu_mix import histogram, plan_gpu_mix, read_trace, solve_mix, synthetic_workload


def _feasible(counts, caps, loads) -> bool:
    """Can buckets be split over the given instance counts? (an LP feasibility check)"""
    D, B = len(counts), len(loads)
    var = [(b, d) for b in range(B) for d in range(D) if caps[d][b] > 0]
    if not var:
        return False
    A_eq = np.zeros((B, len(var)))
    A_ub = np.zeros((D, len(var)))
    for k, (b, d) in enumerate(var):
        A_eq[b, k] = 1
        A_ub[d, k] = loads[b] / caps[d][b]
    res = linprog(np.zeros(len(var)), A_ub=A_ub, b_ub=np.array(counts, float), A_eq=A_eq, b_eq=np.ones(B),
                  bounds=[(0, 1)] * len(var), method="highs")
    return res.status == 0


@pytest.mark.parametrize("seed", range(4))
def test_ilp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    D, B = 3, 3
    caps = [[float(rng.choice([0, rng.uniform(0.5, 4)])) if d else float(rng.uniform(0.5, 4)) for b in range(B)]
            for d in range(D)]
    prices = [float(rng.uniform(1, 5)) for _ in range(D)]
    loads = [float(rng.uniform(0.5, 3)) for _ in range(B)]
    counts, fractions, status, _ = solve_mix(caps, prices, loads, [None] * D)
    best = min(sum(p * n for p, n in zip(prices, ns)) for ns in itertools.product(range(8), repeat=D)
               if _feasible(ns, caps, loads))
    assert sum(p * n for p, n in zip(prices, counts)) == pytest.approx(best)
    for b in range(B):
        assert sum(fractions[b]) == pytest.approx(1.0)


def test_limits_are_respected_and_infeasible_limits_fail():
    caps = [[2.0, 2.0], [1.0, 1.0]]
    counts, *_ = solve_mix(caps, [3.0, 1.0], [2.0, 2.0], [None, 1])
    assert counts[1] <= 1
    with pytest.raises(InputError, match="--max"):
        solve_mix(caps, [3.0, 1.0], [2.0, 2.0], [0, 1])


def test_mix_never_worse_than_best_single_device(db):
    buckets = synthetic_workload(800, 250, cv=1.0)
    r = plan_gpu_mix("llama-3.1-8b", ["h100-sxm", "a100-sxm-80gb", "h200-sxm"], buckets, 40, 60, db=db)
    assert r.cost_per_hour <= r.best_single_device_cost_per_hour + 1e-9
    assert r.saving >= 0 and sum(b["share"] for b in r.assignment) == pytest.approx(1.0)


def test_trace_columns_and_errors(tmp_path):
    f = tmp_path / "azure.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1,100,20\n2,2000,400\n3,150,30\n")
    buckets = read_trace(f)
    assert sum(b.share for b in buckets) == pytest.approx(1.0)
    assert min(b.isl for b in buckets) == pytest.approx(125) or len(buckets) == 3
    f.write_text("Request tokens,Response tokens\n100,20\n1x0,5\n")
    with pytest.raises(InputError, match="line 3"):
        read_trace(f)
    f.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="line 1: no input/output token columns"):
        read_trace(f)


def test_histogram_preserves_means():
    rng = np.random.default_rng(1)
    s = np.stack([rng.integers(10, 5000, 2000), rng.integers(5, 800, 2000)], axis=1).astype(float)
    b = histogram(s, 8)
    assert sum(x.share * x.isl for x in b) == pytest.approx(s[:, 0].mean())
    assert sum(x.share * x.osl for x in b) == pytest.approx(s[:, 1].mean())


def test_cli_json_keys_and_missing_price(db):
    runner = CliRunner()
    res = runner.invoke(app, ["plan", "gpu-mix", "--model", "llama-3.1-8b", "--devices", "h100-sxm,h200-sxm",
                              "--isl", "1000", "--osl", "200", "--rate", "20", "--slo-tpot-ms", "50", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in ("instances", "cost_per_hour", "best_single_device", "best_single_device_cost_per_hour", "assignment"):
        assert key in doc
    res = runner.invoke(app, ["plan", "gpu-mix", "--model", "llama-3.1-8b", "--devices", "h100-sxm,l4",
                              "--isl", "1000", "--osl", "200", "--rate", "20", "--slo-tpot-ms", "50"])
    assert res.exit_code == 2 and "--price l4=" in res.stderr
    res = runner.invoke(app, ["plan", "gpu-mix", "--model", "llama-3.1-8b", "--devices", "h100-sxm,l4",
                              "--isl", "1000", "--osl", "200", "--rate", "20", "--slo-tpot-ms", "50",
                              "--price", "l4=0.8", "--price", "bad"])
    assert res.exit_code == 2 and "--price" in res.stderr
