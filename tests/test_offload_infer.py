"""Offloaded serving: hand-checked transfer volumes and times, capacity, monotonicity, the GH200 findings."""

from __future__ import annotations

import pytest

from perfmodel.errors import InputError
from perfmodel.offload_infer import (GRACE_LAUNCH_US, LLAMA_32_1B, X86_LAUNCH_US, cpu_bound_crossover,
                                     estimate_offload_inference, kv_overflow_sweep)
from perfmodel.specdb import load_database

PCIE = 63 * 0.82e9  # pcie5-x16 per direction x achievable fraction, B/s
KV_TOK_8B = 32 * 2 * 8 * 128 * 2  # llama-3.1-8b: layers x (K,V) x kv_heads x d_head x bf16 = 131072 B
LAYERS_8B = 32 * ((2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) * 2 + 2 * 4096 * 2)
EMB_8B = 2 * 128256 * 4096 * 2  # embedding + LM head, 16-bit


@pytest.fixture(scope="module")
def db():
    return load_database()


def test_weights_offload_over_pcie_hand_checked(db):
    r = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8, db=db)
    assert LAYERS_8B == 13_959_168_000
    assert r.decode.transfer.bytes_per_tier == {"host-ddr5": pytest.approx(LAYERS_8B)}
    assert r.decode.transfer.bytes_per_link == {"pcie5-x16": pytest.approx(LAYERS_8B)}
    assert r.decode.transfer.time_ms == pytest.approx(LAYERS_8B / PCIE * 1e3)  # 270.2 ms
    assert r.decode.transfer.bottleneck == "pcie5-x16" and r.bottleneck == "pcie5-x16"
    gpu = r.decode.gpu_ms
    host = r.decode.host_ms  # the default (TensorRT-LLM-like) engine's host time per iteration, serial
    assert host == pytest.approx(0.9)
    assert r.decode.step_ms == pytest.approx(max(gpu, 270.2123) + min(gpu, 270.2123) / 32 + host, rel=1e-4)
    assert r.placement["weights"] == {"host-ddr5": pytest.approx(LAYERS_8B), "hbm": pytest.approx(EMB_8B)}
    assert r.decode_tokens_per_s == pytest.approx(8 / (r.decode.step_ms / 1e3))
    # without overlap the two add up
    r2 = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8,
                                    overlap=False, db=db)
    assert r2.decode.step_ms == pytest.approx(gpu + LAYERS_8B / PCIE * 1e3 + host)
    # GH200: same bytes over NVLink-C2C (450 x 0.83 GB/s) -- ~7x faster streaming
    g = estimate_offload_inference("llama-3.1-8b", "gh200-node", 1000, 100, offload={"weights"}, batch=8, db=db)
    assert g.decode.transfer.time_ms == pytest.approx(LAYERS_8B / (450 * 0.83e9) * 1e3)
    assert g.decode.transfer.bottleneck == "nvlink-c2c"


def test_kv_overflow_hand_checked(db):
    isl, osl, b = 100_000, 1000, 8
    r = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", isl, osl, offload={"kv"}, batch=b, db=db)
    kv_total = b * (isl + osl) * KV_TOK_8B
    h = r.hbm_bytes
    assert h["buffers"] == pytest.approx(2 * kv_total / 32)
    assert h["weights"] == pytest.approx(LAYERS_8B + EMB_8B)
    assert h["kv"] == pytest.approx(h["usable"] - h["weights"] - h["buffers"])
    swapped = r.placement["kv"]["host-ddr5"]
    assert swapped + h["kv"] == pytest.approx(kv_total)
    read = b * (isl + osl / 2) * KV_TOK_8B - h["kv"]  # decode at the mean context reads the swapped part
    assert r.decode.transfer.bytes_per_tier["host-ddr5"] == pytest.approx(read)
    assert r.decode.transfer.time_ms == pytest.approx(read / PCIE * 1e3)
    assert r.kv_overflow_context == pytest.approx(h["kv"] / (b * KV_TOK_8B))
    assert r.decode.step_ms > 5 * r.decode.gpu_ms  # swapping dominates


def test_kv_fits_means_no_traffic(db):
    r = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"kv"}, batch=8, db=db)
    assert r.decode.transfer.time_ms == 0 and r.decode.step_ms == pytest.approx(r.decode.gpu_ms + r.decode.host_ms)
    assert "host-ddr5" not in r.placement.get("kv", {})


def test_experts_offload_hand_checked(db):
    per_expert = 3 * 4096 * 14336 * 2  # mixtral-8x7b expert, bf16
    r = estimate_offload_inference("mixtral-8x7b", "1 x h100-pcie", 1000, 100, offload={"experts"}, batch=1, db=db)
    assert r.placement["experts"]["host-ddr5"] == pytest.approx(32 * 8 * per_expert)
    assert r.decode.transfer.bytes_per_tier["host-ddr5"] == pytest.approx(32 * 2 * per_expert)  # top-2 of 8
    assert r.decode.transfer.time_ms == pytest.approx(32 * 2 * per_expert / PCIE * 1e3)
    r4 = estimate_offload_inference("mixtral-8x7b", "1 x h100-pcie", 1000, 100, offload={"experts"}, batch=4, db=db)
    distinct = 8 * (1 - (1 - 2 / 8) ** 4)  # 5.47 experts per layer
    assert r4.decode.transfer.bytes_per_tier["host-ddr5"] == pytest.approx(32 * distinct * per_expert)
    # prefill touches every expert of every layer
    assert r4.prefill.transfer.bytes_per_tier["host-ddr5"] == pytest.approx(32 * 8 * per_expert, rel=1e-6)


def test_capacity_errors(db):
    with pytest.raises(InputError, match=r"GiB missing"):
        estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=1,
                                   host_memory="host-ddr5:64GiB", db=db)
    with pytest.raises(InputError, match=r"add kv to --offload"):
        estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 100_000, 1000, batch=8, db=db)
    with pytest.raises(InputError, match=r"short by [\d.]+ GiB"):
        estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, batch=1, db=db)
    with pytest.raises(InputError, match="has no experts"):
        estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"experts"}, db=db)
    with pytest.raises(InputError, match="--offload: expected"):
        estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"kvcache"}, db=db)
    with pytest.raises(InputError, match="no such tier"):
        estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, tier="nvme",
                                   db=db)
    # errors are one line
    try:
        estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=1,
                                   host_memory="host-ddr5:64GiB", db=db)
    except InputError as e:
        assert "\n" not in str(e)


def test_spill_to_nvme_and_more_capacity_never_infeasible(db):
    # 137 GB of 70B layer weights: 40 GiB of host memory + an NVMe drive hold them; the slow NVMe sets the time
    r = estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=1,
                                   host_memory="host-ddr5:40GiB", nvme="nvme-gen5", db=db)
    assert set(r.placement["weights"]) == {"host-ddr5", "nvme-gen5", "hbm"}
    assert r.placement["weights"]["host-ddr5"] == pytest.approx(40 * 2**30)
    on_nvme = r.placement["weights"]["nvme-gen5"]
    assert r.decode.transfer.bottleneck == "nvme-gen5"
    assert r.decode.transfer.time_ms == pytest.approx(on_nvme / 13e9 * 1e3)  # nvme-gen5 reads 13 GB/s
    feasible = False
    for gib in (32, 64, 128, 160, 256, 512):
        try:
            estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=1,
                                       host_memory=f"host-ddr5:{gib}GiB", db=db)
            feasible = True
        except InputError:
            assert not feasible, f"{gib} GiB infeasible after a smaller size was feasible"
    assert feasible


def _overlay(tmp_path, name, text):
    d = tmp_path / name
    d.mkdir()
    (d / "o.yaml").write_text(text)
    return load_database((str(d),))


def test_faster_tier_or_link_never_slows(db, tmp_path):
    base = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8,
                                      db=db)
    fast_link = _overlay(tmp_path, "link", "extends: pcie5-x16\nbandwidth_gbps: {value: 128, assumed: what-if}\n")
    r = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8,
                                   db=fast_link)
    assert r.decode.step_ms < base.decode.step_ms
    # NVMe-bound: a faster drive helps, a faster host DRAM (not on the path's bottleneck) never hurts
    kw = dict(offload={"weights"}, batch=1, host_memory="host-ddr5:40GiB", nvme="nvme-gen5")
    b2 = estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, db=db, **kw)
    fast_nvme = _overlay(tmp_path, "nvme", "extends: nvme-gen5\nread_gbps: {value: 50, assumed: what-if}\n")
    r2 = estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, db=fast_nvme, **kw)
    assert r2.decode.step_ms < b2.decode.step_ms
    fast_ddr = _overlay(tmp_path, "ddr", "extends: host-ddr5\nread_gbps: {value: 2000, assumed: what-if}\n")
    r3 = estimate_offload_inference("llama-3.1-70b", "1 x h100-pcie", 1000, 100, db=fast_ddr, **kw)
    assert r3.decode.step_ms <= b2.decode.step_ms


def test_long_context_kv_overflow_sweep(db):
    rows = kv_overflow_sweep("llama-3.1-8b", "1 x h100-pcie", 8, [8_000, 32_000, 64_000, 128_000], db=db)
    assert [r["overflows"] for r in rows] == [False, False, True, True]
    ctx = rows[0]["overflow_context"]
    assert 32_000 < ctx < 64_000
    slow = [r["slowdown"] for r in rows]
    assert slow[0] == pytest.approx(1.0) and slow[1] == pytest.approx(1.0)
    assert 1.0 < slow[2] < slow[3]
    # GH200's C2C link makes the same swap much cheaper than PCIe
    g = kv_overflow_sweep("llama-3.1-8b", "gh200-node", 8, [128_000], db=db)[0]
    assert g["slowdown"] < rows[3]["slowdown"] / 3


def test_gh200_faster_than_h100_pcie_at_large_batch(db):
    """Finding (1) of Vellaisamy et al. (ISPASS 2025): GH200 prefill 1.9-2.7x faster at large batch."""
    gh = estimate_offload_inference(LLAMA_32_1B, "gh200-node", 512, 1, batch=64, eager=True, db=db)
    pc = estimate_offload_inference(LLAMA_32_1B, "1 x h100-pcie", 512, 1, batch=64, eager=True, db=db)
    assert gh.prefill.bound == "gpu" and pc.prefill.bound == "gpu"
    ratio = pc.ttft_ms / gh.ttft_ms
    assert 1.4 < ratio < 2.7  # model gives ~1.6x (peak x GEMM fraction x HBM ratios); paper 1.9-2.7x
    # with weights offloaded the C2C vs PCIe gap is far larger
    gw = estimate_offload_inference("llama-3.1-8b", "gh200-node", 512, 64, offload={"weights"}, batch=64, db=db)
    pw = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 512, 64, offload={"weights"}, batch=64, db=db)
    assert pw.tpot_ms / gw.tpot_ms > 5


def test_gh200_cpu_bound_at_small_batch(db):
    """Finding (2): GH200 stays launch-bound up to ~4x larger batches than a PCIe H100 with an x86 host."""
    gh = estimate_offload_inference(LLAMA_32_1B, "gh200-node", 512, 1, batch=1, eager=True, db=db)
    pc = estimate_offload_inference(LLAMA_32_1B, "1 x h100-pcie", 512, 1, batch=1, eager=True, db=db)
    assert gh.cpu_launch_us == GRACE_LAUNCH_US and pc.cpu_launch_us == X86_LAUNCH_US
    assert gh.prefill.bound == "cpu-launch" and pc.prefill.bound == "cpu-launch"
    assert gh.ttft_ms > pc.ttft_ms  # slower than the PCIe box at batch 1
    x_gh = cpu_bound_crossover(LLAMA_32_1B, "gh200-node", 512, db=db)
    x_pc = cpu_bound_crossover(LLAMA_32_1B, "1 x h100-pcie", 512, db=db)
    assert 3 <= x_gh / x_pc <= 6, (x_gh, x_pc)
    # not eager (CUDA graphs / compiled): no launch term, GH200 wins at every batch
    g1 = estimate_offload_inference(LLAMA_32_1B, "gh200-node", 512, 1, batch=1, db=db)
    p1 = estimate_offload_inference(LLAMA_32_1B, "1 x h100-pcie", 512, 1, batch=1, db=db)
    assert g1.ttft_ms < p1.ttft_ms and g1.prefill.cpu_launch_ms == 0


def test_cli_offload_and_pim():
    import json as _json

    from typer.testing import CliRunner

    from perfmodel.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["estimate", "infer", "--model", "llama-3.1-8b", "--system", "1 x h100-pcie", "--isl",
                              "512", "--osl", "64", "--batch", "64", "--offload", "weights", "--json"])
    assert res.exit_code == 0, res.output
    doc = _json.loads(res.stdout)
    assert doc["bottleneck"] == "pcie5-x16" and doc["tpot_ms"] > 100
    res = runner.invoke(app, ["estimate", "infer", "--model", "llama-2-7b", "--system", "1 x h100-sxm", "--isl",
                              "2048", "--osl", "256", "--batch", "32", "--pim", "hbm-pim", "--json"])
    assert res.exit_code == 0, res.output
    assert _json.loads(res.stdout)["speedup"] > 1.0
    res = runner.invoke(app, ["estimate", "infer", "--model", "llama-3.1-8b", "--system", "1 x h100-sxm", "--isl",
                              "512", "--osl", "64", "--nvme", "nvme-gen4"])
    assert res.exit_code == 2 and "--offload" in res.stderr


def test_engine_host_time_adds_to_every_step_and_memory_follows_the_engine(db):
    base = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8,
                                      engine="default:host_overhead_ms=0", db=db)
    slow = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8,
                                      engine="default:host_overhead_ms=2.5", db=db)
    for a, b in ((base.prefill, slow.prefill), (base.decode, slow.decode)):
        assert a.host_ms == 0 and b.host_ms == 2.5
        assert b.step_ms == pytest.approx(a.step_ms + 2.5)
    assert slow.tpot_ms == pytest.approx(base.tpot_ms + 2.5)
    assert any("host_overhead_ms = 2.5 per iteration (given)" in n for n in slow.assumptions)
    assert not any("host_overhead_ms" in n for n in base.assumptions)
    dflt = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8, db=db)
    assert any("host_overhead_ms = 0.9 per iteration (default's executor)" in n for n in dflt.assumptions)
    # the engine's memory share is honoured: half the device leaves less HBM usable than the default's 0.9
    vllm = estimate_offload_inference("llama-3.1-8b", "1 x h100-pcie", 1000, 100, offload={"weights"}, batch=8,
                                      engine="vllm:gpu_memory_utilization=0.5", db=db)
    assert vllm.hbm_bytes["usable"] < base.hbm_bytes["usable"]


@pytest.mark.parametrize("extra, flags", [
    (["--offload", "weights", "--scenario", "server", "--rate", "3"], "--scenario, --rate"),
    (["--offload", "weights", "--gpus", "8"], "--gpus"),
    (["--pim", "hbm-pim", "--tp", "2"], "--tp"),
    (["--pim", "hbm-pim", "--engine", "vllm"], "--engine"),
])
def test_cli_rejects_flags_offload_and_pim_do_not_model(extra, flags):
    from typer.testing import CliRunner

    from perfmodel.cli import app

    res = CliRunner().invoke(app, ["estimate", "infer", "--model", "llama-2-7b", "--system", "1 x h100-sxm", "--isl",
                                   "512", "--osl", "64", "--batch", "8", *extra])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flags}: not modelled with") and "Traceback" not in res.output
