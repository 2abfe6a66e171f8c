"""Serving with weights, KV cache or MoE experts held beyond HBM (host DRAM, CXL, NVMe) and streamed in.

What is offloaded (``offload``, any of ``weights``, ``kv``, ``experts``):

* ``weights``: every transformer layer's weights live off the GPU and are streamed to HBM layer by layer
  each forward pass (FlexGen's all-offloaded weight policy, Sheng et al., ICML 2023). The embedding and
  LM head stay in HBM. Per decode step the whole layer stack crosses the link once.
* ``kv``: the KV cache fills what HBM has left after the resident weights, activations and stream
  buffers; the part that overflows is swapped to the tier and read back every decode step, because
  attention needs the whole context (the "context switching over PCIe" cost of Fu, "Challenges in
  Deploying Long-Context Transformers: A Theoretical Peak Performance Analysis", arXiv 2405.08944).
  The new token's K and V of the overflowing share are written back each step.
* ``experts``: routed expert weights live off the GPU; a step fetches only the experts its tokens activate,
  ``E (1 - (1 - k/E)^T)`` per MoE layer (:func:`perfmodel.ops.expected_distinct_experts`), as in
  LLM in a flash (Alizadeh et al., ACL 2024) which loads only what the step needs. No cross-step
  expert cache is modelled (conservative: a hot-expert cache would only cut traffic).

Where: the offloaded bytes go to the fastest tier that fits (fastest = highest GPU-side read bandwidth,
``min(tier read, GPU-host link)``), spilling to the next tier when one is full; ``tier=`` pins one.

Time of a step. The GPU part is perfmodel's roofline step (``perfmodel.inference._Ctx.step``). Streamed
bytes ``B_i`` from tier ``i`` reach the GPU in ``t_x = max(max_i B_i / read_i, sum_i B_i / gpu_host)``:
each tier's own bandwidth (after its attach link) and the shared GPU-host link (PCIe, NVLink-C2C). With
prefetch (``overlap=True``, FlexGen's overlapped schedule: layer l+1 is fetched while layer l computes),
``step = max(t_gpu, t_x) + min(t_gpu, t_x) / L`` -- one layer's worth of the shorter side cannot hide
(pipeline fill). Without overlap, ``step = t_gpu + t_x``.

Host side (``eager=True``): in eager PyTorch the CPU dispatches every kernel, so
``step = max(step, kernels x launch)``. Kernels per step = ``EAGER_KERNELS_PER_LAYER`` per layer plus
the head. Per-kernel CPU cost: ``X86_LAUNCH_US`` for x86 hosts and ``GRACE_LAUNCH_US`` for Grace (see
the constants: the x86 figure is a cited range's middle, the Grace one an assumption back-fitted to
Vellaisamy et al., ISPASS 2025, arXiv 2504.11750).

TTFT is the prefill of the whole batch (a static batch as in FlexGen / HF generate); TPOT is the decode
step at the mean context ``isl + osl/2``; capacity is checked at the final context ``isl + osl``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .engines import get_engine
from .errors import InputError
from .inference import ACT_BYTES, StepCost, _Ctx
from .memory import activation_bytes, kv_bytes_per_sequence, weight_bytes_per_gpu
from .memtiers import Machine, TierUse, describe_machine
from .models import ModelArch, get_model
from .ops import Shard, check_precision, check_shard, expected_distinct_experts
from .roofline import fallback_notes
from .specdb import Database, SystemRef, load_database

OFFLOADABLE = ("weights", "kv", "experts")
GIB = 2**30

# Kernels one transformer layer launches in eager PyTorch (Hugging Face-style modules: RMSNorm as ~8
# elementwise kernels, RoPE ~10, QKV/O/MLP GEMMs, SiLU, mul, residual adds, KV-cache update, SDPA).
# "A typical transformer block with ~50 elementary operations, eager mode does ~50 kernel launches"
# (ML Hero, ch. 21.1 "PyTorch eager vs compiled -- the dispatch stack",
# https://mlhero.books.neutronlabs.ai/ch21-runtimes/01-pytorch-dispatch/).
EAGER_KERNELS_PER_LAYER = 50
EAGER_KERNELS_HEAD = 10  # embedding, final norm (~8 kernels folded in), LM head, sampling
EAGER_KERNELS_PER_EXPERT = 4  # HF MoE loops over activated experts: index, up/gate GEMM, act*mul, down
# CPU time to dispatch one kernel in eager PyTorch on an x86 server core. Cited range: "~5-25 us of
# CPU-side work per op" (J. Lin, "From PyTorch op to kernel launch", gpu_kernel_serving lesson 18); NVIDIA's
# Nsight Systems guide measured ~20 us per PyTorch element-wise op on a V100-era host. We take 10 us.
X86_LAUNCH_US = 10.0
# ASSUMPTION (grace_launch_us): no per-kernel dispatch time for Grace was found. Vellaisamy et al.
# (arXiv 2504.11750) attribute GH200's ~4x wider CPU-bound batch range to the Grace CPU; 25 us (2.5x x86)
# reproduces that range for Llama-3.2-1B prefill given the GH200 GPU's ~1.6x higher speed (see tests).
GRACE_LAUNCH_US = 25.0

# Llama-3.2-1B (https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json), not in the catalog:
LLAMA_32_1B = {"id": "llama-3.2-1b", "name": "Llama 3.2 1B", "family": "llama", "layers": 16, "hidden": 2048,
               "heads": 32, "kv_heads": 8, "head_dim": 64, "ffn_hidden": 8192, "vocab": 128256,
               "tied_embeddings": True, "max_position": 131072,
               "source": "https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json"}


class Transfer(BaseModel):
    """Bytes one step moves and the time they take on their path."""

    bytes_per_tier: dict[str, float] = Field(description="tier id -> bytes read (streamed) this step")
    write_bytes_per_tier: dict[str, float] = Field(default_factory=dict)
    bytes_per_link: dict[str, float] = Field(description="link id -> bytes crossing it this step")
    time_ms: float
    bottleneck: str | None = Field(description="the tier or link that sets the transfer time")


class PhaseTime(BaseModel):
    gpu_ms: float = Field(description="roofline time of the step on the GPU (weights/KV already in HBM)")
    transfer: Transfer
    cpu_launch_ms: float = Field(description="kernels x per-kernel CPU dispatch (eager); 0 when not eager")
    host_ms: float = Field(0.0, description="the engine's per-iteration host time (host_overhead_ms), serial with "
                                             "the GPU and the transfers it issues")
    kernels: int
    step_ms: float
    bound: str = Field(description="gpu | cpu-launch | the bottleneck link/tier id")


class OffloadInferResult(BaseModel):
    model: str
    system: str
    device: str
    precision: str
    kv_precision: str
    batch: int
    isl: float
    osl: float
    offload: list[str]
    overlap: bool
    eager: bool
    cpu_launch_us: float | None
    hbm_bytes: dict[str, float] = Field(description="per GPU: capacity, usable, weights, kv, buffers, "
                                                    "activations, free")
    placement: dict[str, dict[str, float]] = Field(description="item -> {tier id or 'hbm': bytes}")
    tiers: list[dict] = Field(description="each tier one GPU sees: id, kind, capacity, used, read/path GB/s")
    gpu_host_gbps: float
    host_link: str
    kv_overflow_context: float | None = Field(description="context (tokens per sequence) at which the KV "
                                                          "cache of the batch outgrows HBM")
    prefill: PhaseTime
    decode: PhaseTime
    ttft_ms: float
    tpot_ms: float
    e2e_s: float
    decode_tokens_per_s: float
    output_tokens_per_s: float
    bottleneck: str
    assumptions: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
def _path_gbps(m: Machine, t: TierUse) -> float:
    return min(t.read_gbps, m.gpu_host_gbps)


def _tier_link(db: Database, t: TierUse) -> str | None:
    return db.tier(t.ids[0]).link if t.kind != "host" else None


def _gib(x: float) -> str:
    return f"{x / GIB:.1f}"


def _transfer(db: Database, m: Machine, reads: dict[str, float], writes: dict[str, float]) -> Transfer:
    """Time to move ``reads`` (tier kind -> bytes, to the GPU) and ``writes`` (GPU -> tier) concurrently."""
    by_kind = {t.kind: t for t in m.tiers()}
    per_tier, per_tier_w, per_link = {}, {}, {}
    worst, who = 0.0, None
    total_r = sum(reads.values())
    total_w = sum(writes.values())
    for kind in set(reads) | set(writes):
        t = by_kind[kind]
        r, w = reads.get(kind, 0.0), writes.get(kind, 0.0)
        tid = "+".join(t.ids)
        if r:
            per_tier[tid] = r
        if w:
            per_tier_w[tid] = w
        lk = _tier_link(db, t)
        if lk and (r or w):
            per_link[lk] = per_link.get(lk, 0.0) + r + w
        # a tier reads and writes over the same DRAM / flash: its time is reads/read_bw + writes/write_bw
        tt = r / (t.read_gbps * 1e9) + (w / (t.write_gbps * 1e9) if w else 0.0)
        if tt > worst:
            worst, who = tt, tid
    if total_r or total_w:
        per_link[m.host_link] = total_r + total_w
        # the GPU-host link is full duplex: reads and writes go opposite ways
        tl = max(total_r, total_w) / (m.gpu_host_gbps * 1e9)
        if tl >= worst:
            worst, who = tl, m.host_link
    return Transfer(bytes_per_tier=per_tier, write_bytes_per_tier=per_tier_w, bytes_per_link=per_link,
                    time_ms=worst * 1e3, bottleneck=who)


def _place(m: Machine, need: float, pinned: str | None, what: str) -> list[tuple[str, float]]:
    """Put ``need`` bytes on the fastest tiers that fit (spilling), or on the pinned tier kind."""
    tiers = m.tiers()
    if pinned:
        tiers = [t for t in tiers if t.kind == pinned]
        if not tiers:
            raise InputError(f"--offload-tier {pinned}: no such tier on this machine (give --{pinned}"
                             f"{'-memory' if pinned == 'host' else ''})")
    tiers = sorted(tiers, key=lambda t: -_path_gbps(m, t))
    out, left = [], need
    for t in tiers:
        take = min(left, t.capacity_bytes)
        if take > 0:
            out.append((t.kind, take))
            left -= take
        if left <= 0:
            break
    if left > 1.0:
        have = sum(t.capacity_bytes for t in tiers)
        names = ", ".join(t.describe() for t in tiers)
        raise InputError(f"--offload {what}: needs {_gib(need)} GiB off the GPU but {names} give "
                         f"{_gib(have)} GiB per GPU; {_gib(left)} GiB missing: add --cxl/--nvme or a larger "
                         f"--host-memory")
    return out


def launch_us_for(ref: SystemRef) -> tuple[float, str]:
    cpu = (ref.system.host.cpu or "").lower()
    if "grace" in cpu:
        return GRACE_LAUNCH_US, f"grace_launch_us = {GRACE_LAUNCH_US:g} us per kernel (assumed, see offload_infer)"
    return X86_LAUNCH_US, f"x86_launch_us = {X86_LAUNCH_US:g} us per kernel (cited range 5-25 us, see offload_infer)"


def eager_kernels(arch: ModelArch, tokens: float) -> int:
    n = arch.layers * EAGER_KERNELS_PER_LAYER + EAGER_KERNELS_HEAD
    if arch.is_moe:
        n += round(arch.moe_layers * EAGER_KERNELS_PER_EXPERT *
                   expected_distinct_experts(arch.experts, arch.top_k, tokens))
    return int(n)


def _combine(gpu_s: float, xfer: Transfer, layers: int, overlap: bool, cpu_s: float, kernels: int,
             host_s: float = 0.0) -> PhaseTime:
    tx = xfer.time_ms / 1e3
    if overlap:
        t = max(gpu_s, tx) + (min(gpu_s, tx) / layers if tx > 0 else 0.0)
    else:
        t = gpu_s + tx
    bound = "gpu" if gpu_s >= tx else (xfer.bottleneck or "gpu")
    if cpu_s > t:
        t, bound = cpu_s, "cpu-launch"
    return PhaseTime(gpu_ms=gpu_s * 1e3, transfer=xfer, cpu_launch_ms=cpu_s * 1e3, host_ms=host_s * 1e3,
                     kernels=kernels, step_ms=(t + host_s) * 1e3, bound=bound)


# ---------------------------------------------------------------------------------------------------------
def estimate_offload_inference(
    model: str | dict | ModelArch,
    system: str | SystemRef,
    isl: float,
    osl: float,
    *,
    offload: set[str] | frozenset[str] | list[str] | tuple[str, ...] = (),
    batch: int = 1,
    precision: str = "bf16",
    kv_precision: str | None = None,
    host_memory: str | None = None,
    cxl: str | None = None,
    nvme: str | None = None,
    tp: int = 1,
    tier: str | None = None,
    overlap: bool = True,
    eager: bool = False,
    cpu_launch_us: float | None = None,
    engine: str | None = None,
    db: Database | None = None,
) -> OffloadInferResult:
    """Latency and throughput of one instance (``tp`` GPUs) with ``offload`` parts held beyond HBM."""
    db = db or load_database()
    arch = get_model(model)
    precision = check_precision(precision)
    kv_precision = check_precision(kv_precision or ("fp8" if precision in ("fp4", "nvfp4", "mxfp4") else precision),
                                   "--kv-precision")
    offload = {o.strip() for o in ([offload] if isinstance(offload, str) else offload) if o.strip()}
    bad = offload - set(OFFLOADABLE)
    if bad:
        raise InputError(f"--offload: expected any of {', '.join(OFFLOADABLE)} (got '{','.join(sorted(bad))}')")
    if "experts" in offload and not arch.is_moe:
        raise InputError(f"--offload experts: {arch.id} has no experts")
    if isl <= 0 or osl <= 0:
        raise InputError(f"--isl/--osl: expected positive token counts (got {isl}, {osl})")
    if batch < 1:
        raise InputError(f"--batch: expected a positive number of sequences, got {batch}")
    if tier is not None and tier not in ("host", "cxl", "nvme"):
        raise InputError(f"--offload-tier: expected host, cxl or nvme (got '{tier}')")
    shard = Shard(tp=tp)
    check_shard(arch, shard)
    ref0 = db.resolve_system(system) if isinstance(system, str) else system
    ref = SystemRef(ref0.system, ref0.accelerator, tp)
    m = describe_machine(db, ref, host_memory, cxl, nvme)
    ctx = _Ctx(db, ref, arch, shard, 1, precision, kv_precision)
    eng = get_engine(engine)
    assumptions = fallback_notes(ctx.rates, ctx.dtype)
    if eng.host_overhead_s:
        whose = "given" if "host_overhead_s" in eng.pinned else f"{eng.name}'s executor"
        assumptions.append(f"host_overhead_ms = {eng.host_overhead_s * 1e3:g} per iteration ({whose}), after the GPU "
                           "work and transfers of each step")
    L = arch.layers

    # ---- memory: what must sit in HBM, what goes out ------------------------------------------------
    wb = weight_bytes_per_gpu(arch, shard, 1, ctx.w_bytes)
    layer_w = wb.attention + wb.mlp + wb.experts  # all layers' weights on this GPU
    expert_w = 0.0
    if arch.is_moe:
        per_expert = arch.mlp_params(arch.d_expert, bias=arch.expert_bias) * ctx.w_bytes / tp
        expert_w = arch.moe_layers * arch.experts * per_expert
    acts = activation_bytes(arch, shard, eng.max_num_tokens, min(eng.max_batch, eng.max_num_tokens), ACT_BYTES)
    usable = m.hbm_bytes * eng.memory_fraction - acts
    seq_final = isl + osl
    kv_seq_final = kv_bytes_per_sequence(arch, shard, 1, ctx.kv_bytes, seq_final, 1)
    kv_total = batch * kv_seq_final
    kv_per_token = kv_seq_final / seq_final  # bytes per context token per sequence (all layers)

    resident_w = wb.embeddings
    buffers = 0.0
    offl_w = 0.0
    if "weights" in offload:
        offl_w = layer_w
        buffers += 2 * layer_w / L  # double buffer: layer l computes while l+1 arrives
    elif "experts" in offload:
        offl_w = expert_w
        resident_w += layer_w - expert_w
        buffers += 2 * expert_w / arch.moe_layers  # one MoE layer's experts (prefill touches all), doubled
    else:
        resident_w += layer_w
    kv_room = usable - resident_w - buffers
    if "kv" in offload:
        buffers += 2 * kv_total / L  # stage one layer's swapped KV while the previous layer computes (bound)
        kv_room = usable - resident_w - buffers
        if kv_room < 0:
            raise InputError(f"{arch.id} on {ref.accelerator.id}: resident weights {_gib(resident_w)} GiB plus "
                             f"stream buffers {_gib(buffers)} GiB exceed the {_gib(usable)} GiB HBM the engine may "
                             f"use by {_gib(-kv_room)} GiB; add weights to --offload or raise --tp")
        kv_hbm = min(kv_total, kv_room)
    else:
        if kv_total > kv_room:
            what = ("stream buffers and resident weights" if offload else "weights")
            raise InputError(f"--batch {batch}: the KV cache ({_gib(kv_total)} GiB for {int(seq_final)} tokens per "
                             f"sequence) does not fit the {_gib(max(kv_room, 0))} GiB of HBM left after {what}; "
                             f"short by {_gib(kv_total - max(kv_room, 0))} GiB: add kv to --offload or lower --batch")
        kv_hbm = kv_total
    kv_out = kv_total - kv_hbm
    kv_overflow_ctx = kv_room / (batch * kv_per_token) if kv_room > 0 else 0.0

    # ---- placement on tiers (weights/experts first: they are read every step whole or in part) ----------
    placement: dict[str, dict[str, float]] = {}
    used: dict[str, float] = {}
    m_left = _LeftMachine(m)
    if offl_w:
        item = "weights" if "weights" in offload else "experts"
        spots = _place(m_left.view(), offl_w, tier, item)
        placement[item] = {m_left.id_of(k): b for k, b in spots}
        m_left.take(spots, used)
    if kv_out > 0:
        spots = _place(m_left.view(), kv_out, tier, "kv")
        placement["kv"] = {m_left.id_of(k): b for k, b in spots}
        m_left.take(spots, used)
    placement.setdefault("weights", {})["hbm"] = resident_w if "weights" not in offload else wb.embeddings
    placement.setdefault("kv", {})["hbm"] = kv_hbm

    # ---- per-step traffic ---------------------------------------------------------------------------
    def shares(item: str) -> dict[str, float]:
        """tier kind -> share of the item's offloaded bytes"""
        tot = sum(b for k, b in placement.get(item, {}).items() if k != "hbm")
        return {m_left.kind_of(k): b / tot for k, b in placement.get(item, {}).items() if k != "hbm" and tot}

    def traffic(phase: str, tokens: float, ctx_len: float) -> tuple[dict[str, float], dict[str, float]]:
        reads: dict[str, float] = {}
        writes: dict[str, float] = {}

        def add(d, item, nbytes):
            for k, s in shares(item).items():
                d[k] = d.get(k, 0.0) + nbytes * s

        if "weights" in offload:
            if "experts" in offload and arch.is_moe:
                fetched = expert_w * expected_distinct_experts(arch.experts, arch.top_k, tokens) / arch.experts
                add(reads, "weights", layer_w - expert_w + fetched)
            else:
                add(reads, "weights", layer_w)
        elif "experts" in offload:
            add(reads, "experts", expert_w * expected_distinct_experts(arch.experts, arch.top_k, tokens)
                / arch.experts)
        if kv_out > 0:
            kv_now = batch * kv_per_token * ctx_len
            out_now = max(kv_now - kv_hbm, 0.0)
            out_share = out_now / kv_now if kv_now else 0.0
            if phase == "decode":
                add(reads, "kv", out_now)
                add(writes, "kv", batch * kv_per_token * out_share)  # the new token's K,V of swapped seqs
            else:
                add(writes, "kv", out_now)  # prefill writes the overflowing part of the prompt's KV
        return reads, writes

    if eager:
        launch_us, note = (cpu_launch_us, f"cpu_launch_us = {cpu_launch_us:g} us per kernel (given)") \
            if cpu_launch_us is not None else launch_us_for(ref)
        assumptions.append(note)
        assumptions.append(f"eager_kernels_per_layer = {EAGER_KERNELS_PER_LAYER} (cited estimate)")
    else:
        launch_us = None

    def phase(name: str, seqs: float, tokens: float, ctx_len: float, rows: float) -> PhaseTime:
        cost: StepCost = ctx.step(name, seqs, tokens, ctx_len, rows)
        reads, writes = traffic(name, tokens, ctx_len)
        x = _transfer(db, m, reads, writes)
        k = eager_kernels(arch, tokens) if eager else 0
        cpu_s = k * launch_us * 1e-6 if eager else 0.0
        return _combine(cost.time_s, x, L, overlap, cpu_s, k, eng.host_overhead_s)

    ctx_mid = isl + osl / 2
    pre = phase("prefill", batch, batch * isl, isl, batch)
    dec = phase("decode", batch, batch, ctx_mid, batch)
    ttft = pre.step_ms / 1e3
    tpot = dec.step_ms / 1e3
    e2e = ttft + osl * tpot
    tiers_out = []
    for t in m.tiers():
        tid = "+".join(t.ids)
        tiers_out.append({"id": tid, "kind": t.kind, "capacity_bytes": t.capacity_bytes,
                          "used_bytes": used.get(t.kind, 0.0), "read_gbps": t.read_gbps,
                          "path_gbps": _path_gbps(m, t)})
    hbm = {"capacity": m.hbm_bytes, "usable": usable, "weights": placement["weights"]["hbm"], "kv": kv_hbm,
           "buffers": buffers, "activations": acts,
           "free": max(usable - placement["weights"]["hbm"] - kv_hbm - buffers, 0.0)}
    if m.notes:
        assumptions += m.notes
    return OffloadInferResult(
        model=arch.id, system=ref.system.id, device=ref.accelerator.id, precision=precision,
        kv_precision=kv_precision, batch=batch, isl=isl, osl=osl, offload=sorted(offload), overlap=overlap,
        eager=eager, cpu_launch_us=launch_us, hbm_bytes=hbm,
        placement={k: v for k, v in placement.items() if any(v.values())}, tiers=tiers_out,
        gpu_host_gbps=m.gpu_host_gbps, host_link=m.host_link, kv_overflow_context=kv_overflow_ctx,
        prefill=pre, decode=dec, ttft_ms=ttft * 1e3, tpot_ms=tpot * 1e3, e2e_s=e2e,
        decode_tokens_per_s=batch / tpot, output_tokens_per_s=batch * osl / e2e, bottleneck=dec.bound,
        assumptions=assumptions)


class _LeftMachine:
    """The machine's tiers with what earlier placements used subtracted (weights first, then KV)."""

    def __init__(self, m: Machine):
        self.m = m
        self.used: dict[str, float] = {}

    def view(self) -> Machine:
        import dataclasses

        m = self.m
        def left(t):
            return None if t is None else dataclasses.replace(
                t, capacity_bytes=max(t.capacity_bytes - self.used.get(t.kind, 0.0), 0.0))
        return dataclasses.replace(m, host=left(m.host), cxl=left(m.cxl), nvme=left(m.nvme))

    def take(self, spots, used):
        for k, b in spots:
            self.used[k] = self.used.get(k, 0.0) + b
            used[k] = used.get(k, 0.0) + b

    def id_of(self, kind: str) -> str:
        return "+".join(next(t for t in self.m.tiers() if t.kind == kind).ids)

    def kind_of(self, tid: str) -> str:
        return next(t.kind for t in self.m.tiers() if "+".join(t.ids) == tid)


# ---------------------------------------------------------------------------------------------------------
def kv_overflow_sweep(model, system, batch: int, contexts, *, precision: str = "bf16",
                      kv_precision: str | None = None, host_memory: str | None = None, cxl: str | None = None,
                      nvme: str | None = None, tp: int = 1, db: Database | None = None) -> list[dict]:
    """Long-context analysis: for each context length (tokens per sequence, all prompt), the KV cache of
    ``batch`` sequences, whether it fits HBM, and the decode step with the overflow swapped from the host
    tiers vs the step if HBM were large enough (``slowdown``). Rows beyond the tiers' capacity say so."""
    db = db or load_database()
    rows = []
    for c in contexts:
        try:
            r = estimate_offload_inference(model, system, c, 1, offload={"kv"}, batch=batch, precision=precision,
                                           kv_precision=kv_precision, host_memory=host_memory, cxl=cxl,
                                           nvme=nvme, tp=tp, db=db)
        except InputError as e:
            rows.append({"context": c, "error": str(e)})
            continue
        kv_total = r.hbm_bytes["kv"] + sum(b for k, b in r.placement.get("kv", {}).items() if k != "hbm")
        rows.append({"context": c, "kv_bytes": kv_total, "kv_in_hbm": r.hbm_bytes["kv"],
                     "kv_swapped": kv_total - r.hbm_bytes["kv"], "overflows": kv_total > r.hbm_bytes["kv"] + 1,
                     "gpu_step_ms": r.decode.gpu_ms, "step_ms": r.decode.step_ms,
                     "slowdown": r.decode.step_ms / (r.decode.gpu_ms + r.decode.host_ms), "bound": r.decode.bound,
                     "overflow_context": r.kv_overflow_context})
    return rows


def cpu_bound_crossover(model, system, isl: float, *, phase: str = "prefill", precision: str = "bf16",
                        max_batch: int = 4096, cpu_launch_us: float | None = None,
                        db: Database | None = None) -> int | None:
    """Smallest batch at which an eager step is GPU-bound (GPU time >= kernels x launch cost)."""
    db = db or load_database()
    b = 1
    while b <= max_batch:
        r = estimate_offload_inference(model, system, isl, 1, batch=b, precision=precision, eager=True,
                                       cpu_launch_us=cpu_launch_us, db=db)
        p = r.prefill if phase == "prefill" else r.decode
        if p.gpu_ms >= p.cpu_launch_ms:
            lo, hi = b // 2 + 1, b
            while lo < hi:  # bisect between the last CPU-bound power of two and this one
                mid = (lo + hi) // 2
                r = estimate_offload_inference(model, system, isl, 1, batch=mid, precision=precision, eager=True,
                                               cpu_launch_us=cpu_launch_us, db=db)
                p = r.prefill if phase == "prefill" else r.decode
                if p.gpu_ms >= p.cpu_launch_ms:
                    hi = mid
                else:
                    lo = mid + 1
            return lo
        b *= 2
    return None
