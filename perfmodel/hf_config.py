"""Reading a Hugging Face ``config.json`` into a :class:`~perfmodel.models.ModelArch`, offline.

Supported ``model_type`` values and the keys each maps from are in :data:`READERS`; anything else is a
clear error naming the type. Keys follow the ``transformers`` configuration classes of each family.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .errors import InputError
from .models import ModelArch, build_arch

_ACT = {"silu": "swiglu", "swish": "swiglu", "gelu": "gelu", "gelu_new": "gelu", "gelu_fast": "gelu",
        "gelu_pytorch_tanh": "gelu", "relu": "relu", "relu2": "relu2", "geglu": "geglu"}


class _Cfg:
    """Key access that names the file and key when a required key is missing or has the wrong type."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def req(self, *keys: str) -> int:
        for k in keys:
            if k in self.data and self.data[k] is not None:
                v = self.data[k]
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise InputError(f"{self.path}: {k}: expected a positive integer (got {v!r})")
                return v
        raise InputError(f"{self.path}: {keys[0]}: required key is missing for model_type "
                         f"'{self.data.get('model_type')}'")

    def opt(self, key: str, default=None):
        v = self.data.get(key)
        return default if v is None else v

    def act(self, key: str = "hidden_act", default: str = "silu", gated: bool = True) -> str:
        raw = str(self.opt(key, default))
        act = _ACT.get(raw)
        if act is None:
            raise InputError(f"{self.path}: {key}: unsupported activation '{raw}' "
                             f"(known: {', '.join(sorted(_ACT))})")
        if act == "gelu" and gated:
            return "geglu"
        return act


def _llama_like(c: _Cfg, family: str) -> dict:
    window = c.opt("sliding_window") if c.opt("use_sliding_window", True) else None
    return {
        "family": family,
        "layers": c.req("num_hidden_layers"),
        "hidden": c.req("hidden_size"),
        "heads": c.req("num_attention_heads"),
        "kv_heads": c.opt("num_key_value_heads") or c.req("num_attention_heads"),
        "head_dim": c.opt("head_dim"),
        "ffn_hidden": c.req("intermediate_size"),
        "vocab": c.req("vocab_size"),
        "tied_embeddings": bool(c.opt("tie_word_embeddings", False)),
        "activation": c.act(),
        "max_position": c.opt("max_position_embeddings"),
        "attention_bias": bool(c.opt("attention_bias", False)),
        "mlp_bias": bool(c.opt("mlp_bias", False)),
        "sliding_window": window,
    }


def _llama(c: _Cfg) -> dict:
    return _llama_like(c, "llama")


def _mixtral(c: _Cfg) -> dict:
    out = _llama_like(c, "mixtral")
    out.update(experts=c.req("num_local_experts"), top_k=c.req("num_experts_per_tok"))
    return out


def _qwen2(c: _Cfg) -> dict:
    out = _llama_like(c, "llama")
    out["qkv_bias"] = True
    return out


def _qwen3(c: _Cfg) -> dict:
    out = _llama_like(c, "llama")
    out["qk_norm"] = True
    return out


def _qwen3_moe(c: _Cfg) -> dict:
    out = _llama_like(c, "qwen-moe")
    out["qk_norm"] = True
    step = int(c.opt("decoder_sparse_step", 1))
    if step != 1 or c.opt("mlp_only_layers"):
        raise InputError(f"{c.path}: decoder_sparse_step/mlp_only_layers: only every-layer MoE is supported")
    out.update(experts=c.req("num_experts"), top_k=c.req("num_experts_per_tok"),
               expert_ffn_hidden=c.req("moe_intermediate_size"))
    return out


def _deepseek_v3(c: _Cfg) -> dict:
    out = _llama_like(c, "deepseek")
    out.pop("kv_heads")
    out.update(
        head_dim=c.req("qk_nope_head_dim"),
        rope_head_dim=c.req("qk_rope_head_dim"),
        v_head_dim=c.req("v_head_dim"),
        kv_lora_rank=c.req("kv_lora_rank"),
        q_lora_rank=c.opt("q_lora_rank"),
        experts=c.req("n_routed_experts"),
        top_k=c.req("num_experts_per_tok"),
        shared_experts=int(c.opt("n_shared_experts", 0)),
        expert_ffn_hidden=c.req("moe_intermediate_size"),
        dense_layers=int(c.opt("first_k_dense_replace", 0)),
    )
    if int(c.opt("moe_layer_freq", 1)) != 1:
        raise InputError(f"{c.path}: moe_layer_freq: only 1 (every layer after the dense ones) is supported")
    return out


def _gpt_oss(c: _Cfg) -> dict:
    out = _llama_like(c, "gpt-oss")
    out.pop("ffn_hidden")
    kinds = c.opt("layer_types") or []
    sliding = sum(1 for k in kinds if k == "sliding_attention") if kinds else None
    out.update(
        experts=c.req("num_local_experts"),
        top_k=c.req("num_experts_per_tok", "experts_per_token"),
        expert_ffn_hidden=c.req("intermediate_size"),
        attention_bias=True,
        expert_bias=True,
        sliding_window=c.opt("sliding_window"),
        sliding_window_layers=sliding if c.opt("sliding_window") else None,
    )
    return out


def _gpt2(c: _Cfg) -> dict:
    hidden = c.req("n_embd")
    return {
        "family": "gpt",
        "layers": c.req("n_layer"),
        "hidden": hidden,
        "heads": c.req("n_head"),
        "ffn_hidden": c.opt("n_inner") or 4 * hidden,
        "vocab": c.req("vocab_size"),
        "tied_embeddings": bool(c.opt("tie_word_embeddings", True)),
        "activation": c.act("activation_function", "gelu_new", gated=False),
        "max_position": c.opt("n_positions"),
        "position": "learned",
    }


def _gpt_neox(c: _Cfg) -> dict:
    return {
        "family": "gpt",
        "layers": c.req("num_hidden_layers"),
        "hidden": c.req("hidden_size"),
        "heads": c.req("num_attention_heads"),
        "ffn_hidden": c.req("intermediate_size"),
        "vocab": c.req("vocab_size"),
        "tied_embeddings": bool(c.opt("tie_word_embeddings", False)),
        "activation": c.act("hidden_act", "gelu", gated=False),
        "max_position": c.opt("max_position_embeddings"),
        "position": "rope",
        "parallel_block": bool(c.opt("use_parallel_residual", True)),
        "attention_bias": bool(c.opt("attention_bias", True)),
    }


READERS: dict[str, Callable[[_Cfg], dict]] = {
    "llama": _llama,
    "mistral": _llama,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v3": _deepseek_v3,
    "kimi_k2": _deepseek_v3,
    "gpt_oss": _gpt_oss,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
}


def arch_from_hf_config(path: str | Path, model_id: str | None = None) -> ModelArch:
    """Parse a ``config.json`` (no network); an unsupported ``model_type`` names the ones we read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"--model {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    mtype = data.get("model_type")
    reader = READERS.get(mtype)
    if reader is None:
        raise InputError(
            f"{path}: model_type: '{mtype}' is not supported (supported: {', '.join(sorted(READERS))})"
        )
    fields = {k: v for k, v in reader(_Cfg(data, path)).items() if v is not None}
    fields["id"] = model_id or path.parent.name or mtype
    fields["source"] = str(path)
    return build_arch(fields, str(path))
