"""Training memory per GPU: activations (Korthikanti et al. 2022) and model states (ZeRO, Megatron).

**Activations per layer** (bytes, 16-bit, for s tokens of b sequences; Korthikanti et al. 2022, Table 2):
no parallelism ``sbh (34 + 5as/h)``; TP ``sbh (10 + 24/t + 5as/(ht))``; TP+SP ``sbh/t (34 + 5as/h)``;
selective recomputation drops the ``5as/h`` softmax/dropout term; full recomputation keeps only the layer
input, ``2sbh`` (``/t`` with SP). The 34 is counted term by term so it generalises:

* attention: QKV input 2h, Q and K 2(ad + kd), V 2kd, projection input 2ad, dropout mask h;
* MLP: input 2h, activation input 2f (4f when gated: gate and up), activation output 2f, dropout mask h;
  an MoE layer stores the MLP part for each of its k routed copies plus the shared experts;
* two LayerNorm inputs 4h; the ``5as`` softmax term only without FlashAttention (which recomputes it).

With GPT shapes (k = a, d = h/a, f = 4h, dropout) this is exactly 34h. The TP-replicated part is the QKV
and MLP inputs, both dropout masks and the LayerNorm inputs (10h); sequence parallelism splits it too.
Context parallelism divides s by c. Stage 1 of 1F1B holds min(p, m) micro-batches in flight, x(1 +
(p-1)/(p v)) when interleaved.

**Model states per parameter** (mixed-precision Adam): 2 (16-bit weights) + 4 (fp32 gradients,
Megatron) + 12 (fp32 master weights, m, v) = 18 bytes; ZeRO-1 / Megatron's distributed optimizer shards
the 12 over the d data-parallel ranks, ``6 + 12/d``; ZeRO-2 ``2 + (2 + 12)/d``; ZeRO-3 ``(2 + 2 + 12)/d``
(Rajbhandari et al. 2020, with 16-bit gradients once they are sharded).
"""

from __future__ import annotations

import numpy as np

from .models import ModelArch


def activation_terms(m: ModelArch, moe_layer: bool, dropout: bool = True) -> tuple[float, float, float]:
    """Per token per layer (units of bytes / (s b)): (TP-replicated part, TP-split part, softmax coefficient).

    The softmax coefficient multiplies ``a s`` (5 for softmax output 2, dropout mask 1, dropout output 2).
    """
    h = m.hidden
    ad = m.heads * (m.v_head_dim if m.is_mla else m.d_head)
    if m.is_mla:
        qk = 2 * m.heads * (m.d_head + m.rope_head_dim) * 2  # Q and K at full width after decompression
        v = 2 * m.heads * m.v_head_dim
    else:
        kd = m.n_kv_heads * m.d_head
        qk = 2 * (m.heads * m.d_head + kd)
        v = 2 * kd
    mask = h if dropout else 0
    attn_split = qk + v + 2 * ad
    gated = m.activation in ("swiglu", "geglu")
    if moe_layer:
        f_copies = m.top_k * m.d_expert + m.shared_experts * m.d_shared_expert
    else:
        f_copies = m.d_ffn
    mlp_split = (4 if gated else 2) * f_copies + 2 * f_copies
    replicated = 2 * h + mask + 2 * h + mask + 4 * h
    if moe_layer:
        replicated += 2 * h * (m.top_k - 1)  # routed copies of the MLP input
    return replicated, attn_split + mlp_split, 5.0


def layer_activation_bytes(m: ModelArch, s: float, b: float, tp: int = 1, sp: bool = False, recompute: str = "none",
                           flash: bool = False, moe_layer: bool = False, dropout: bool = True, cp: int = 1) -> float:
    """Activation bytes one layer keeps for the backward pass, on one GPU."""
    s = s / cp
    rep, split, soft = activation_terms(m, moe_layer, dropout)
    if recompute == "full":
        return 2 * s * b * m.hidden / (tp if sp else 1)
    softmax = 0.0 if (flash or recompute == "selective") else soft * m.heads * s
    if sp:
        return s * b * (rep + split + softmax) / tp
    return s * b * (rep + (split + softmax) / tp)


def inflight_microbatches(pp, m, vp=1):
    """Micro-batches whose activations stage 1 holds at the 1F1B peak (interleaving adds a share).

    Scalars or numpy arrays."""
    pp, m, vp = (np.asarray(x, dtype=float) for x in (pp, m, vp))
    base = np.minimum(pp, m)
    out = np.where((vp > 1) & (pp > 1), base * (1 + (pp - 1) / (pp * vp)), base)
    return float(out) if out.ndim == 0 else out


def model_state_bytes_per_param(zero, d):
    """Bytes per parameter for weights, gradients and Adam state under ZeRO stage 0-3 over d ranks.

    Scalars or numpy arrays."""
    zero, d = np.asarray(zero), np.asarray(d, dtype=float)
    out = np.select([zero == 0, zero == 1, zero == 2], [18.0 + 0 * d, 6 + 12 / d, 2 + (2 + 12) / d], (2 + 2 + 12) / d)
    return float(out) if out.ndim == 0 else out


def output_layer_bytes(m: ModelArch, s: float, b: float, tp: int, cp: int = 1) -> float:
    """Last stage: final norm input and fp32 logits with their softmax gradient, ``4sbh(1 + V/h)/t``
    (formulas.md, after Korthikanti et al.)."""
    s = s / cp
    return 4 * s * b * m.hidden * (1 + m.vocab / m.hidden) / tp


def embedding_bytes(m: ModelArch, s: float, b: float, pp: int, tp: int, sp: bool, cp: int = 1) -> float:
    """First stage: embedding output and dropout mask for the p micro-batches in flight."""
    s = s / cp
    return (2 * s * b * m.hidden / (tp if sp else 1) + s * b * m.hidden / (tp if sp else 1)) * pp
