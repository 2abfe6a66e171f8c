"""Training FLOPs per iteration: Megatron-LM's count, generalised to GQA, SwiGLU, MoE, MLA and causal masks.

Narayanan et al. 2021 (SC21, eq. 3) count, per iteration of B sequences of s tokens on a GPT with L
layers, width h and vocabulary V (GEMMs only, full non-causal attention, forward + backward = 3x forward):

    F = 72 B s L h^2 (1 + s/6h + V/12hL),   and with full recomputation (4x the layer forward)
    F = 96 B s L h^2 (1 + s/6h + V/16hL).

Here each term is counted from the architecture instead: 2 FLOPs per multiply-add of every linear layer a
token passes through (QKV/MLA projections, output projection, MLP or its top-k experts and shared experts,
the router, the LM head), plus the attention core, ``4 d`` FLOPs per (query, key) pair per head (QK^T and
PV), of which a causal mask keeps half. The embedding lookup is not a GEMM and is not counted. MFU counts
no recomputation; HFU adds the recomputed forward (all layers for full recomputation, the attention core
for selective recomputation, Korthikanti et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import ModelArch


def linear_flops_per_token(m: ModelArch) -> dict[str, float]:
    """Forward FLOPs per token of the linear layers, by part (one token, all layers, no attention core)."""
    attn = m.layers * 2 * _attention_linear_params(m)
    dense = m.dense_mlp_layers * 2 * m.mlp_params(m.d_ffn, bias=False)
    moe = 0.0
    if m.is_moe:
        per_expert = m.mlp_params(m.d_expert, bias=False)
        shared = m.shared_experts * m.mlp_params(m.d_shared_expert, bias=False)
        moe = m.moe_layers * 2 * (m.hidden * m.experts + m.top_k * per_expert + shared)
    head = 2 * m.hidden * m.vocab
    return {"attention_linear": attn, "mlp": dense + moe, "lm_head": head}


def _attention_linear_params(m: ModelArch) -> float:
    """Weights of one layer's attention projections (no biases, no norms)."""
    h, a = m.hidden, m.heads
    if m.is_mla:
        d_qk = m.d_head + m.rope_head_dim
        q = h * m.q_lora_rank + m.q_lora_rank * a * d_qk if m.q_lora_rank else h * a * d_qk
        kv = h * (m.kv_lora_rank + m.rope_head_dim) + m.kv_lora_rank * a * (m.d_head + m.v_head_dim)
        return q + kv + a * m.v_head_dim * h
    return 2 * h * a * m.d_head + 2 * h * m.n_kv_heads * m.d_head


def attention_core_flops_per_token(m: ModelArch, seq: int, causal: bool = True) -> float:
    """QK^T and PV FLOPs per token over a sequence of ``seq`` tokens, all layers (forward)."""
    if m.is_mla:
        per_pair = 2 * m.heads * ((m.d_head + m.rope_head_dim) + m.v_head_dim)
    else:
        per_pair = 4 * m.heads * m.d_head
    keys = seq / 2 if causal else seq
    if m.sliding_window:
        swa = m.sliding_window_layers if m.sliding_window_layers is not None else m.layers
        window_keys = min(keys, m.sliding_window)
        return per_pair * ((m.layers - swa) * keys + swa * window_keys)
    return per_pair * m.layers * keys


@dataclass(frozen=True)
class IterationFlops:
    """FLOPs of one optimizer step: the model's (MFU) and the hardware's (HFU, with recomputation)."""

    model: float
    hardware: float
    forward: float


def iteration_flops(m: ModelArch, global_batch: int, seq: int, recompute: str = "none", causal: bool = True
                    ) -> IterationFlops:
    """Model and hardware FLOPs per iteration of ``global_batch`` sequences of ``seq`` tokens."""
    lin = linear_flops_per_token(m)
    core = attention_core_flops_per_token(m, seq, causal)
    tokens = global_batch * seq
    layers_fwd = (lin["attention_linear"] + lin["mlp"] + core) * tokens
    head_fwd = lin["lm_head"] * tokens
    model = 3 * (layers_fwd + head_fwd)
    extra = {"none": 0.0, "selective": core * tokens, "full": layers_fwd}[recompute]
    return IterationFlops(model=model, hardware=model + extra, forward=layers_fwd + head_fwd)


def megatron_closed_form(B: int, s: int, L: int, h: int, V: int, full_recompute: bool = False) -> float:
    """Narayanan et al. 2021 eq. 3 (and the 72 form without recomputation), for the GPT tests."""
    if full_recompute:
        return 96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * h * L))
    return 72 * B * s * L * h * h * (1 + s / (6 * h) + V / (12 * h * L))
