"""Cost-optimal GPU mix for a serving workload (the Mélange formulation, Griggs et al. 2024).

The workload is a histogram of request sizes: buckets of (input, output) length, each with its share of
the overall request rate. For each (device, bucket), perfmodel's serving model gives the largest rate one
instance sustains within the TPOT (and optional TTFT) SLO (``inference.StepModel.max_rate``); an instance
is the smallest tensor-parallel group of that device the model fits on, and costs that many GPUs' price.

ILP (pulp + HiGHS, CBC as fallback): integer instances ``n_d`` per device, fractional slices ``a[b,d]``
of each bucket's load; minimise ``sum_d price_d n_d`` subject to ``sum_d a[b,d] = 1`` and, per device,
``sum_b a[b,d] rate_b / cap[d,b] <= n_d`` (the instance-time the assigned load takes), optional limits
``n_d <= max_d``, and ``a[b,d] = 0`` where a device cannot serve a bucket within the SLO.

Workload traces (CSV): one request a row with an input-token and an output-token column. Accepted
header pairs (case-insensitive): ``input_tokens,output_tokens``; ``ContextTokens,GeneratedTokens`` (Azure
LLM inference traces); ``Request tokens,Response tokens`` (BurstGPT); ``prompt_tokens,completion_tokens``;
``isl,osl``. Other columns are ignored. Requests are binned on a log2 grid of input and output lengths.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pulp

from ..errors import InputError
from ..inference import StepModel
from ..models import get_model
from ..specdb import Database, load_database
from .milp import solver as _solver
from .milp import var as _var

COLUMN_PAIRS = (("input_tokens", "output_tokens"), ("contexttokens", "generatedtokens"),
                ("request tokens", "response tokens"), ("prompt_tokens", "completion_tokens"), ("isl", "osl"))


@dataclass(frozen=True)
class Bucket:
    isl: float
    osl: float
    share: float


@dataclass
class MixResult:
    instances: dict[str, int]
    gpus: dict[str, int]
    instance_gpus: dict[str, int]
    cost_per_hour: float
    best_single_device: str | None
    best_single_device_cost_per_hour: float | None
    single_device_costs: dict[str, float | None]
    assignment: list[dict]
    status: str
    solve_time_s: float
    capacities: dict[str, list[float]] = field(default_factory=dict)

    @property
    def saving(self) -> float | None:
        if not self.best_single_device_cost_per_hour:
            return None
        return 1 - self.cost_per_hour / self.best_single_device_cost_per_hour


def read_trace(path: Path, max_buckets_per_axis: int = 10) -> list[Bucket]:
    """Histogram buckets from a CSV trace (see the module docstring for the accepted columns)."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"--workload {path}: cannot read file ({e.strerror or e})") from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InputError(f"--workload {path}: empty file")
        low = [h.strip().lower() for h in header]
        cols = next(((low.index(a), low.index(b)) for a, b in COLUMN_PAIRS if a in low and b in low), None)
        if cols is None:
            names = ", ".join(f"{a}/{b}" for a, b in COLUMN_PAIRS)
            raise InputError(f"--workload {path}: line 1: no input/output token columns (accepted: {names})")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                i, o = float(row[cols[0]]), float(row[cols[1]])
            except (ValueError, IndexError):
                raise InputError(f"--workload {path}: line {lineno}: expected numbers in columns "
                                 f"'{header[cols[0]]}' and '{header[cols[1]]}'") from None
            if i < 0 or o < 0:
                raise InputError(f"--workload {path}: line {lineno}: token counts must not be negative")
            rows.append((max(i, 1.0), max(o, 1.0)))
    if not rows:
        raise InputError(f"--workload {path}: no requests in the trace")
    return histogram(np.array(rows), max_buckets_per_axis)


def histogram(samples: np.ndarray, per_axis: int = 10) -> list[Bucket]:
    """Log2 bins on input and output length; each non-empty bin becomes a bucket at its mean lengths."""
    li, lo = np.log2(samples[:, 0]), np.log2(samples[:, 1])
    ei = np.linspace(li.min(), li.max() + 1e-9, per_axis + 1)
    eo = np.linspace(lo.min(), lo.max() + 1e-9, per_axis + 1)
    bi = np.clip(np.searchsorted(ei, li, side="right") - 1, 0, per_axis - 1)
    bo = np.clip(np.searchsorted(eo, lo, side="right") - 1, 0, per_axis - 1)
    out = []
    n = len(samples)
    for a in range(per_axis):
        for b in range(per_axis):
            sel = (bi == a) & (bo == b)
            if sel.any():
                out.append(Bucket(float(samples[sel, 0].mean()), float(samples[sel, 1].mean()), sel.sum() / n))
    return out


def synthetic_workload(isl: float, osl: float, cv: float = 0.0, samples: int = 20000, per_axis: int = 10,
                       seed: int = 0) -> list[Bucket]:
    """Log-normal request lengths with means ``isl``/``osl`` and coefficient of variation ``cv``."""
    if isl <= 0 or osl <= 0 or cv < 0:
        raise InputError("--isl/--osl/--cv: expected positive lengths and a non-negative spread")
    if cv == 0:
        return [Bucket(isl, osl, 1.0)]
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log(1 + cv * cv))
    s = np.stack([rng.lognormal(math.log(isl) - sigma**2 / 2, sigma, samples),
                  rng.lognormal(math.log(osl) - sigma**2 / 2, sigma, samples)], axis=1)
    return histogram(np.maximum(s, 1.0), per_axis)


def _instance(model, device: str, db: Database, precision: str, max_seq: float) -> StepModel | None:
    """The smallest power-of-two TP group of ``device`` the model fits on with the longest request."""
    acc = db.accelerator(device)
    if not acc.default_system:
        raise InputError(f"--devices {device}: no default platform; give a device that has one")
    sysm = db.system(acc.default_system)
    arch = get_model(model)
    tp = 1
    while tp <= sysm.gpus_per_node:
        if arch.heads % tp == 0 and (arch.is_mla or arch.n_kv_heads % tp == 0 or tp % arch.n_kv_heads == 0):
            try:
                sm = StepModel(arch, f"{tp} x {device}", tp=tp, precision=precision, db=db)
            except InputError:
                sm = None
            if sm is not None and sm.max_sequences(max_seq) >= 1:
                return sm
        tp *= 2
    return None


def solve_mix(caps: list[list[float]], prices: list[float], loads: list[float], limits: list[int | None],
              time_limit: float = 30.0) -> tuple[list[int], list[list[float]], str, float]:
    """The ILP: instances per device and each bucket's split, for capacities ``caps[d][b]`` (requests/s one
    instance of d sustains on bucket b; 0 = cannot), prices per instance and loads per bucket (requests/s)."""
    D, B = len(prices), len(loads)
    prob = pulp.LpProblem("gpu_mix", pulp.LpMinimize)
    n = [_var(prob, f"n_{d}", 0, limits[d], "Integer") for d in range(D)]
    a = {(b, d): _var(prob, f"a_{b}_{d}", 0, 1) for b in range(B) for d in range(D) if caps[d][b] > 0}
    prob += pulp.lpSum(prices[d] * n[d] for d in range(D))
    for b in range(B):
        prob += pulp.lpSum(a[b, d] for d in range(D) if (b, d) in a) == 1
    for d in range(D):
        used = [a[b, d] * (loads[b] / caps[d][b]) for b in range(B) if (b, d) in a]
        if used:
            prob += pulp.lpSum(used) <= n[d]
    t0 = time.perf_counter()
    prob.solve(_solver(time_limit))
    elapsed = time.perf_counter() - t0
    status = pulp.LpStatus[prob.status]
    if status not in ("Optimal", "Not Solved") or any(v.value() is None for v in n):
        raise InputError("no mix of the devices within the given --max limits serves the rate within the SLOs; "
                         "raise the limits or add devices")
    counts = [int(round(v.value() or 0)) for v in n]
    fractions = [[(a[b, d].value() or 0.0) if (b, d) in a else 0.0 for d in range(D)] for b in range(B)]
    return counts, fractions, status, elapsed


def plan_gpu_mix(model, devices: list[str], buckets: list[Bucket], rate: float, slo_tpot_ms: float,
                 slo_ttft_ms: float | None = None, prices: dict[str, float] | None = None,
                 limits: dict[str, int] | None = None, precision: str = "bf16", db: Database | None = None,
                 time_limit: float = 30.0) -> MixResult:
    """The cheapest set of instances (by device) that serves ``rate`` requests/s within the SLOs."""
    if rate <= 0:
        raise InputError(f"--rate: expected a positive request rate, got {rate}")
    if slo_tpot_ms <= 0:
        raise InputError("--slo-tpot-ms: expected positive milliseconds")
    if not devices:
        raise InputError("--devices: give at least one device id")
    db = db or load_database()
    prices = dict(prices or {})
    price, inst_gpus, caps = {}, {}, {}
    max_seq = max(b.isl + b.osl for b in buckets)
    for d in devices:
        acc = db.accelerator(d)
        p = prices.get(d, acc.price_per_hour_usd.value if acc.price_per_hour_usd else None)
        if p is None:
            raise InputError(f"--devices {d}: no price in the database; give one with --price {d}=USD_PER_HOUR")
        sm = _instance(model, d, db, precision, max_seq)
        if sm is None:
            caps[d] = [0.0] * len(buckets)
            inst_gpus[d] = 0
            price[d] = p
            continue
        inst_gpus[d] = sm.shard.tp
        price[d] = p * sm.shard.tp
        caps[d] = [sm.max_rate(b.isl, b.osl, slo_tpot_ms, slo_ttft_ms) for b in buckets]
    for j, b in enumerate(buckets):
        if all(caps[d][j] <= 0 for d in devices):
            raise InputError(f"no device serves requests of {b.isl:.0f} in / {b.osl:.0f} out within TPOT "
                             f"{slo_tpot_ms:g} ms" + (f" and TTFT {slo_ttft_ms:g} ms" if slo_ttft_ms else "")
                             + "; loosen the SLO, add a faster device or use a lower --precision")
    loads = [rate * b.share for b in buckets]
    counts, fractions, status, elapsed = solve_mix([caps[d] for d in devices], [price[d] for d in devices], loads,
                                                   [(limits or {}).get(d) for d in devices], time_limit)
    counts = dict(zip(devices, counts))
    assignment = []
    for j, b in enumerate(buckets):
        split = {d: round(fractions[j][i], 4) for i, d in enumerate(devices) if fractions[j][i] > 1e-6}
        assignment.append({"isl": b.isl, "osl": b.osl, "share": b.share, "devices": split})
    singles: dict[str, float | None] = {}
    for d in devices:
        singles[d] = None
        if all(c > 0 for c in caps[d]):
            need = math.ceil(sum(rate * b.share / caps[d][j] for j, b in enumerate(buckets)) - 1e-9)
            if (limits or {}).get(d) is None or need <= limits[d]:
                singles[d] = need * price[d]
    valid = {d: c for d, c in singles.items() if c is not None}
    best_single = min(valid, key=valid.get) if valid else None
    cost = sum(price[d] * counts[d] for d in devices)
    return MixResult(instances=counts, gpus={d: counts[d] * inst_gpus[d] for d in devices}, instance_gpus=inst_gpus,
                     cost_per_hour=cost, best_single_device=best_single,
                     best_single_device_cost_per_hour=valid.get(best_single) if best_single else None,
                     single_device_costs=singles, assignment=assignment, status=status, solve_time_s=elapsed,
                     capacities=caps)
