"""Training: Megatron's FLOPs closed forms, Korthikanti's activation table, model-state bytes, the bubble,
plan checks and properties."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from perfmodel.activations import inflight_microbatches, layer_activation_bytes, model_state_bytes_per_param
from perfmodel.cli import app
from perfmodel.errors import InputError
from perfmodel.flops import iteration_flops, megatron_closed_form
from perfmodel.models import build_arch, catalog
from perfmodel.specdb import load_database
from perfmodel.training import bubble_fraction, estimate_training, pipeline_time, split_layers

GPT = dict(family="gpt", layers=30, hidden=3072, heads=32, vocab=51200)


@pytest.mark.parametrize("shape", [GPT, dict(family="gpt", layers=96, hidden=12288, heads=96, vocab=51200)])
def test_megatron_flops_closed_forms(shape):
    m = build_arch(shape, "t")
    B, s = 512, 2048
    plain = iteration_flops(m, B, s, "none", causal=False)
    assert plain.model == pytest.approx(megatron_closed_form(B, s, m.layers, m.hidden, m.vocab), rel=1e-12)
    full = iteration_flops(m, B, s, "full", causal=False)
    assert full.hardware == pytest.approx(megatron_closed_form(B, s, m.layers, m.hidden, m.vocab, True), rel=1e-12)
    assert full.model == plain.model  # MFU never counts recomputation


def test_causal_attention_is_halved_and_gqa_swiglu_moe_counted():
    m = catalog()["llama-3.1-8b"]
    s = 8192
    causal = iteration_flops(m, 1, s, causal=True).model
    full = iteration_flops(m, 1, s, causal=False).model
    core = 3 * 4 * m.heads * m.d_head * m.layers * s * s  # fwd+bwd QK^T and PV over all pairs
    assert full - causal == pytest.approx(core / 2, rel=1e-12)
    # linear part = 6 x (non-embedding params incl. LM head) per token, the usual 6N
    n_lin = m.params_total - m.embedding_params() - m.layers * 2 * m.hidden - m.hidden
    assert causal - core / 2 == pytest.approx(6 * n_lin * s, rel=1e-12)
    mix = catalog()["mixtral-8x7b"]
    flops = iteration_flops(mix, 1, 4096, causal=True).model
    active_lin = mix.params_active - mix.embedding_params() - mix.layers * 2 * mix.hidden - mix.hidden
    attn = 3 * 4 * mix.heads * mix.d_head * mix.layers * 4096 * 4096 / 2
    assert flops == pytest.approx(6 * active_lin * 4096 + attn, rel=1e-12)


def test_korthikanti_table2():
    """Per-layer activation bytes, GPT shapes with dropout, no FlashAttention (Korthikanti et al. 2022)."""
    m = build_arch(GPT, "t")
    s, b, h, a, t = 2048, 4, m.hidden, m.heads, 8
    sbh = s * b * h
    kw = dict(flash=False, dropout=True)
    assert layer_activation_bytes(m, s, b, **kw) == pytest.approx(sbh * (34 + 5 * a * s / h))
    assert layer_activation_bytes(m, s, b, tp=t, **kw) == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    assert layer_activation_bytes(m, s, b, tp=t, sp=True, **kw) == pytest.approx(sbh / t * (34 + 5 * a * s / h))
    assert layer_activation_bytes(m, s, b, tp=t, recompute="selective", **kw) == pytest.approx(sbh * (10 + 24 / t))
    assert layer_activation_bytes(m, s, b, tp=t, sp=True, recompute="selective", **kw) == pytest.approx(34 * sbh / t)
    assert layer_activation_bytes(m, s, b, tp=t, recompute="full", **kw) == pytest.approx(2 * sbh)
    assert layer_activation_bytes(m, s, b, tp=t, sp=True, recompute="full", **kw) == pytest.approx(2 * sbh / t)
    assert layer_activation_bytes(m, s, b, tp=t, sp=True, cp=2, **kw) == pytest.approx(
        layer_activation_bytes(m, s / 2, b, tp=t, sp=True, **kw))


def test_inflight_microbatches():
    assert inflight_microbatches(8, 64) == 8
    assert inflight_microbatches(8, 4) == 4
    assert inflight_microbatches(8, 64, vp=2) == pytest.approx(8 * (1 + 7 / 16))


@pytest.mark.parametrize("zero,d,expected", [(0, 8, 18), (1, 8, 6 + 12 / 8), (2, 8, 2 + 14 / 8), (3, 8, 16 / 8),
                                             (1, 1, 18)])
def test_model_state_bytes(zero, d, expected):
    assert model_state_bytes_per_param(zero, d) == pytest.approx(expected)


def test_bubble():
    t = [1.0] * 8
    assert pipeline_time(t, 32) == pytest.approx(32 + 7)
    assert pipeline_time(t, 32, vp=4) == pytest.approx(32 + 7 / 4)
    assert 1 - 32 / pipeline_time(t, 32) == pytest.approx(bubble_fraction(8, 32))
    assert 1 - 32 / pipeline_time(t, 32, 4) == pytest.approx(bubble_fraction(8, 32, 4))
    assert pipeline_time([1.0, 2.0, 1.0], 10) == pytest.approx(9 * 2.0 + 4.0)  # (m-1) max + sum
    assert split_layers(30, 4) == [8, 8, 7, 7]


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(tp=3), "--gpus"),
        (dict(tp=8, pp=1, dp=2, gpus=16, model="llama-2-7b", extra_heads=True), None),
        (dict(ep=3, model="mixtral-8x7b"), "--ep 3"),
        (dict(global_batch=100, dp=8), "--global-batch 100"),
        (dict(zero=4), "--zero"),
        (dict(recompute="most"), "--recompute"),
        (dict(tp=16, gpus=16, dp=1), "--tp 16"),
        (dict(cp=3, gpus=24, dp=8), "--cp 3"),
    ],
)
def test_bad_plans(db, kw, needle):
    kw = dict(kw)
    if kw.pop("extra_heads", False):
        estimate_training(kw.pop("model"), "dgx-h100", seq_len=2048, global_batch=64, db=db, **kw)
        return
    model = kw.pop("model", "llama-3.1-8b")
    gpus = kw.pop("gpus", 8)
    kw.setdefault("global_batch", 64)
    with pytest.raises(InputError) as ei:
        estimate_training(model, "dgx-h100", gpus, seq_len=2048, db=db, **kw)
    assert needle in str(ei.value)


def test_more_dp_never_adds_weight_memory(db):
    base = dict(seq_len=4096, global_batch=256, tp=4, pp=2, zero=1, precision="bf16")
    mems = [estimate_training("llama-3.1-70b", "dgx-h100", 8 * dp, db=db, **base).memory_per_gpu_bytes
            ["weights_grads_optimizer"] for dp in (1, 2, 4, 8)]
    assert all(a >= b for a, b in zip(mems, mems[1:]))


def test_allocator_margin_is_five_percent_plus_the_serving_runtime_context(db):
    """Training and serving charge the same CUDA context (0.82 GB, TensorRT-LLM's memory guide log):
    margin = 5% of the named parts + 0.82e9 B."""
    r = estimate_training("llama-3.1-8b", "dgx-h100", 8, tp=1, pp=1, dp=8, global_batch=64, micro_batch=1,
                          seq_len=4096, db=db)
    m = r.memory_per_gpu_bytes
    named = m["weights_grads_optimizer"] + m["activations"] + m["comm_buffers"]
    assert m["allocator_margin"] == pytest.approx(0.05 * named + 0.82e9)


def test_faster_network_never_slows_a_step(tmp_path, db):
    d = tmp_path / "fast"
    d.mkdir()
    (d / "nic.yaml").write_text("extends: ib-ndr-400\nbandwidth_gbps: {value: 100, assumed: what-if XDR}\n")
    fast = load_database((str(d),))
    kw = dict(seq_len=4096, global_batch=512, tp=8, pp=2, zero=1)
    slow = estimate_training("llama-3.1-70b", "dgx-h100", 64, db=db, **kw)
    quick = estimate_training("llama-3.1-70b", "dgx-h100", 64, db=fast, **kw)
    assert quick.step_time_s <= slow.step_time_s


def test_recompute_trades_time_for_memory(db):
    kw = dict(seq_len=4096, global_batch=128, tp=8, pp=1)
    none = estimate_training("llama-3.1-8b", "dgx-h100", 8, recompute="none", db=db, **kw)
    full = estimate_training("llama-3.1-8b", "dgx-h100", 8, recompute="full", db=db, **kw)
    assert full.step_time_s > none.step_time_s
    assert full.memory_per_gpu_bytes["activations"] < none.memory_per_gpu_bytes["activations"]
    assert full.hfu > full.mfu and none.hfu == none.mfu


def test_estimate_train_cli_json_and_tokens():
    res = CliRunner().invoke(app, ["estimate", "train", "--model", "llama-3.1-8b", "--system", "dgx-h100", "--gpus",
                                   "8", "--seq-len", "4096", "--global-batch", "64", "--tokens", "1T", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in ("step_time_s", "tokens_per_s_per_gpu", "mfu", "hfu", "memory_per_gpu_bytes", "time_breakdown_s"):
        assert key in doc
    assert doc["gpu_hours"] == pytest.approx(1e12 / doc["tokens_per_s"] * 8 / 3600)
    res = CliRunner().invoke(app, ["estimate", "train", "--model", "llama-3.1-8b", "--system", "dgx-h100", "--gpus",
                                   "8", "--tp", "3", "--seq-len", "4096", "--global-batch", "64"])
    assert res.exit_code == 2 and "--gpus 8" in res.stderr


def test_ep_overlap_hides_all_to_all_behind_compute(db):
    """DualPipe-style overlap: exposed EP time = max(0, all-to-all - layer compute) per layer, so it can
    only shrink the step, never below the run without any EP communication."""
    from perfmodel.training import estimate_training

    kw = dict(seq_len=4096, global_batch=1024, tp=1, pp=8, ep=32, precision="fp8", recompute="selective", db=db)
    plain = estimate_training("deepseek-v3", "h800-node", 512, **kw)
    over = estimate_training("deepseek-v3", "h800-node", 512, ep_overlap=True, **kw)
    assert plain.time_breakdown_s["ep_comm"] > 0
    assert over.time_breakdown_s["ep_comm"] < plain.time_breakdown_s["ep_comm"]
    assert over.step_time_s < plain.step_time_s
    assert over.time_breakdown_s["compute"] == pytest.approx(plain.time_breakdown_s["compute"])


def test_tp_overlap_hides_tp_collectives_behind_the_layer_gemms(db):
    """MegaScale-style TP overlap: exposed TP time per layer = max(0, TP collectives - the layer's GEMM time).
    GPT-3 175B at TP8 on A100: the GEMMs outlast the all-reduces, so none stays exposed, and the step
    shrinks by exactly the TP time the plain run exposes (bubble and the rest scale with it)."""
    from perfmodel.training import estimate_training

    kw = dict(seq_len=2048, global_batch=1024, tp=8, pp=8, dp=16, precision="bf16", db=db)
    plain = estimate_training("gpt3-175b", "dgx-a100", 1024, **kw)
    over = estimate_training("gpt3-175b", "dgx-a100", 1024, tp_overlap=True, **kw)
    assert plain.time_breakdown_s["tp_comm"] > 0
    assert over.time_breakdown_s["tp_comm"] == 0.0
    assert over.time_breakdown_s["compute"] == pytest.approx(plain.time_breakdown_s["compute"])
    assert over.step_time_s < plain.step_time_s
    one_way = estimate_training("gpt3-175b", "dgx-a100", 1024, **{**kw, "tp": 1, "pp": 64, "dp": 16})
    assert one_way.time_breakdown_s["tp_comm"] == 0.0  # no TP group, nothing to hide


def test_cli_tp_overlap_flag():
    import json

    from typer.testing import CliRunner

    from perfmodel.cli import app

    base = ["estimate", "train", "--model", "gpt3-175b", "--system", "dgx-a100", "--gpus", "1024", "--tp", "8",
            "--pp", "8", "--seq-len", "2048", "--global-batch", "1024", "--json"]
    plain = json.loads(CliRunner().invoke(app, base).stdout)
    over = json.loads(CliRunner().invoke(app, [*base, "--tp-overlap"]).stdout)
    assert over["time_breakdown_s"]["tp_comm"] == 0.0 < plain["time_breakdown_s"]["tp_comm"]
    assert over["step_time_s"] < plain["step_time_s"]
