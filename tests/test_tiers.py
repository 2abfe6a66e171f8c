"""Memory-tier placement (perfmodel.solvers.tiers): LP/ILP against brute force, monotonicity, errors, and
the CXL fine-tuning cases of Liaw & Chen (arXiv 2507.03305) with hand-checked numbers."""

import random

import pytest

from perfmodel.errors import InputError
from perfmodel.solvers.tiers import (Access, Group, TierSpec, brute_force, evaluate_placement, plan_machine_tiers,
                                     plan_tiers, serving_groups, tiers_from_machine, tiers_report, training_groups)

G = 1e9
GIB = 2**30


def _random_case(rng: random.Random, n_groups: int, n_tiers: int):
    tiers = [TierSpec("hbm", rng.uniform(5, 40) * G, rng.uniform(500, 3000), rng.uniform(500, 3000), False)]
    for i in range(1, n_tiers):
        bw = rng.uniform(5, 600)
        tiers.append(TierSpec(f"t{i}", rng.uniform(10, 80) * G, bw, bw * rng.uniform(0.5, 1),
                              shared_rw=rng.random() < 0.5))
    groups = []
    for j in range(n_groups):
        acc = [Access(rng.choice(["gpu", "cpu"]), rng.uniform(0, 50) * G, rng.uniform(0, 20) * G,
                      rng.choice(["a", "b"])) for _ in range(rng.randint(1, 2))]
        groups.append(Group(f"g{j}", rng.uniform(1, 30) * G, tuple(acc), offload=rng.random() < 0.2))
    compute = {"a": rng.uniform(0, 1), "b": rng.uniform(0, 0.5)}
    return groups, tiers, compute


@pytest.mark.parametrize("serial", [False, True])
def test_ilp_matches_brute_force_and_lp_is_a_lower_bound(serial):
    rng = random.Random(7 + serial)
    checked = 0
    for _ in range(25):
        groups, tiers, compute = _random_case(rng, rng.randint(3, 4), rng.randint(2, 3))
        bf = brute_force(groups, tiers, link_gbps=50, compute_s=compute, serial=serial)
        if bf is None:
            with pytest.raises(InputError, match="GiB missing"):
                plan_tiers(groups, tiers, link_gbps=50, compute_s=compute, serial=serial, integral=True)
            continue
        ilp = plan_tiers(groups, tiers, link_gbps=50, compute_s=compute, serial=serial, integral=True)
        lp = plan_tiers(groups, tiers, link_gbps=50, compute_s=compute, serial=serial)
        assert ilp.time_s == pytest.approx(bf.time_s, rel=2e-4)  # HiGHS's default MIP gap is 1e-4
        assert lp.time_s <= ilp.time_s * (1 + 1e-6)
        # the plan's reported time is re-evaluated from its placement by the same model
        again = evaluate_placement(groups, tiers, ilp.placement, 50, compute, serial)
        assert again.time_s == pytest.approx(ilp.time_s, rel=1e-9)
        assert all(v in (0.0, 1.0) for d in ilp.placement.values() for v in d.values())
        checked += 1
    assert checked >= 15


def test_faster_tier_never_slows_and_more_capacity_never_infeasible():
    rng = random.Random(11)
    for _ in range(20):
        groups, tiers, compute = _random_case(rng, 4, 3)
        big = [TierSpec(t.name, t.capacity_bytes * 10, t.read_gbps, t.write_gbps, t.crosses_host_link, t.shared_rw)
               for t in tiers]
        base = plan_tiers(groups, big, link_gbps=50, compute_s=compute)
        for i, t in enumerate(big):
            faster = list(big)
            faster[i] = TierSpec(t.name, t.capacity_bytes, t.read_gbps * 2, t.write_gbps * 3, t.crosses_host_link,
                                 t.shared_rw)
            assert plan_tiers(groups, faster, link_gbps=50, compute_s=compute).time_s <= base.time_s * (1 + 1e-6)
        try:
            small = plan_tiers(groups, tiers, link_gbps=50, compute_s=compute)
        except InputError:
            continue
        assert base.time_s <= small.time_s * (1 + 1e-6)  # more capacity: still feasible, never slower


def test_errors_are_one_line():
    groups = [Group("a", 60 * G, (Access("gpu", 1 * G),)), Group("b", 50 * G, (Access("gpu", 1 * G),))]
    tiers = [TierSpec("hbm", 80 * G, 3000, 3000, False), TierSpec("host", 20 * G, 600, 600)]
    with pytest.raises(InputError, match=r"^tier plan: 9\.3 GiB missing"):
        plan_tiers(groups, tiers, link_gbps=50)
    with pytest.raises(InputError, match="unknown tier 'cxl'"):
        plan_tiers([Group("a", G, (), tiers=("cxl",))], tiers, link_gbps=50)
    with pytest.raises(InputError, match="unknown tier 'nvme'"):
        plan_tiers(groups[:1], tiers, link_gbps=50, fix={"a": {"nvme": 1.0}})
    with pytest.raises(InputError, match="unknown group 'c'"):
        plan_tiers(groups[:1], tiers, link_gbps=50, fix={"c": {"hbm": 1.0}})
    # three 30 GB groups over 50 + 50 GB fit as fractions, not as whole groups (10 GB = 9.3 GiB short)
    three = [Group(f"g{i}", 30 * G, (Access("gpu", G),)) for i in range(3)]
    two = [TierSpec("hbm", 50 * G, 3000, 3000, False), TierSpec("host", 50 * G, 600, 600)]
    plan_tiers(three, two, link_gbps=50)
    with pytest.raises(InputError, match=r"9\.3 GiB missing to place the whole groups") as e:
        plan_tiers(three, two, link_gbps=50, integral=True)
    assert "\n" not in str(e.value)


# -- the CXL fine-tuning cases, small enough to check by hand --------------------------------------
# CPU-offloaded fine-tuning per step (ZeRO-Offload arrangement), all three groups kept off the GPU:
#   optimizer_state 96 GB: the CPU Adam step reads and writes it all (96 + 96 GB) in the optimizer phase;
#   params16 16 GB: the GPU reads it twice (fwd, bwd: 32 GB) over the link; the CPU writes it (16 GB);
#   activations 20 GB: the GPU writes 20 GB in the forward and reads 20 GB in the backward.
# Tiers: DDR 600 GB/s (reads and writes share it), a CXL card 50 GB/s each way, NVMe 13 / 6.6 GB/s;
# PCIe 50 GB/s per direction; forward+backward compute 2 s.


def _ft_groups():
    return [Group("optimizer_state", 96 * G, (Access("cpu", 96 * G, 96 * G, "optimizer"),), offload=True),
            Group("params16", 16 * G, (Access("gpu", 32 * G, 0, "fwd_bwd"), Access("cpu", 0, 16 * G, "optimizer")),
                  offload=True),
            Group("activations", 20 * G, (Access("gpu", 20 * G, 20 * G, "fwd_bwd"),), offload=True)]


HBM = TierSpec("hbm", 80 * G, 3000, 3000, False)
COMPUTE = {"fwd_bwd": 2.0, "optimizer": 0.0}


def _ddr(cap_gb):
    return TierSpec("host", cap_gb * G, 600, 600)


def _cxl(cards=1):
    return TierSpec("cxl", 256 * G * cards, 50 * cards, 50 * cards, shared_rw=False)


def test_cxl_helps_when_ddr_is_short():
    # 132 GB to offload, 100 GB of DDR: 32 GB = 29.8 GiB missing
    with pytest.raises(InputError, match=r"29\.8 GiB missing"):
        plan_tiers(_ft_groups(), [HBM, _ddr(100)], link_gbps=50, compute_s=COMPUTE)
    # spilling to NVMe (whole groups): Adam state stays in DDR, params16 and activations go to NVMe;
    # fwd_bwd: NVMe reads 32 + 20 GB at 13 GB/s and writes 20 GB at 6.6 GB/s on one channel = 7.03 s;
    # optimizer: the 16 GB param write at 6.6 GB/s (2.42 s) outlasts DDR's (96 + 96) / 600 = 0.32 s
    nvme = TierSpec("nvme", 2000 * G, 13, 6.6)
    spill = plan_tiers(_ft_groups(), [HBM, _ddr(100), nvme], link_gbps=50, compute_s=COMPUTE, integral=True)
    assert spill.placement["optimizer_state"] == {"host": 1.0}
    assert spill.phase_s["fwd_bwd"] == pytest.approx(52 / 13 + 20 / 6.6)
    assert spill.time_s == pytest.approx(52 / 13 + 20 / 6.6 + 16 / 6.6)
    # a CXL card instead: Adam state in DDR, the GPU-read params and activations on CXL;
    # fwd_bwd hidden under compute (CXL read 52/50 = 1.04 s); optimizer max(192/600, 16/50) = 0.32 s
    cxl = plan_tiers(_ft_groups(), [HBM, _ddr(100), _cxl()], link_gbps=50, compute_s=COMPUTE, integral=True)
    assert cxl.placement == {"optimizer_state": {"host": 1.0}, "params16": {"cxl": 1.0},
                             "activations": {"cxl": 1.0}}
    assert cxl.phase_s == pytest.approx({"fwd_bwd": 2.0, "optimizer": 0.32})
    assert cxl.time_s < spill.time_s / 4
    # ... and even beats unlimited DDR (2 + 208/600 = 2.3467 s): the card adds bandwidth to the optimizer
    ddr_only = plan_tiers(_ft_groups(), [HBM, _ddr(1000)], link_gbps=50, compute_s=COMPUTE)
    assert ddr_only.time_s == pytest.approx(2 + 208 / 600)
    lp = plan_tiers(_ft_groups(), [HBM, _ddr(100), _cxl()], link_gbps=50, compute_s=COMPUTE)
    assert lp.time_s <= cxl.time_s + 1e-9 and lp.time_s < ddr_only.time_s


def test_naive_cxl_hurts_the_optimizer_phase():
    tiers = [HBM, _ddr(1000), _cxl()]
    ddr = evaluate_placement(_ft_groups(), tiers, {g.name: {"host": 1.0} for g in _ft_groups()}, 50, COMPUTE)
    naive = evaluate_placement(_ft_groups(), tiers, {g.name: {"cxl": 1.0} for g in _ft_groups()}, 50, COMPUTE)
    assert ddr.phase_s["optimizer"] == pytest.approx((96 + 96 + 16) / 600)  # 0.347 s
    assert naive.phase_s["optimizer"] == pytest.approx((96 + 16) / 50)  # CXL write channel: 2.24 s
    assert naive.bottleneck["optimizer"] == "cxl:write"
    assert naive.phase_s["optimizer"] / ddr.phase_s["optimizer"] == pytest.approx(6.46, abs=0.01)
    assert naive.time_s == pytest.approx(4.24)
    # numactl-style interleave over DDR + CXL (half the pages each) still waits on the card: 1.12 s
    half = {g.name: {"host": 0.5, "cxl": 0.5} for g in _ft_groups()}
    assert evaluate_placement(_ft_groups(), tiers, half, 50, COMPUTE).phase_s["optimizer"] == pytest.approx(1.12)
    # two cards share the load: the naive optimizer phase halves
    two = [HBM, _ddr(1000), _cxl(2)]
    assert evaluate_placement(_ft_groups(), two, {g.name: {"cxl": 1.0} for g in _ft_groups()}, 50,
                              COMPUTE).phase_s["optimizer"] == pytest.approx(1.12)
    # the planner keeps the CPU-streamed Adam state in DDR whenever DDR can hold it
    plan = plan_tiers(_ft_groups(), [HBM, _ddr(100), _cxl()], link_gbps=50, compute_s=COMPUTE, integral=True)
    assert plan.placement["optimizer_state"] == {"host": 1.0}
    assert plan.time_s < naive.time_s / 1.8


def test_training_groups_13b_long_context_needs_cxl():
    from perfmodel.memtiers import describe_machine
    from perfmodel.specdb import load_database

    db = load_database()
    ref = db.resolve_system("1 x h100-sxm")
    wl = training_groups("llama-2-13b", ref, seq_len=32768, global_batch=1, recompute="full",
                         offload=("gradients", "optimizer_state", "activations"), db=db)
    sizes = {g.name: g.size_bytes for g in wl}
    p = 13_015_864_320
    assert sizes["optimizer_state"] == pytest.approx(12 * p) and sizes["params16"] == pytest.approx(2 * p)
    short = describe_machine(db, ref, host_memory="host-ddr5:128GB")
    with pytest.raises(InputError, match="GiB missing"):
        plan_machine_tiers(short, wl)
    ref_plan = plan_machine_tiers(describe_machine(db, ref, host_memory="host-ddr5:2TB"), wl)
    one = plan_machine_tiers(describe_machine(db, ref, host_memory="host-ddr5:128GB", cxl="cxl-aic-x16:256GB"), wl)
    two = plan_machine_tiers(describe_machine(db, ref, host_memory="host-ddr5:128GB",
                                              cxl="cxl-aic-x16:256GB,cxl-aic-x16:256GB"), wl)
    assert ref_plan.time_s <= one.time_s and two.time_s <= one.time_s
    assert ref_plan.time_s / one.time_s > 0.9 and ref_plan.time_s / two.time_s > 0.99
    # the LP fills DDR with Adam state and sends the GPU-side activations to CXL
    assert one.placement["activations"].get("cxl", 0) > 0.99
    assert one.placement["optimizer_state"]["host"] > 0.5
    assert any("optimizer_state" in line for line in tiers_report(one))


def test_serving_groups_all_in_hbm_costs_the_estimate():
    from perfmodel.memtiers import describe_machine
    from perfmodel.specdb import load_database

    db = load_database()
    ref = db.resolve_system("1 x h100-sxm")
    wl = serving_groups("llama-3.1-8b", ref, isl=1000, osl=1000, batch=16, db=db)
    plan = plan_machine_tiers(describe_machine(db, ref), wl)
    assert all(d == {"hbm": 1.0} for d in plan.placement.values())
    assert plan.time_s == pytest.approx(wl.compute_s["decode"])
    # a KV cache larger than HBM spills to host memory and the step is bound by the PCIe link
    big = serving_groups("llama-3.1-8b", ref, isl=30000, osl=2000, batch=64, db=db)
    spill = plan_machine_tiers(describe_machine(db, ref), big)
    assert spill.placement["kv_cache"].get("host", 0) > 0 and spill.bottleneck["decode"] == "link:h2d"
    tiers = tiers_from_machine(describe_machine(db, ref, cxl="cxl-aic-x8"))
    assert [t.name for t in tiers] == ["hbm", "host", "cxl"] and not tiers[2].shared_rw


def test_cli_plan_tiers_train_and_serve():
    import json as _json

    from typer.testing import CliRunner

    from perfmodel.cli import app

    runner = CliRunner()
    base = ["plan", "tiers", "--model", "llama-2-13b", "--system", "1 x h100-sxm", "--seq-len", "32768",
            "--global-batch", "1", "--offload", "gradients,optimizer_state,activations", "--host-memory",
            "host-ddr5:128GB"]
    short = runner.invoke(app, base)
    assert short.exit_code == 2 and "GiB missing" in short.stderr
    ok = runner.invoke(app, [*base, "--cxl", "cxl-aic-x16:256GB", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = _json.loads(ok.stdout)
    assert doc["time_s"] > 0 and doc["placement"]["optimizer_state"]
    res = runner.invoke(app, ["plan", "tiers", "--model", "llama-3.1-8b", "--system", "1 x h100-sxm", "--isl", "1000",
                              "--osl", "100", "--batch", "8"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["plan", "tiers", "--model", "llama-3.1-8b", "--system", "1 x h100-sxm"])
    assert res.exit_code == 2 and "training flags" in res.stderr
