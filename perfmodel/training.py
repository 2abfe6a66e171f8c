"""Training estimates: step time, MFU/HFU and memory per GPU for 3D/4D/5D-parallel training.

Ranks are ordered as Megatron-LM orders them (TP fastest, then CP, DP, PP), so a TP group fills a node
first, CP and DP groups stride across it and PP neighbours sit ``tp x cp x dp`` ranks apart. Every
collective is costed by ``comm.collective_time`` on the tier its group spans.

Per micro-batch on a pipeline stage (Narayanan et al. 2021; Korthikanti et al. 2022):

* forward: the same operators and roofline as inference (``ops.layer_ops``) over ``b s / c`` tokens;
  attention under context parallelism attends to all ``s`` keys, so its FLOPs scale by c;
* backward: each GEMM becomes its two GEMMs (input gradient ``[T,n]x[n,k]`` and weight gradient
  ``[k,T]x[T,n]``), timed with the same tile model; attention backward is 2.5x its forward FLOPs
  (FlashAttention-2, Dao 2023: five matmuls against two); memory-bound kernels move twice the bytes;
* recomputation: full repeats each layer's forward (with its TP collectives); selective repeats the
  attention core;
* TP: two all-reduces per layer in the forward and two in the backward (or reduce-scatter + all-gather
  pairs with sequence parallelism: the same bytes); they sit on the critical path (exposed);
* CP: ring attention passes K and V around the c ranks, ``c - 1`` steps per layer, overlapped with the
  attention compute; only the excess is exposed;
* EP: an all-to-all dispatch and combine per MoE layer, forward and backward (2x);
* PP: a send/recv of ``b s h / (t if SP)`` activations per stage boundary, forward and backward.

Then the pipeline schedule ``T = (m - 1) max_i t_i + sum_i t_i`` for 1F1B over uneven stages, with the
bubble ``(sum_i t_i - max_i t_i)`` shrunk by v for the interleaved schedule; the DP gradient
reduce-scatter (ZeRO >= 1) or all-reduce, overlapped with the last micro-batch's backward; the ZeRO-1
parameter all-gather, overlapped with the next forward; ZeRO-3 per-layer parameter all-gathers
(forward and backward) and gradient reduce-scatters, overlapped with layer compute; and the optimizer
step, memory-bound over the local shard (Adam: about 16 bytes read and written per parameter in fp32
states plus the 16-bit weights, ``ADAM_BYTES_PER_PARAM``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, Field

from .activations import (embedding_bytes, inflight_microbatches, layer_activation_bytes, model_state_bytes_per_param,
                          output_layer_bytes)
from .comm import collective_time
from .errors import InputError
from .flops import iteration_flops
from .models import ModelArch, get_model
from .ops import Op, Shard, head_ops, layer_ops
from .roofline import DeviceRates, attention_time, device_rates, gemm_time, memory_time
from .specdb import Database, SystemRef, load_database

ACT_BYTES = 2.0
GRAD_BYTES = 2.0  # gradients reduced in 16-bit (Megatron-Core DDP default grad_reduce_in_fp32=False)
ADAM_BYTES_PER_PARAM = 4 * 4 + 4 * 3 + 2 + 4  # read p32, m, v, g32 (16) ; write p32, m, v (12) ; write p16 (2) ; grad zero (4)
ALLOCATOR_MARGIN = 0.05  # share of the total for caching-allocator fragmentation (EleutherAI reports ~5 GiB on 80 GB)
ALLOCATOR_FLOOR_BYTES = 1.0 * 2**30  # CUDA context and library workspaces


class TrainingResult(BaseModel):
    """A training estimate: step time and its parts, throughput, MFU/HFU and memory per GPU."""

    model: str
    system: str
    device: str
    gpus: int
    tp: int
    pp: int
    dp: int
    cp: int
    ep: int
    vp: int
    sequence_parallel: bool
    micro_batch: int
    global_batch: int
    micro_batches: int
    seq_len: int
    precision: str
    recompute: str
    zero: int
    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    mfu: float
    hfu: float
    model_flops_per_step: float
    memory_per_gpu_bytes: dict[str, float]
    memory_capacity_bytes: float
    fits: bool
    time_breakdown_s: dict[str, float]
    stage_layers: list[int]
    train_time_days: float | None = None
    gpu_hours: float | None = None
    cost_usd: float | None = None
    assumptions: list[str] = Field(default_factory=list)


@dataclass
class _Parts:
    compute: float = 0.0
    recompute: float = 0.0
    tp_comm: float = 0.0
    cp_comm: float = 0.0
    ep_comm: float = 0.0
    pp_comm: float = 0.0
    zero3_comm: float = 0.0

    @property
    def total(self) -> float:
        return (self.compute + self.recompute + self.tp_comm + self.cp_comm + self.ep_comm + self.pp_comm
                + self.zero3_comm)


def split_layers(layers: int, pp: int) -> list[int]:
    """Layers per stage as even as possible (the first stages take the remainder)."""
    base, extra = divmod(layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def pipeline_time(stage_s: list[float], m: int, vp: int = 1) -> float:
    """1F1B over possibly uneven stages: ``(m - 1) max t + sum t``; interleaving divides the bubble by v."""
    if not stage_s:
        return 0.0
    tmax = max(stage_s)
    bubble = sum(stage_s) - tmax
    return m * tmax + bubble / max(vp, 1)


def bubble_fraction(pp: int, m: int, vp: int = 1) -> float:
    """Share of the step the pipeline is idle for uniform stages: (p - 1) / (v m + p - 1)."""
    return (pp - 1) / (vp * m + pp - 1)


class _Trainer:
    def __init__(self, db: Database, ref: SystemRef, m: ModelArch, tp: int, pp: int, dp: int, cp: int, ep: int,
                 sp: bool, mb: int, seq: int, precision: str, flash: bool = True):
        self.db, self.ref, self.m = db, ref, m
        self.tp, self.pp, self.dp, self.cp, self.ep, self.sp = tp, pp, dp, cp, ep, sp
        self.mb, self.seq, self.flash = mb, seq, flash
        self.rates: DeviceRates = device_rates(ref.accelerator)
        self.dtype = "fp8" if precision == "fp8" else "bf16"
        self.in_bytes = 1.0 if precision == "fp8" else ACT_BYTES
        self.sys = ref.system
        self.per_node = ref.system.gpus_per_node
        self._cache: dict[tuple, float] = {}

    # -- communication on the tier each group spans -------------------------------------------------
    def coll(self, name: str, nbytes: float, n: int, stride: int) -> float:
        """A collective over n ranks spaced ``stride`` apart (Megatron rank order)."""
        if n <= 1 or nbytes <= 0:
            return 0.0
        per_node = max(1, min(n, self.per_node // stride)) if stride < self.per_node else 1
        while n % per_node:
            per_node -= 1
        key = (name, round(nbytes), n, per_node)
        if key not in self._cache:
            res = collective_time(self.db, self.sys, name, nbytes, n, per_node=per_node)
            self._cache[key] = float(res.time_s[0])
        return self._cache[key]

    # -- one layer, one micro-batch -----------------------------------------------------------------
    def layer(self, moe: bool, recompute: str) -> _Parts:
        m, tp, cp = self.m, self.tp, self.cp
        T = self.mb * self.seq / cp
        ops = layer_ops(m, Shard(tp=tp, ep=1), T, self.mb, self.seq / cp, "prefill", ACT_BYTES, self.in_bytes,
                        ACT_BYTES, moe, flash=self.flash)
        p = _Parts()
        fwd = 0.0
        attn_fwd = 0.0
        for op in ops:
            if op.kind == "comm":
                if op.collective == "all_reduce":
                    p.tp_comm += 2 * self.coll("all_reduce", op.nbytes, op.group, 1)  # fwd + bwd
                continue
            tf, tb = self._op_fwd_bwd(op)
            fwd += tf
            p.compute += tf + tb
            if op.kind == "attention":
                attn_fwd = tf
        if moe and self.ep > 1:
            a2a = T * m.top_k * m.hidden * ACT_BYTES
            p.ep_comm += 4 * self.coll("all_to_all", a2a, self.ep, tp)  # dispatch + combine, fwd + bwd
        if cp > 1:
            kv_bytes = 2 * self.mb * (self.seq / cp) * _kv_width(m) / tp * ACT_BYTES
            step = self.coll("send_recv", kv_bytes, 2, tp)
            ring = (cp - 1) * step
            p.cp_comm += max(0.0, ring - attn_fwd) + max(0.0, 2 * ring - 2.5 * attn_fwd)
        if recompute == "full":
            p.recompute += fwd + p.tp_comm / 2
        elif recompute == "selective":
            p.recompute += attn_fwd
        return p

    def _op_fwd_bwd(self, op: Op) -> tuple[float, float]:
        r = self.rates
        if op.kind == "gemm":
            args = (self.dtype, self.in_bytes, op.w_bytes, ACT_BYTES)
            f = gemm_time(r, op.m, op.n, op.k, *args, groups=op.groups)[0]
            dgrad = gemm_time(r, op.m, op.k, op.n, *args, groups=op.groups)[0]
            wgrad = gemm_time(r, op.k, op.n, op.m, *args, groups=op.groups)[0]
            if self.dtype == "fp8":
                # Transformer Engine FP8: the forward keeps a transposed FP8 copy of each GEMM input for the
                # weight gradient (1 byte/element written), and the backward casts and transposes the output
                # gradient (2 read + 1 + 1 written), as its cast-transpose kernels do.
                f += memory_time(r, op.m * op.k * op.groups * 1.0)[0]
                dgrad += memory_time(r, op.m * op.n * op.groups * 4.0)[0]
            return float(f), float(dgrad + wgrad)
        if op.kind == "attention":
            flops = op.flops * self.cp  # local queries attend to all keys around the ring
            f = attention_time(r, flops, op.nbytes, op.tiles)[0]
            b = attention_time(r, 2.5 * flops, 2 * op.nbytes, op.tiles)[0]
            return float(f), float(b)
        f = memory_time(r, op.nbytes)[0]
        return float(f), float(memory_time(r, 2 * op.nbytes)[0])

    def head(self, last: bool, first: bool) -> float:
        """Embedding (first stage) and LM head, loss (last stage), forward + backward, one micro-batch."""
        T = self.mb * self.seq / self.cp
        t = 0.0
        for op in head_ops(self.m, Shard(tp=self.tp), T, T, ACT_BYTES, self.in_bytes):
            if op.name == "embedding" and not first:
                continue
            if op.name != "embedding" and not last:
                continue
            if op.kind == "comm":
                continue  # vocab-parallel cross-entropy needs only small all-reduces
            f, b = self._op_fwd_bwd(op)
            t += f + b
        return t

    def pp_send(self) -> float:
        if self.pp == 1:
            return 0.0
        nbytes = self.mb * self.seq / self.cp * self.m.hidden * ACT_BYTES / (self.tp if self.sp else 1)
        return 2 * self.coll("send_recv", nbytes, 2, self.tp * self.cp * self.dp)


def _kv_width(m: ModelArch) -> float:
    if m.is_mla:
        return m.heads * (m.d_head + m.rope_head_dim + m.v_head_dim) / 2
    return m.n_kv_heads * m.d_head


def _check_plan(m: ModelArch, gpus: int, tp: int, pp: int, dp: int, cp: int, ep: int, vp: int, mb: int, gb: int,
                seq: int, zero: int, recompute: str, precision: str) -> None:
    for flag, v in (("--tp", tp), ("--pp", pp), ("--dp", dp), ("--cp", cp), ("--ep", ep), ("--vp", vp),
                    ("--micro-batch", mb), ("--global-batch", gb), ("--seq-len", seq)):
        if v < 1:
            raise InputError(f"{flag}: expected a positive value, got {v}")
    if tp * pp * dp * cp != gpus:
        raise InputError(f"--gpus {gpus}: tp x pp x dp x cp = {tp} x {pp} x {dp} x {cp} = {tp * pp * dp * cp}")
    if m.heads % tp:
        raise InputError(f"--tp {tp}: must divide the attention heads ({m.heads}) of {m.id}")
    if not m.is_mla and m.n_kv_heads % tp and tp % m.n_kv_heads:
        raise InputError(f"--tp {tp}: must divide the KV heads ({m.n_kv_heads}) of {m.id}, or be a multiple of them")
    if pp > m.layers:
        raise InputError(f"--pp {pp}: more stages than layers ({m.layers})")
    if vp > 1 and pp == 1:
        raise InputError("--vp: interleaving needs --pp > 1")
    if ep > 1:
        if not m.is_moe:
            raise InputError(f"--ep {ep}: {m.id} has no experts")
        if m.experts % ep:
            raise InputError(f"--ep {ep}: must divide the experts ({m.experts}) of {m.id}")
        if (dp * cp * tp) % ep:
            raise InputError(f"--ep {ep}: must divide dp x cp x tp = {dp * cp * tp}")
    if gb % (mb * dp):
        raise InputError(f"--global-batch {gb}: must be a multiple of micro-batch x dp = {mb} x {dp}")
    if seq % cp:
        raise InputError(f"--cp {cp}: must divide --seq-len {seq}")
    if zero not in (0, 1, 2, 3):
        raise InputError(f"--zero: expected 0, 1, 2 or 3 (got {zero})")
    if recompute not in ("none", "selective", "full"):
        raise InputError(f"--recompute: expected none, selective or full (got '{recompute}')")
    if precision not in ("bf16", "fp16", "fp8"):
        raise InputError(f"--precision: expected bf16, fp16 or fp8 for training (got '{precision}')")


def estimate_training(
    model: str | dict | ModelArch,
    system: str | SystemRef,
    gpus: int | None = None,
    *,
    seq_len: int,
    global_batch: int,
    tp: int = 1,
    pp: int = 1,
    dp: int | None = None,
    cp: int = 1,
    ep: int = 1,
    vp: int = 1,
    micro_batch: int = 1,
    sequence_parallel: bool | None = None,
    precision: str = "bf16",
    recompute: str = "none",
    zero: int = 1,
    flash_attention: bool = True,
    tokens: float | None = None,
    db: Database | None = None,
    specs: tuple[str, ...] = (),
) -> TrainingResult:
    """Predict step time, MFU/HFU and memory per GPU for one training configuration."""
    db = db or load_database(specs)
    m = get_model(model)
    ref = db.resolve_system(system, gpus) if isinstance(system, str) else system
    gpus = ref.gpus
    if dp is None:
        dp = max(gpus // (tp * pp * cp), 1)
    sp = (tp > 1) if sequence_parallel is None else sequence_parallel
    _check_plan(m, gpus, tp, pp, dp, cp, ep, vp, micro_batch, global_batch, seq_len, zero, recompute, precision)
    ref = SystemRef(ref.system, ref.accelerator, gpus)
    if tp > ref.system.scale_up.domain_size.value:
        raise InputError(f"--tp {tp}: larger than the scale-up domain of {ref.system.id} "
                         f"({int(ref.system.scale_up.domain_size.value)}); TP across nodes is not modelled")
    tr = _Trainer(db, ref, m, tp, pp, dp, cp, ep, sp, micro_batch, seq_len, precision, flash_attention)
    n_micro = global_batch // (micro_batch * dp)
    stages = split_layers(m.layers, pp)
    dense_parts = tr.layer(False, recompute) if m.dense_mlp_layers else None
    moe_parts = tr.layer(True, recompute) if m.moe_layers else None
    send = tr.pp_send()

    stage_s, stage_parts = [], []
    first_layer = 0
    for i, n_layers in enumerate(stages):
        idx = range(first_layer, first_layer + n_layers)
        first_layer += n_layers
        n_dense = sum(1 for j in idx if j < m.dense_mlp_layers)
        n_moe = n_layers - n_dense
        agg = _Parts()
        for parts, n in ((dense_parts, n_dense), (moe_parts, n_moe)):
            if parts is None or n == 0:
                continue
            for f in vars(agg):
                setattr(agg, f, getattr(agg, f) + n * getattr(parts, f))
        agg.compute += tr.head(last=i == pp - 1, first=i == 0)
        agg.pp_comm += send
        stage_s.append(agg.total)
        stage_parts.append(agg)
    pipe = pipeline_time(stage_s, n_micro, vp)
    busiest = max(range(pp), key=lambda i: stage_s[i])
    bp = stage_parts[busiest]

    # parameters held by one GPU on the busiest stage, and their DP traffic
    layer_params = m.attention_params() + 2 * m.hidden
    dense_mlp = m.mlp_params(m.d_ffn) if m.dense_mlp_layers else 0
    exp_all = (m.moe_params(active=False) - m.shared_experts * m.mlp_params(m.d_shared_expert)
               - m.hidden * m.experts) if m.is_moe else 0
    shared_router = (m.shared_experts * m.mlp_params(m.d_shared_expert) + m.hidden * m.experts) if m.is_moe else 0
    n_stage = stages[busiest]
    first = sum(stages[:busiest])
    n_dense_b = sum(1 for j in range(first, first + n_stage) if j < m.dense_mlp_layers)
    n_moe_b = n_stage - n_dense_b
    dense_local = (n_stage * layer_params + n_dense_b * dense_mlp + n_moe_b * shared_router) / tp
    if busiest == 0:
        dense_local += m.embedding_params() / tp
    if busiest == pp - 1:
        dense_local += m.lm_head_params() / tp + m.hidden
    expert_local = n_moe_b * exp_all / (ep * tp)
    # the most loaded stage for memory may differ from the slowest; take the max over stages
    d_dense = dp * cp
    d_expert = max(dp * cp // ep, 1)

    t_dp = tr.coll("reduce_scatter" if zero >= 1 else "all_reduce", dense_local * GRAD_BYTES, d_dense, tp)
    t_dp += tr.coll("reduce_scatter" if zero >= 1 else "all_reduce", expert_local * GRAD_BYTES, d_expert, tp * ep)
    bwd_last = bp.compute * 2 / 3 / max(n_micro, 1) if n_micro else 0.0
    dp_exposed = max(0.0, t_dp - bwd_last) + (t_dp / 40 if t_dp else 0.0)
    ag_exposed = 0.0
    if zero in (1, 2):
        t_ag = tr.coll("all_gather", dense_local * ACT_BYTES, d_dense, tp) + tr.coll(
            "all_gather", expert_local * ACT_BYTES, d_expert, tp * ep)
        fwd_first = bp.compute / 3 / max(n_micro, 1)
        ag_exposed = max(0.0, t_ag - fwd_first)
    zero3 = 0.0
    if zero == 3:
        per_layer_params = (dense_local + expert_local) / max(n_stage, 1)
        ag = tr.coll("all_gather", per_layer_params * ACT_BYTES, d_dense, tp)
        rs = tr.coll("reduce_scatter", per_layer_params * GRAD_BYTES, d_dense, tp)
        layer_compute = bp.compute / max(n_stage, 1)
        per_mb = n_stage * max(0.0, 2 * ag + rs - layer_compute)
        zero3 = per_mb * n_micro
        dp_exposed = 0.0
    shard = {0: 1, 1: d_dense, 2: d_dense, 3: d_dense}[zero]
    opt_params = dense_local / shard + expert_local / (d_expert if zero else 1)
    t_opt = float(memory_time(tr.rates, opt_params * ADAM_BYTES_PER_PARAM)[0])
    step = pipe + dp_exposed + ag_exposed + zero3 + t_opt

    # memory per GPU on the most loaded stage (stage 0 holds the most activations under 1F1B)
    acc = ref.accelerator
    mem = _memory(m, tr, stages, dense_local, expert_local, zero, d_dense, d_expert, n_micro, vp, recompute,
                  flash_attention)
    cap = acc.memory_gb.value * 1e9
    fits = mem["total"] <= cap

    fl = iteration_flops(m, global_batch, seq_len, recompute)
    peak = tr.rates.peak_tflops(tr.dtype) * 1e12
    mfu = fl.model / (step * gpus * peak)
    hfu = fl.hardware / (step * gpus * peak)
    tok = global_batch * seq_len / step
    scale = n_micro
    breakdown = {
        "compute": bp.compute * scale,
        "recompute": bp.recompute * scale,
        "tp_comm": bp.tp_comm * scale,
        "cp_comm": bp.cp_comm * scale,
        "ep_comm": bp.ep_comm * scale,
        "pp_comm": bp.pp_comm * scale,
        "bubble": pipe - stage_s[busiest] * n_micro,
        "dp_comm_exposed": dp_exposed + ag_exposed,
        "zero3_comm_exposed": zero3,
        "optimizer": t_opt,
    }
    result = dict(
        model=m.id, system=ref.system.id, device=acc.id, gpus=gpus, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp,
        sequence_parallel=sp, micro_batch=micro_batch, global_batch=global_batch, micro_batches=n_micro,
        seq_len=seq_len, precision=precision, recompute=recompute, zero=zero, step_time_s=step, tokens_per_s=tok,
        tokens_per_s_per_gpu=tok / gpus, mfu=mfu, hfu=hfu, model_flops_per_step=fl.model,
        memory_per_gpu_bytes={k: v for k, v in mem.items() if k != "total"}, memory_capacity_bytes=cap, fits=fits,
        time_breakdown_s=breakdown, stage_layers=stages,
        assumptions=[f"{acc.id}: no measured {f}; perfmodel's global fallback used" for f in tr.rates.fallbacks],
    )
    if tokens:
        secs = tokens / tok
        result["train_time_days"] = secs / 86400
        result["gpu_hours"] = secs * gpus / 3600
        if acc.price_per_hour_usd:
            result["cost_usd"] = result["gpu_hours"] * acc.price_per_hour_usd.value
    return TrainingResult(**result)


def _memory(m, tr: _Trainer, stages, dense_local, expert_local, zero, d_dense, d_expert, n_micro, vp, recompute,
            flash) -> dict[str, float]:
    tp, pp, cp, sp = tr.tp, tr.pp, tr.cp, tr.sp
    s, b = tr.seq, tr.mb
    states = dense_local * model_state_bytes_per_param(zero, d_dense) + expert_local * model_state_bytes_per_param(
        zero, d_expert if zero else 1)
    dropout = m.family == "gpt"
    per_dense = layer_activation_bytes(m, s, b, tp, sp, recompute, flash, False, dropout, cp)
    per_moe = layer_activation_bytes(m, s, b, tp, sp, recompute, flash, True, dropout, cp) if m.is_moe else 0.0
    n0 = stages[0]
    n_dense0 = min(n0, m.dense_mlp_layers)
    acts = (n_dense0 * per_dense + (n0 - n_dense0) * per_moe) * inflight_microbatches(pp, n_micro, vp)
    acts += embedding_bytes(m, s, b, min(pp, n_micro), tp, sp, cp)
    if pp == 1:
        acts += output_layer_bytes(m, s, b, tp, cp)
    buckets = 2 * 40e6 * GRAD_BYTES if zero < 3 else 4 * max(dense_local / max(stages[0], 1), 1) * ACT_BYTES
    subtotal = states + acts + buckets
    margin = ALLOCATOR_MARGIN * subtotal + ALLOCATOR_FLOOR_BYTES
    return {"weights_grads_optimizer": states, "activations": acts, "comm_buffers": buckets,
            "allocator_margin": margin, "total": subtotal + margin}
