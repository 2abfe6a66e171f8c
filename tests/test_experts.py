"""MoE expert placement: the ILP against brute force, greedy and round robin; routing files and errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from perfmodel.errors import InputError
from perfmodel.models import get_model
from perfmodel.solvers.experts import (Placement, Routing, _Instance, greedy, load_routing, place_experts,
                                       round_robin, synthetic_routing)

TINY = {"base": "mixtral-8x7b", "layers": 2, "experts": 4, "top_k": 2}
# DeepSeek-V3 cut down to 8 MoE layers of 64 experts (same expert shape), to keep the tests fast
SMALL_DSV3 = {"base": "deepseek-v3", "layers": 11, "dense_layers": 3, "experts": 64}


def brute_force(inst: _Instance) -> float:
    """The best objective over every placement that respects the capacity."""
    L, E, G = inst.L, inst.E, inst.G
    cols = [np.array(c) for c in itertools.product(range(G), repeat=E)
            if np.bincount(np.array(c), minlength=G).max() <= inst.cap]
    return min(inst.objective(np.stack(combo)) for combo in itertools.product(cols, repeat=L))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("solver", ["highspy", "pulp"])
def test_tiny_matches_brute_force(db, seed, solver):
    rng = np.random.default_rng(seed)
    routing = Routing(rng.integers(0, 60, (2, 4)).astype(float), rng.integers(0, 40, (1, 4, 4)).astype(float))
    model = get_model(TINY)
    p = place_experts(model, routing, gpus=2, gpus_per_node=1, capacity=2, time_limit=10, db=db, solver=solver)
    inst = _Instance(routing.tokens, routing.transitions, 2, 1, 2, 1.0, 1.0, 4.0)
    assert p.method == "joint"
    assert p.objective == pytest.approx(brute_force(inst), rel=1e-9)
    assert p.objective == pytest.approx(inst.objective(p.assignment))
    assert p.gap == pytest.approx(0.0, abs=1e-6) and p.status == "optimal"
    assert p.objective <= p.baselines["greedy"] + 1e-9
    assert p.objective <= p.baselines["round_robin"] + 1e-9
    assert p.assignment.shape == (2, 4)
    assert all(np.bincount(row, minlength=2).max() <= 2 for row in p.assignment)


def test_tiny_two_gpus_per_node_and_weights(db):
    """Within one node a hop costs 1; with w_traffic=0 only load counts and the lower bound is tight."""
    rng = np.random.default_rng(7)
    routing = Routing(rng.integers(1, 60, (2, 4)).astype(float), rng.integers(0, 40, (1, 4, 4)).astype(float))
    model = get_model(TINY)
    p = place_experts(model, routing, gpus=2, gpus_per_node=2, capacity=3, time_limit=10, db=db)
    inst = _Instance(routing.tokens, routing.transitions, 2, 2, 3, 1.0, 1.0, 4.0)
    assert p.objective == pytest.approx(brute_force(inst))
    p0 = place_experts(model, routing, gpus=2, gpus_per_node=2, capacity=3, w_traffic=0.0, time_limit=10, db=db)
    assert p0.objective == pytest.approx(p0.load_term) and p0.gap == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed,skew,affinity", [(0, 0.0, 0.3), (1, 0.8, 0.5), (2, 1.2, 0.7)])
def test_layered_never_worse_than_greedy(db, seed, skew, affinity):
    model = get_model("mixtral-8x7b")
    r = synthetic_routing(model.moe_layers, model.experts, model.top_k, 2048, skew, affinity, seed=seed)
    p = place_experts(model, r, gpus=4, gpus_per_node=2, time_limit=3, db=db, method="layered")
    assert p.method == "layered"
    assert p.objective <= p.baselines["greedy"] + 1e-9
    assert p.objective <= p.baselines["round_robin"] + 1e-9
    assert 0.0 <= p.gap < 1.0 and p.lower_bound <= p.objective + 1e-9
    assert p.solve_time_s < 6
    inst = _Instance(r.tokens, r.transitions, 4, 2, 2, 1.0, 1.0, 4.0)
    assert p.baselines["greedy"] == pytest.approx(inst.objective(greedy(inst)))
    assert p.baselines["round_robin"] == pytest.approx(inst.objective(round_robin(32, 8, 4)))
    assert p.objective == pytest.approx(p.load_term + p.traffic_term)
    assert all(np.bincount(row, minlength=4).max() <= p.capacity for row in p.assignment)


def test_skewed_case_predicts_faster_layers(db):
    model = get_model(SMALL_DSV3)
    assert model.moe_layers == 8
    r = synthetic_routing(8, 64, model.top_k, 4096, 1.2, 0.6, seed=3)
    p = place_experts(model, r, gpus=16, gpus_per_node=8, time_limit=4, db=db)
    assert isinstance(p, Placement)
    assert p.objective < p.baselines["round_robin"]
    assert 0 < p.layer_time_after_s <= p.layer_time_before_s
    assert p.cross_node_tokens <= p.cross_gpu_tokens
    out = p.to_dict()
    json.dumps(out)
    assert {"placement", "objective", "baselines", "gap", "solve_time_s"} <= set(out)
    assert set(out["baselines"]) == {"round_robin", "greedy"}
    assert len(out["placement"]) == 8 and len(out["placement"][0]) == 64


def test_no_transitions_balances_load_only(db):
    model = get_model(SMALL_DSV3)
    r = synthetic_routing(8, 64, 8, 1000, 1.0, 0.0, seed=1)
    p = place_experts(model, Routing(r.tokens), gpus=8, gpus_per_node=8, time_limit=3, db=db)
    assert p.traffic_term == 0.0 and p.objective == pytest.approx(p.load_term)
    assert p.objective <= p.baselines["greedy"] + 1e-9


# -- errors ------------------------------------------------------------------------------------------------

def test_infeasible_capacity(db):
    model = get_model(TINY)
    r = Routing(np.ones((2, 4)), np.ones((1, 4, 4)))
    with pytest.raises(InputError, match=r"2 GPUs x 1 experts hold 2 of 4 experts per layer, 2 short"):
        place_experts(model, r, gpus=2, gpus_per_node=1, capacity=1, db=db)


def test_memory_cap(db):
    model = get_model(SMALL_DSV3)
    r = synthetic_routing(8, 64, 8, 100, 1.0, 0.5)
    with pytest.raises(InputError, match=r"GiB more than the 1\.0 GiB available") as e:
        place_experts(model, r, gpus=8, gpus_per_node=8, memory_gib=1.0, db=db)
    assert "\n" not in str(e.value)
    p = place_experts(model, r, gpus=8, gpus_per_node=8, capacity=64, memory_gib=40.0, time_limit=2, db=db)
    assert p.capacity < 64 and p.notes  # lowered to what fits


def test_not_moe(db):
    with pytest.raises(InputError, match="not a mixture-of-experts"):
        place_experts("llama-3.1-8b", Routing(np.ones((32, 8))), gpus=8, gpus_per_node=8, db=db)


def test_routing_shape_mismatch(db):
    model = get_model(TINY)
    with pytest.raises(InputError, match=r"tokens: expected shape \(2, 4\)"):
        place_experts(model, Routing(np.ones((3, 4))), gpus=2, gpus_per_node=1, db=db)
    with pytest.raises(InputError, match=r"transitions: expected shape \(1, 4, 4\)"):
        place_experts(model, Routing(np.ones((2, 4)), np.ones((1, 4, 3))), gpus=2, gpus_per_node=1, db=db)


def test_load_routing_json_and_npz(tmp_path):
    tok = [[1, 2, 3, 4], [4, 3, 2, 1]]
    tr = [[[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 4]]]
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"tokens": tok, "transitions": tr}, indent=2))
    r = load_routing(p, 2, 4)
    assert r.tokens.shape == (2, 4) and r.transitions.shape == (1, 4, 4)
    p2 = tmp_path / "only.json"
    p2.write_text(json.dumps({"tokens": tok}))
    assert load_routing(p2, 2, 4).transitions is None
    n = tmp_path / "r.npz"
    np.savez(n, tokens=np.array(tok), transitions=np.array(tr))
    rn = load_routing(n, 2, 4)
    assert np.array_equal(rn.tokens, r.tokens) and np.array_equal(rn.transitions, r.transitions)


def test_load_routing_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "tokens": [[1, 2, 3, 4],\n             [4, 3, 2 1]]\n}\n')
    with pytest.raises(InputError, match=r"bad\.json: line 3, column \d+: malformed JSON"):
        load_routing(bad, 2, 4)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"tokens": [[1, 2, 3, 4], [1, 2, 3]]}))
    with pytest.raises(InputError, match=r"short\.json: tokens\[1\] \(layer 1\): expected 4 experts, got 3"):
        load_routing(short, 2, 4)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"tokens": [[1, 2, 3, 4]]}))
    with pytest.raises(InputError, match=r"tokens: expected 2 MoE layers, got 1"):
        load_routing(rows, 2, 4)
    neg = tmp_path / "neg.json"
    neg.write_text(json.dumps({"tokens": [[1, 2, 3, 4], [1, -2, 3, 4]]}))
    with pytest.raises(InputError, match=r"tokens\[1\]\[1\] \(layer 1, expert 1\): expected a finite non-negative"):
        load_routing(neg, 2, 4)
    tneg = tmp_path / "tneg.json"
    tneg.write_text(json.dumps({"tokens": [[1] * 4] * 2, "transitions": [[[0] * 4, [0, 0, -1, 0], [0] * 4, [0] * 4]]}))
    with pytest.raises(InputError, match=r"transitions\[0\]\[1\]\[2\] \(layer 0, from expert 1 to expert 2\)"):
        load_routing(tneg, 2, 4)
    text = tmp_path / "text.json"
    text.write_text(json.dumps({"tokens": [[1, 2, "x", 4], [1, 2, 3, 4]]}))
    with pytest.raises(InputError, match=r"tokens\[0\]\[2\] \(layer 0, expert 2\): expected a count"):
        load_routing(text, 2, 4)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"tokens": [[1] * 4] * 2, "transition": []}))
    with pytest.raises(InputError, match=r"transition: unknown field"):
        load_routing(extra, 2, 4)
    missing = tmp_path / "missing.json"
    missing.write_text("{}")
    with pytest.raises(InputError, match=r"tokens: required field is missing"):
        load_routing(missing, 2, 4)
    n = tmp_path / "r.npz"
    np.savez(n, tokens=np.ones((3, 4)))
    with pytest.raises(InputError, match=r"r\.npz: tokens: expected shape \(2, 4\)"):
        load_routing(n, 2, 4)
    with pytest.raises(InputError, match="cannot read"):
        load_routing(tmp_path / "nope.json", 2, 4)


# -- synthetic routing -------------------------------------------------------------------------------------

def test_synthetic_routing_shapes_and_sums():
    r = synthetic_routing(6, 32, 4, 1000, 1.0, 0.5, seed=1)
    assert r.tokens.shape == (6, 32) and r.transitions.shape == (5, 32, 32)
    assert np.all(r.tokens.sum(axis=1) == 4000)
    assert np.all(r.tokens >= 0) and np.all(r.transitions >= 0)
    assert np.allclose(r.transitions.sum(axis=2), r.tokens[:-1])
    assert np.allclose(r.transitions.sum(axis=1), r.tokens[1:])
    # affinity: about half of each expert's tokens go to one preferred next expert
    share = r.transitions.max(axis=2).sum() / r.transitions.sum()
    assert 0.5 <= share < 0.8
    again = synthetic_routing(6, 32, 4, 1000, 1.0, 0.5, seed=1)
    assert np.array_equal(again.tokens, r.tokens)


def test_synthetic_skew():
    flat = synthetic_routing(4, 16, 2, 20000, 0.0, 0.3, seed=0)
    mean = 20000 * 2 / 16
    assert np.all(np.abs(flat.tokens - mean) < 0.1 * mean)
    hot = synthetic_routing(4, 16, 2, 20000, 1.5, 0.3, seed=0)
    assert hot.tokens.max(axis=1).min() > 2 * mean
    assert hot.tokens.max() <= 20000 * 1.05  # an expert sees a token at most once (up to sampling noise)
    with pytest.raises(InputError, match="affinity"):
        synthetic_routing(4, 16, 2, 100, 1.0, 1.5)


def test_cli_plan_experts_json_and_errors(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from perfmodel.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["plan", "experts", "--model", "mixtral-8x7b", "--gpus", "4", "--synthetic", "1.0",
                              "--time-limit", "5", "--json"])
    assert res.exit_code == 0, res.output
    doc = _json.loads(res.stdout)
    for key in ("placement", "objective", "baselines", "gap", "solve_time_s"):
        assert key in doc
    assert set(doc["baselines"]) >= {"round_robin", "greedy"}
    assert len(doc["placement"]) == 32 and len(doc["placement"][0]) == 8
    res = runner.invoke(app, ["plan", "experts", "--model", "llama-3.1-8b", "--gpus", "4", "--synthetic", "1"])
    assert res.exit_code == 2 and "experts" in res.stderr
    res = runner.invoke(app, ["plan", "experts", "--model", "mixtral-8x7b", "--gpus", "4"])
    assert res.exit_code == 2 and "--routing" in res.stderr
    bad = tmp_path / "r.json"
    bad.write_text('{"tokens": [[1, 2,\n 3]]\n')
    res = runner.invoke(app, ["plan", "experts", "--model", "mixtral-8x7b", "--gpus", "4", "--routing", str(bad)])
    assert res.exit_code == 2 and "line" in res.stderr
