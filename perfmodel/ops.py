"""A transformer forward step as operators: GEMM shapes, attention FLOPs and bytes, memory ops, collectives.

This is the one place the FLOPs and bytes of each operator are written. A step processes ``tokens``
query tokens from ``seqs`` sequences with ``ctx`` tokens of context each, on one tensor-parallel rank of
degree ``tp`` (``ep`` of which shard the experts). Per layer (h hidden, a heads, k KV heads, d head dim,
f FFN width, t TP; Megatron-LM's layer split, Shoeybi et al. 2019):

* QKV: ``[T, h] x [h, (a + 2k) d / t]``; output projection ``[T, a d / t] x [a d / t, h]``;
* attention: ``4 d`` FLOPs per (query, key) pair per head (QK^T and PV), causal prefill keeps half the
  pairs; decode reads the whole KV cache, ``2 k d`` elements per token per layer (MLA: the
  ``r_kv + d_rope`` latent, shared by all heads);
* MLA decode uses the absorbed form (DeepSeek-V2 §2.1.2): q is multiplied into ``W_UK`` and the output
  through ``W_UV``, so attention runs over the latent; prefill decompresses K and V with ``W_UKV``;
* MLP: ``[T, h] x [h, 2f/t]`` (gate and up, gated) or ``[h, f/t]``, then ``[T, f/t] x [f/t, h]``;
* MoE: router ``[T, h] x [h, E]``; the expected number of distinct experts T tokens activate when each picks
  k of E uniformly is ``E (1 - (1 - k/E)^T)`` (each expert is missed by one token with probability
  ``1 - k/E``); each activated expert runs a GEMM over ``T k / distinct`` tokens;
* tensor parallelism adds an all-reduce of ``T h`` activations after attention and after the MLP;
  expert parallelism adds an all-to-all dispatch and combine of ``T k h`` activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError
from .models import ModelArch

# Bytes per weight element. Block-scaled 4-bit formats carry one 8-bit scale per block: NVFP4 per 16
# elements (NVIDIA, "Introducing NVFP4", 2025), MXFP4 per 32 (OCP Microscaling Formats v1.0, 2023).
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
                "fp4": 0.5 + 1 / 16, "nvfp4": 0.5 + 1 / 16, "mxfp4": 0.5 + 1 / 32}
PRECISIONS = tuple(WEIGHT_BYTES)


def compute_dtype(precision: str) -> str:
    """The tensor-core dtype a weight format computes in (int4 is weight-only: bf16 math)."""
    return {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "int4": "bf16",
            "fp4": "fp4", "nvfp4": "fp4", "mxfp4": "fp4"}[precision]


def check_precision(p: str, flag: str = "--precision") -> str:
    if p not in WEIGHT_BYTES:
        raise InputError(f"{flag}: expected one of {', '.join(PRECISIONS)} (got '{p}')")
    return p


@dataclass
class Op:
    """One operator of a step, repeated ``count`` times (usually once per layer on this rank)."""

    name: str
    kind: str  # gemm | attention | memory | comm
    count: float = 1.0
    m: float = 0.0
    n: float = 0.0
    k: float = 0.0
    w_bytes: float = 0.0
    groups: float = 1.0  # independent GEMMs per occurrence (experts, absorbed heads)
    flops: float = 0.0
    nbytes: float = 0.0
    tiles: float = 0.0  # parallel work items of an attention kernel
    keys: float | None = None  # keys each query visits in an attention kernel (its rate ramps with them)
    grouped: bool = False  # a grouped (MoE expert) GEMM kernel rather than a dense or batched one
    unquantized: bool = False  # a GEMM left in 16-bit under weight quantization (the LM head)
    collective: str = ""
    group: int = 1
    meta: dict = field(default_factory=dict)

    def gemm_dtype(self, plan_dtype: str) -> str:
        """The tensor-core dtype this GEMM runs in under a plan computing in ``plan_dtype``: the plan's, except
        that a GEMM weight quantization leaves alone (``unquantized``) stays 16-bit."""
        if self.unquantized and plan_dtype not in ("bf16", "fp16", "fp32"):
            return "bf16"
        return plan_dtype


@dataclass(frozen=True)
class Shard:
    """What one rank holds: TP and EP degrees, and whether attention runs data-parallel."""

    tp: int = 1
    ep: int = 1
    attention_dp: bool = False

    @property
    def attn_tp(self) -> int:
        return 1 if self.attention_dp else self.tp

    @property
    def width(self) -> int:
        """GPUs in one pipeline stage of an instance: the TP group, or the EP group under attention-DP."""
        return max(self.tp, self.ep) if self.attention_dp else self.tp


def check_shard(model: ModelArch, shard: Shard) -> None:
    """Degrees must divide what they split; each error names the flag and the numbers."""
    t = shard.attn_tp
    if model.heads % t:
        raise InputError(f"--tp {t}: must divide the attention heads ({model.heads}) of {model.id}")
    kv = model.n_kv_heads
    if not model.is_mla and kv % t and t % kv:
        raise InputError(f"--tp {t}: must divide the KV heads ({kv}) of {model.id}, or be a multiple of them")
    if shard.ep > 1:
        if not model.is_moe:
            raise InputError(f"--ep {shard.ep}: {model.id} has no experts")
        if model.experts % shard.ep:
            raise InputError(f"--ep {shard.ep}: must divide the experts ({model.experts}) of {model.id}")
        if not shard.attention_dp and shard.tp % shard.ep:
            raise InputError(f"--ep {shard.ep}: must divide --tp {shard.tp} (experts are sharded inside the TP group)")
    ffn_tp = shard.tp // shard.ep if model.is_moe else shard.tp
    if model.dense_mlp_layers and model.d_ffn % shard.tp:
        raise InputError(f"--tp {shard.tp}: must divide the FFN width ({model.d_ffn}) of {model.id}")
    if model.is_moe and model.d_expert % max(ffn_tp, 1):
        raise InputError(f"--tp/--ep: expert width {model.d_expert} is not divisible by tp/ep = {ffn_tp}")


def expected_distinct_experts(experts: int, top_k: int, tokens: float) -> float:
    """E (1 - (1 - k/E)^T): distinct experts T tokens touch when each picks k of E uniformly at random."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def kv_heads_per_rank(model: ModelArch, tp: int) -> float:
    """KV heads one TP rank stores: k/t, or one replicated head when t exceeds k."""
    return max(model.n_kv_heads / tp, 1.0)


def kv_elements_per_token_layer(model: ModelArch, tp: int) -> float:
    """KV-cache elements per token per layer on one rank (MLA's latent is replicated across TP)."""
    if model.is_mla:
        return model.kv_lora_rank + model.rope_head_dim
    return 2 * kv_heads_per_rank(model, tp) * model.d_head


def layer_ops(model: ModelArch, shard: Shard, tokens: float, seqs: float, ctx: float, phase: str,
              act_bytes: float, w_bytes: float, kv_bytes: float, moe: bool, window: float | None = None,
              flash: bool = True) -> list[Op]:
    """Operators of one layer on one rank. ``phase`` is "prefill" (causal over ``ctx`` = prompt length)
    or "decode" (one query token per sequence over ``ctx`` cached tokens).

    ``flash=False`` models unfused attention (Megatron-LM before FlashAttention): the full ``s x s``
    score matrix is computed and written, then read by a fused scale-mask-softmax and by dropout, about
    13 bytes per score element (scores 2, softmax read/write 4, dropout read/write/mask 5, PV read 2).
    """
    h, a, d = model.hidden, model.heads, model.d_head
    t = shard.attn_tp
    a_loc = a / t
    T = tokens
    L = min(ctx, window) if window else ctx
    ops: list[Op] = [Op("norm", "memory", nbytes=3 * T * h * act_bytes)]
    if model.is_mla:
        rq, rkv, dr, dv = model.q_lora_rank, model.kv_lora_rank, model.rope_head_dim, model.v_head_dim
        ops.append(Op("q_kv_down", "gemm", m=T, n=(rq or 0) + rkv + dr, k=h, w_bytes=w_bytes))
        if rq:
            ops.append(Op("q_up", "gemm", m=T, n=a_loc * (d + dr), k=rq, w_bytes=w_bytes))
        else:
            ops.append(Op("q_proj", "gemm", m=T, n=a_loc * (d + dr), k=h, w_bytes=w_bytes))
        if phase == "decode":
            ops.append(Op("absorb_uk", "gemm", m=T, n=rkv, k=d, groups=a_loc, w_bytes=w_bytes))
            flops = 2 * T * L * a_loc * (2 * rkv + dr)
            nbytes = seqs * L * (rkv + dr) * kv_bytes + T * a_loc * (2 * rkv + dr) * act_bytes
            ops.append(Op("attention", "attention", flops=flops, nbytes=nbytes, keys=L,
                          tiles=seqs * max(a_loc / 16, 1)))
            ops.append(Op("absorb_uv", "gemm", m=T, n=dv, k=rkv, groups=a_loc, w_bytes=w_bytes))
        else:
            ops.append(Op("kv_up", "gemm", m=T, n=a_loc * (d + dv), k=rkv, w_bytes=w_bytes))
            pairs = seqs * L * (L + 1) / 2
            flops = 2 * pairs * a_loc * ((d + dr) + dv)
            nbytes = T * a_loc * (2 * (d + dr) + 2 * dv) * act_bytes + seqs * L * (rkv + dr) * kv_bytes
            ops.append(Op("attention", "attention", flops=flops, nbytes=nbytes, keys=L,
                          tiles=seqs * a_loc * max(L / 128, 1)))
        ops.append(Op("o_proj", "gemm", m=T, n=h, k=a_loc * dv, w_bytes=w_bytes))
    else:
        kv_loc = kv_heads_per_rank(model, t)
        ops.append(Op("qkv", "gemm", m=T, n=(a_loc + 2 * kv_loc) * d, k=h, w_bytes=w_bytes))
        if phase == "decode":
            flops = 4 * T * L * a_loc * d
            nbytes = seqs * L * 2 * kv_loc * d * kv_bytes + 2 * T * a_loc * d * act_bytes
            ops.append(Op("attention", "attention", flops=flops, nbytes=nbytes, keys=L,
                          tiles=seqs * kv_loc))
        else:
            pairs = seqs * L * (L + 1) / 2 if not window else seqs * (L * (L + 1) / 2 + max(ctx - L, 0) * L)
            if not flash:
                pairs = seqs * L * L
            flops = 4 * pairs * a_loc * d
            nbytes = T * (2 * a_loc + 2 * kv_loc) * d * act_bytes + T * 2 * kv_loc * d * kv_bytes
            ops.append(Op("attention", "attention", flops=flops, nbytes=nbytes, keys=L,
                          tiles=seqs * a_loc * max(ctx / 128, 1)))
            if not flash:
                ops.append(Op("softmax_dropout", "memory", nbytes=13 * seqs * a_loc * L * L))
        ops.append(Op("o_proj", "gemm", m=T, n=h, k=a_loc * d, w_bytes=w_bytes))
    if t > 1:
        ops.append(Op("tp_allreduce_attn", "comm", collective="all_reduce", nbytes=T * h * act_bytes, group=t))
    ops.append(Op("norm", "memory", nbytes=3 * T * h * act_bytes))
    ops += _mlp_ops(model, shard, T, act_bytes, w_bytes, moe)
    return ops


def _mlp_ops(model: ModelArch, shard: Shard, T: float, act_bytes: float, w_bytes: float, moe: bool) -> list[Op]:
    h = model.hidden
    gated = model.activation in ("swiglu", "geglu")
    up = 2 if gated else 1
    ops: list[Op] = []
    if not moe:
        f = model.d_ffn / shard.tp
        ops.append(Op("mlp_up", "gemm", m=T, n=up * f, k=h, w_bytes=w_bytes))
        ops.append(Op("mlp_act", "memory", nbytes=T * (up + 1) * f * act_bytes))
        ops.append(Op("mlp_down", "gemm", m=T, n=h, k=f, w_bytes=w_bytes))
        if shard.tp > 1:
            ops.append(Op("tp_allreduce_mlp", "comm", collective="all_reduce", nbytes=T * h * act_bytes,
                          group=shard.tp))
        return ops
    E, k = model.experts, model.top_k
    ep = shard.ep
    # tokens this rank's experts see: with attention-DP every rank routes its own T tokens (EP = all
    # ranks); with TP attention the TP group shares the same T tokens.
    expert_tp = 1 if shard.attention_dp else shard.tp // ep
    tokens_routed = T * shard.width if shard.attention_dp else T
    ops.append(Op("router", "gemm", m=T, n=E, k=h, w_bytes=2.0))
    # token permutation to expert order (read T rows, write T*k) and the weighted combine back
    # (read T*k, write T): TRT-LLM's expand/finalize kernels, vLLM's align+sort, Megatron's permute
    ops.append(Op("moe_permute", "memory", nbytes=T * (1 + k) * h * act_bytes))
    if ep > 1 and shard.attention_dp:
        ops.append(Op("ep_dispatch", "comm", collective="all_to_all", nbytes=T * k * h * act_bytes, group=ep))
    distinct_all = expected_distinct_experts(E, k, tokens_routed)
    distinct_loc = distinct_all / ep
    fe = model.d_expert / expert_tp
    m_per_expert = tokens_routed * k / max(distinct_all, 1e-9)
    meta = {"distinct_experts": distinct_all, "tokens_per_expert": m_per_expert}
    ops.append(Op("experts_up", "gemm", m=m_per_expert, n=up * fe, k=h, groups=distinct_loc, w_bytes=w_bytes,
                  meta=meta, grouped=True))
    ops.append(Op("experts_act", "memory", nbytes=m_per_expert * distinct_loc * (up + 1) * fe * act_bytes))
    ops.append(Op("experts_down", "gemm", m=m_per_expert, n=h, k=fe, groups=distinct_loc, w_bytes=w_bytes,
                  grouped=True))
    ops.append(Op("moe_combine", "memory", nbytes=T * (k + 1) * h * act_bytes))
    if model.shared_experts:
        fs = model.shared_experts * model.d_shared_expert / (1 if shard.attention_dp else shard.tp)
        ops.append(Op("shared_up", "gemm", m=T, n=up * fs, k=h, w_bytes=w_bytes))
        ops.append(Op("shared_down", "gemm", m=T, n=h, k=fs, w_bytes=w_bytes))
    if ep > 1 and shard.attention_dp:
        ops.append(Op("ep_combine", "comm", collective="all_to_all", nbytes=T * k * h * act_bytes, group=ep))
    elif shard.tp > 1:  # experts sharded inside the TP group: partial sums are all-reduced
        ops.append(Op("tp_allreduce_moe", "comm", collective="all_reduce", nbytes=T * h * act_bytes,
                      group=shard.tp))
    return ops


def head_ops(model: ModelArch, shard: Shard, tokens: float, logits_rows: float, act_bytes: float,
             w_bytes: float) -> list[Op]:
    """Embedding gather, final norm, the vocab-parallel LM head, logits gather and sampling.

    The LM head stays in BF16 under FP8/FP4 weight quantization: TensorRT-LLM's and ModelOpt's quantizers
    exclude ``lm_head`` by default, vLLM's FP8 checkpoints keep it unquantized, and FP8 training keeps the
    output layer in BF16 (Megatron-core's output layer is not a Transformer Engine module; DeepSeek-V3
    report §3.3.1 keeps the output head in higher precision)."""
    h, V, t = model.hidden, model.vocab, shard.attn_tp
    ops = [
        Op("embedding", "memory", nbytes=2 * tokens * h * act_bytes),
        Op("final_norm", "memory", nbytes=3 * logits_rows * h * act_bytes),
        Op("lm_head", "gemm", m=logits_rows, n=V / t, k=h, w_bytes=w_bytes, unquantized=True),
    ]
    if t > 1:
        ops.append(Op("logits_gather", "comm", collective="all_gather", nbytes=logits_rows * V * 4, group=t))
    ops.append(Op("sampling", "memory", nbytes=logits_rows * V * 4))
    return ops
