"""PIM attention (NeuPIMs interleaving) and Duplex Logic-PIM: formulas, speedups and where they vanish."""

from __future__ import annotations

import pytest

from perfmodel.errors import InputError
from perfmodel.pim import (HBM_STACKS, LOGIC_PIM_BW_MULT, LOGIC_PIM_FLOP_PER_BYTE, estimate_pim_attention,
                           pim_crossover_batch, pim_sweep)
from perfmodel.specdb import load_database

SYS = "1 x h100-sxm"


@pytest.fixture(scope="module")
def db():
    return load_database()


def test_attention_on_hbm_pim_hand_checked(db):
    # llama-2-7b is MHA: Op/B = 2 (a/k) / 2 B = 1, at HBM-PIM's 1 FLOP/B ridge -> bandwidth-bound
    r = estimate_pim_attention("llama-2-7b", SYS, "hbm-pim", 4096, 256, 8, db=db)
    assert r.pim.devices == HBM_STACKS["h100-sxm"] == 5
    assert r.attention_flop_per_byte == pytest.approx(1.0, rel=0.01)
    ctx = 4096 + 128
    kv = 8 * ctx * 32 * 2 * 32 * 128 * 2  # seqs x ctx x layers x (K,V) x heads x d x bf16
    q_out = 32 * 2 * 8 * 32 * 128 * 2  # layers x (q + out) x seqs x heads x d x 2 B
    t = (kv + q_out) / (5 * 1228.8e9)
    assert r.pim_attention_ms == pytest.approx(t * 1e3, rel=1e-6)
    assert r.pim_attention_bound == "bandwidth"
    # NeuPIMs: step = max(sum GEMM, sum attention) + fill, vs blocked GEMM + attention
    assert r.interleaved_step_ms == pytest.approx(max(r.gemm_sub_batched_ms, r.pim_attention_ms) +
                                                  r.pipeline_fill_ms, rel=1e-6)
    assert r.blocked_step_ms == pytest.approx(r.gpu_gemm_ms + r.pim_attention_ms, rel=1e-6)
    assert r.pim_step_ms == min(r.blocked_step_ms, r.interleaved_step_ms)
    assert r.gpu_step_ms == pytest.approx(r.gpu_gemm_ms + r.gpu_attention_ms)
    assert r.speedup == pytest.approx(r.gpu_step_ms / r.pim_step_ms)


def test_gqa_makes_pim_compute_bound(db):
    r = estimate_pim_attention("llama-3.1-8b", SYS, "hbm-pim", 4096, 256, 8, db=db)  # group 4
    assert r.attention_flop_per_byte == pytest.approx(4.0, rel=0.01)
    assert r.pim_attention_bound == "compute"
    assert r.speedup < 1.0  # a 1 FLOP/B PIM is slower than the GPU's HBM at Op/B 4
    lp = estimate_pim_attention("llama-3.1-8b", SYS, "logic-pim", 4096, 256, 8, db=db)
    assert lp.pim.ridge_flop_per_byte == LOGIC_PIM_FLOP_PER_BYTE
    assert lp.pim.internal_gbps_per_device == pytest.approx(LOGIC_PIM_BW_MULT * 3350 / 5)
    assert lp.pim_attention_bound == "bandwidth" and lp.speedup > 1.0
    assert any("assumed" in a for a in lp.assumptions)


def test_speedup_at_long_context_small_batch_and_vanishing_with_gqa(db):
    s = dict(pim_sweep("llama-2-7b", SYS, "hbm-pim", vary="context", values=[256, 4096, 32768], batch=1, db=db))
    assert s[32768] > 1.3 > s[4096] > s[256] >= 1.0  # long context: attention share grows
    s = dict(pim_sweep("llama-2-7b", SYS, "hbm-pim", vary="kv_heads", values=[32, 16, 8, 4, 1], db=db))
    assert s[32] > 1.5 and s[32] > s[16] > s[8] > s[4] > s[1]  # GQA ratio 1 -> 32
    assert s[8] < 1.0  # at group 4 HBM-PIM (1 FLOP/B) loses
    # Logic-PIM keeps a gain at group 4-8 (Duplex's point) though it shrinks toward 1
    s = dict(pim_sweep("llama-3.1-8b", SYS, "logic-pim", vary="kv_heads", values=[32, 8, 1], db=db))
    assert s[32] > s[8] > s[1] > 1.0


def test_duplex_experts_speedup_shrinks_with_batch(db):
    sp = dict(pim_sweep("mixtral-8x7b", SYS, "logic-pim", vary="batch", values=[4, 64, 256, 512], experts=True,
                        precision="fp8", db=db))
    assert sp[4] > 2.5 and sp[64] > 2.5
    assert sp[256] < sp[64] < sp[4] and sp[256] < 1.2  # the expert gain is gone by batch 256
    small = estimate_pim_attention("mixtral-8x7b", SYS, "logic-pim", 2048, 256, 4, "fp8", experts=True, db=db)
    assert small.experts_on_pim
    big = estimate_pim_attention("mixtral-8x7b", SYS, "logic-pim", 2048, 256, 512, "fp8", experts=True, db=db,
                                 check_capacity=False)
    assert not big.experts_on_pim  # tokens per expert raise the experts' Op/B past Logic-PIM's ridge
    x = pim_crossover_batch("mixtral-8x7b", SYS, "logic-pim", experts=True, threshold=2.0, precision="fp8", db=db)
    assert x is not None and 64 < x <= 512


def test_crossover_batch(db):
    # MHA on HBM-PIM keeps helping as the batch grows; at GQA 4 it never helps
    assert pim_crossover_batch("llama-2-7b", SYS, "hbm-pim", max_batch=256, db=db) is None
    assert pim_crossover_batch("llama-2-7b", SYS, "hbm-pim", kv_heads=8, max_batch=256, db=db) <= 2


def test_sub_batch_interleaving_beats_blocked_at_large_batch(db):
    r = estimate_pim_attention("llama-2-7b", SYS, "hbm-pim", 2048, 256, 32, db=db)
    assert r.schedule == "interleaved" and r.interleaved_step_ms < r.blocked_step_ms
    one = estimate_pim_attention("llama-2-7b", SYS, "hbm-pim", 2048, 256, 32, sub_batches=1, db=db)
    assert one.schedule == "blocked" and one.pim_step_ms == pytest.approx(r.blocked_step_ms)


def test_aim_devices_hold_the_cache(db):
    r = estimate_pim_attention("llama-2-7b", SYS, "aim-gddr6", 4096, 256, 8, db=db)
    kv = 8 * (4096 + 256) * 32 * 2 * 32 * 128 * 2
    assert r.pim.devices == -(-kv // 1e9)
    assert r.pim.ridge_flop_per_byte == pytest.approx(1024 / 512)


def test_bad_inputs(db):
    with pytest.raises(InputError, match="expected a pim tier"):
        estimate_pim_attention("llama-2-7b", SYS, "host-ddr5", 1000, 100, 8, db=db)
    with pytest.raises(InputError, match="fit"):
        estimate_pim_attention("llama-3.1-70b", SYS, "hbm-pim", 4096, 256, 64, precision="fp8", db=db)
    with pytest.raises(InputError, match="--sub-batches"):
        estimate_pim_attention("llama-2-7b", SYS, "hbm-pim", 1000, 100, 1, sub_batches=2, db=db)
    with pytest.raises(InputError, match="MLA"):
        estimate_pim_attention("deepseek-v3", SYS, "hbm-pim", 1000, 100, 1, sub_batches=1, db=db,
                               check_capacity=False)
