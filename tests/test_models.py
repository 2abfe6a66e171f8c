"""Parameter counts are computed from the architecture; check them by hand and against published counts."""

from __future__ import annotations

import pytest

from conftest import IDS
from perfmodel.errors import InputError, UnknownIdError
from perfmodel.models import build_arch, catalog, get_model


def test_catalog_has_every_ids_md_model():
    missing = [m for m in IDS["model"] if m not in catalog()]
    assert not missing


@pytest.mark.parametrize(
    "model_id,total,active,tol",
    [
        ("llama-3.1-405b", 405e9, None, 0.01),
        ("deepseek-v3", 671e9, 37e9, 0.02),
        ("mixtral-8x7b", 46.7e9, 12.9e9, 0.005),
        ("mixtral-8x22b", 141e9, 39e9, 0.01),
        ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02),
        ("qwen3-235b-a22b", 235e9, 22e9, 0.01),
        ("gpt3-175b", 175e9, None, 0.005),
        ("nemotron-4-340b", 341e9, None, 0.005),
        ("llama-2-70b", 69e9, None, 0.005),
        ("kimi-k2", 1.04e12, 32.6e9, 0.015),
    ],
)
def test_published_counts(model_id, total, active, tol):
    m = catalog()[model_id]
    assert m.params_total == pytest.approx(total, rel=tol)
    if active is not None:
        assert m.params_active == pytest.approx(active, rel=tol)


def test_every_published_count_within_2_percent():
    for mid, m in catalog().items():
        if m.published is None:
            continue
        assert m.params_total == pytest.approx(m.published.params_total, rel=0.02), mid
        if m.published.params_active:
            active = m.params_active - (m.embedding_params() if m.published.active_excludes_embedding else 0)
            assert active == pytest.approx(m.published.params_active, rel=0.02), mid


def test_gpt_oss_active_without_embedding_matches_model_card():
    m = catalog()["gpt-oss-120b"]
    assert m.params_total == pytest.approx(116.83e9, rel=1e-3)
    assert m.params_active - m.embedding_params() == pytest.approx(5.13e9, rel=2e-3)


def test_dense_llama_by_hand():
    m = build_arch({"family": "llama", "layers": 2, "hidden": 64, "heads": 8, "kv_heads": 2,
                    "ffn_hidden": 128, "vocab": 100}, "t")
    d = 8
    attn = 64 * 8 * d + 2 * 64 * 2 * d + 8 * d * 64  # q, k+v, o
    mlp = 3 * 64 * 128
    norms = 2 * 64
    expected = 2 * (attn + mlp + norms) + 64 + 100 * 64 * 2
    assert m.params_total == expected == m.params_active


def test_gpt_with_biases_and_learned_positions_by_hand():
    m = build_arch({"family": "gpt", "layers": 1, "hidden": 16, "heads": 2, "vocab": 10, "max_position": 32}, "t")
    h, f = 16, 64
    attn = 4 * h * h + 4 * h
    mlp = 2 * h * f + f + h
    norms = 2 * 2 * h
    expected = attn + mlp + norms + 2 * h + 10 * h + 32 * h  # tied LM head
    assert m.params_total == expected


def test_moe_total_and_active_by_hand():
    m = build_arch({"family": "mixtral", "layers": 4, "hidden": 32, "heads": 4, "ffn_hidden": 64,
                    "experts": 8, "top_k": 2, "shared_experts": 1, "expert_ffn_hidden": 16,
                    "dense_layers": 1, "vocab": 50}, "t")
    attn = 4 * 32 * 32
    expert = 3 * 32 * 16
    router = 32 * 8
    common = 4 * (attn + 2 * 32) + 32 + 2 * 50 * 32 + 1 * 3 * 32 * 64
    assert m.params_total == common + 3 * (router + 8 * expert + expert)
    assert m.params_active == common + 3 * (router + 2 * expert + expert)


def test_mla_attention_by_hand():
    m = catalog()["deepseek-v3"]
    h, a, rq, rkv, dn, dr, dv = 7168, 128, 1536, 512, 128, 64, 128
    q = h * rq + rq + rq * a * (dn + dr)
    kv = h * (rkv + dr) + rkv + rkv * a * (dn + dv)
    o = a * dv * h
    assert m.attention_params() == q + kv + o == 187_107_328


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"kv_heads": 3}, "kv_heads"),
        ({"experts": 8, "top_k": 9}, "top_k"),
        ({"top_k": 2}, "experts"),
        ({"layers": -1}, "layers"),
        ({"kv_lora_rank": 64}, "rope_head_dim"),
        ({"hidden": 100, "heads": 8}, "head_dim"),
        ({"flavour": "x"}, "flavour"),
    ],
)
def test_bad_architectures(fields, field):
    base = {"family": "llama", "layers": 2, "hidden": 64, "heads": 8, "ffn_hidden": 128, "vocab": 100}
    with pytest.raises(InputError) as ei:
        build_arch({**base, **fields}, "case X1: model")
    assert field in str(ei.value) and "case X1" in str(ei.value)


def test_inline_base_override():
    m = get_model({"base": "llama-3.1-8b", "layers": 16})
    assert m.layers == 16 and m.hidden == 4096 and m.n_kv_heads == 8
    full = catalog()["llama-3.1-8b"]
    per_layer = (full.params_total - m.params_total) / 16
    assert per_layer == full.attention_params() + full.mlp_params(14336) + 2 * 4096


def test_unknown_model_suggests():
    with pytest.raises(UnknownIdError) as ei:
        get_model("llama-3.1-8")
    assert "llama-3.1-8b" in ei.value.suggestions


def test_more_experts_more_params_same_active():
    a = get_model({"base": "mixtral-8x7b", "experts": 8})
    b = get_model({"base": "mixtral-8x7b", "experts": 16})
    assert b.params_total > a.params_total
    assert b.params_active - a.params_active == 32 * 4096 * 8  # only the 32 routers grow


def test_summary_keys():
    s = catalog()["deepseek-v3"].summary()
    for key in ("id", "params_total", "params_active", "layers", "hidden", "experts", "kv_lora_rank"):
        assert key in s
    assert isinstance(s["params_total"], int)
