"""Serving plan search: TP, PP, EP, replicas, batch cap, precision, colocated or disaggregated.

Each candidate instance is costed by ``inference.estimate_inference`` in the server scenario, which finds
the largest Poisson request rate whose p99 TTFT and mean TPOT meet the SLOs (Little's law, M/D/1 prefill
queue). With a GPU budget, plans are ranked by goodput per GPU (requests/s within the SLOs); with a target
rate, by the GPUs needed. Disaggregated plans pair prefill instances (rate limited by the TTFT SLO with an
M/D/1 queue and the KV transfer) with decode instances (the largest batch whose decode step meets the
TPOT SLO), at the prefill:decode ratio that balances the two pools.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import InputError
from ..inference import estimate_inference, ttft_exceeds
from ..lengths import Lengths
from ..models import get_model
from ..specdb import Database, load_database

BATCH_CAPS = (8, 16, 32, 64, 128, 256, 512, 1024)
SEARCH_CAPS = (16, 64, 256, 1024)
CHUNK_TOKENS = (2048, 8192)  # prefill tokens batched per step (chunked-prefill budget)


@dataclass
class ServePlan:
    layout: str
    precision: str
    tp: int
    pp: int
    ep: int
    gpus: int
    replicas: int
    max_batch: int
    chunk_tokens: int
    rate: float
    ttft_ms: float
    tpot_ms: float
    output_tokens_per_s: float
    prefill_instances: int = 0
    decode_instances: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ServeSearch:
    model: str
    system: str
    evaluated: int
    plans: list[ServePlan]


def _tps(m, domain: int) -> list[int]:
    out, t = [], 1
    while t <= domain:
        if m.heads % t == 0 and (m.is_mla or m.n_kv_heads % t == 0 or t % m.n_kv_heads == 0):
            out.append(t)
        t *= 2
    return out


def plan_serving(model, system: str, isl: float, osl: float, slo_ttft_ms: float, slo_tpot_ms: float,
                 gpus: int | None = None, rate: float | None = None, precision: str | None = None,
                 allow_disaggregated: bool = False, top: int = 5, db: Database | None = None,
                 isl_std: float = 0.0, osl_std: float = 0.0) -> ServeSearch:
    """Rank serving layouts for a GPU budget (goodput per GPU) or a target rate (fewest GPUs); ``isl_std`` and
    ``osl_std`` describe how request lengths vary (see :mod:`perfmodel.lengths`)."""
    if gpus is not None and rate is not None:
        raise InputError("--gpus/--rate: give a GPU budget or a target request rate, not both")
    if gpus is None and rate is None:
        raise InputError("--gpus/--rate: expected one of them: a GPU budget (--gpus N, maximise goodput per GPU) "
                         "or a target rate (--rate R requests/s, fewest GPUs)")
    if slo_ttft_ms <= 0 or slo_tpot_ms <= 0:
        raise InputError("--slo-ttft-ms/--slo-tpot-ms: expected positive milliseconds")
    db = db or load_database()
    m = get_model(model)
    lengths = Lengths(isl, osl, isl_std, osl_std)  # checks the workload up front
    spread = {"isl_std": isl_std, "osl_std": osl_std}
    ref = db.resolve_system(system)
    acc = ref.accelerator
    domain = int(ref.system.scale_up.domain_size.value) if ref.system.scale_up.topology.value != "none" else 1
    precisions = [precision] if precision else ["bf16"] + (["fp8"] if "fp8" in {d.value for d in acc.peak_tflops}
                                                          else [])
    plans: list[ServePlan] = []
    evaluated = 0
    best_seen = {"ttft": math.inf, "tpot": math.inf}
    for prec in precisions:
        for tp in _tps(m, domain):
            for pp in (1, 2, 4):
                inst = tp * pp
                if gpus is not None and inst > gpus or pp > m.layers:
                    continue
                eps = [1] + ([tp] if m.is_moe and tp > 1 and m.experts % tp == 0 else [])
                for ep in eps:
                    for cap in SEARCH_CAPS:
                        for chunk in CHUNK_TOKENS:
                            evaluated += 1
                            plan = _colocated(m, ref, isl, osl, slo_ttft_ms, slo_tpot_ms, prec, tp, pp, ep, cap,
                                              chunk, db, best_seen, spread)
                            if plan is not None:
                                plans.append(plan)
                    if allow_disaggregated:
                        evaluated += 1
                        plan = _disaggregated(m, ref, isl, osl, slo_ttft_ms, slo_tpot_ms, prec, tp, pp, ep, db,
                                              gpus, spread, lengths.prompt_cv2)
                        if plan is not None:
                            plans.append(plan)
    if not plans:
        raise InputError(_no_plan_message(m, ref, slo_ttft_ms, slo_tpot_ms, best_seen, precisions, acc))
    for p in plans:
        inst = p.gpus
        if gpus is not None:
            p.replicas = max(gpus // inst, 0)
        else:
            p.replicas = max(math.ceil(rate / p.rate), 1)
        p.gpus = inst * p.replicas
        p.rate *= p.replicas
        p.output_tokens_per_s = p.rate * osl
        if p.prefill_instances:
            p.prefill_instances *= p.replicas
            p.decode_instances *= p.replicas
    plans = [p for p in plans if p.replicas >= 1]
    if not plans:
        raise InputError(f"--gpus {gpus}: no instance fits in the budget; the smallest needs more GPUs")
    key = (lambda p: -p.rate / p.gpus) if gpus is not None else (lambda p: (p.gpus, -p.rate))
    plans.sort(key=key)
    seen, unique = set(), []
    for p in plans:
        k = (p.layout, p.precision)
        if k not in seen:
            seen.add(k)
            unique.append(p)
    return ServeSearch(m.id, ref.system.id, evaluated, unique[:top])


def _colocated(m, ref, isl, osl, slo_ttft, slo_tpot, prec, tp, pp, ep, cap, chunk, db,
               best_seen, spread) -> ServePlan | None:
    try:
        r = estimate_inference(m, ref.system.id, isl, osl, gpus=tp * pp, tp=tp, pp=pp, ep=ep, dp=1, precision=prec,
                               batch=cap, scenario="server", slo_ttft_ms=slo_ttft, slo_tpot_ms=slo_tpot,
                               chunk_tokens=chunk, breakdown=False, db=db, **spread)
    except InputError as e:
        if "no request rate meets" in str(e):
            _note_best(m, ref, isl, osl, prec, tp, pp, ep, db, best_seen)
        return None
    if not r.max_rate_within_slo:
        return None
    layout = f"tp{tp} pp{pp}" + (f" ep{ep}" if ep > 1 else "") + f" batch<={cap} chunk {chunk}"
    return ServePlan(layout, prec, tp, pp, ep, tp * pp, 1, cap, chunk, r.max_rate_within_slo, r.ttft_ms, r.tpot_ms,
                     r.output_tokens_per_s)


def _note_best(m, ref, isl, osl, prec, tp, pp, ep, db, best_seen) -> None:
    try:
        r = estimate_inference(m, ref.system.id, isl, osl, gpus=tp * pp, tp=tp, pp=pp, ep=ep, dp=1, precision=prec,
                               batch=1, breakdown=False, db=db)
    except InputError:
        return
    best_seen["ttft"] = min(best_seen["ttft"], r.ttft_ms)
    best_seen["tpot"] = min(best_seen["tpot"], r.decode_step_ms)


def _disaggregated(m, ref, isl, osl, slo_ttft, slo_tpot, prec, tp, pp, ep, db, budget,
                   spread, prompt_cv2) -> ServePlan | None:
    """One prefill:decode group: decode at the largest batch meeting the TPOT SLO, prefill at the largest
    rate whose p99 TTFT (M/G/1 with exponential tail) plus the KV transfer meets the TTFT SLO."""
    inst = tp * pp
    dec_rate, dec_batch, tpot = 0.0, 0, 0.0
    for cap in BATCH_CAPS:
        try:
            r = estimate_inference(m, ref.system.id, isl, osl, gpus=inst, tp=tp, pp=pp, ep=ep, dp=1,
                                   precision=prec, batch=cap, breakdown=False, db=db, **spread)
        except InputError:
            break
        step_ms = r.decode_step_ms
        if step_ms > slo_tpot:
            break
        dec_rate, dec_batch, tpot = cap / (osl * step_ms / 1e3), cap, step_ms
    if dec_rate <= 0:
        return None
    try:
        d = estimate_inference(m, ref.system.id, isl, osl, gpus=2 * inst, tp=tp, pp=pp, ep=ep, precision=prec,
                               prefill_gpus=inst, decode_gpus=inst, batch=dec_batch, breakdown=False, db=db,
                               **spread)
    except InputError:
        return None
    p_s = d.prefill_ms_per_request / 1e3
    base = d.ttft_ms / 1e3
    lo, hi = 0.0, 0.999 / p_s
    for _ in range(40):
        lam = 0.5 * (lo + hi)
        rho = lam * p_s
        wait = rho * p_s * (1 + prompt_cv2) / (2 * (1 - rho))
        p99_ok = ttft_exceeds(slo_ttft / 1e3, base, [0.0], rho, wait / rho) <= 0.01
        lo, hi = (lam, hi) if p99_ok else (lo, lam)
    pre_rate = lo
    if pre_rate <= 0:
        return None
    # the ratio that balances the pools, with at least one instance of each
    best = None
    for n_p in range(1, 9):
        for n_d in range(1, 9):
            if budget is not None and (n_p + n_d) * inst > budget:
                continue
            rate = min(n_p * pre_rate, n_d * dec_rate)
            per_gpu = rate / ((n_p + n_d) * inst)
            if best is None or per_gpu > best[0]:
                best = (per_gpu, n_p, n_d, rate)
    if best is None:
        return None
    _, n_p, n_d, rate = best
    layout = f"disaggregated {n_p}P:{n_d}D x tp{tp} pp{pp}" + (f" ep{ep}" if ep > 1 else "") + f" batch<={dec_batch}"
    return ServePlan(layout, prec, tp, pp, ep, (n_p + n_d) * inst, 1, dec_batch, 8192, rate, d.ttft_ms, tpot,
                     rate * osl, n_p, n_d)


def _no_plan_message(m, ref, slo_ttft, slo_tpot, best_seen, precisions, acc) -> str:
    hints = []
    if math.isfinite(best_seen["tpot"]) and best_seen["tpot"] > slo_tpot:
        hints.append(f"the fastest decode step found is {best_seen['tpot']:.1f} ms (TPOT SLO {slo_tpot:g} ms)")
    if math.isfinite(best_seen["ttft"]) and best_seen["ttft"] > slo_ttft:
        hints.append(f"the fastest prefill found is {best_seen['ttft']:.0f} ms (TTFT SLO {slo_ttft:g} ms)")
    fixes = ["loosen --slo-ttft-ms/--slo-tpot-ms", "allow more GPUs per instance (a larger scale-up domain)"]
    if "fp8" not in precisions and "fp8" in {d.value for d in acc.peak_tflops}:
        fixes.insert(0, "use --precision fp8")
    detail = f" ({'; '.join(hints)})" if hints else ""
    return (f"no layout of {m.id} on {ref.system.id} meets the SLOs{detail}; options: {', '.join(fixes)}")
