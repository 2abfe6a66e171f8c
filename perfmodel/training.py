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

from dataclasses import dataclass

import numpy as np

from pydantic import BaseModel, Field

from .activations import (embedding_bytes, inflight_microbatches, layer_activation_bytes, model_state_bytes_per_param,
                          output_layer_bytes)
from .comm import collective_time
from .errors import InputError
from .flops import iteration_flops
from .memory import RUNTIME_CONTEXT_GB
from .models import ModelArch, get_model
from .ops import Op, Shard, head_ops, layer_ops
from .roofline import (DeviceRates, attention_time, device_rates, fallback_notes, gemm_time,
                       memory_time)
from .specdb import Database, SystemRef, load_database

ACT_BYTES = 2.0
GRAD_BYTES = 2.0  # gradients reduced in 16-bit (Megatron-Core DDP default grad_reduce_in_fp32=False)
ADAM_BYTES_PER_PARAM = 4 * 4 + 4 * 3 + 2 + 4  # read p32, m, v, g32 (16) ; write p32, m, v (12) ; write p16 (2) ; grad zero (4)
ALLOCATOR_MARGIN = 0.05  # share of the total for caching-allocator fragmentation (EleutherAI reports ~5 GiB on 80 GB)
# The CUDA context with its library handles, the same per-process memory a serving engine holds
# (memory.RUNTIME_CONTEXT_GB, from TensorRT-LLM's memory guide H100 log; cited there).
ALLOCATOR_FLOOR_BYTES = RUNTIME_CONTEXT_GB * 1e9


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


def split_layers(layers: int, pp: int) -> list[int]:
    """Layers per stage as even as possible (the first stages take the remainder)."""
    base, extra = divmod(layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def pipeline_time(stage_s, m, vp=1):
    """1F1B over possibly uneven stages: ``(m - 1) max t + sum t``; interleaving divides the bubble by v.

    ``stage_s`` is a list of stage times, or an array (plans x stages) with ``m`` and ``vp`` per plan."""
    st = np.asarray(stage_s, dtype=float)
    tmax = st.max(axis=-1)
    out = np.asarray(m, dtype=float) * tmax + (st.sum(axis=-1) - tmax) / np.maximum(np.asarray(vp, dtype=float), 1)
    return float(out) if out.ndim == 0 else out


def bubble_fraction(pp: int, m: int, vp: int = 1) -> float:
    """Share of the step the pipeline is idle for uniform stages: (p - 1) / (v m + p - 1)."""
    return (pp - 1) / (vp * m + pp - 1)


@dataclass(frozen=True)
class CommOverlap:
    """Which communication a framework hides behind computation (by default none: all of it is exposed).

    ``ep``: expert-parallel all-to-alls overlap another micro-batch's computation (DeepSeek's DualPipe,
    Megatron-Core's overlapped 1F1B for MoE). ``tp``: tensor/sequence-parallel collectives are pipelined
    with the layer's GEMMs (MegaScale, Jiang et al. 2024, section 3.2; Transformer Engine's userbuffers)."""

    ep: bool = False
    tp: bool = False


class _Trainer:
    def __init__(self, db: Database, ref: SystemRef, m: ModelArch, tp: int, pp: int, dp: int, cp: int, ep: int,
                 sp: bool, mb: int, seq: int, precision: str, flash: bool = True,
                 overlap: CommOverlap = CommOverlap()):
        self.db, self.ref, self.m = db, ref, m
        self.tp, self.pp, self.dp, self.cp, self.ep, self.sp = tp, pp, dp, cp, ep, sp
        self.mb, self.seq, self.flash = mb, seq, flash
        self.rates: DeviceRates = device_rates(ref.accelerator)
        self.dtype = "fp8" if precision == "fp8" else "bf16"
        self.in_bytes = 1.0 if precision == "fp8" else ACT_BYTES
        self.sys = ref.system
        self.per_node = ref.system.gpus_per_node
        self._cache: dict[tuple, float] = {}
        self.overlap = overlap

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
        gemm_s = 0.0
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
            elif op.kind == "gemm":
                gemm_s += tf + tb
        if self.overlap.tp:
            # MegaScale-style: the TP/SP all-gathers and reduce-scatters are split into chunks pipelined
            # with the GEMMs they feed or follow, so only the part the GEMMs cannot cover is exposed
            p.tp_comm = max(0.0, p.tp_comm - gemm_s)
        if moe and self.ep > 1:
            a2a = T * m.top_k * m.hidden * ACT_BYTES
            p.ep_comm += 4 * self.coll("all_to_all", a2a, self.ep, tp)  # dispatch + combine, fwd + bwd
            if self.overlap.ep:
                # DualPipe / Megatron's overlapped 1F1B: one micro-batch's all-to-alls run while another
                # micro-batch's forward or backward chunk computes, so only what outlasts it is exposed
                p.ep_comm = max(0.0, p.ep_comm - p.compute)
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
            dtype = op.gemm_dtype(self.dtype)
            in_bytes = ACT_BYTES if op.unquantized else self.in_bytes
            args = (dtype, in_bytes, op.w_bytes, ACT_BYTES)
            g = op.grouped
            f = gemm_time(r, op.m, op.n, op.k, *args, groups=op.groups, grouped=g)[0]
            dgrad = gemm_time(r, op.m, op.k, op.n, *args, groups=op.groups, grouped=g)[0]
            wgrad = gemm_time(r, op.k, op.n, op.m, *args, groups=op.groups, grouped=g)[0]
            if dtype == "fp8":
                # Transformer Engine FP8: the forward keeps a transposed FP8 copy of each GEMM input for the
                # weight gradient (1 byte/element written), and the backward casts and transposes the output
                # gradient (2 read + 1 + 1 written), as its cast-transpose kernels do.
                f += memory_time(r, op.m * op.k * op.groups * 1.0)[0]
                dgrad += memory_time(r, op.m * op.n * op.groups * 4.0)[0]
            return float(f), float(dgrad + wgrad)
        if op.kind == "attention":
            flops = op.flops * self.cp  # local queries attend to all keys around the ring
            f = attention_time(r, flops, op.nbytes, op.tiles, keys=op.keys)[0]
            b = attention_time(r, 2.5 * flops, 2 * op.nbytes, op.tiles, backward=True, keys=op.keys)[0]
            return float(f), float(b)
        f = memory_time(r, op.nbytes)[0]
        return float(f), float(memory_time(r, 2 * op.nbytes)[0])

    def head(self, last: bool, first: bool) -> float:
        """Embedding (first stage) and LM head, loss (last stage), forward + backward, one micro-batch."""
        T = self.mb * self.seq / self.cp
        t = 0.0
        for op in head_ops(self.m, Shard(tp=self.tp), T, T, ACT_BYTES, ACT_BYTES):
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
    stage_layers: list[int] | None = None,
    tokens: float | None = None,
    ep_overlap: bool = False,
    tp_overlap: bool = False,
    db: Database | None = None,
    specs: tuple[str, ...] = (),
) -> TrainingResult:
    """Predict step time, MFU/HFU and memory per GPU for one training configuration.

    ``ep_overlap``, ``tp_overlap``: the framework hides expert all-to-alls or TP/SP collectives behind
    computation (:class:`CommOverlap`); only the part the computation cannot cover is exposed."""
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
    plans = {k: np.array([v]) for k, v in dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, mb=micro_batch,
                                                   rec=RECOMPUTE.index(recompute), zero=zero, sp=int(sp)).items()}
    if stage_layers is not None and (len(stage_layers) != pp or sum(stage_layers) != m.layers
                                     or min(stage_layers) < 1):
        raise InputError(f"stage layers {stage_layers}: expected {pp} positive counts summing to {m.layers}")
    layouts = {pp: list(stage_layers)} if stage_layers else None
    ev = evaluate_plans(db, ref, m, plans, seq_len, global_batch, precision, flash_attention, layouts,
                        CommOverlap(ep=ep_overlap, tp=tp_overlap))
    one = {k: (v[0] if isinstance(v, np.ndarray) else v) for k, v in ev.items()}
    acc = ref.accelerator
    step, tok = float(one["step_time_s"]), float(one["tokens_per_s"])
    result = dict(
        model=m.id, system=ref.system.id, device=acc.id, gpus=gpus, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp,
        sequence_parallel=sp, micro_batch=micro_batch, global_batch=global_batch,
        micro_batches=int(one["micro_batches"]), seq_len=seq_len, precision=precision, recompute=recompute,
        zero=zero, step_time_s=step, tokens_per_s=tok, tokens_per_s_per_gpu=tok / gpus, mfu=float(one["mfu"]),
        hfu=float(one["hfu"]), model_flops_per_step=float(one["model_flops"]),
        memory_per_gpu_bytes={k: float(one[f"mem_{k}"]) for k in MEMORY_PARTS},
        memory_capacity_bytes=float(one["capacity"]), fits=bool(one["fits"]),
        time_breakdown_s={k: float(one[f"t_{k}"]) for k in TIME_PARTS},
        stage_layers=list(stage_layers) if stage_layers else split_layers(m.layers, pp),
        assumptions=fallback_notes(device_rates(acc), "fp8" if precision == "fp8" else "bf16"),
    )
    if tokens:
        secs = tokens / tok
        result["train_time_days"] = secs / 86400
        result["gpu_hours"] = secs * gpus / 3600
        if acc.price_per_hour_usd:
            result["cost_usd"] = result["gpu_hours"] * acc.price_per_hour_usd.value
    return TrainingResult(**result)


RECOMPUTE = ("none", "selective", "full")
TIME_PARTS = ("compute", "recompute", "tp_comm", "cp_comm", "ep_comm", "pp_comm", "bubble", "dp_comm_exposed",
              "zero3_comm_exposed", "optimizer")
MEMORY_PARTS = ("weights_grads_optimizer", "activations", "comm_buffers", "allocator_margin")


def _stage_layout(m: ModelArch, pp: int, sizes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(dense layers, MoE layers) on each of ``pp`` stages; leading dense layers fill stage 0 first."""
    dense, moe, first = [], [], 0
    for n in (sizes or split_layers(m.layers, pp)):
        d = max(0, min(first + n, m.dense_mlp_layers) - first)
        dense.append(d)
        moe.append(n - d)
        first += n
    return np.array(dense, float), np.array(moe, float)


def evaluate_plans(db: Database, ref: SystemRef, m: ModelArch, plans: dict[str, np.ndarray], seq: int, gb: int,
                   precision: str, flash: bool = True, layouts: dict[int, list[int]] | None = None,
                   overlap: CommOverlap = CommOverlap()) -> dict[str, np.ndarray]:
    """Step time, its parts, MFU and memory per GPU for many plans at once (numpy arrays, one entry a plan).

    ``plans`` holds integer arrays ``tp, pp, dp, cp, ep, vp, mb, rec`` (index into RECOMPUTE), ``zero`` and
    ``sp``; ``layouts`` maps a pipeline depth to its layers per stage (default: as even as possible);
    ``overlap`` says which communication is hidden behind computation (:class:`CommOverlap`).
    The per-layer costs (the expensive roofline and comm work) depend only on (tp, cp, ep, mb,
    recompute, sp) and are computed once per distinct combination; everything else is array arithmetic.
    """
    n = len(plans["tp"])
    tp, pp, dp, cp, ep, vp, mb = (plans[k].astype(float) for k in ("tp", "pp", "dp", "cp", "ep", "vp", "mb"))
    rec, zero, sp = plans["rec"].astype(int), plans["zero"].astype(int), plans["sp"].astype(bool)
    rates = device_rates(ref.accelerator)
    per_node = ref.system.gpus_per_node
    fields = ("compute", "recompute", "tp_comm", "cp_comm", "ep_comm")
    lay = {f"{kind}_{f}": np.zeros(n) for kind in ("d", "m") for f in fields}
    head_first, head_last, send = np.zeros(n), np.zeros(n), np.zeros(n)
    act_d, act_m = np.zeros(n), np.zeros(n)
    emb_act, out_act = np.zeros(n), np.zeros(n)
    coll_cache: dict[tuple, float] = {}
    dropout = m.family == "gpt"
    keys = np.stack([tp, cp, ep, mb, rec, sp.astype(float)], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    for u, key in enumerate(uniq):
        t, c, e, b, r = (int(x) for x in key[:5])
        s_ = bool(key[5])
        tr = _Trainer(db, ref, m, t, 1, 1, c, e, s_, b, seq, precision, flash, overlap)
        tr._cache = coll_cache
        dparts = tr.layer(False, RECOMPUTE[r]) if m.dense_mlp_layers else _Parts()
        mparts = tr.layer(True, RECOMPUTE[r]) if m.moe_layers else _Parts()
        sel = inv == u
        for f in fields:
            lay[f"d_{f}"][sel], lay[f"m_{f}"][sel] = getattr(dparts, f), getattr(mparts, f)
        head_first[sel] = tr.head(last=False, first=True)
        head_last[sel] = tr.head(last=True, first=False)
        act_d[sel] = layer_activation_bytes(m, seq, b, t, s_, RECOMPUTE[r], flash, False, dropout, c)
        act_m[sel] = layer_activation_bytes(m, seq, b, t, s_, RECOMPUTE[r], flash, True, dropout, c) if m.is_moe else 0
        emb_act[sel] = embedding_bytes(m, seq, b, 1, t, s_, c)
        out_act[sel] = output_layer_bytes(m, seq, b, t, c)
    send_keys = np.stack([tp, pp, dp, cp, mb, sp.astype(float)], axis=1)
    multi = np.nonzero(pp > 1)[0]
    if len(multi):
        s_uniq, s_inv = np.unique(send_keys[multi], axis=0, return_inverse=True)
        s_inv = s_inv.reshape(-1)
        for u, key in enumerate(s_uniq):
            t, p_, d, c, b = (int(x) for x in key[:5])
            tr = _Trainer(db, ref, m, t, p_, d, c, 1, bool(key[5]), b, seq, precision, flash)
            tr._cache = coll_cache
            send[multi[s_inv == u]] = tr.pp_send()
    d_total = sum(lay[f"d_{f}"] for f in fields)
    m_total = sum(lay[f"m_{f}"] for f in fields)
    n_micro = gb / (mb * dp)

    # stages: group plans by pp, stage times as (plans, stages) arrays
    pipe, busiest_s = np.zeros(n), np.zeros(n)
    nd_b, nm_b, first_b, last_b, nd_0, nm_0 = (np.zeros(n) for _ in range(6))
    for p_val in np.unique(pp):
        idx = np.nonzero(pp == p_val)[0]
        nd, nm = _stage_layout(m, int(p_val), (layouts or {}).get(int(p_val)))
        first = np.zeros(int(p_val))
        first[0] = 1
        last = np.zeros(int(p_val))
        last[-1] = 1
        st = (nd[None, :] * d_total[idx, None] + nm[None, :] * m_total[idx, None]
              + first[None, :] * head_first[idx, None] + last[None, :] * head_last[idx, None] + send[idx, None])
        b = np.argmax(st, axis=1)
        tmax = st[np.arange(len(idx)), b]
        pipe[idx] = pipeline_time(st, n_micro[idx], vp[idx])
        busiest_s[idx] = tmax
        nd_b[idx], nm_b[idx], first_b[idx], last_b[idx] = nd[b], nm[b], first[b], last[b]
        nd_0[idx], nm_0[idx] = nd[0], nm[0]
    part_b = {f: nd_b * lay[f"d_{f}"] + nm_b * lay[f"m_{f}"] for f in fields}
    part_b["compute"] = part_b["compute"] + first_b * head_first + last_b * head_last
    n_stage_b = nd_b + nm_b

    # parameters one GPU of the busiest stage holds
    layer_params = m.attention_params() + 2 * m.hidden
    dense_mlp = m.mlp_params(m.d_ffn) if m.dense_mlp_layers else 0
    shared_router = (m.shared_experts * m.mlp_params(m.d_shared_expert) + m.hidden * m.experts) if m.is_moe else 0
    exp_all = (m.moe_params(active=False) - shared_router) if m.is_moe else 0
    dense_local = (n_stage_b * layer_params + nd_b * dense_mlp + nm_b * shared_router) / tp
    dense_local += first_b * m.embedding_params() / tp + last_b * (m.lm_head_params() / tp + m.hidden)
    expert_local = nm_b * exp_all / (ep * tp)
    d_dense = dp * cp
    d_expert = np.maximum(np.floor(dp * cp / ep), 1)

    def coll(name: str, nbytes: np.ndarray, ranks: np.ndarray, stride: np.ndarray) -> np.ndarray:
        """One collective per plan, costed once per distinct (ranks, ranks per node) with all sizes at once."""
        out = np.zeros(n)
        r = ranks.astype(int)
        pn = np.where(stride < per_node, np.clip(per_node // np.maximum(stride, 1), 1, None), 1)
        pn = np.minimum(pn, np.maximum(r, 1)).astype(int)
        live = (r > 1) & (nbytes > 0)
        for rr, p0 in {(int(a), int(b)) for a, b in zip(r[live], pn[live])}:
            p1 = p0
            while rr % p1:
                p1 -= 1
            sel = live & (r == rr) & (pn == p0)
            out[sel] = collective_time(db, ref.system, name, nbytes[sel], rr, per_node=p1).time_s
        return out

    grad = np.where(zero >= 1, 1, 0)
    t_dp = np.zeros(n)
    for name, flag in (("reduce_scatter", grad == 1), ("all_reduce", grad == 0)):
        if flag.any():
            t_dp = t_dp + np.where(flag, coll(name, dense_local * GRAD_BYTES, d_dense, tp)
                                   + coll(name, expert_local * GRAD_BYTES, d_expert, tp * ep), 0.0)
    bwd_last = part_b["compute"] * 2 / 3  # the last micro-batch's backward on the busiest stage
    dp_exposed = np.maximum(0.0, t_dp - bwd_last) + t_dp / 40
    t_ag = np.where((zero == 1) | (zero == 2), coll("all_gather", dense_local * ACT_BYTES, d_dense, tp)
                    + coll("all_gather", expert_local * ACT_BYTES, d_expert, tp * ep), 0.0)
    ag_exposed = np.maximum(0.0, t_ag - part_b["compute"] / 3)  # hidden behind the first forward
    per_layer = (dense_local + expert_local) / np.maximum(n_stage_b, 1)
    z3 = zero == 3
    ag3 = np.where(z3, coll("all_gather", np.where(z3, per_layer * ACT_BYTES, 0), d_dense, tp), 0.0)
    rs3 = np.where(z3, coll("reduce_scatter", np.where(z3, per_layer * GRAD_BYTES, 0), d_dense, tp), 0.0)
    layer_compute = part_b["compute"] / np.maximum(n_stage_b, 1)
    zero3 = np.where(z3, n_stage_b * np.maximum(0.0, 2 * ag3 + rs3 - layer_compute) * n_micro, 0.0)
    dp_exposed = np.where(z3, 0.0, dp_exposed)
    shard = np.where(zero == 0, 1.0, d_dense)
    opt_params = dense_local / shard + expert_local / np.where(zero == 0, 1.0, d_expert)
    t_opt = opt_params * ADAM_BYTES_PER_PARAM / (rates.achievable_gbps * 1e9) + rates.floor_s
    step = pipe + dp_exposed + ag_exposed + zero3 + t_opt

    # memory per GPU: model states of the busiest stage, activations of stage 0 (most in flight)
    states = dense_local * model_state_bytes_per_param(zero, d_dense) + expert_local * model_state_bytes_per_param(
        zero, np.where(zero == 0, 1.0, d_expert))
    inflight = inflight_microbatches(pp, n_micro, vp)
    acts = (nd_0 * act_d + nm_0 * act_m) * inflight + emb_act * np.minimum(pp, n_micro)
    acts = acts + np.where(pp == 1, out_act, 0.0)
    n0 = nd_0 + nm_0
    buckets = np.where(zero < 3, 2 * 40e6 * GRAD_BYTES, 4 * np.maximum(dense_local / np.maximum(n0, 1), 1) * ACT_BYTES)
    subtotal = states + acts + buckets
    margin = ALLOCATOR_MARGIN * subtotal + ALLOCATOR_FLOOR_BYTES
    total_mem = subtotal + margin
    capacity = ref.accelerator.usable_memory_gb * 1e9

    flops_model = np.zeros(n)
    flops_hw = np.zeros(n)
    for r in np.unique(rec):
        fl = iteration_flops(m, gb, seq, RECOMPUTE[int(r)])
        flops_model[rec == r], flops_hw[rec == r] = fl.model, fl.hardware
    gpus = tp * pp * dp * cp
    peak = rates.peak_tflops("fp8" if precision == "fp8" else "bf16") * 1e12
    return {
        "step_time_s": step,
        "tokens_per_s": gb * seq / step,
        "mfu": flops_model / (step * gpus * peak),
        "hfu": flops_hw / (step * gpus * peak),
        "model_flops": flops_model,
        "micro_batches": n_micro,
        "capacity": np.full(n, capacity),
        "fits": total_mem <= capacity,
        "memory_total": total_mem,
        "mem_weights_grads_optimizer": states,
        "mem_activations": acts,
        "mem_comm_buffers": buckets,
        "mem_allocator_margin": margin,
        "t_compute": part_b["compute"] * n_micro,
        "t_recompute": part_b["recompute"] * n_micro,
        "t_tp_comm": part_b["tp_comm"] * n_micro,
        "t_cp_comm": part_b["cp_comm"] * n_micro,
        "t_ep_comm": part_b["ep_comm"] * n_micro,
        "t_pp_comm": send * n_micro,
        "t_bubble": pipe - busiest_s * n_micro,
        "stage_max_s": busiest_s,
        "t_dp_comm_exposed": dp_exposed + ag_exposed,
        "t_zero3_comm_exposed": zero3,
        "t_optimizer": t_opt,
    }
