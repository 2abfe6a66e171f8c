"""Training plan search: every TP x PP x DP x CP x EP x VP x micro-batch x recompute x ZeRO layout, ranked.

The space is enumerated under the divisibility rules (heads and KV heads by TP, experts by EP, the batch by
micro-batch x DP, the sequence by CP) and the topology rule (TP inside the scale-up domain unless allowed
across nodes); ``training.evaluate_plans`` costs all plans at once (per-layer costs are shared by plans
with the same TP, CP, EP, micro-batch, recompute and SP); plans that do not fit in memory are dropped; the
rest are ranked by step time, cost per token (device price) or energy per token (TDP). The winner's
pipeline stages are then re-partitioned by the ILP of ``partition.py`` (uneven layer counts to balance
the embedding and LM-head stages) and re-costed with that partition.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..models import ModelArch, get_model
from ..specdb import Database, SystemRef, load_database
from ..training import RECOMPUTE, TIME_PARTS, CommOverlap, TrainingResult, estimate_training, evaluate_plans
from .partition import Partition, partition_stages

OBJECTIVES = ("time", "cost", "energy")
PLAN_KEYS = ("tp", "pp", "dp", "cp", "ep", "vp", "mb", "rec", "zero", "sp")


@dataclass
class PlanSearch:
    model: str
    system: str
    gpus: list[int]
    objective: str
    evaluated: int
    feasible: int
    plans: list[TrainingResult]
    scores: list[float]
    partition: Partition | None = None
    why: list[str] = field(default_factory=list)
    smallest_fitting_gpus: int | None = None


def _pow2_upto(n: int) -> list[int]:
    out, x = [], 1
    while x <= n:
        out.append(x)
        x *= 2
    return out


def enumerate_plans(m: ModelArch, gpus: int, seq: int, gb: int, domain: int, allow_cross_node_tp: bool = False,
                    recomputes=RECOMPUTE, zeros=(0, 1, 2, 3), micro_batches=(1, 2, 4, 8), vps=(1, 2, 4),
                    cps=(1, 2, 4, 8, 16)) -> dict[str, np.ndarray]:
    """All valid layouts for ``gpus`` GPUs as parallel arrays (see PLAN_KEYS)."""
    tps = [t for t in _pow2_upto(min(m.heads, gpus)) if m.heads % t == 0
           and (m.is_mla or m.n_kv_heads % t == 0 or t % m.n_kv_heads == 0)
           and (allow_cross_node_tp or t <= domain)]
    eps = [1] + ([e for e in _pow2_upto(m.experts) if e > 1 and m.experts % e == 0] if m.is_moe else [])
    rows = []
    for tp, cp in itertools.product(tps, [c for c in cps if seq % c == 0 and seq // c >= 512]):
        if gpus % (tp * cp):
            continue
        rest = gpus // (tp * cp)
        for pp in [p for p in range(1, min(rest, m.layers) + 1) if rest % p == 0]:
            dp = rest // pp
            for ep in eps:
                if (dp * cp * tp) % ep:
                    continue
                for vp in [v for v in vps if v == 1 or (pp > 1 and m.layers >= pp * v)]:
                    for mb in micro_batches:
                        if gb % (mb * dp):
                            continue
                        for rec, zero in itertools.product(range(len(RECOMPUTE)), zeros):
                            if RECOMPUTE[rec] not in recomputes:
                                continue
                            rows.append((tp, pp, dp, cp, ep, vp, mb, rec, zero, int(tp > 1)))
    if not rows:
        return {k: np.zeros(0, dtype=int) for k in PLAN_KEYS}
    arr = np.array(rows, dtype=int)
    return {k: arr[:, i] for i, k in enumerate(PLAN_KEYS)}


def _score(ev: dict, objective: str, price: float | None, tdp: float | None, gpus: np.ndarray) -> np.ndarray:
    tok = ev["tokens_per_s"]
    if objective == "time":
        return ev["step_time_s"]
    if objective == "cost":
        if price is None:
            raise InputError("--objective cost: the device has no price in the database; add one with --specs")
        return price * gpus / 3600 / tok  # USD per token
    if tdp is None:
        raise InputError("--objective energy: the device has no TDP in the database")
    return tdp * gpus / tok  # J per token at TDP (an upper bound; the ranking is what matters)


def plan_training(model, system: str, gpus, seq_len: int, global_batch: int, precision: str = "bf16",
                  objective: str = "time", top: int = 5, allow_cross_node_tp: bool = False,
                  db: Database | None = None, partition: bool = True, ep_overlap: bool = False,
                  tp_overlap: bool = False) -> PlanSearch:
    """Rank training layouts for one GPU count or a list of counts (``ep_overlap``, ``tp_overlap``: see
    estimate_training)."""
    if objective not in OBJECTIVES:
        raise InputError(f"--objective: expected one of {', '.join(OBJECTIVES)} (got '{objective}')")
    if top < 1:
        raise InputError(f"--top: expected a positive count, got {top}")
    db = db or load_database()
    m = get_model(model)
    overlap = CommOverlap(ep=ep_overlap, tp=tp_overlap)
    counts = [gpus] if isinstance(gpus, int) else list(gpus)
    base = db.resolve_system(system)
    acc = base.accelerator
    domain = int(base.system.scale_up.domain_size.value)
    price = acc.price_per_hour_usd.value if acc.price_per_hour_usd else None
    tdp = acc.tdp_w.value if acc.tdp_w else None
    best: list[tuple[float, int, dict]] = []
    evaluated = feasible = 0
    for n in counts:
        if n < 1:
            raise InputError(f"--gpus: expected a positive count, got {n}")
        plans = enumerate_plans(m, n, seq_len, global_batch, domain, allow_cross_node_tp)
        if not len(plans["tp"]):
            continue
        ref = SystemRef(base.system, acc, n)
        ev = evaluate_plans(db, ref, m, plans, seq_len, global_batch, precision, overlap=overlap)
        evaluated += len(plans["tp"])
        ok = np.nonzero(ev["fits"])[0]
        feasible += len(ok)
        if not len(ok):
            continue
        score = _score(ev, objective, price, tdp, np.full(len(plans["tp"]), n, dtype=float))
        order = ok[np.argsort(score[ok])][: max(top, 2)]
        best += [(float(score[i]), n, {k: int(plans[k][i]) for k in PLAN_KEYS}) for i in order]
    if not best:
        raise InputError(_no_fit_message(m, base, counts, seq_len, global_batch, precision, db, allow_cross_node_tp))
    best.sort(key=lambda x: x[0])
    chosen = best[:top]
    results = [_estimate(m, base, n, p, seq_len, global_batch, precision, db, overlap=overlap)
               for _, n, p in chosen]
    part = None
    if partition and chosen and chosen[0][2]["pp"] > 1:
        part, improved = _repartition(m, base, chosen[0][1], chosen[0][2], seq_len, global_batch, precision, db,
                                      results[0], overlap)
        if improved is not None:
            results[0] = improved
    why = _why(results[0], results[1]) if len(results) > 1 else []
    return PlanSearch(m.id, base.system.id, counts, objective, evaluated, feasible, results,
                      [s for s, _, _ in chosen], part, why)


def _estimate(m, base, n, p, seq, gb, precision, db, stage_layers=None,
              overlap: CommOverlap = CommOverlap()) -> TrainingResult:
    return estimate_training(m, SystemRef(base.system, base.accelerator, n), n, seq_len=seq, global_batch=gb,
                             tp=p["tp"], pp=p["pp"], dp=p["dp"], cp=p["cp"], ep=p["ep"], vp=p["vp"],
                             micro_batch=p["mb"], sequence_parallel=bool(p["sp"]), precision=precision,
                             recompute=RECOMPUTE[p["rec"]], zero=p["zero"], stage_layers=stage_layers,
                             ep_overlap=overlap.ep, tp_overlap=overlap.tp, db=db)


def _repartition(m, base, n, p, seq, gb, precision, db, even: TrainingResult,
                 overlap: CommOverlap = CommOverlap()):
    """ILP over the winner's stages: per-layer time from the even plan, head work on the end stages."""
    one = _estimate(m, base, n, {**p, "pp": 1, "dp": p["dp"] * p["pp"], "vp": 1}, seq, gb, precision, db,
                    overlap=overlap)
    per_mb = (one.time_breakdown_s["compute"] + one.time_breakdown_s["recompute"] + one.time_breakdown_s["tp_comm"]
              + one.time_breakdown_s["cp_comm"] + one.time_breakdown_s["ep_comm"]) / max(one.micro_batches, 1)
    head = _head_times(m, base, n, p, seq, gb, precision, db)
    layer_t = per_mb - head[0] - head[1]
    t_layer = [layer_t / m.layers] * m.layers
    part = partition_stages(t_layer, p["pp"], first_extra=head[0], last_extra=head[1])
    if part.layers_per_stage == even.stage_layers:
        return part, None
    res = _estimate(m, base, n, p, seq, gb, precision, db, stage_layers=part.layers_per_stage, overlap=overlap)
    return part, (res if res.step_time_s <= even.step_time_s else None)


def _head_times(m, base, n, p, seq, gb, precision, db) -> tuple[float, float]:
    from ..training import _Trainer

    tr = _Trainer(db, SystemRef(base.system, base.accelerator, n), m, p["tp"], 1, 1, p["cp"], p["ep"],
                  bool(p["sp"]), p["mb"], seq, precision)
    return tr.head(last=False, first=True), tr.head(last=True, first=False)


def _why(a: TrainingResult, b: TrainingResult) -> list[str]:
    """The step-time parts that separate the winner from the runner-up, largest first."""
    diffs = sorted(((b.time_breakdown_s[k] - a.time_breakdown_s[k], k) for k in TIME_PARTS), reverse=True)
    out = [f"step {a.step_time_s:.3f} s vs {b.step_time_s:.3f} s ({b.step_time_s / a.step_time_s - 1:+.1%} for the "
           f"runner-up: tp={b.tp} pp={b.pp} dp={b.dp} cp={b.cp} ep={b.ep} vp={b.vp} mb={b.micro_batch} "
           f"recompute={b.recompute} zero={b.zero})"]
    for d, k in diffs[:3]:
        if abs(d) > 1e-4 * a.step_time_s:
            out.append(f"{k}: {a.time_breakdown_s[k]:.3f} s vs {b.time_breakdown_s[k]:.3f} s ({-d:+.3f} s)")
    return out


def _no_fit_message(m, base, counts, seq, gb, precision, db, allow) -> str:
    domain = int(base.system.scale_up.domain_size.value)
    top = max(counts)
    for k in range(1, 13):
        n = top * 2**k
        plans = enumerate_plans(m, n, seq, gb, domain, allow, recomputes=("full",), zeros=(1, 3),
                                micro_batches=(1,), vps=(1,), cps=(1,))
        if not len(plans["tp"]):
            continue
        ev = evaluate_plans(db, SystemRef(base.system, base.accelerator, n), m, plans, seq, gb, precision)
        if ev["fits"].any():
            return (f"{m.id} fits no layout on {', '.join(map(str, counts))} x {base.accelerator.id} with seq-len "
                    f"{seq} and global batch {gb}; the smallest power-of-two multiple that fits is {n} GPUs")
    return (f"{m.id} fits no layout on up to {top * 4096} x {base.accelerator.id}; check --seq-len and "
            f"--global-batch")


@dataclass
class HeteroPlan:
    """One layout shared by two (or more) GPU pools, each its own DP group with its share of the batch."""

    layout: dict
    groups: list[dict]  # per pool: system, gpus, dp, micro_batches, step_s, fits
    step_time_s: float
    tokens_per_s: float


def plan_training_hetero(model, pools: list[tuple[str, int]], seq_len: int, global_batch: int,
                         precision: str = "bf16", top: int = 5, db: Database | None = None) -> list[HeteroPlan]:
    """Heterogeneous cluster: the same TP/PP/CP/VP/micro-batch/recompute/ZeRO layout on every pool, each pool
    a DP group of its own size, the global batch split so the pools finish together (Holmes-style DP over
    pools with different GPUs or NICs). Step = the slowest pool's pipeline + its exposed gradient sync."""
    if len(pools) < 2:
        raise InputError("--system: a heterogeneous plan needs two or more 'SYSTEM:GPUS' pools")
    db = db or load_database()
    m = get_model(model)
    refs, evs, plan_sets = [], [], []
    for sys_id, n in pools:
        base = db.resolve_system(sys_id)
        refs.append(SystemRef(base.system, base.accelerator, n))
    domain = min(int(r.system.scale_up.domain_size.value) for r in refs)
    keyset = None
    for r in refs:
        p = enumerate_plans(m, r.gpus, seq_len, global_batch, domain, micro_batches=(1, 2, 4), zeros=(1, 3))
        keys = {tuple(int(p[k][i]) for k in PLAN_KEYS if k != "dp"): i for i in range(len(p["tp"]))}
        plan_sets.append((p, keys))
        keyset = set(keys) if keyset is None else keyset & set(keys)
    if not keyset:
        raise InputError("no layout divides every pool; use GPU counts with a common factor")
    common = sorted(keyset)
    out: list[HeteroPlan] = []
    for r, (p, keys) in zip(refs, plan_sets):
        idx = [keys[k] for k in common]
        sub = {k: p[k][idx] for k in PLAN_KEYS}
        evs.append((sub, evaluate_plans(db, r, m, sub, seq_len, global_batch, precision)))
    names = [k for k in PLAN_KEYS if k != "dp"]
    for j, key in enumerate(common):
        layout = dict(zip(names, key))
        mb = layout["mb"]
        if global_batch % mb:
            continue
        per_pool = []
        for (sub, ev) in evs:
            dp = int(sub["dp"][j])
            tmax = float(ev["stage_max_s"][j])
            fixed = float(ev["step_time_s"][j] - ev["micro_batches"][j] * tmax)  # bubble + sync + optimizer
            per_pool.append((dp, tmax, fixed, bool(ev["fits"][j])))
        if not all(f for *_, f in per_pool):
            continue
        best = _split_batch(global_batch // mb, per_pool)
        if best is None:
            continue
        step, micro = best
        groups = [{"system": r.system.id, "gpus": r.gpus, "dp": pp_[0], "micro_batches": mi,
                   "step_s": mi * pp_[1] + pp_[2]} for r, pp_, mi in zip(refs, per_pool, micro)]
        out.append(HeteroPlan({**layout, "recompute": RECOMPUTE[layout["rec"]]}, groups, step,
                              global_batch * seq_len / step))
    if not out:
        raise InputError("no shared layout fits every pool's memory; add GPUs or shorten --seq-len")
    out.sort(key=lambda h: h.step_time_s)
    return out[:top]


def _split_batch(total_micro: int, pools: list[tuple[int, float, float, bool]]):
    """Micro-batches per replica of each pool with sum(dp_i m_i) = total and the slowest pool fastest."""
    best = None
    dp_a, rest = pools[0][0], pools[1:]
    for m_a in range(0, total_micro // dp_a + 1):
        left = total_micro - dp_a * m_a
        ms = [m_a]
        ok = True
        for k, (dp, *_x) in enumerate(rest):
            if k == len(rest) - 1:
                if left % dp:
                    ok = False
                    break
                ms.append(left // dp)
            else:  # more than two pools: give the middle pools an even share of what is left
                share = left // (dp * (len(rest) - k))
                ms.append(share)
                left -= dp * share
        if not ok or min(ms) < 1:
            continue
        step = max(mi * t + f for mi, (_, t, f, _) in zip(ms, pools))
        if best is None or step < best[0]:
            best = (step, ms)
    return best


def plan_training_offload(model, system: str, gpus: int, seq_len: int, global_batch: int, scheme: str,
                          host_memory: str | None = None, cxl: str | None = None, nvme: str | None = None,
                          precision: str = "bf16", top: int = 5, db: Database | None = None):
    """Layouts for an offloaded run (ZeRO-Offload, ZeRO-Infinity, Fuyou), ranked by step time among those that
    fit every tier. The offload schemes keep whole layers in data-parallel ranks, so the search covers TP
    inside the scale-up domain, DP over the rest, micro-batch and recompute (PP = 1)."""
    from ..offload_train import estimate_offload_training

    db = db or load_database()
    m = get_model(model)
    base = db.resolve_system(system)
    domain = int(base.system.scale_up.domain_size.value) if base.system.scale_up.topology.value != "none" else 1
    results, last_error, short = [], None, []
    for tp in [t for t in _pow2_upto(min(domain, gpus)) if gpus % t == 0 and m.heads % t == 0]:
        dp = gpus // tp
        for mb in (1, 2, 4, 8, 16):
            if global_batch % (mb * dp):
                continue
            for rec in RECOMPUTE:
                try:
                    r = estimate_offload_training(m, SystemRef(base.system, base.accelerator, gpus), gpus,
                                                  scheme=scheme, seq_len=seq_len, global_batch=global_batch,
                                                  micro_batch=mb, precision=precision, recompute=rec,
                                                  host_memory=host_memory, cxl=cxl, nvme=nvme, tp=tp, db=db)
                except InputError as e:
                    last_error = e
                    continue
                if r.fits:
                    results.append(r)
                else:
                    short.append(r.shortfall_message())
    if not results:
        if short:
            raise InputError(f"no {scheme} layout fits: {short[0]}")
        raise last_error or InputError(f"no {scheme} layout divides {gpus} GPUs and the global batch")
    results.sort(key=lambda r: r.step_time_s)
    return results[:top]
