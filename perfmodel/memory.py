"""Memory per GPU for serving: weights, KV cache, activations and the framework reserve.

* Weights: linear layers in the serving precision, split by TP (attention, dense MLP, shared experts),
  by EP x expert-TP (routed experts) and by PP (layers); embeddings and the LM head stay 16-bit, as
  FP8/FP4 checkpoints (NVIDIA ModelOpt, vLLM) leave them unquantised, and are vocab-parallel over TP.
* KV cache: ``2 k d`` elements per token per layer (GQA; k/t heads per rank, at least one), or the MLA
  latent ``r_kv + d_rope`` (replicated on every TP rank), rounded up to whole pages of the engine's
  block size; sliding-window layers keep at most the window.
* Activations: the live tensors of one forward over the engine's token budget, about
  ``T (8h + 3 f_eff / t)`` elements (residual, norms, QKV, attention output and the MLP's widest
  intermediate), plus fp32 logits for the sequences sampled.
* Reserve: vLLM and SGLang take ``memory_fraction`` of the whole device (``gpu_memory_utilization``
  0.9); TensorRT-LLM gives the KV cache that fraction of the memory still free after weights,
  activations and the CUDA context with its library handles (``kv_cache_free_gpu_mem_fraction`` 0.9;
  ``RUNTIME_CONTEXT_GB``). The rest is left for library workspaces and fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .engines import Engine
from .models import ModelArch
from .ops import Shard, kv_elements_per_token_layer

GB = 1e9
# Device memory a serving process holds before weights, activations and KV: the CUDA context, cuBLAS and
# NCCL handles. TensorRT-LLM's memory guide (docs/source/reference/memory.md, FAQ log on an H100 80GB):
# total 79.10 GiB, available 70.48 GiB after the engine (6,695 MiB), execution context (1,134.01 MiB),
# runtime buffers (43.29 MB) and decoder (180.30 MB) were allocated: 9.26 GB used, 8.43 GB of it named,
# 0.82 GB not.
RUNTIME_CONTEXT_GB = 0.82


@dataclass(frozen=True)
class WeightBytes:
    attention: float
    mlp: float
    experts: float
    embeddings: float

    @property
    def total(self) -> float:
        return self.attention + self.mlp + self.experts + self.embeddings


def weight_bytes_per_gpu(model: ModelArch, shard: Shard, pp: int, w_bytes: float) -> WeightBytes:
    """Weight bytes on the most loaded GPU (the stage holding the embedding or the LM head)."""
    layers = math.ceil(model.layers / pp)
    moe_layers = math.ceil(model.moe_layers / pp) if model.is_moe else 0
    dense_layers = min(layers, model.dense_mlp_layers)
    t_attn = shard.attn_tp
    norms = 2 * model.hidden * (2 if model.norm == "layernorm" else 1)
    attn = layers * (model.attention_params() * w_bytes / t_attn + norms * 2)
    mlp = dense_layers * model.mlp_params(model.d_ffn) * w_bytes / shard.tp
    experts = 0.0
    if moe_layers:
        # attention-DP: experts spread over the EP ranks; TP attention: EP x expert-TP = TP ranks
        expert_split = shard.ep if shard.attention_dp else shard.tp
        per_expert = model.mlp_params(model.d_expert, bias=model.expert_bias)
        shared = model.shared_experts * model.mlp_params(model.d_shared_expert)
        experts = moe_layers * (
            model.experts * per_expert * w_bytes / expert_split
            + shared * w_bytes / t_attn
            + model.hidden * model.experts * 2
        )
    emb = model.embedding_params() * 2 / t_attn
    head = model.lm_head_params() * 2 / t_attn
    embeddings = emb + head if pp == 1 else max(emb, head)
    return WeightBytes(attn, mlp, experts, embeddings)


def kv_bytes_per_token(model: ModelArch, shard: Shard, pp: int, kv_bytes: float) -> float:
    """KV-cache bytes one token of context takes on one GPU (all its layers, full attention)."""
    return math.ceil(model.layers / pp) * kv_elements_per_token_layer(model, shard.attn_tp) * kv_bytes


def kv_bytes_per_sequence(model: ModelArch, shard: Shard, pp: int, kv_bytes: float, tokens: float,
                          block: int) -> float:
    """KV bytes of one sequence of ``tokens`` on one GPU, page-rounded, sliding windows honoured."""
    paged = math.ceil(tokens / block) * block
    per_layer = kv_elements_per_token_layer(model, shard.attn_tp) * kv_bytes
    layers = math.ceil(model.layers / pp)
    if model.sliding_window:
        swa = model.sliding_window_layers if model.sliding_window_layers is not None else model.layers
        swa = math.ceil(swa / pp)
        window = math.ceil(min(tokens, model.sliding_window) / block) * block
        return (layers - swa) * paged * per_layer + swa * window * per_layer
    return layers * paged * per_layer


def activation_bytes(model: ModelArch, shard: Shard, tokens: float, logits_rows: float, act_bytes: float) -> float:
    """Peak live activations of one forward over ``tokens`` tokens (see module docstring)."""
    f_eff = model.top_k * model.d_expert if model.is_moe else model.d_ffn
    if model.is_moe and model.shared_experts:
        f_eff += model.shared_experts * model.d_shared_expert
    per_token = 8 * model.hidden + 3 * f_eff / shard.tp
    return tokens * per_token * act_bytes + logits_rows * model.vocab / shard.attn_tp * 4


@dataclass(frozen=True)
class MemoryPlan:
    """Where one GPU's memory goes, and how many sequences of the workload fit."""

    capacity: float
    weights: WeightBytes
    activations: float
    reserve: float
    kv_per_sequence: float
    kv_budget: float
    max_sequences: int

    @property
    def fits(self) -> bool:
        return self.kv_budget > 0 and self.max_sequences >= 1

    def breakdown(self, sequences: int) -> dict[str, float]:
        kv = sequences * self.kv_per_sequence
        used = self.weights.total + self.activations + kv + self.reserve
        return {
            "weights": self.weights.total,
            "kv_cache": kv,
            "activations": self.activations,
            "reserve": self.reserve,
            "free": max(self.capacity - used, 0.0),
        }


def plan_memory(model: ModelArch, shard: Shard, pp: int, capacity_gb: float, engine: Engine, w_bytes: float,
                kv_bytes: float, act_bytes: float, seq_tokens: float) -> MemoryPlan:
    capacity = capacity_gb * GB
    weights = weight_bytes_per_gpu(model, shard, pp, w_bytes)
    acts = activation_bytes(model, shard, engine.max_num_tokens, min(engine.max_batch, engine.max_num_tokens), act_bytes)
    if engine.fraction_of_free:
        free = max(capacity - weights.total - acts - RUNTIME_CONTEXT_GB * GB, 0.0)
        reserve = RUNTIME_CONTEXT_GB * GB + (1 - engine.memory_fraction) * free
    else:
        reserve = (1 - engine.memory_fraction) * capacity
    budget = capacity - reserve - weights.total - acts
    per_seq = kv_bytes_per_sequence(model, shard, pp, kv_bytes, seq_tokens, engine.block_tokens)
    max_seq = int(budget // per_seq) if budget > 0 else 0
    return MemoryPlan(capacity, weights, acts, reserve, per_seq, budget, max_seq)
