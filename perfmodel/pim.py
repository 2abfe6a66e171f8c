"""Decode attention (and, Duplex-style, small-batch MoE experts) offloaded to processing-in-memory.

A decode step's attention is a GEMV over the KV cache: ``4 a d`` FLOPs per context token per query head
against ``2 k d`` cached elements, so its arithmetic intensity is ``2 (a/k) / kv_bytes`` FLOP/B -- the GQA
group size ``a/k`` at 16-bit KV (1 for MHA, 8 for Llama-3-70B). A GPU runs it at HBM bandwidth; a PIM
device runs it at its internal (bank-level) bandwidth and its own compute:

    t_pim = max(bytes / (n x internal_bw), flops / (n x units x compute_per_unit))

with the figures of the PIM tier in the database (``hbm-pim``: Samsung Aquabolt-XL, 1228.8 GB/s and
1228.8 GFLOP/s per stack, a 1 FLOP/B ridge; ``aim-gddr6``: SK hynix AiM, 512 GB/s and 1024 GFLOP/s per
chip, a 2 FLOP/B ridge). Above its ridge a PIM device is compute-bound, which is why GQA erodes its gain.

Number of PIM devices ``n`` (ASSUMPTION, stated in every result):

* HBM-PIM: the GPU's HBM stacks are PIM-enabled stacks, one PIM device per stack (``HBM_STACKS``, from
  the vendors' memory configurations), keeping the GPU's capacity (the KV cache must fit HBM as usual);
* other PIM tiers (GDDR6-AiM chips): as many chips as hold the KV cache (its capacity per chip), at least 1;
* ``pim_devices=`` overrides either.

Schedules (NeuPIMs, Heo et al., ASPLOS 2024, arXiv 2403.00579): with ``sub_batches = 1`` PIM runs in the
classic blocked mode, so the step is ``GEMM + attention_PIM``. With ``S >= 2`` sub-batches the GPU runs
the GEMMs of one sub-batch while PIM runs the attention of another (NeuPIMs' dual row buffers make the two
concurrent): ``step = max(sum_s GEMM(B/S), sum_s ATT(B/S)) + min(GEMM(B/S), ATT(B/S)) / L`` -- the last
term is the pipeline fill (one layer of one sub-batch of the shorter side). Splitting the batch has a
cost the model keeps: each sub-batch re-reads the weights, so ``sum_s GEMM(B/S) >= GEMM(B)``. The GPU-alone
baseline is perfmodel's roofline step ``GEMM(B) + ATT_HBM(B)``. NeuPIMs reports up to 3x throughput over
GPU-only and 1.6x over naive (blocked) NPU+PIM for GPT-3 (MHA, so Op/B ~ 1).

Logic-PIM (Duplex, Yun et al., MICRO 2024, arXiv 2409.01141): processing units on the HBM logic die fed by
extra TSVs, targeting Op/B from ~1 to a few dozen (GQA attention at 4-8, MoE experts at small batch).
``pim_tier_id="logic-pim"`` builds such a device per HBM stack from the GPU itself. The paper's absolute
figures were not read, so its two parameters are ASSUMPTIONS: internal bandwidth =
``LOGIC_PIM_BW_MULT`` x the stack's external bandwidth, compute = ``LOGIC_PIM_FLOP_PER_BYTE`` x that
bandwidth. Duplex reports up to 2.67x throughput over an H100-class GPU on MoE + GQA models.
With ``experts=True`` (Duplex's expert/attention co-processing) an MoE layer's expert GEMMs also move to
PIM when that is faster than the GPU (Duplex picks the processor by Op/B).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from .engines import get_engine
from .errors import InputError
from .hardware import TierType
from .inference import ACT_BYTES, _Ctx
from .memory import plan_memory
from .models import ModelArch, get_model
from .ops import Shard, check_precision, check_shard
from .specdb import Database, SystemRef, load_database

# HBM stacks per GPU package (populated/active): H100 SXM5/PCIe and A100 expose 5 of 6 sites (NVIDIA
# H100 and A100 whitepapers: 80 GB = 5 x 16 GB); H200, H100 NVL, GH200 use all 6; B200/GB200 and
# MI300X/MI325X/MI355X have 8 (NVIDIA Blackwell and AMD CDNA 3/4 whitepapers).
HBM_STACKS = {"h100-sxm": 5, "h100-pcie": 5, "h800-sxm": 5, "a100-sxm-80gb": 5, "a100-pcie-80gb": 5,
              "a100-sxm-40gb": 5, "h100-nvl": 6, "h200-sxm": 6, "gh200-96gb": 6, "gh200-144gb": 6,
              "b200": 8, "gb200": 8, "gb300": 8, "mi300x": 8, "mi325x": 8, "mi355x": 8, "mi250x": 8,
              "mi250x-gcd": 4, "gaudi2": 6, "gaudi3": 8}
LOGIC_PIM_BW_MULT = 4.0  # ASSUMPTION: Duplex's extra TSVs give ~4x a stack's external bandwidth
LOGIC_PIM_FLOP_PER_BYTE = 16.0  # ASSUMPTION: ridge mid-way in Duplex's "a few to a few dozen" Op/B target


class PimDevice(BaseModel):
    id: str
    devices: int
    internal_gbps_per_device: float
    gflops_per_device: float
    ridge_flop_per_byte: float
    assumption: str


class PimResult(BaseModel):
    model: str
    system: str
    device: str
    pim: PimDevice
    batch: int
    isl: float
    osl: float
    context: float = Field(description="mean context of a decode step (isl + osl/2)")
    kv_heads: int
    gqa_group: float
    attention_flop_per_byte: float
    sub_batches: int
    gpu_gemm_ms: float = Field(description="everything but attention on the GPU, whole batch")
    gpu_attention_ms: float = Field(description="attention on the GPU over HBM, whole batch")
    gpu_step_ms: float
    pim_attention_ms: float
    pim_attention_bound: str
    gemm_sub_batched_ms: float = Field(description="sum over sub-batches of the GPU GEMM time")
    experts_on_pim: bool
    pim_experts_ms: float = 0.0
    pipeline_fill_ms: float
    blocked_step_ms: float = Field(description="GEMM + PIM attention, no overlap (classic blocked PIM)")
    interleaved_step_ms: float = Field(description="NeuPIMs sub-batch interleaving")
    schedule: str = Field(description="the faster of blocked and interleaved, which pim_step_ms reports")
    pim_step_ms: float
    speedup: float
    tokens_per_s_gpu: float
    tokens_per_s_pim: float
    assumptions: list[str] = Field(default_factory=list)


def _stacks(acc_id: str, memory_gb: float) -> tuple[int, str]:
    if acc_id in HBM_STACKS:
        return HBM_STACKS[acc_id], f"{acc_id}: {HBM_STACKS[acc_id]} HBM stacks"
    n = max(1, math.ceil(memory_gb / 16))
    return n, f"{acc_id}: HBM stack count unknown; assumed {n} (16 GB per stack)"


def pim_device(db: Database, ref: SystemRef, pim_tier_id: str, kv_bytes_total: float,
               pim_devices: int | None = None) -> PimDevice:
    """The PIM devices one GPU drives, with the per-device figures and the count assumption."""
    acc = ref.accelerator
    if pim_tier_id == "logic-pim":
        n, why = _stacks(acc.id, acc.memory_gb.value)
        ext = acc.memory_bandwidth_gbps.value / n
        bw = LOGIC_PIM_BW_MULT * ext
        n = pim_devices or n
        return PimDevice(id="logic-pim", devices=n, internal_gbps_per_device=bw,
                         gflops_per_device=bw * LOGIC_PIM_FLOP_PER_BYTE, ridge_flop_per_byte=LOGIC_PIM_FLOP_PER_BYTE,
                         assumption=f"Logic-PIM (Duplex) per HBM stack, {why}: internal bandwidth "
                                    f"{LOGIC_PIM_BW_MULT:g} x {ext:.0f} GB/s external (assumed), compute "
                                    f"{LOGIC_PIM_FLOP_PER_BYTE:g} FLOP/B x that (assumed)")
    tier = db.tier(pim_tier_id)
    if tier.tier_type != TierType.pim or tier.pim is None:
        raise InputError(f"--pim {pim_tier_id}: is a {tier.tier_type.value} tier, expected a pim tier "
                         f"(hbm-pim, aim-gddr6, or logic-pim)")
    p = tier.pim
    bw = p.internal_bandwidth_gbps.value
    fl = p.units.value * p.compute_per_unit_gflops.value
    if pim_devices:
        n, why = pim_devices, f"{pim_devices} {tier.id} devices (given)"
    elif "hbm" in tier.technology.lower() or tier.id.startswith("hbm"):
        n, why = _stacks(acc.id, acc.memory_gb.value)
        why = f"one {tier.id} device per HBM stack of the GPU ({why}); the stacks keep the GPU's capacity"
    else:
        n = max(1, math.ceil(kv_bytes_total / (tier.capacity_gb.value * 1e9)))
        why = f"{n} {tier.id} chips: as many as hold the KV cache ({tier.capacity_gb.value:g} GB each)"
    return PimDevice(id=tier.id, devices=n, internal_gbps_per_device=bw, gflops_per_device=fl,
                     ridge_flop_per_byte=fl / bw, assumption=why)


def _split(ctx: _Ctx, seqs: float, context: float) -> tuple[float, float, float, float, float, float]:
    """GPU decode step for ``seqs`` sequences: (non-attention s, attention s, attention flops, attention
    bytes, expert GEMM s, expert weight bytes + flops-as-tuple) on one GPU."""
    cost = ctx.step("decode", seqs, seqs, context, seqs)
    att_t = sum(r.time_us * r.count for r in cost.rows if r.kind == "attention") * 1e-6
    att_f = sum(r.flops * r.count for r in cost.rows if r.kind == "attention")
    att_b = sum(r.bytes * r.count for r in cost.rows if r.kind == "attention")
    exp_rows = [r for r in cost.rows if r.name in ("experts_up", "experts_down", "experts_act")]
    exp_t = sum(r.time_us * r.count for r in exp_rows) * 1e-6
    exp_b = sum(r.bytes * r.count for r in exp_rows)
    exp_f = sum(r.flops * r.count for r in exp_rows)
    return cost.time_s - att_t, att_t, att_f, att_b, exp_t, (exp_b, exp_f)


def estimate_pim_attention(model: str | dict | ModelArch, system: str | SystemRef, pim_tier_id: str,
                           isl: float, osl: float, batch: int, precision: str = "bf16",
                           kv_precision: str | None = None, sub_batches: int = 2, db: Database | None = None,
                           *, experts: bool = False, pim_devices: int | None = None,
                           check_capacity: bool = True) -> PimResult:
    """Decode step with attention on PIM (NeuPIMs sub-batch interleaving) vs the GPU alone."""
    db = db or load_database()
    arch = get_model(model)
    precision = check_precision(precision)
    kv_precision = check_precision(kv_precision or precision, "--kv-precision")
    if batch < 1:
        raise InputError(f"--batch: expected a positive number of sequences, got {batch}")
    if sub_batches < 1 or sub_batches > batch:
        raise InputError(f"--sub-batches {sub_batches}: expected 1..batch ({batch})")
    if isl <= 0 or osl <= 0:
        raise InputError(f"--isl/--osl: expected positive token counts (got {isl}, {osl})")
    if arch.is_mla:
        raise InputError(f"--pim: {arch.id} uses MLA (absorbed latent attention, Op/B ~ heads); only GQA/MHA "
                         f"decode attention is modelled on PIM")
    if experts and not arch.is_moe:
        raise InputError(f"--pim experts: {arch.id} has no experts")
    shard = Shard(tp=1)
    check_shard(arch, shard)
    ref0 = db.resolve_system(system) if isinstance(system, str) else system
    ref = SystemRef(ref0.system, ref0.accelerator, 1)
    ctx = _Ctx(db, ref, arch, shard, 1, precision, kv_precision)
    eng = get_engine(None)
    mem = plan_memory(arch, shard, 1, ref.accelerator.usable_memory_gb, eng, ctx.w_bytes, ctx.kv_bytes, ACT_BYTES,
                      isl + osl)
    if check_capacity and batch > mem.max_sequences:
        raise InputError(f"--batch {batch}: only {max(mem.max_sequences, 0)} sequences of {int(isl + osl)} tokens fit "
                         f"the KV cache of one {ref.accelerator.id} (PIM computes in place; the cache must fit)")
    kv_total = batch * mem.kv_per_sequence
    dev = pim_device(db, ref, pim_tier_id, kv_total, pim_devices)
    context = isl + osl / 2
    L = arch.layers

    gemm_all, att_all, att_f, att_b, exp_t_all, (exp_b_all, exp_f_all) = _split(ctx, batch, context)
    gpu_step = gemm_all + att_all
    bw = dev.devices * dev.internal_gbps_per_device * 1e9
    fl = dev.devices * dev.gflops_per_device * 1e9

    def pim_time(nbytes: float, flops: float) -> tuple[float, str]:
        tb, tc = nbytes / bw, flops / fl
        return max(tb, tc), ("bandwidth" if tb >= tc else "compute")

    S = sub_batches
    sizes = [batch // S + (1 if i < batch % S else 0) for i in range(S)]
    gemm_sum = att_sum = 0.0
    exp_pim_sum = 0.0
    stage_g, stage_a = [], []
    use_exp = False
    for s in sizes:
        g, _, f, b, et, (eb, ef) = _split(ctx, s, context)
        a, _ = pim_time(b, f)
        if experts:
            ep, _ = pim_time(eb, ef)
            if ep < et:  # Duplex: run the experts where their Op/B runs fastest
                use_exp = True
                g -= et
                a += ep
                exp_pim_sum += ep
        gemm_sum += g
        att_sum += a
        stage_g.append(g)
        stage_a.append(a)
    att_pim, bound = pim_time(att_b, att_f)
    # blocked (one batch, PIM and GPU take turns) with the same per-op choice, for comparison
    g1, _, f1, b1, et1, (eb1, ef1) = _split(ctx, batch, context)
    a1, _ = pim_time(b1, f1)
    if use_exp:
        ep1, _ = pim_time(eb1, ef1)
        g1, a1 = g1 - et1, a1 + ep1
    blocked = g1 + a1
    if S == 1:
        fill = 0.0
        interleaved = blocked
    else:
        fill = min(max(stage_g), max(stage_a)) / L
        interleaved = max(gemm_sum, att_sum) + fill
    # a runtime interleaves only when that is faster (splitting re-reads the weights per sub-batch)
    schedule = "interleaved" if S > 1 and interleaved < blocked else "blocked"
    step = min(blocked, interleaved)
    opb = att_f / att_b if att_b else 0.0
    assumptions = [dev.assumption]
    if dev.id == "logic-pim":
        assumptions.append(f"logic_pim_bw_mult = {LOGIC_PIM_BW_MULT:g}, logic_pim_flop_per_byte = "
                           f"{LOGIC_PIM_FLOP_PER_BYTE:g} (assumed; Duplex's figures not read)")
    assumptions.append("no GPU<->PIM transfer of q or the attention output (PIM is the GPU's own memory)")
    return PimResult(
        model=arch.id, system=ref.system.id, device=ref.accelerator.id, pim=dev, batch=batch, isl=isl, osl=osl,
        context=context, kv_heads=arch.n_kv_heads, gqa_group=arch.heads / arch.n_kv_heads,
        attention_flop_per_byte=opb, sub_batches=S, gpu_gemm_ms=gemm_all * 1e3, gpu_attention_ms=att_all * 1e3,
        gpu_step_ms=gpu_step * 1e3, pim_attention_ms=att_pim * 1e3, pim_attention_bound=bound,
        gemm_sub_batched_ms=gemm_sum * 1e3, experts_on_pim=use_exp, pim_experts_ms=exp_pim_sum * 1e3,
        pipeline_fill_ms=fill * 1e3, blocked_step_ms=blocked * 1e3, interleaved_step_ms=interleaved * 1e3,
        schedule=schedule, pim_step_ms=step * 1e3, speedup=gpu_step / step,
        tokens_per_s_gpu=batch / gpu_step, tokens_per_s_pim=batch / step, assumptions=assumptions)


def pim_sweep(model, system, pim_tier_id: str, *, vary: str, values, isl: float = 2048, osl: float = 256,
              batch: int = 32, kv_heads: int | None = None, precision: str = "bf16", sub_batches: int = 2,
              experts: bool = False, db: Database | None = None) -> list[tuple[float, float]]:
    """(value, speedup) as ``batch``, ``kv_heads`` or ``context`` (isl) varies; the rest held fixed.
    Capacity is not checked, so a sweep can run past what fits (a what-if)."""
    db = db or load_database()
    arch = get_model(model)
    if vary not in ("batch", "kv_heads", "context"):
        raise InputError(f"pim_sweep vary: expected batch, kv_heads or context (got '{vary}')")
    out = []
    for v in values:
        a, b, i = arch, batch, isl
        if kv_heads is not None:
            a = a.model_copy(update={"kv_heads": kv_heads})
        if vary == "batch":
            b = int(v)
        elif vary == "kv_heads":
            a = a.model_copy(update={"kv_heads": int(v)})
        else:
            i = float(v)
        r = estimate_pim_attention(a, system, pim_tier_id, i, osl, b, precision, sub_batches=min(sub_batches, b),
                                   db=db, experts=experts, check_capacity=False)
        out.append((v, r.speedup))
    return out


def pim_crossover_batch(model, system, pim_tier_id: str, *, isl: float = 2048, osl: float = 256,
                        kv_heads: int | None = None, precision: str = "bf16", sub_batches: int = 2,
                        max_batch: int = 4096, experts: bool = False, threshold: float = 1.0,
                        db: Database | None = None) -> int | None:
    """Smallest batch (powers of two, then bisected) at which the speedup falls to ``threshold`` or below
    (1.0: PIM no longer helps); None if it stays above up to ``max_batch``, 1 if it never is above."""
    db = db or load_database()

    def sp(b: int) -> float:
        return pim_sweep(model, system, pim_tier_id, vary="batch", values=[b], isl=isl, osl=osl, kv_heads=kv_heads,
                         precision=precision, sub_batches=sub_batches, experts=experts, db=db)[0][1]

    b, prev = 1, 0
    while b <= max_batch:
        if sp(b) <= threshold:
            if prev == 0:
                return 1
            lo, hi = prev + 1, b
            while lo < hi:
                mid = (lo + hi) // 2
                if sp(mid) <= threshold:
                    hi = mid
                else:
                    lo = mid + 1
            return lo
        prev, b = b, b * 2
    return None
