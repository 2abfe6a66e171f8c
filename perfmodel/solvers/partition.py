"""Pipeline stage partition as an ILP (pulp with HiGHS, CBC as fallback).

Assign L layers, in order, to p stages so that the slowest stage is as fast as possible and every stage
fits in memory. Layers differ (dense and MoE layers, say) and the first and last stages carry extra work:
the embedding, and the LM head with the loss, whose cost grows with the vocabulary; with a large
vocabulary an even split leaves the last stage far slower than the rest (the imbalance that the
vocabulary-parallelism work of Yeung et al. 2024 addresses by spreading the head).

Variables: ``u[s,k] = 1`` when stage s starts at layer k (one-hot per stage boundary), so the boundary is
``b_s = sum_k k u[s,k]`` with ``b_0 = 0``, ``b_p = L`` and ``b_{s+1} >= b_s + 1``. With prefix sums
``P_k = t_0 + ... + t_{k-1}`` a stage's time is ``sum_k P_k u[s+1,k] - sum_k P_k u[s,k] + t_extra_s``, linear
in u; memory likewise with prefix sums of layer memory. Objective: minimise T, the slowest stage, with the
average stage time as a valid lower bound to tighten the relaxation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pulp

from ..errors import InputError
from .milp import solver as _solver
from .milp import var as _var


@dataclass(frozen=True)
class Partition:
    layers_per_stage: list[int]
    stage_times: list[float]
    max_stage_time: float
    even_max_stage_time: float
    status: str
    solve_time_s: float
    solver: str


def _stage_times(sizes: list[int], t: list[float], extra: list[float]) -> list[float]:
    out, i = [], 0
    for s, n in enumerate(sizes):
        out.append(sum(t[i:i + n]) + extra[s])
        i += n
    return out


def even_split(layers: int, stages: int) -> list[int]:
    base, rem = divmod(layers, stages)
    return [base + (1 if s < rem else 0) for s in range(stages)]


def _identical_layers(L, stages, t, extra, mem, mem_extra, mem_cap, even, even_max, time_limit) -> Partition:
    """Identical layers: only the count per stage matters, an ILP over p integers."""
    prob = pulp.LpProblem("stage_counts", pulp.LpMinimize)
    n = [_var(prob, f"n_{s}", 1, L, "Integer") for s in range(stages)]
    T = _var(prob, "T", (L * t + sum(extra)) / stages)
    prob += T
    prob += pulp.lpSum(n) == L
    for s in range(stages):
        prob += T >= t * n[s] + extra[s]
        if mem_cap is not None:
            prob += mem * n[s] + mem_extra[s] <= mem_cap
    solver = _solver(time_limit)
    t0 = time.perf_counter()
    prob.solve(solver)
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible":
        raise InputError(f"no split of {L} layers into {stages} stages fits {mem_cap / 2**30:.1f} GiB per GPU; "
                         f"use more stages or less memory per layer")
    sizes = [int(round(v.value())) for v in n]
    times = [t * k + extra[s] for s, k in enumerate(sizes)]
    return Partition(sizes, times, max(times), even_max, status, time.perf_counter() - t0, solver.name)


def partition_stages(layer_time: list[float], stages: int, first_extra: float = 0.0, last_extra: float = 0.0,
                     layer_mem: list[float] | None = None, mem_cap: float | None = None,
                     first_mem: float = 0.0, last_mem: float = 0.0, time_limit: float = 10.0) -> Partition:
    """Best contiguous split of layers into stages (minimise the slowest stage), as a MILP."""
    L = len(layer_time)
    if stages < 1 or stages > L:
        raise InputError(f"--pp {stages}: expected 1 to {L} stages for {L} layers")
    extra = [0.0] * stages
    extra[0] += first_extra
    extra[-1] += last_extra
    even = even_split(L, stages)
    even_max = max(_stage_times(even, layer_time, extra))
    if stages == 1:
        return Partition([L], [even_max], even_max, even_max, "trivial", 0.0, "-")
    mem_extra = [0.0] * stages
    mem_extra[0] += first_mem
    mem_extra[-1] += last_mem
    if len(set(layer_time)) == 1 and (layer_mem is None or len(set(layer_mem)) == 1):
        return _identical_layers(L, stages, layer_time[0], extra, (layer_mem or [0.0])[0], mem_extra, mem_cap,
                                 even, even_max, time_limit)
    prob = pulp.LpProblem("stage_partition", pulp.LpMinimize)
    P = [0.0]
    for t in layer_time:
        P.append(P[-1] + t)
    M = [0.0]
    for mm in (layer_mem or [0.0] * L):
        M.append(M[-1] + mm)
    # boundary s (1..p-1) is the first layer of stage s; it can lie in [s, L - (p - s)]
    u = {s: {k: _var(prob, f"u_{s}_{k}", cat="Binary") for k in range(s, L - (stages - s) + 1)}
         for s in range(1, stages)}
    T = _var(prob, "T", (P[-1] + sum(extra)) / stages)
    prob += T

    def start(s):
        return 0 if s == 0 else pulp.lpSum(k * v for k, v in u[s].items())

    def at(prefix, s):
        if s == 0:
            return prefix[0]
        if s == stages:
            return prefix[L]
        return pulp.lpSum(prefix[k] * v for k, v in u[s].items())

    for s in range(1, stages):
        prob += pulp.lpSum(u[s].values()) == 1
        if s > 1:
            prob += start(s) >= start(s - 1) + 1
    for s in range(stages):
        prob += T >= at(P, s + 1) - at(P, s) + extra[s]
        if layer_mem is not None and mem_cap is not None:
            prob += at(M, s + 1) - at(M, s) + mem_extra[s] <= mem_cap
    solver = _solver(time_limit)
    t0 = time.perf_counter()
    prob.solve(solver)
    elapsed = time.perf_counter() - t0
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible":
        raise InputError(f"no split of {L} layers into {stages} stages fits {mem_cap / 2**30:.1f} GiB per GPU; "
                         f"use more stages or less memory per layer")
    bounds = [0] + [next((k for k, v in u[s].items() if (v.value() or 0) > 0.5), -1) for s in range(1, stages)] + [L]
    sizes = [bounds[s + 1] - bounds[s] for s in range(stages)]
    if sum(sizes) != L or min(sizes) < 1:
        sizes = even
        status = f"{status} (fallback to even split)"
    times = _stage_times(sizes, layer_time, extra)
    if max(times) > even_max and (layer_mem is None or mem_cap is None):
        sizes, times = even, _stage_times(even, layer_time, extra)  # never worse than the even split
    return Partition(sizes, times, max(times), even_max, status, elapsed, solver.name)
