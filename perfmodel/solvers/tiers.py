"""Placement of tensor groups in memory tiers (HBM, host DRAM, CXL, NVMe, PIM) as an LP or ILP.

A *group* is a set of tensors that live together: the 16-bit parameters, the gradients, the Adam state,
the activation checkpoints of a fine-tuning job; the weights, the KV cache, the routed experts of a
serving instance. Each has a size (bytes per GPU) and accesses per step: bytes read and written, in a
phase (``fwd_bwd`` and ``optimizer`` for training, ``decode`` for serving), by a consumer, the GPU or the
CPU. A *tier* has a capacity, a read and a write bandwidth as its consumer sees them (``memtiers``:
link-bounded, shared by the GPUs of a node), and a side: HBM is on the GPU's side of the GPU-host link,
host DRAM, CXL, NVMe and PIM are on the host's side.

Variables: ``f[g,t]`` in [0, 1], the share of group g's bytes on tier t (a group may be split across
tiers, as page interleaving does in the CXL papers); binary with ``integral=True`` (whole groups).

* ``sum_t f[g,t] = 1``; ``sum_g f[g,t] size_g <= capacity_t``; ``f[g,t] = 0`` where g may not go
  (``Group.tiers``, or ``Group.offload`` for tiers on the GPU's side).
* Every access of g in phase p puts ``f[g,t] bytes / bandwidth_t`` seconds on tier t's channel: one
  channel for reads and writes together where the tier shares them (``shared_rw``: DRAM, NAND), a read
  and a write channel where it does not (a CXL card's PCIe link is full duplex).
* An access crosses the GPU-host link when consumer and tier sit on different sides (the GPU reading
  host DRAM, CXL or NVMe; the CPU reading HBM), and then also puts ``f bytes / link_gbps`` seconds on
  the link's direction (host-to-device for GPU reads and CPU writes, device-to-host for the others).
* Overlap (default): the resources of a phase work concurrently, with the phase's compute as one more
  of them, so ``T_p >= load_r,p`` for every resource r and ``T_p >= compute_p``: the phase takes as
  long as its busiest resource (prefetching hides every transfer that is not on the busiest one).
  ``serial=True``: nothing overlaps, ``T_p = compute_p + sum_r load_r,p`` (a pessimistic bound).
* Phases follow one another: minimise ``sum_p T_p``; then, at that time (within 1e-7), minimise the
  total load ``sum_r,p load_r,p`` so that a fast tier is preferred where the step time does not care.

Groups are independent: the model does not couple where the gradients live with where the optimizer
that reads them runs (the consumer of each access is fixed by the builder: ``optimizer="cpu"`` is the
ZeRO-Offload arrangement, the Adam step running on the CPU over whatever tier holds its state). The CPU
Adam step is taken as memory-bound unless ``cpu_adam_params_per_s`` caps it. Latency is not modelled:
all traffic is streamed in large transfers.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import pulp

from ..errors import InputError
from .milp import solver as _solver
from .milp import var as _var

GIB = 2**30
GB = 1e9
REL_SLACK = 1e-7  # the tie-break pass may give up this share of the step time


@dataclass(frozen=True)
class Access:
    """Bytes one consumer reads and writes of a group per step, in one phase."""

    consumer: str  # "gpu" or "cpu"
    read_bytes: float = 0.0
    write_bytes: float = 0.0
    phase: str = "step"


@dataclass(frozen=True)
class Group:
    """Tensors placed together: size per GPU, accesses per step, and where they may go."""

    name: str
    size_bytes: float
    accesses: tuple[Access, ...] = ()
    tiers: tuple[str, ...] | None = None  # allowed tier names; None: any
    offload: bool = False  # must live off the GPU (tiers whose GPU accesses cross the host link)
    note: str = ""

    def traffic(self, consumer: str, kind: str) -> float:
        return sum(getattr(a, f"{kind}_bytes") for a in self.accesses if a.consumer == consumer)


class Workload(list):
    """A list of groups that also carries the compute time of each phase (s) and notes."""

    def __init__(self, groups=(), compute_s: dict[str, float] | None = None, notes: list[str] | None = None):
        super().__init__(groups)
        self.compute_s = dict(compute_s or {})
        self.notes = list(notes or [])


@dataclass(frozen=True)
class TierSpec:
    """One tier as the consumer sees it."""

    name: str
    capacity_bytes: float
    read_gbps: float
    write_gbps: float
    crosses_host_link: bool = True  # a GPU access crosses the GPU-host link (host, CXL, NVMe, PIM); HBM: False
    shared_rw: bool = True  # reads and writes share one channel (DRAM, NAND); False: separate (CXL link)
    kind: str = ""
    ids: tuple[str, ...] = ()


@dataclass
class TierPlan:
    """Where each group goes and what the step costs."""

    time_s: float
    phase_s: dict[str, float]
    bottleneck: dict[str, str]  # phase -> busiest resource ("compute", "host:read", "link:h2d", ...)
    placement: dict[str, dict[str, float]]  # group -> tier -> share of its bytes
    used_bytes: dict[str, float]  # tier -> bytes placed
    loads_s: dict[str, dict[str, float]]  # phase -> resource -> seconds
    compute_s: dict[str, float]
    groups: list[Group]
    tiers: list[TierSpec]
    link_gbps: float
    integral: bool = False
    serial: bool = False
    status: str = "given"
    solver: str = "-"
    solve_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "time_s": self.time_s, "phase_s": self.phase_s, "bottleneck": self.bottleneck,
            "placement": self.placement, "used_bytes": self.used_bytes, "loads_s": self.loads_s,
            "compute_s": self.compute_s, "link_gbps": self.link_gbps, "integral": self.integral,
            "serial": self.serial, "status": self.status, "solver": self.solver,
            "solve_time_s": self.solve_time_s, "notes": self.notes,
            "groups": [{"name": g.name, "size_bytes": g.size_bytes, "note": g.note,
                        "accesses": [a.__dict__ for a in g.accesses]} for g in self.groups],
            "tiers": [t.__dict__ | {"ids": list(t.ids)} for t in self.tiers],
        }


# ---------------------------------------------------------------------------------------------- tiers


def tiers_from_machine(machine) -> list[TierSpec]:
    """HBM (the accelerator's memory at its STREAM-measured bandwidth) plus the tiers of a
    :class:`perfmodel.memtiers.Machine` (host, CXL, NVMe, PIM), named by kind."""
    from ..roofline import device_rates

    rates = device_rates(machine.system.accelerator)
    hbm_bw = rates.hbm_gbps * rates.mem_fraction
    out = [TierSpec("hbm", machine.hbm_bytes, hbm_bw, hbm_bw, crosses_host_link=False, shared_rw=True,
                    kind="hbm", ids=(machine.system.accelerator.id,))]
    for use in (machine.host, machine.cxl, machine.nvme, machine.pim):
        if use is None:
            continue
        out.append(TierSpec(use.kind, use.capacity_bytes, use.read_gbps, use.write_gbps, crosses_host_link=True,
                            shared_rw=use.kind != "cxl", kind=use.kind, ids=tuple(use.ids)))
    return out


# ------------------------------------------------------------------------------------------- the model


def _resources(tier: TierSpec) -> tuple[str, str]:
    if tier.shared_rw:
        return f"{tier.name}", f"{tier.name}"
    return f"{tier.name}:read", f"{tier.name}:write"


def _load_terms(groups: list[Group], tiers: list[TierSpec], link_gbps: float):
    """(phase, resource, group index, tier index, seconds when the whole group sits on the tier)."""
    terms = []
    for gi, g in enumerate(groups):
        for a in g.accesses:
            if a.consumer not in ("gpu", "cpu"):
                raise InputError(f"group {g.name}: consumer '{a.consumer}', expected gpu or cpu")
            for ti, t in enumerate(tiers):
                r_res, w_res = _resources(t)
                if a.read_bytes:
                    terms.append((a.phase, r_res, gi, ti, a.read_bytes / (t.read_gbps * GB)))
                if a.write_bytes:
                    terms.append((a.phase, w_res, gi, ti, a.write_bytes / (t.write_gbps * GB)))
                crosses = t.crosses_host_link if a.consumer == "gpu" else not t.crosses_host_link
                if crosses:
                    # GPU reads / CPU writes move host -> device; GPU writes / CPU reads device -> host
                    h2d, d2h = (a.read_bytes, a.write_bytes) if a.consumer == "gpu" else (a.write_bytes, a.read_bytes)
                    if h2d:
                        terms.append((a.phase, "link:h2d", gi, ti, h2d / (link_gbps * GB)))
                    if d2h:
                        terms.append((a.phase, "link:d2h", gi, ti, d2h / (link_gbps * GB)))
    return terms


def _phases(groups: list[Group], compute_s: dict[str, float]) -> list[str]:
    seen = list(compute_s)
    for g in groups:
        for a in g.accesses:
            if a.phase not in seen:
                seen.append(a.phase)
    return seen or ["step"]


def _check(groups: list[Group], tiers: list[TierSpec], link_gbps: float | None):
    if not tiers:
        raise InputError("tier plan: no tiers given")
    names = [t.name for t in tiers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"tier plan: tier names must be unique (repeated: {', '.join(dup)})")
    for t in tiers:
        if t.capacity_bytes < 0 or t.read_gbps <= 0 or t.write_gbps <= 0:
            raise InputError(f"tier {t.name}: expected capacity >= 0 and positive read/write bandwidths")
    gnames = [g.name for g in groups]
    if len(set(gnames)) != len(gnames):
        raise InputError("tier plan: group names must be unique")
    for g in groups:
        if g.size_bytes < 0:
            raise InputError(f"group {g.name}: negative size")
        for n in g.tiers or ():
            if n not in names:
                raise InputError(f"group {g.name}: unknown tier '{n}' (tiers: {', '.join(names)})")
    if any(t.crosses_host_link for t in tiers) and (link_gbps is None or link_gbps <= 0):
        raise InputError("tier plan: a positive GPU-host link bandwidth (link_gbps) is needed")


def _allowed(g: Group, t: TierSpec) -> bool:
    if g.tiers is not None and t.name not in g.tiers:
        return False
    return not (g.offload and not t.crosses_host_link)


def evaluate_placement(groups: list[Group], tiers: list[TierSpec], placement: dict[str, dict[str, float]],
                       link_gbps: float | None = None, compute_s: dict[str, float] | float | None = None,
                       serial: bool = False, check_capacity: bool = True) -> TierPlan:
    """The step time of a given placement (group -> tier -> share), with the same model as the LP.

    For naive baselines (everything on CXL, numactl-style interleaving) and brute-force checks.
    Capacity is checked unless ``check_capacity=False``; allowed tiers are not."""
    compute = _compute_dict(groups, compute_s)
    _check(groups, tiers, link_gbps)
    names = [t.name for t in tiers]
    frac = [[0.0] * len(tiers) for _ in groups]
    for gi, g in enumerate(groups):
        share = placement.get(g.name)
        if share is None:
            raise InputError(f"placement: no tiers given for group {g.name}")
        for tn, v in share.items():
            if tn not in names:
                raise InputError(f"placement of {g.name}: unknown tier '{tn}' (tiers: {', '.join(names)})")
            frac[gi][names.index(tn)] = float(v)
        if abs(sum(frac[gi]) - 1) > 1e-6:
            raise InputError(f"placement of {g.name}: shares add to {sum(frac[gi]):.3f}, expected 1")
    used = {t.name: sum(frac[gi][ti] * g.size_bytes for gi, g in enumerate(groups)) for ti, t in enumerate(tiers)}
    if check_capacity:
        for t in tiers:
            if used[t.name] > t.capacity_bytes * (1 + 1e-9) + 1:
                raise InputError(f"placement: tier {t.name} holds {used[t.name] / GIB:.1f} GiB, "
                                 f"more than its {t.capacity_bytes / GIB:.1f} GiB")
    return _assemble(groups, tiers, frac, link_gbps or 0.0, compute, serial)


def _compute_dict(groups, compute_s) -> dict[str, float]:
    if compute_s is None:
        compute_s = getattr(groups, "compute_s", None) or {}
    if isinstance(compute_s, (int, float)):
        phases = _phases(groups, {})
        return {phases[0]: float(compute_s)}
    return {k: float(v) for k, v in compute_s.items()}


def _assemble(groups, tiers, frac, link_gbps, compute, serial, **kw) -> TierPlan:
    phases = _phases(groups, compute)
    loads: dict[str, dict[str, float]] = {p: {} for p in phases}
    for p, res, gi, ti, sec in _load_terms(groups, tiers, link_gbps or 1.0):
        if frac[gi][ti] > 0:
            loads[p][res] = loads[p].get(res, 0.0) + frac[gi][ti] * sec
    phase_s, bottleneck = {}, {}
    for p in phases:
        c = compute.get(p, 0.0)
        if serial:
            phase_s[p] = c + sum(loads[p].values())
            bottleneck[p] = "serial"
        else:
            cands = {"compute": c, **loads[p]}
            bottleneck[p] = max(cands, key=cands.get)
            phase_s[p] = cands[bottleneck[p]]
    placement = {g.name: {t.name: frac[gi][ti] for ti, t in enumerate(tiers) if frac[gi][ti] > 1e-9}
                 for gi, g in enumerate(groups)}
    used = {t.name: sum(frac[gi][ti] * g.size_bytes for gi, g in enumerate(groups)) for ti, t in enumerate(tiers)}
    notes = list(getattr(groups, "notes", []) or [])
    return TierPlan(sum(phase_s.values()), phase_s, bottleneck, placement, used, loads, compute, list(groups),
                    list(tiers), link_gbps, serial=serial, notes=notes, **kw)


def _shortfall(groups: list[Group], tiers: list[TierSpec], integral: bool, time_limit: float) -> float:
    """Least extra capacity (bytes) that would make the placement feasible (slack on every tier)."""
    prob = pulp.LpProblem("tier_shortfall", pulp.LpMinimize)
    cat = "Binary" if integral else "Continuous"
    f = {(gi, ti): _var(prob, f"f_{gi}_{ti}", 0, 1, cat) for gi, g in enumerate(groups)
         for ti, t in enumerate(tiers) if _allowed(g, t)}
    s = [_var(prob, f"s_{ti}", 0) for ti in range(len(tiers))]
    prob += pulp.lpSum(s)
    for gi, g in enumerate(groups):
        prob += pulp.lpSum(v for (a, _), v in f.items() if a == gi) == 1
    for ti, t in enumerate(tiers):
        prob += pulp.lpSum(v * groups[gi].size_bytes / GIB for (gi, b), v in f.items() if b == ti) \
            <= t.capacity_bytes / GIB + s[ti]
    prob.solve(_solver(time_limit))
    return sum(v.value() or 0.0 for v in s) * GIB


def plan_tiers(groups: list[Group], tiers: list[TierSpec], *, link_gbps: float | None = None,
               compute_s: dict[str, float] | float | None = None, integral: bool = False, serial: bool = False,
               fix: dict[str, dict[str, float]] | None = None, time_limit: float = 30.0) -> TierPlan:
    """Fastest placement of the groups in the tiers (see the module docstring for the formulation).

    ``compute_s``: compute time per phase (a float for a single phase); defaults to ``groups.compute_s``
    for a :class:`Workload`. ``fix``: shares fixed in advance, group -> tier -> share (e.g. a naive
    all-on-CXL baseline for one group, the LP choosing the rest).
    """
    compute = _compute_dict(groups, compute_s)
    _check(groups, tiers, link_gbps)
    names = [t.name for t in tiers]
    gnames = [g.name for g in groups]
    for gn, share in (fix or {}).items():
        if gn not in gnames:
            raise InputError(f"fix: unknown group '{gn}' (groups: {', '.join(gnames)})")
        for tn in share:
            if tn not in names:
                raise InputError(f"fix {gn}: unknown tier '{tn}' (tiers: {', '.join(names)})")
    for g in groups:
        if not any(_allowed(g, t) for t in tiers):
            raise InputError(f"group {g.name}: no tier it may use among {', '.join(names)}")
    need = sum(g.size_bytes for g in groups)
    have = sum(t.capacity_bytes for t in tiers)
    if need > have * (1 + 1e-12):
        raise InputError(f"tier plan: {(need - have) / GIB:,.1f} GiB missing: the groups take {need / GIB:,.1f} GiB "
                         f"and the tiers ({', '.join(names)}) hold {have / GIB:,.1f} GiB")

    prob = pulp.LpProblem("tier_placement", pulp.LpMinimize)
    cat = "Binary" if integral else "Continuous"
    f = {}
    for gi, g in enumerate(groups):
        for ti, t in enumerate(tiers):
            if _allowed(g, t) or (fix and t.name in fix.get(g.name, {})):
                f[gi, ti] = _var(prob, f"f_{gi}_{ti}", 0, 1, cat)
    phases = _phases(groups, compute)
    T = {p: _var(prob, f"T_{i}", compute.get(p, 0.0)) for i, p in enumerate(phases)}
    loads: dict[tuple[str, str], list] = {}
    for p, res, gi, ti, sec in _load_terms(groups, tiers, link_gbps or 1.0):
        if (gi, ti) in f:
            loads.setdefault((p, res), []).append(sec * f[gi, ti])
    total_load = pulp.lpSum(e for terms in loads.values() for e in terms)
    prob += pulp.lpSum(T.values())
    for gi, g in enumerate(groups):
        prob += pulp.lpSum(v for (a, _), v in f.items() if a == gi) == 1
        for tn, share in (fix or {}).get(g.name, {}).items():
            prob += f[gi, names.index(tn)] == share
    for ti, t in enumerate(tiers):
        prob += pulp.lpSum(v * groups[gi].size_bytes / GIB for (gi, b), v in f.items() if b == ti) \
            <= t.capacity_bytes / GIB
    for p in phases:
        ph = [pulp.lpSum(terms) for (q, _), terms in loads.items() if q == p]
        if serial:
            prob += T[p] >= compute.get(p, 0.0) + pulp.lpSum(ph)
        else:
            for e in ph:
                prob += T[p] >= e
    solver = _solver(time_limit)
    t0 = time.perf_counter()
    prob.solve(solver)
    elapsed = time.perf_counter() - t0
    status = pulp.LpStatus[prob.status]
    if status != "Optimal" and not (status == "Not Solved" and all(v.value() is not None for v in f.values())):
        if status == "Infeasible":
            short = _shortfall(groups, tiers, integral, time_limit)
            what = "whole groups " if integral else ""
            raise InputError(f"tier plan: {short / GIB:,.1f} GiB missing to place the {what}groups in the tiers "
                             f"they may use ({', '.join(names)}); add capacity or allow more tiers")
        raise InputError(f"tier plan: the solver stopped with status '{status}'")
    if status == "Optimal" and f:
        # second pass: the same step time, then the least total load (no gratuitous use of slow tiers)
        best = sum(v.value() or 0.0 for v in T.values())
        prob += pulp.lpSum(T.values()) <= best * (1 + REL_SLACK) + 1e-12
        prob.setObjective(total_load)
        prob.solve(solver)
        elapsed = time.perf_counter() - t0
        if pulp.LpStatus[prob.status] != "Optimal":  # keep the first answer (rare numerical trouble)
            status = f"Optimal (tie-break {pulp.LpStatus[prob.status]})"
    frac = [[0.0] * len(tiers) for _ in groups]
    for (gi, ti), v in f.items():
        x = min(max(v.value() or 0.0, 0.0), 1.0)
        frac[gi][ti] = float(round(x)) if integral else x
    for row in frac:  # clean solver round-off so that each group's shares add to 1
        s = sum(row)
        if s > 0:
            row[:] = [x / s for x in row]
    return _assemble(groups, tiers, frac, link_gbps or 0.0, compute, serial, integral=integral, status=status,
                     solver=solver.name, solve_time_s=elapsed)


def brute_force(groups: list[Group], tiers: list[TierSpec], *, link_gbps: float | None = None,
                compute_s: dict[str, float] | float | None = None, serial: bool = False) -> TierPlan | None:
    """Best whole-group placement by enumeration (tiers ** groups); for tests and small cases."""
    best = None
    for combo in itertools.product(range(len(tiers)), repeat=len(groups)):
        if not all(_allowed(g, tiers[ti]) for g, ti in zip(groups, combo)):
            continue
        used = [0.0] * len(tiers)
        for g, ti in zip(groups, combo):
            used[ti] += g.size_bytes
        if any(u > t.capacity_bytes * (1 + 1e-9) for u, t in zip(used, tiers)):
            continue
        plc = {g.name: {tiers[ti].name: 1.0} for g, ti in zip(groups, combo)}
        plan = evaluate_placement(groups, tiers, plc, link_gbps, compute_s, serial)
        if best is None or plan.time_s < best.time_s - 1e-15:
            best = plan
    return best


# ------------------------------------------------------------------------------------------ builders


def training_groups(model, system, gpus: int | None = None, *, seq_len: int, global_batch: int,
                    micro_batch: int = 1, precision: str = "bf16", recompute: str = "full", tp: int = 1,
                    pp: int = 1, zero: int = 1, optimizer: str = "cpu", offload: tuple[str, ...] = (),
                    grad_bytes: float = 2.0, cpu_adam_params_per_s: float | None = None, db=None) -> Workload:
    """Groups of a (fine-tuning) job per GPU, with the forward/backward compute time of ``estimate_training``.

    * ``params16`` (2 B/param): read by the GPU in every pass of every micro-batch (forward, backward and
      the recomputed forward under full recomputation); the optimizer writes its updated shard.
    * ``gradients`` (``grad_bytes``/param): written by the GPU each micro-batch (accumulation reads
      them back); read by the optimizer.
    * ``optimizer_state`` (12 B/param: fp32 master weights, Adam m and v): read and written by the
      optimizer step (``optimizer="cpu"``: the CPU, ZeRO-Offload; ``"gpu"``: the GPU).
    * ``activations`` (the stored activations/checkpoints of ``estimate_training``): written by the GPU in
      the forward and read in the backward of each micro-batch.
    * ``workspace`` (communication buffers, allocator margin): HBM only.

    Phases: ``fwd_bwd`` (compute = the estimate's step time less its optimizer step) and ``optimizer``
    (compute 0: memory-bound, or shard / ``cpu_adam_params_per_s`` for a CPU optimizer). ``offload``
    names groups that must live off the GPU (as ZeRO-Offload puts gradients and optimizer state on the
    CPU side). ZeRO-1 shards the optimizer state over DP, ZeRO-2 also the gradients, ZeRO-3 also the
    parameters.
    """
    from ..activations import inflight_microbatches
    from ..models import get_model
    from ..specdb import load_database
    from ..training import estimate_training

    if optimizer not in ("cpu", "gpu"):
        raise InputError(f"--optimizer: expected cpu or gpu (got '{optimizer}')")
    db = db or load_database()
    m = get_model(model)
    est = estimate_training(m, system, gpus, seq_len=seq_len, global_batch=global_batch, tp=tp, pp=pp,
                            micro_batch=micro_batch, precision=precision, recompute=recompute, zero=zero, db=db)
    dp = est.dp
    n_micro = est.micro_batches
    passes = 3 if recompute == "full" else 2
    p_gpu = m.params_total / (tp * pp)
    shard = p_gpu / dp if zero >= 1 else p_gpu
    g_size = grad_bytes * (p_gpu / dp if zero >= 2 else p_gpu)
    w_size = 2 * (p_gpu / dp if zero >= 3 else p_gpu)
    acts = est.memory_per_gpu_bytes["activations"]
    per_micro = acts / float(inflight_microbatches(pp, n_micro))
    ws = est.memory_per_gpu_bytes["comm_buffers"] + est.memory_per_gpu_bytes["allocator_margin"]
    opt = optimizer
    names = {"params16", "gradients", "optimizer_state", "activations"}
    bad = [o for o in offload if o not in names]
    if bad:
        raise InputError(f"--offload {','.join(bad)}: expected some of {', '.join(sorted(names))}")
    groups = [
        Group("params16", w_size, (Access("gpu", w_size * passes * n_micro, 0.0, "fwd_bwd"),
                                   Access(opt, 0.0, 2 * shard, "optimizer")),
              offload="params16" in offload, note="16-bit weights"),
        Group("gradients", g_size, (Access("gpu", g_size * (n_micro - 1), g_size * n_micro, "fwd_bwd"),
                                    Access(opt, grad_bytes * shard, 0.0, "optimizer")),
              offload="gradients" in offload, note=f"{grad_bytes:g} B/param"),
        Group("optimizer_state", 12 * shard, (Access(opt, 12 * shard, 12 * shard, "optimizer"),),
              offload="optimizer_state" in offload, note="fp32 master + Adam m, v"),
        Group("activations", acts, (Access("gpu", per_micro * n_micro, per_micro * n_micro, "fwd_bwd"),),
              offload="activations" in offload, note=f"recompute={recompute}"),
        Group("workspace", ws, (), tiers=("hbm",), note="comm buffers + allocator margin"),
    ]
    t_opt = est.time_breakdown_s["optimizer"]
    c_opt = shard / cpu_adam_params_per_s if (opt == "cpu" and cpu_adam_params_per_s) else 0.0
    notes = [f"{m.id} on {est.gpus} x {est.device}: dp={dp}, {n_micro} micro-batches of {micro_batch} x {seq_len} "
             f"tokens, {passes} weight passes each; optimizer on the {opt}"]
    return Workload(groups, {"fwd_bwd": est.step_time_s - t_opt, "optimizer": c_opt}, notes)


def serving_groups(model, system, *, isl: int, osl: int, batch: int,
                   precision: str = "bf16", kv_precision: str | None = None, tp: int = 1, ep: int = 1, pp: int = 1,
                   engine: str | None = None, db=None) -> Workload:
    """Groups of one serving GPU for a decode step at ``batch`` sequences of mean context ``isl + osl/2``.

    * ``weights`` (attention, dense MLP, shared experts, embeddings): read once per step;
    * ``experts`` (routed experts, MoE only): only the activated ones are read,
      ``E (1 - (1 - k/E)^batch)`` of E per layer;
    * ``kv_cache`` (``batch`` sequences at ``isl + osl`` tokens): each step reads every token of context
      and writes one token per sequence;
    * ``workspace`` (activations and the engine's reserve): HBM only.

    Compute per step: the decode step of ``inference.StepModel`` with everything in HBM, so a plan
    that keeps everything in HBM costs exactly the serving estimate's step.
    """
    from ..inference import StepModel
    from ..memory import kv_bytes_per_sequence, kv_bytes_per_token, plan_memory, weight_bytes_per_gpu
    from ..ops import expected_distinct_experts

    sm = StepModel(model, system, tp=tp, pp=pp, ep=ep, precision=precision, kv_precision=kv_precision,
                   engine=engine, db=db)
    m, shard = sm.arch, sm.shard
    ctx = isl + osl / 2
    w = weight_bytes_per_gpu(m, shard, pp, sm.ctx.w_bytes)
    kv_seq = kv_bytes_per_sequence(m, shard, pp, sm.ctx.kv_bytes, isl + osl, sm.engine.block_tokens)
    kv_tok = kv_bytes_per_token(m, shard, pp, sm.ctx.kv_bytes)
    mem = plan_memory(m, shard, pp, sm.ref.accelerator.usable_memory_gb, sm.engine, sm.ctx.w_bytes, sm.ctx.kv_bytes,
                      2.0, isl + osl)
    dense = w.attention + w.mlp + w.embeddings
    groups = [Group("weights", dense, (Access("gpu", dense, 0.0, "decode"),), note=f"{precision}")]
    if m.is_moe and w.experts:
        share = expected_distinct_experts(m.experts, m.top_k, batch) / m.experts
        groups.append(Group("experts", w.experts, (Access("gpu", w.experts * share, 0.0, "decode"),),
                            note=f"{share:.0%} activated per step"))
    kv_size = batch * kv_seq
    groups.append(Group("kv_cache", kv_size, (Access("gpu", min(batch * kv_tok * ctx, kv_size), batch * kv_tok,
                                                     "decode"),), note=f"{batch} x {isl + osl} tokens"))
    groups.append(Group("workspace", mem.activations + mem.reserve, (), tiers=("hbm",), note="activations + reserve"))
    notes = [f"{m.id} on {sm.ref.accelerator.id}, tp={tp} ep={ep} pp={pp}: decode step at {batch} sequences, "
             f"context {ctx:,.0f}"]
    return Workload(groups, {"decode": sm.decode_s(batch, ctx)}, notes)


def plan_machine_tiers(machine, groups: list[Group], **kw) -> TierPlan:
    """``plan_tiers`` over the tiers of a :class:`perfmodel.memtiers.Machine` and its GPU-host link."""
    return plan_tiers(groups, tiers_from_machine(machine), link_gbps=machine.gpu_host_gbps, **kw)


# -------------------------------------------------------------------------------------------- report


def tiers_report(plan: TierPlan) -> list[str]:
    """Lines for the CLI: the tiers, the placement, the time per phase and its busiest resource."""
    mode = ("given placement" if plan.status == "given" else
            "ILP (whole groups)" if plan.integral else "LP (groups may be split)") + \
        (", serial" if plan.serial else ", overlapped")
    lines = [f"tier plan: {mode}; step {plan.time_s * 1e3:,.1f} ms "
             f"({plan.status}, {plan.solver}, {plan.solve_time_s:.2f} s)"]
    lines += [f"  {n}" for n in plan.notes]
    lines.append(f"  GPU-host link: {plan.link_gbps:,.1f} GB/s per direction")
    lines.append(f"  {'tier':<8} {'capacity':>11} {'used':>11} {'read GB/s':>10} {'write GB/s':>10}  side")
    for t in plan.tiers:
        side = "host" if t.crosses_host_link else "gpu"
        lines.append(f"  {t.name:<8} {t.capacity_bytes / GIB:>7,.1f} GiB {plan.used_bytes[t.name] / GIB:>7,.1f} GiB "
                     f"{t.read_gbps:>10,.1f} {t.write_gbps:>10,.1f}  {side}"
                     + (f" ({'+'.join(t.ids)})" if t.ids else ""))
    lines.append(f"  {'group':<16} {'size':>11}  placement")
    for g in plan.groups:
        where = ", ".join(f"{tn} {v:.0%}" if v >= 0.005 else f"{tn} <1%"
                          for tn, v in plan.placement[g.name].items() if v >= 5e-4)
        lines.append(f"  {g.name:<16} {g.size_bytes / GIB:>7,.1f} GiB  {where}" + (f"   [{g.note}]" if g.note else ""))
    for p, t in plan.phase_s.items():
        top = sorted(plan.loads_s[p].items(), key=lambda kv: -kv[1])[:3]
        busy = ", ".join(f"{r} {s * 1e3:,.1f}" for r, s in top)
        lines.append(f"  phase {p:<9} {t * 1e3:>9,.1f} ms  bound by {plan.bottleneck[p]}; compute "
                     f"{plan.compute_s.get(p, 0.0) * 1e3:,.1f} ms" + (f"; busiest (ms): {busy}" if busy else ""))
    return lines


__all__ = ["Access", "Group", "Workload", "TierSpec", "TierPlan", "plan_tiers", "evaluate_placement", "brute_force",
           "tiers_from_machine", "plan_machine_tiers", "training_groups", "serving_groups", "tiers_report"]

