"""Hugging Face config.json files read offline; exact parameter counts where the publisher states them."""

from __future__ import annotations

import json

import pytest

from conftest import DATA
from perfmodel.errors import InputError
from perfmodel.hf_config import arch_from_hf_config
from perfmodel.models import catalog, get_model

CFG = DATA / "hf_configs"


@pytest.mark.parametrize(
    "name,params",
    [
        ("gpt2.json", 124_439_808),  # GPT-2 small, the HF checkpoint's parameter count
        ("llama-3.1-8b.json", 8_030_261_248),
        ("mistral-7b.json", 7_241_732_096),
        ("pythia-6.9b.json", 6_857_302_016),
        ("qwen2.5-7b.json", 7_615_616_512),
    ],
)
def test_exact_dense_counts(name, params):
    assert arch_from_hf_config(CFG / name).params_total == params


@pytest.mark.parametrize("name", ["deepseek-v3", "mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-120b", "llama-3.1-8b"])
def test_config_matches_catalog(name):
    from_cfg = arch_from_hf_config(CFG / f"{name}.json")
    cat = catalog()[name]
    assert from_cfg.params_total == cat.params_total
    assert from_cfg.params_active == cat.params_active


def test_family_specific_fields():
    ds = arch_from_hf_config(CFG / "deepseek-v3.json")
    assert (ds.kv_lora_rank, ds.q_lora_rank, ds.rope_head_dim, ds.v_head_dim) == (512, 1536, 64, 128)
    assert (ds.experts, ds.top_k, ds.shared_experts, ds.dense_layers) == (256, 8, 1, 3)
    oss = arch_from_hf_config(CFG / "gpt-oss-120b.json")
    assert oss.sliding_window == 128 and oss.sliding_window_layers == 18
    q2 = arch_from_hf_config(CFG / "qwen2.5-7b.json")
    assert q2.qkv_bias and q2.sliding_window is None  # use_sliding_window false
    mis = arch_from_hf_config(CFG / "mistral-7b.json")
    assert mis.sliding_window == 4096
    neox = arch_from_hf_config(CFG / "pythia-6.9b.json")
    assert neox.parallel_block and neox.activation == "gelu"


def test_get_model_reads_a_path():
    assert get_model(str(CFG / "gpt2.json")).params_total == 124_439_808


def test_unsupported_model_type():
    with pytest.raises(InputError) as ei:
        arch_from_hf_config(CFG / "unsupported-t5.json")
    msg = str(ei.value)
    assert "model_type" in msg and "'t5'" in msg and "llama" in msg


def test_missing_key_names_it(tmp_path):
    data = json.loads((CFG / "llama-3.1-8b.json").read_text())
    del data["num_hidden_layers"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match="num_hidden_layers: required"):
        arch_from_hf_config(p)


def test_bad_value_names_it(tmp_path):
    data = json.loads((CFG / "llama-3.1-8b.json").read_text())
    data["hidden_size"] = -4096
    p = tmp_path / "config.json"
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match="hidden_size: expected a positive integer"):
        arch_from_hf_config(p)


def test_invalid_json_gives_line(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{\n  "model_type": "llama",\n  "hidden_size": ,\n}')
    with pytest.raises(InputError, match=r"line 3: invalid JSON"):
        arch_from_hf_config(p)


def test_missing_file():
    with pytest.raises(InputError, match="no such file"):
        get_model("/nonexistent/config.json")
