"""Serving estimates: prefill and decode steps on the roofline and comm models, then the scenario on top.

A step is a list of operators (``ops``), each timed by ``roofline`` (GEMMs, attention, memory-bound
kernels) or ``comm`` (TP all-reduce, EP all-to-all, PP send/recv) on the system's real links.

Scenarios (one instance = tp x pp GPUs; ``dp`` instances serve in parallel). A pipeline of pp stages runs
its sequences as pp micro-batches: every stage holds the KV cache of every sequence for its own layers,
each sequence gains a token each time one micro-batch has passed through the whole model, and pp prompt
chunks are in flight at once, so a prompt occupies the instance for ``p / pp`` (TensorRT-LLM's runtime
splits the batch into micro-batches the same way; its ``max_batch_size`` bounds each of them).

* **offline** (max load): continuous batching at the largest concurrency C that memory and the engine
  allow. C requests cost ``osl x t_decode(C) + C x p / pp`` of instance time, so
  ``output tokens/s = C osl / (osl t_decode(C) + C p / pp)``: decode and prefill share the GPU.
* **offline burst** (``requests``): that many requests issued at once, as serving benchmarks do at
  "QPS = inf"; ``burst.simulate_burst`` runs the engine's iterations to the last token, so TTFT, TPOT
  and latency are means over the requests and throughput includes ramp-up and drain.
* **server** (Poisson arrivals at ``rate``): concurrency follows Little's law ``C = rate x e2e``, solved
  as a fixed point. Prefill occupies a share ``rho = rate x p`` of the instance, stretching TPOT by
  ``1/(1 - rho)``; TTFT adds an M/G/1 queueing wait ``rho p (1 + cv^2) / (2 (1 - rho))`` (cv: the prompt
  lengths' coefficient of variation, 0 for fixed prompts), and its tail uses the
  exponential approximation ``P(W > t) = rho exp(-t rho / E[W])``. A request's TPOT is the decode step
  plus the prompts that arrive while it decodes, a Poisson count with mean ``rate x osl x TPOT``, each
  costing ``p / osl`` per token; its 99th percentile is that count's. SLO attainment is the share of
  requests meeting both SLOs under these approximations; the reported capacity is the largest rate whose
  p99 TTFT and p99 TPOT meet the SLOs (MLPerf's server rule).
* **disaggregated** (``prefill_gpus``, ``decode_gpus``): prefill and decode run on separate instances;
  the KV cache of each request crosses the system's links (scale-up within a domain, else the NICs).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.special import pdtrc
from scipy.stats import poisson
from pydantic import BaseModel, ConfigDict, Field

from .burst import BurstResult, drain_time_s, simulate_burst, spread_outputs
from .comm import collective_time
from .engines import get_engine, tune
from .errors import InputError
from .lengths import Lengths
from .memory import MemoryPlan, kv_bytes_per_token, plan_memory
from .models import ModelArch, get_model
from .ops import (WEIGHT_BYTES, Op, Shard, check_precision, check_shard, compute_dtype, head_ops, layer_ops)
from .roofline import DeviceRates, attention_time, device_rates, fallback_notes, gemm_time, memory_time
from .specdb import Database, SystemRef, load_database

ACT_BYTES = 2.0
# Power model: P = P_idle + (TDP - P_idle) x activity. Idle share of TDP assumed 0.3 (an H100 SXM idles
# near 70-100 W of 700 W in nvidia-smi; loaded decode draws well under TDP, as Patel et al. 2024,
# "Characterizing Power Management Opportunities for LLMs in the Cloud" (POLCA), report).
IDLE_POWER_SHARE = 0.3


class OpRow(BaseModel):
    """One operator of a step as the breakdown shows it."""

    model_config = ConfigDict(frozen=True)
    phase: str
    name: str
    kind: str
    count: float
    flops: float
    bytes: float
    intensity: float = Field(description="FLOPs per byte moved")
    time_us: float
    bound: str


class InferenceResult(BaseModel):
    """A serving estimate: latency, throughput, memory, cost, energy, and where the time goes."""

    model: str
    system: str
    device: str
    gpus: int
    tp: int
    pp: int
    ep: int
    dp: int
    attention_dp: bool
    precision: str
    kv_precision: str
    scenario: str
    engine: str
    isl: float
    osl: float
    batch: int = Field(description="concurrent sequences per instance")
    max_batch_fits: int
    ttft_ms: float
    tpot_ms: float
    e2e_latency_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    total_tokens_per_s_per_gpu: float
    prefill_step_ms: float
    prefill_ms_per_request: float = Field(description="one request's prefill through the whole model, batched in "
                                                      "chunks (a pipeline of pp stages overlaps pp of them)")
    decode_step_ms: float
    memory_per_gpu_bytes: dict[str, float]
    memory_capacity_bytes: float
    bound: dict[str, str]
    time_share: dict[str, dict[str, float]]
    cost_per_million_output_tokens_usd: float | None
    energy_per_output_token_j: float | None
    power_per_gpu_w: float | None
    slo_attainment: float | None = None
    ttft_p99_ms: float | None = None  # server scenario: M/G/1 tail of the prefill queue
    tpot_p99_ms: float | None = None  # server scenario: Poisson count of prompts interleaved in a request's decode
    max_rate_within_slo: float | None = None
    rate: float | None = None
    kv_transfer_ms: float | None = None
    requests: int | None = None  # offline burst size (all issued at once)
    burst_makespan_s: float | None = None  # time to the burst's last token
    drain_s: float | None = None  # server scenario: time for the in-flight requests to finish once arrivals stop
    breakdown: list[OpRow] = Field(default_factory=list)
    assumptions: list[str] = Field(default_factory=list)


@dataclass(slots=True)
class _Row:
    """A breakdown row before it becomes an OpRow (pydantic) in the result; cheap to make in searches."""

    phase: str
    name: str
    kind: str
    count: float
    flops: float
    bytes: float
    time_us: float
    bound: str

    def to_model(self) -> OpRow:
        return OpRow(phase=self.phase, name=self.name, kind=self.kind, count=self.count, flops=self.flops,
                     bytes=self.bytes, intensity=self.flops / self.bytes if self.bytes else 0.0,
                     time_us=self.time_us, bound=self.bound)


@dataclass
class StepCost:
    time_s: float
    rows: list[_Row]
    busy_share: float  # share of step time the device is compute- or bandwidth-busy (for power)

    def share(self) -> dict[str, float]:
        tot = sum(r.time_us * r.count for r in self.rows) or 1.0
        out: dict[str, float] = {}
        for r in self.rows:
            out[r.bound] = out.get(r.bound, 0.0) + r.time_us * r.count / tot
        return out

    @property
    def bound(self) -> str:
        sh = self.share()
        return max(sh, key=sh.get) if sh else "latency"


class _Ctx:
    """What every step evaluation needs, resolved once per estimate."""

    def __init__(self, db: Database, ref: SystemRef, model: ModelArch, shard: Shard, pp: int, precision: str,
                 kv_precision: str, host_s: float = 0.0):
        self.db, self.ref, self.model, self.shard, self.pp = db, ref, model, shard, pp
        self.host_s = host_s  # the engine's per-iteration host time (Engine.host_overhead_s)
        self.rates: DeviceRates = device_rates(ref.accelerator)
        self.w_bytes = WEIGHT_BYTES[precision]
        self.kv_bytes = WEIGHT_BYTES[kv_precision] if kv_precision not in ("fp4", "nvfp4", "mxfp4") else 0.5
        self.dtype = compute_dtype(precision)
        # FP8-quantized weights with an FP8 KV cache: engines run the prefill attention in FP8
        # (TensorRT-LLM's trtllm-bench builds with use_fp8_context_fmha; vLLM's FlashAttention-3 backend
        # quantizes Q and attends in FP8 when the KV cache is FP8)
        self.prefill_attn_dtype = "fp8" if (kv_precision == "fp8" and self.dtype in ("fp8", "fp4")
                                            and "fp8" in self.rates.peaks) else "bf16"
        if self.dtype not in self.rates.peaks:
            raise InputError(f"--precision {precision}: {ref.accelerator.id} has no {self.dtype} peak")
        self._comm_cache: dict[tuple, float] = {}

    def comm(self, op: Op) -> float:
        key = (op.collective, round(op.nbytes), op.group)
        if key not in self._comm_cache:
            res = collective_time(self.db, self.ref.system, op.collective, op.nbytes, op.group)
            self._comm_cache[key] = float(res.time_s[0])
        return self._comm_cache[key]

    def time_ops(self, ops: list[Op], count: float, phase: str, rows: list[_Row]) -> tuple[float, float]:
        """Sum of op times x count; appends breakdown rows. Returns (time, busy time)."""
        total = busy = 0.0
        r = self.rates
        for op in ops:
            n = op.count * count
            if op.kind == "gemm":
                dt = op.gemm_dtype(self.dtype)
                t, fl, by, tc, tm = gemm_time(r, op.m, op.n, op.k, dt, ACT_BYTES if dt in ("bf16", "fp16") else 1.0,
                                              op.w_bytes, ACT_BYTES, op.groups, op.grouped)
                t, fl, by, tc, tm = float(t), float(fl), float(by), float(tc), float(tm)
                floor = r.floor_s
            elif op.kind == "attention":
                dt = self.prefill_attn_dtype if phase == "prefill" else "bf16"
                gbps = r.decode_kv_gbps(self.kv_bytes) if phase == "decode" else None
                t, tc, tm = (float(x) for x in attention_time(r, op.flops, op.nbytes, op.tiles, dt, keys=op.keys,
                                                              gbps=gbps))
                fl, by, floor = op.flops, op.nbytes, r.floor_s
            elif op.kind == "memory":
                t, tm = (float(x) for x in memory_time(r, op.nbytes))
                tc, fl, by, floor = 0.0, 0.0, op.nbytes, r.floor_s
            else:
                t = self.comm(op)
                tc = tm = 0.0
                fl, by, floor = 0.0, op.nbytes, 0.0
            if op.kind == "comm":
                bound = "communication"
            elif floor >= max(tc, tm):
                bound = "latency"
            else:
                bound = "compute" if tc >= tm else "memory"
            total += t * n
            busy += max(tc, tm) * n
            rows.append(_Row(phase, op.name, op.kind, n, fl, by, t * 1e6, bound))
        return total, busy

    @property
    def attn_ranks(self) -> int:
        """Ranks that each hold their own sequences: the TP group under attention-DP, else one."""
        return self.shard.width if self.shard.attention_dp else 1

    def step(self, phase: str, seqs: float, tokens: float, ctx: float, logits_rows: float) -> StepCost:
        """One forward step over the instance's ``seqs`` sequences, summed over all pipeline stages' layers.

        Under attention-DP each rank runs its own share of the sequences; the experts see all of them.
        """
        m = self.model
        r = self.attn_ranks
        seqs, tokens, logits_rows = seqs / r, tokens / r, logits_rows / r
        rows: list[_Row] = []
        window = m.sliding_window
        total = busy = 0.0
        kinds = []
        if m.dense_mlp_layers:
            kinds.append((False, m.dense_mlp_layers))
        if m.moe_layers:
            kinds.append((True, m.moe_layers))
        for moe, n_layers in kinds:
            full, swa = n_layers, 0
            if window:
                swa_total = m.sliding_window_layers if m.sliding_window_layers is not None else m.layers
                swa = round(swa_total * n_layers / m.layers)
                full = n_layers - swa
            for count, win in ((full, None), (swa, window)):
                if count <= 0:
                    continue
                ops = layer_ops(m, self.shard, tokens, seqs, ctx, phase, ACT_BYTES, self.w_bytes, self.kv_bytes,
                                moe, win)
                t, b = self.time_ops(ops, count, phase, rows)
                total, busy = total + t, busy + b
        t, b = self.time_ops(head_ops(m, self.shard, tokens, logits_rows, ACT_BYTES, 2.0), 1, phase, rows)
        total, busy = total + t, busy + b
        if self.pp > 1:
            send = Op("pp_send_recv", "comm", collective="send_recv", nbytes=tokens * m.hidden * ACT_BYTES, group=2)
            t, _ = self.time_ops([send], self.pp - 1, phase, rows)
            total += t
        if self.host_s > 0:
            rows.append(_Row(phase, "host_overhead", "host", 1, 0.0, 0.0, self.host_s * 1e6, "host"))
            total += self.host_s
        return StepCost(total, rows, busy / total if total else 0.0)


def _resolve(db, system, gpus, width, pp, dp):
    ref = db.resolve_system(system) if isinstance(system, str) else system
    tp = width
    inst = width * pp
    total = gpus
    if total is None and isinstance(system, str) and re.fullmatch(r"\s*\d+\s*[x×*]\s*\S+\s*", system):
        total = ref.gpus
    if dp is None:
        dp = max((total or inst) // inst, 1)
    if dp < 1:
        raise InputError(f"--dp: expected a positive number of replicas, got {dp}")
    if total is not None and total != inst * dp:
        raise InputError(f"--gpus {total}: does not equal instance GPUs x pp x dp = {tp} x {pp} x {dp}")
    n = inst * dp
    ref = SystemRef(ref.system, ref.accelerator, n)
    return ref, dp


def estimate_inference(
    model: str | dict | ModelArch,
    system: str | SystemRef,
    isl: float,
    osl: float,
    *,
    gpus: int | None = None,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    dp: int | None = None,
    attention_dp: bool = False,
    precision: str = "bf16",
    kv_precision: str | None = None,
    batch: int | None = None,
    scenario: str = "offline",
    rate: float | None = None,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
    requests: int | None = None,
    prefill_gpus: int | None = None,
    decode_gpus: int | None = None,
    engine: str | None = None,
    chunk_tokens: int | None = None,
    isl_std: float = 0.0,
    osl_std: float = 0.0,
    isl_osl_corr: float = 0.0,
    osl_quantiles: tuple[float, ...] = (),
    breakdown: bool = True,
    db: Database | None = None,
    specs: tuple[str, ...] = (),
) -> InferenceResult:
    """Predict serving latency and throughput for a model on a system under a plan and workload.

    ``isl``/``osl`` are mean lengths; ``isl_std``, ``osl_std`` and ``isl_osl_corr`` describe how they vary
    across requests. Decode steps then see the length-biased context of :mod:`perfmodel.lengths` (long
    outputs stay in the batch longer), prompts queue as M/G/1, and a finite burst gives each request its own
    output length; prefill projections and MLPs use the mean prompt, its attention the second moment
    (``Lengths.prompt_attention_length``). ``osl_quantiles`` (equal-weight quantiles of the
    output length, rescaled to ``osl``; a gamma of ``osl_std`` otherwise) make the server scenario's p99
    TPOT a tail over requests of every length: a short answer that meets another prompt's prefill has a
    long TPOT."""
    db = db or load_database(specs)
    arch = get_model(model)
    precision = check_precision(precision)
    kv_precision = check_precision(kv_precision or ("fp8" if precision in ("fp4", "nvfp4", "mxfp4") else precision),
                                   "--kv-precision")
    lengths = Lengths(isl, osl, isl_std, osl_std, isl_osl_corr, tuple(osl_quantiles))
    if scenario not in ("offline", "server"):
        raise InputError(f"--scenario: expected offline or server (got '{scenario}')")
    for flag, v in (("--rate", rate), ("--slo-ttft-ms", slo_ttft_ms), ("--slo-tpot-ms", slo_tpot_ms)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"{flag}: expected a positive finite number, got {v}")
    if scenario == "server" and (rate is None or rate <= 0) and not (slo_ttft_ms or slo_tpot_ms):
        raise InputError("--rate: the server scenario needs a positive request rate, or SLOs to find one")
    if requests is not None and requests < 1:
        raise InputError(f"--requests: expected a positive number of requests, got {requests}")
    if requests is not None and scenario != "offline":
        raise InputError("--requests: a burst of requests is an offline run; drop --scenario server or --requests")
    if batch is not None and batch < 1:
        raise InputError(f"--batch: expected a positive number of sequences, got {batch}")
    for flag, v in (("--tp", tp), ("--pp", pp), ("--ep", ep)):
        if v < 1:
            raise InputError(f"{flag}: expected a positive degree, got {v}")
    shard = Shard(tp=tp, ep=ep, attention_dp=attention_dp)
    check_shard(arch, shard)
    if arch.layers % pp and pp > arch.layers:
        raise InputError(f"--pp {pp}: more stages than layers ({arch.layers})")
    eng = get_engine(engine)
    if chunk_tokens is not None and chunk_tokens < 1:
        raise InputError(f"--chunk-tokens: expected a positive token budget, got {chunk_tokens}")
    disagg = prefill_gpus is not None or decode_gpus is not None
    if disagg:
        if not prefill_gpus or not decode_gpus:
            raise InputError("--prefill-gpus/--decode-gpus: give both for disaggregated serving")
        for flag, v in (("--prefill-gpus", prefill_gpus), ("--decode-gpus", decode_gpus)):
            if v % (shard.width * pp):
                raise InputError(f"{flag} {v}: must be a multiple of the instance size {shard.width * pp}")
        gpus = prefill_gpus + decode_gpus
        dp = gpus // (shard.width * pp)
    ref, dp = _resolve(db, system, gpus, shard.width, pp, dp)
    ctx = _Ctx(db, ref, arch, shard, pp, precision, kv_precision, eng.host_overhead_s)
    acc = ref.accelerator
    assumptions = fallback_notes(ctx.rates, ctx.dtype)
    if eng.host_overhead_s and "host_overhead_s" not in eng.pinned:
        assumptions.append(f"{eng.name}: {eng.host_overhead_s * 1e3:g} ms of executor host time per iteration "
                           "(TensorRT-LLM's, measured at light load; host_overhead_ms=N to change it)")
    if lengths.varies:
        assumptions.append(f"request lengths vary: decode steps see a mean context of {lengths.decode_context:,.0f} "
                           f"tokens (fixed lengths: {isl + osl / 2:,.0f}) and sequences of {lengths.final_context:,.0f}")
    eng = tune(eng, arch.params_total, kv_bytes_per_token(arch, shard, 1, ctx.kv_bytes) * shard.attn_tp,
               acc.usable_memory_gb * 1e9 * shard.width * pp, ctx.w_bytes, isl, osl, pp)
    if chunk_tokens is not None:
        eng = dataclasses.replace(eng, max_num_tokens=int(chunk_tokens))

    seq_tokens = lengths.final_context
    mem = plan_memory(arch, shard, pp, acc.usable_memory_gb, eng, ctx.w_bytes, ctx.kv_bytes, ACT_BYTES, seq_tokens)
    _check_fit(mem, arch, acc.id, tp, pp)
    # every pipeline stage holds the KV of every sequence for its own layers (mem.max_sequences is per stage);
    # the engine's batch limit applies to each of the pp micro-batches
    cap = min(mem.max_sequences * ctx.attn_ranks, eng.max_batch * pp * ctx.attn_ranks)
    if requests is not None:
        cap = min(cap, max(math.ceil(requests / dp), 1))
    if batch is not None:
        if batch > mem.max_sequences * ctx.attn_ranks:
            raise InputError(
                f"--batch {batch}: only {mem.max_sequences * ctx.attn_ranks} sequences of {int(seq_tokens)} tokens fit per "
                f"instance ({_gib(mem.kv_budget)} GiB for KV cache after weights and activations)")
        cap = batch

    # prefill work per request, in engine-sized chunks
    chunk_seqs = max(1, int(eng.max_num_tokens // isl)) * ctx.attn_ranks
    attn_len = lengths.prompt_attention_length
    pre = ctx.step("prefill", chunk_seqs, chunk_seqs * isl, attn_len, chunk_seqs)
    prefill_per_req = pre.time_s / chunk_seqs
    # a pipeline overlaps its stages: pp prompt chunks (and pp decode micro-batches) are in flight at once,
    # so a prompt occupies the instance for a 1/pp share of its prefill's latency
    prefill_occ = prefill_per_req / max(pp, 1)
    single = ctx.step("prefill", ctx.attn_ranks, ctx.attn_ranks * isl, attn_len, ctx.attn_ranks)
    ttft_alone = single.time_s

    decode_cache: dict[int, StepCost] = {}

    def decode(c: float) -> StepCost:
        """One decode iteration at concurrency c: each of the pp micro-batches of c/pp sequences passes through
        every stage once, so every sequence gains a token in the time one micro-batch takes through the whole
        model (the stages work on different micro-batches meanwhile). Memoised: the server search revisits."""
        key = max(int(round(c)), 1)
        if key not in decode_cache:
            mb = max(key / pp, 1.0)
            decode_cache[key] = ctx.step("decode", mb, mb, lengths.decode_context, mb)
        return decode_cache[key]

    price = acc.price_per_hour_usd.value if acc.price_per_hour_usd else None
    kv_ms = None
    slo_att = max_rate = makespan = ttft99 = tpot99 = drain = None
    if disagg:
        res = _disaggregated(ctx, ref, arch, shard, pp, prefill_gpus, decode_gpus, isl, osl, cap, decode,
                             prefill_occ, ttft_alone, mem)
        C, dec, out_rate_total, ttft, tpot, kv_ms = res
        e2e = ttft + osl * tpot
        prefill_share = 0.0
    elif scenario == "offline":
        C = cap
        dec = decode(C)

        def cycle(c: float) -> float:
            return osl * decode(c).time_s + c * prefill_occ

        tpot_step = dec.time_s
        if requests is not None:
            n_inst = math.ceil(requests / dp)
            outs = spread_outputs(n_inst, lengths.output_points()) if lengths.osl_std or lengths.osl_points else None
            burst = _burst(n_inst, C, isl, osl, eng.max_num_tokens * ctx.attn_ranks, decode, prefill_occ, outs)
            out_rate_total = (sum(outs) if outs else n_inst * osl) / burst.makespan_s * dp
            ttft, e2e, makespan = burst.mean_ttft_s, burst.mean_e2e_s, burst.makespan_s
            tpot = burst.mean_itl_s if osl > 1.5 else tpot_step
        else:
            out_rate_total = C * osl / cycle(C) * dp
            tpot = (osl * tpot_step + (C - 1) * prefill_occ) / osl  # others' prefills interleave
            ttft = ttft_alone
            e2e = ttft + osl * tpot
        prefill_share = C * prefill_occ / cycle(C)
    else:
        outputs = lengths.output_points()
        solved = _server(rate, slo_ttft_ms, slo_tpot_ms, dp, cap, osl, decode, prefill_occ, ttft_alone,
                         outputs, lengths.prompt_cv2, lengths.prompt_scales())
        C, dec, tpot, ttft, e2e, lam, slo_att, max_rate, ttft99, tpot99 = solved
        grid, grid_t = _decode_grid(cap, decode)
        drain = drain_time_s(C, outputs, lambda c: np.interp(c, grid, grid_t))
        out_rate_total = lam * osl
        prefill_share = min(lam / dp * prefill_occ, 1.0)
        rate = lam

    n_gpus = ref.gpus
    total_rate = out_rate_total * (isl + osl) / osl
    busy = prefill_share * pre.busy_share + (1 - prefill_share) * dec.busy_share
    tdp = acc.tdp_w.value if acc.tdp_w else None
    power = tdp * (IDLE_POWER_SHARE + (1 - IDLE_POWER_SHARE) * busy) if tdp else None
    energy = power * n_gpus / out_rate_total if power and out_rate_total else None
    cost = price * n_gpus / 3600 / out_rate_total * 1e6 if price and out_rate_total else None
    if tdp is None:
        assumptions.append(f"{acc.id}: no published TDP, so no energy estimate")
    if price is None:
        assumptions.append(f"{acc.id}: no public price in the database, so no cost estimate")
    rows = [r.to_model() for r in pre.rows + dec.rows] if breakdown else []
    return InferenceResult(
        model=arch.id, system=ref.system.id, device=acc.id, gpus=n_gpus, tp=tp, pp=pp, ep=ep, dp=dp,
        attention_dp=attention_dp, precision=precision, kv_precision=kv_precision, scenario=(
            "disaggregated" if disagg else scenario), engine=eng.label, isl=isl, osl=osl, batch=int(round(C)),
        max_batch_fits=mem.max_sequences * ctx.attn_ranks, ttft_ms=ttft * 1e3, tpot_ms=tpot * 1e3, e2e_latency_s=e2e,
        output_tokens_per_s=out_rate_total, total_tokens_per_s=total_rate,
        output_tokens_per_s_per_gpu=out_rate_total / n_gpus, total_tokens_per_s_per_gpu=total_rate / n_gpus,
        prefill_step_ms=pre.time_s * 1e3, prefill_ms_per_request=prefill_per_req * 1e3,
        decode_step_ms=dec.time_s * 1e3,
        memory_per_gpu_bytes=mem.breakdown(math.ceil(C / ctx.attn_ranks)), memory_capacity_bytes=mem.capacity,
        bound={"prefill": pre.bound, "decode": dec.bound},
        time_share={"prefill": pre.share(), "decode": dec.share()},
        cost_per_million_output_tokens_usd=cost, energy_per_output_token_j=energy, power_per_gpu_w=power,
        slo_attainment=slo_att, max_rate_within_slo=max_rate, rate=rate, kv_transfer_ms=kv_ms,
        requests=requests if makespan is not None else None, burst_makespan_s=makespan, drain_s=drain,
        ttft_p99_ms=ttft99 * 1e3 if ttft99 is not None else None,
        tpot_p99_ms=tpot99 * 1e3 if tpot99 is not None else None,
        breakdown=rows, assumptions=assumptions,
    )


def _gib(x: float) -> str:
    return f"{x / 2**30:.1f}"


def _check_fit(mem: MemoryPlan, arch: ModelArch, dev: str, tp: int, pp: int) -> None:
    if mem.fits:
        return
    need = mem.weights.total + mem.activations + mem.kv_per_sequence
    short = need - (mem.capacity - mem.reserve)
    raise InputError(
        f"{arch.id} does not fit on {dev} with tp={tp} pp={pp}: one sequence needs {_gib(need)} GiB per GPU "
        f"(weights {_gib(mem.weights.total)}, activations {_gib(mem.activations)}, KV {_gib(mem.kv_per_sequence)}) "
        f"but the engine may use {_gib(mem.capacity - mem.reserve)} GiB; short by {_gib(short)} GiB. "
        f"Try a larger --tp/--pp or a lower --precision")


def tpot_p99(step: float, prefill_s: float, lam: float, tpot: float, outputs: np.ndarray,
             prefill_cv2: float = 0.0) -> float:
    """99th percentile over requests of a request's TPOT: ``step + S / o``, where a request of ``o`` output
    tokens meets ``N ~ Poisson(lam o tpot)`` other prompts while it decodes and ``S`` is their prefill time.
    ``outputs`` are equal-weight output lengths; one value is the fixed-length case. Short requests dominate
    the tail: one prompt spread over three tokens costs a third of a prefill per token.

    Prompts of fixed length stall for ``prefill_s`` each (``S = prefill_s N``). Prompts whose prefill time
    varies with squared coefficient of variation ``prefill_cv2`` make ``S`` a compound Poisson sum; it is
    matched on its first two moments (mean ``mu p``, variance ``mu p^2 (1 + cv^2)``) by ``p (1 + cv^2)``
    times a Poisson of mean ``mu / (1 + cv^2)``: fewer, longer stalls, the same mean and a wider tail."""
    o = np.asarray(outputs, dtype=float)
    spread = 1.0 + prefill_cv2
    stall_s = prefill_s * spread
    mu = lam * o * tpot / spread
    if o.size == 1:
        return step + stall_s * float(poisson.ppf(0.99, mu[0])) / o[0]
    if prefill_s <= 0:
        return step
    hi = step + stall_s * float(np.max(poisson.ppf(0.9999, mu) / o)) + 1e-12
    return _bisect_quantile(lambda x: tpot_exceeds(x, step, prefill_s, lam, tpot, o, prefill_cv2), step, hi,
                            0.01, 32)


def tpot_exceeds(x: float, step: float, prefill_s: float, lam: float, tpot: float, outputs: np.ndarray,
                 prefill_cv2: float = 0.0) -> float:
    """P(a request's TPOT > x) under :func:`tpot_p99`'s model, averaged over the output lengths ``outputs``:
    the chance it meets more interleaved prompts than ``(x - step) o`` of prefill time absorbs."""
    o = np.asarray(outputs, dtype=float)
    spread = 1.0 + prefill_cv2
    k = np.floor((x - step) * o / (prefill_s * spread))
    return float(np.mean(np.where(k < 0, 1.0, pdtrc(np.maximum(k, 0), lam * o * tpot / spread))))  # P(N > k)


def _bisect_quantile(exceeds, lo: float, hi: float, p: float, iterations: int) -> float:
    """The ``x`` in ``[lo, hi]`` where the decreasing ``exceeds(x)`` falls to ``p`` (bisection, returning the
    upper end of the last bracket)."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if exceeds(mid) > p:
            lo = mid
        else:
            hi = mid
    return hi


def ttft_exceeds(x: float, fixed_s: float, own_s: np.ndarray, rho: float, theta: float) -> float:
    """P(TTFT > x) for TTFT = fixed + own prefill S + queueing wait W, with S equally likely to be each of
    ``own_s`` (a request's own prefill grows with its prompt) and W's tail exponential,
    ``P(W > t) = rho exp(-t / theta)`` (no wait with probability 1 - rho)."""
    slack = x - fixed_s - np.asarray(own_s, dtype=float)
    if theta <= 0 or rho <= 0:
        return float(np.mean(slack < 0))
    return float(np.mean(np.where(slack < 0, 1.0, rho * np.exp(-np.maximum(slack, 0.0) / theta))))


def ttft_quantile(q: float, fixed_s: float, own_s: np.ndarray, rho: float, theta: float) -> float:
    """The ``q`` quantile of TTFT under :func:`ttft_exceeds` (bisection). With one prompt length it is
    ``fixed + S + theta ln(rho / (1 - q))``, the M/G/1 wait's exponential tail."""
    own = np.asarray(own_s, dtype=float)
    lo = fixed_s + float(own.min())
    # every prompt's own tail is below 1 - q past the longest prefill plus the wait's (1 - q) quantile
    hi = fixed_s + float(own.max()) + (theta * math.log(rho / (1 - q)) if rho > 1 - q and theta > 0 else 0.0)
    return _bisect_quantile(lambda x: ttft_exceeds(x, fixed_s, own, rho, theta), lo, hi, 1 - q, 60)


def _server(rate, slo_ttft_ms, slo_tpot_ms, dp, cap, osl, decode, prefill_per_req, ttft_alone,
            outputs: np.ndarray, prefill_cv2: float, prompt_scales: np.ndarray | None = None):
    """Fixed point of Little's law at a rate; also the largest rate meeting the SLOs (bisection).

    Prompts queue for the prefill as in an M/G/1 queue: the Pollaczek-Khinchine mean wait
    ``rho p (1 + cv^2) / (2 (1 - rho))``, where ``cv`` is the prefill time's coefficient of variation (taken
    as the prompt length's, ``prefill_cv2`` = cv^2); fixed prompts give the M/D/1 wait. ``outputs`` are the
    equal-weight output lengths of :func:`tpot_p99` (the mean alone for fixed lengths).

    The search interpolates the decode-step time between concurrencies 1, 2, 4, ... cap (piecewise
    linear); the reported state at the chosen rate uses the exact step.
    """
    grid, grid_t = _decode_grid(cap, decode)

    def at(lam_total: float, exact: bool = False):
        lam = lam_total / dp
        rho = lam * prefill_per_req
        if rho >= 0.999:
            return None
        c = 1.0
        dec = None
        for _ in range(60):
            if exact:
                dec = decode(c)
                t_step = dec.time_s
            else:
                t_step = float(np.interp(c, grid, grid_t))
            step = t_step
            tpot = step / (1 - rho)
            wait = rho * prefill_per_req * (1 + prefill_cv2) / (2 * (1 - rho))
            # wait for the running iteration to end (half a step on average), then the prompt runs fused
            # with the decode batch in one iteration (in-flight / chunked-prefill batching): a full step more
            ttft = ttft_alone + wait + 1.5 * step
            e2e = ttft + osl * tpot
            c_new = min(max(lam * e2e, 1.0), cap)
            if abs(c_new - c) < 1e-3 * c:
                break
            c = 0.5 * c + 0.5 * c_new
        if lam * e2e > cap * 1.0001:  # more requests in flight than fit: unstable at this rate
            return None
        theta = wait / rho if rho > 0 else 0.0
        return dict(c=c, dec=dec, tpot=tpot, ttft=ttft, e2e=e2e, wait=wait, theta=theta, rho=rho, step=step,
                    lam=lam)

    scales = np.array([1.0]) if prompt_scales is None else np.asarray(prompt_scales, dtype=float)

    def ttft_tail(s) -> tuple[float, np.ndarray, float, float]:
        """(fixed part, own prefill per prompt length, rho, theta): the TTFT of :func:`ttft_exceeds`."""
        return s["ttft"] - s["wait"] - ttft_alone, ttft_alone * scales, s["rho"], s["theta"]

    def misses(s) -> tuple[float, float]:
        """Shares of requests over the TTFT and the TPOT SLO (0 where there is none)."""
        m_ttft = ttft_exceeds(slo_ttft_ms / 1e3, *ttft_tail(s)) if slo_ttft_ms is not None else 0.0
        m_tpot = (tpot_exceeds(slo_tpot_ms / 1e3, s["step"], prefill_per_req, s["lam"], s["tpot"], outputs,
                               prefill_cv2) if slo_tpot_ms is not None else 0.0)
        return m_ttft, m_tpot

    def meets(s) -> bool:
        """MLPerf's rule: the p99 TTFT and p99 TPOT within their SLOs, i.e. at most 1% of requests over each."""
        return all(m <= 0.01 for m in misses(s))

    hi_cap = dp / prefill_per_req
    max_rate = None
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        lo, hi = 0.0, hi_cap
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if hi - lo < 1e-4 * hi:
                break
            s = at(mid)
            if s is not None and meets(s):
                lo = mid
            else:
                hi = mid
        max_rate = lo
    lam = rate if rate else (max_rate or 0.0)
    s = at(lam, exact=True) if lam > 0 else None
    if not rate and max_rate:
        # the search used interpolated step times: step back until the exact state meets the SLOs
        for _ in range(60):
            if s is not None and meets(s):
                break
            lam *= 0.99
            s = at(lam, exact=True)
        max_rate = lam if s is not None else None
    if s is None:
        if rate:
            raise InputError(f"--rate {rate}: exceeds what {dp} instance(s) can sustain "
                             f"(about {hi_cap * 0.999:.3g} requests/s before prefill alone saturates, or "
                             f"the KV cache overflows); lower the rate or add GPUs")
        raise InputError("no request rate meets the SLOs on this plan: loosen --slo-ttft-ms/--slo-tpot-ms, "
                         "add GPUs or use a lower --precision")
    att = None
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        m_ttft, m_tpot = misses(s)
        att = max(0.0, 1.0 - m_ttft) * (1.0 - m_tpot)
    return (s["c"], s["dec"], s["tpot"], s["ttft"], s["e2e"], lam, att, max_rate,
            ttft_quantile(0.99, *ttft_tail(s)), tpot_p99(s["step"], prefill_per_req, s["lam"], s["tpot"], outputs,
                                                    prefill_cv2))


def _decode_grid(cap: int, decode) -> tuple[list[int], list[float]]:
    """Concurrencies 1, 2, 4, ... cap and their decode-step times (seconds), to interpolate between."""
    grid = sorted({min(2**i, cap) for i in range(int(math.log2(max(cap, 1))) + 2)} | {1, cap})
    return grid, [decode(c).time_s for c in grid]


def _burst(n, cap, isl, osl, budget, decode, prefill_per_req, outputs=None) -> BurstResult:
    """All ``n`` requests of one instance queued at once (``--requests``): simulate to the last token, each
    request with its own output length where ``outputs`` gives them.

    Decode-step times come from concurrencies 1, 2, 4, ... cap, interpolated linearly in between."""
    grid, grid_t = _decode_grid(cap, decode)
    table = np.interp(np.arange(cap + 1), grid, np.array(grid_t))
    table[0] = 0.0
    return simulate_burst(n, cap, isl, osl, budget, lambda d: float(table[d]), prefill_per_req / isl, outputs)


def _disaggregated(ctx, ref, arch, shard, pp, prefill_gpus, decode_gpus, isl, osl, cap, decode, prefill_per_req,
                   ttft_alone, mem):
    """Prefill and decode pools; the KV cache of each request crosses the system's links."""
    inst = shard.width * pp
    n_pre, n_dec = prefill_gpus // inst, decode_gpus // inst
    prefill_rate = n_pre / prefill_per_req  # requests/s the prefill pool sustains
    dec = decode(cap)
    step = dec.time_s
    decode_rate = n_dec * cap / (osl * step)
    lam = min(prefill_rate, decode_rate)
    kv_bytes = mem.kv_per_sequence * isl / (isl + osl)
    sysm = ref.system
    domain = int(sysm.scale_up.domain_size.value)
    if prefill_gpus + decode_gpus <= domain:
        res = collective_time(ctx.db, sysm, "send_recv", kv_bytes, 2)
    else:
        res = collective_time(ctx.db, sysm, "send_recv", kv_bytes, 2, per_node=1)
    kv_s = float(res.time_s[0])
    ttft = ttft_alone + kv_s
    return cap, dec, lam * osl, ttft, step, kv_s * 1e3


class StepModel:
    """Fast step times of one serving instance, for searches that cost thousands of workloads.

    A decode step's time is linear in the context length at fixed concurrency (the KV-cache read and the
    attention FLOPs grow with it; the weight reads and GEMMs do not), so two context lengths on a grid of
    concurrencies (1, 2, 4, ...) give every (concurrency, context) by interpolation; prefill time per
    request is interpolated over a geometric grid of prompt lengths.
    """

    def __init__(self, model, system: str | SystemRef, tp: int = 1, pp: int = 1, ep: int = 1,
                 precision: str = "bf16", kv_precision: str | None = None, engine: str | None = None,
                 db: Database | None = None, max_tokens: int = 1 << 17):
        self.db = db or load_database()
        self.arch = get_model(model)
        precision = check_precision(precision)
        kv_precision = check_precision(kv_precision or ("fp8" if precision in ("fp4", "nvfp4", "mxfp4") else
                                                        precision), "--kv-precision")
        self.shard = Shard(tp=tp, ep=ep)
        check_shard(self.arch, self.shard)
        ref = self.db.resolve_system(system) if isinstance(system, str) else system
        self.ref = SystemRef(ref.system, ref.accelerator, tp * pp)
        self.pp = pp
        self.engine = get_engine(engine)
        self.ctx = _Ctx(self.db, self.ref, self.arch, self.shard, pp, precision, kv_precision,
                        self.engine.host_overhead_s)
        self.c_grid = [2**i for i in range(0, 13)]
        self.ctx_pts = (1024.0, 8192.0)
        self.t_dec = {x: [self.ctx.step("decode", max(c / pp, 1.0), max(c / pp, 1.0), x, max(c / pp, 1.0)).time_s
                          for c in self.c_grid] for x in self.ctx_pts}
        self.isl_grid = [2.0**i for i in range(4, int(math.log2(max_tokens)) + 1)]
        self.p_req = []
        for isl in self.isl_grid:
            chunk = max(1, int(self.engine.max_num_tokens // isl))
            self.p_req.append(self.ctx.step("prefill", chunk, chunk * isl, isl, chunk).time_s / chunk)

    def decode_s(self, c: float, ctx: float) -> float:
        """Decode-step time (s) of the instance at concurrency c with ``ctx`` tokens of context."""
        a, b = self.ctx_pts
        ta = float(np.interp(c, self.c_grid, self.t_dec[a]))
        tb = float(np.interp(c, self.c_grid, self.t_dec[b]))
        return ta + (tb - ta) * (ctx - a) / (b - a)

    def prefill_s(self, isl: float) -> float:
        """One request's prefill time through the whole model when prefills are batched in engine-sized chunks
        (a pipeline of pp stages overlaps pp of them, so it occupies the instance for 1/pp of this)."""
        return float(np.exp(np.interp(math.log(max(isl, 1.0)), np.log(self.isl_grid), np.log(self.p_req))))

    def max_sequences(self, seq_tokens: float) -> int:
        mem = plan_memory(self.arch, self.shard, self.pp, self.ref.accelerator.usable_memory_gb, self.engine,
                          self.ctx.w_bytes, self.ctx.kv_bytes, ACT_BYTES, seq_tokens)
        return min(mem.max_sequences, self.engine.max_batch * self.pp)

    def max_rate(self, isl: float, osl: float, slo_tpot_ms: float, slo_ttft_ms: float | None = None) -> float:
        """Largest request rate (1/s) one instance sustains with TPOT (and p99 TTFT) within the SLOs.

        Steady state at concurrency C: each request's decode is stretched by the prefills of the others,
        ``TPOT(C) = t_decode(C) + C p / osl``, and the rate is ``C / (osl TPOT)`` (Little's law); TTFT is the
        lone prefill plus an M/D/1 wait with an exponential tail at ``rho = rate x p``.
        """
        cmax = self.max_sequences(isl + osl)
        if cmax < 1:
            return 0.0
        p_alone = self.prefill_s(isl)
        p = p_alone / self.pp
        ctx = isl + osl / 2
        best = 0.0
        c = 1
        while c <= cmax:
            tpot = self.decode_s(c, ctx) + c * p / osl
            if tpot * 1e3 > slo_tpot_ms:
                break
            lam = c / (osl * tpot)
            if slo_ttft_ms is not None:
                rho = lam * p
                if rho >= 1:
                    break
                wait = rho * p / (2 * (1 - rho))
                if ttft_exceeds(slo_ttft_ms / 1e3, 0.0, [p_alone], rho, wait / rho) > 0.01:  # p99 TTFT over the SLO
                    break
            best = max(best, lam)
            c = c + 1 if c < 16 else int(c * 1.15) + 1
        return best
