"""MoE expert placement as an ILP (MoETuner / ExFlow style), costed by perfmodel's own model.

Given how many tokens each routed expert of each MoE layer receives and how tokens move from the experts
of one layer to those of the next, assign every expert of every MoE layer to a GPU so that the busiest
GPU computes little and few tokens cross GPUs (and fewer still cross nodes) between consecutive layers
(Go & Mahajan 2025, MoETuner, arXiv:2502.06643; Yao et al. 2024, ExFlow, arXiv:2401.08383).

Routing statistics (:class:`Routing`, read by :func:`load_routing`)
------------------------------------------------------------------
Counts per batch (or iteration), for the model's MoE layers only (dense leading layers excluded), L MoE
layers of E routed experts each. A token routed to k experts counts k times (once per expert).

* JSON: ``{"tokens": [[...E counts] x L], "transitions": [[[...E counts] x E] x (L-1)]}``. ``tokens[l][e]``
  is the number of tokens routed to expert e of MoE layer l; ``transitions[l][i][j]`` the number that go
  from expert i of layer l to expert j of layer l+1. ``transitions`` is optional; without it the traffic
  term is 0 and the placement only balances load. No other keys are accepted.
* NPZ (``numpy.savez``): an array ``tokens`` of shape (L, E) and optionally ``transitions`` of shape
  (L-1, E, E).

Counts must be finite and non-negative. A malformed JSON file is reported with its line and column; a
wrong shape names the field and the expected shape, a bad count names the field and its (layer, index).

Objective (both terms in tokens)
--------------------------------
``objective = w_load * load_term + w_traffic * traffic_term`` with

* ``load_term = sum_l max_g load_l(g)``: the tokens the busiest GPU's experts process, summed over MoE
  layers (the expert GEMMs of a layer wait for their slowest GPU);
* ``traffic_term = (1/G) sum_l sum_{i,j} T[l][i][j] dist(gpu_l(i), gpu_{l+1}(j))``: tokens moving between
  consecutive layers' experts, with ``dist`` 0 on the same GPU, 1 within a node and ``cross_node_weight``
  across nodes, divided by the GPU count G so that it is tokens *per GPU*, like the load term. With
  ``w_load = w_traffic = 1`` one token more on the busiest GPU costs as much as one token per GPU sent
  over NVLink.

Formulation (scales to 256 experts x 64 GPUs x 58 layers in a minute)
--------------------------------------------------------------------
By layer: given the placement of layer l, the traffic cost of putting expert f of layer l+1 on GPU g is
linear, ``cost(f, g) = sum_e T[l][e][f] dist(gpu_l(e), g)``, so each layer is an assignment ILP: binary
``x[f,g]``, ``sum_g x[f,g] = 1``, ``sum_f x[f,g] <= capacity``, a continuous ``M >= sum_f t_f x[f,g]``,
minimise ``w_load M + w_traffic/G sum cost(f,g) x[f,g]``; with both neighbours fixed the cost is the sum
of the incoming and the outgoing term, still linear. The search:

1. forward pass, layer 0 on load alone: per layer the better of two greedy placements (the baseline's,
   and one that scores each GPU by the objective it would add), improved by local search (best swaps of
   two experts, moves into free slots), which is exact for the per-layer objective and fast;
2. local-search sweeps with both neighbours fixed, alternating direction, until a sweep gains nothing;
3. ILP sweeps while time remains: each layer's ILP (HiGHS, the current placement as MIP start, an equal
   share of the remaining time). Layers of more than 4096 x[f,g] are solved on a large neighbourhood:
   each expert may stay or move to one of its 4 cheapest GPUs by traffic cost.

A layer's new placement is kept only when it beats the one it would replace, and the result is compared
with the greedy baseline, so it is never worse than greedy.

Small instances (at most 4000 variables, ``method="auto"``) are also solved as one joint ILP over all
layers, with the layered result as its MIP start and the traffic linearised exactly: per pair (i, j) with
tokens, ``s >= x[i,a] - x[j,a]`` for every GPU a marks "different GPU" and the same over each node's sum
marks "different node". Solved to optimality, it gives gap 0.

The MILPs go to HiGHS through ``highspy`` (a perfmodel dependency), built from sparse arrays, which also
takes a MIP start: PuLP's per-variable transfer costs about 0.7 s per 16k-variable layer (40 s of the
minute at this size) and its HiGHS interface takes no start. Without highspy (or with ``solver="pulp"``)
the same MILPs are solved through PuLP (:mod:`perfmodel.solvers.milp`: HiGHS, then CBC).

Lower bound and gap
-------------------
``gap = (objective - lower_bound) / objective``. The bound is combinatorial and valid for the whole
problem, not per-layer conditional: per layer, the busiest GPU carries at least
``max(total/G, largest expert, the m lightest of the (m-1)G+1 heaviest experts for m = 2..capacity)``
(pigeonhole: some GPU holds m of them); per transition, expert j of layer l+1 can share its GPU
with at most ``capacity`` experts of layer l and its node with at most ``capacity x gpus_per_node``, so
at least its incoming tokens minus the largest ``capacity`` of them travel, and at least its incoming
minus the largest ``capacity x gpus_per_node`` cross nodes (likewise counted from the sending side; the
larger of the two sums is used). When the joint ILP runs, its MIP dual bound is used if it is higher.

Predicted layer time
--------------------
``layer_time_*_s`` is the mean over MoE layers of: the routed-expert GEMMs (up, activation, down as in
:mod:`perfmodel.ops`) on the busiest GPU, one grouped kernel over its experts at its token load
(:func:`perfmodel.roofline.gemm_time` on the system's accelerator), plus the all-to-all that carries the
layer's tokens to the next layer's experts (:func:`perfmodel.comm.collective_time`): the busiest GPU's
intra-node and cross-node bytes (``hidden x activation bytes`` per token) each converted to the
nccl-tests buffer of a uniform all-to-all that moves that many bytes per rank, the two tiers overlapping.
"Before" is round-robin placement (expert e on GPU e mod G), the default expert parallelism; "after" is
the chosen placement. Attention, shared experts and the dispatch into the first MoE layer do not depend
on the placement and are left out. Experts are not replicated.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

MIP_REL_GAP = 1e-6  # relative gap at which a MILP counts as solved
JOINT_MAX_VARS = 4000  # joint ILP over all layers when it has at most this many variables (method="auto")


# -- routing statistics ---------------------------------------------------------------------------------

@dataclass
class Routing:
    """Routing statistics of an MoE model's MoE layers (see the module docstring for the file schema).

    ``tokens`` (L, E): tokens routed to expert e of MoE layer l per batch; ``transitions`` (L-1, E, E):
    tokens going from expert i of layer l to expert j of layer l+1, or None (no traffic term).
    """

    tokens: np.ndarray
    transitions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.tokens = np.asarray(self.tokens, dtype=float)
        if self.transitions is not None:
            self.transitions = np.asarray(self.transitions, dtype=float)

    @property
    def layers(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def experts(self) -> int:
        return int(self.tokens.shape[1]) if self.tokens.ndim == 2 else 0


def _where_text(field_name: str, idx: tuple[int, ...]) -> str:
    loc = "".join(f"[{i}]" for i in idx)
    if field_name == "tokens" and len(idx) == 2:
        return f"{field_name}{loc} (layer {idx[0]}, expert {idx[1]})"
    if field_name == "transitions" and len(idx) == 3:
        return f"{field_name}{loc} (layer {idx[0]}, from expert {idx[1]} to expert {idx[2]})"
    if idx:
        return f"{field_name}{loc} (layer {idx[0]})"
    return field_name


def _shape_error(where: str, field_name: str, value, shape: tuple[int, ...], names: tuple[str, ...]) -> str:
    """Walk a nested list to the first place it departs from ``shape`` and say so."""
    expected = f"expected shape {shape} ({' x '.join(names)})"

    def walk(v, depth: int, idx: tuple[int, ...]) -> str | None:
        if depth == len(shape):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                return f"{where}: {_where_text(field_name, idx)}: expected a count, got {v!r}"
            return None
        if not isinstance(v, (list, tuple, np.ndarray)):
            return (f"{where}: {_where_text(field_name, idx)}: expected a list of {shape[depth]} "
                    f"{names[depth]}, got {type(v).__name__}; {expected}")
        if len(v) != shape[depth]:
            return (f"{where}: {_where_text(field_name, idx)}: expected {shape[depth]} {names[depth]}, got "
                    f"{len(v)}; {expected}")
        for i, item in enumerate(v):
            msg = walk(item, depth + 1, idx + (i,))
            if msg:
                return msg
        return None

    return walk(value, 0, ()) or f"{where}: {field_name}: {expected}"


def _as_counts(where: str, field_name: str, value, shape: tuple[int, ...], names: tuple[str, ...]) -> np.ndarray:
    """A float array of exactly ``shape`` with finite non-negative entries, or an InputError saying where."""
    arr = None
    try:
        raw = np.asarray(value)
        if raw.dtype.kind in "iuf" and raw.shape == shape:
            arr = raw.astype(float)
    except (ValueError, TypeError):
        arr = None
    if arr is None:
        raw_shape = getattr(value, "shape", None)
        if raw_shape is not None and not isinstance(value, list):  # an NPZ array of the wrong shape/dtype
            raise InputError(f"{where}: {field_name}: expected shape {shape} ({' x '.join(names)}) of counts, "
                             f"got shape {tuple(raw_shape)} of {getattr(value, 'dtype', '?')}")
        raise InputError(_shape_error(where, field_name, value, shape, names))
    bad = np.argwhere(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        idx = tuple(int(i) for i in bad[0])
        raise InputError(f"{where}: {_where_text(field_name, idx)}: expected a finite non-negative count, "
                         f"got {arr[idx]:g}")
    return arr


def _routing_from_mapping(where: str, data, layers: int, experts: int) -> Routing:
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected an object with 'tokens' (and optionally 'transitions'), "
                         f"got {type(data).__name__}")
    unknown = sorted(set(data) - {"tokens", "transitions"})
    if unknown:
        raise InputError(f"{where}: {unknown[0]}: unknown field (expected tokens, transitions)")
    if "tokens" not in data:
        raise InputError(f"{where}: tokens: required field is missing (shape ({layers}, {experts}): MoE layers "
                         f"x experts)")
    tokens = _as_counts(where, "tokens", data["tokens"], (layers, experts), ("MoE layers", "experts"))
    trans = None
    if data.get("transitions") is not None:
        trans = _as_counts(where, "transitions", data["transitions"], (layers - 1, experts, experts),
                           ("layer pairs", "experts", "experts"))
    return Routing(tokens, trans)


def load_routing(path: Path | str, layers: int, experts: int) -> Routing:
    """Read routing statistics for ``layers`` MoE layers of ``experts`` experts from a JSON or NPZ file."""
    path = Path(path)
    where = str(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise InputError(f"{where}: cannot read the routing file ({e.strerror or e})") from None
    if path.suffix.lower() == ".npz" or blob[:4] == b"PK\x03\x04":
        import io
        import zipfile

        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"{where}: not a readable NPZ archive ({e})") from None
        return _routing_from_mapping(where, data, layers, experts)
    try:
        data = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not UTF-8 text (byte {e.start}); expected JSON or NPZ") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: line {e.lineno}, column {e.colno}: malformed JSON: {e.msg}") from None
    return _routing_from_mapping(where, data, layers, experts)


def _zipf_popularity(experts: int, skew: float, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """Zipf(skew) shares over a random ranking, capped at 1/top_k (an expert sees each token once)."""
    p = 1.0 / np.arange(1, experts + 1, dtype=float) ** skew
    p /= p.sum()
    cap = 1.0 / top_k
    for _ in range(experts):  # water-filling: clip, spread the excess over the rest
        over = p > cap + 1e-15
        if not over.any():
            break
        excess = (p[over] - cap).sum()
        p[over] = cap
        free = p < cap - 1e-15
        p[free] += excess * p[free] / p[free].sum()
    return p[rng.permutation(experts)]


def synthetic_routing(layers: int, experts: int, top_k: int, tokens_per_layer: int, skew: float,
                      affinity: float, seed: int = 0) -> Routing:
    """Synthetic routing: Zipf(``skew``) expert popularity per layer (0 = uniform), a random ranking per layer.

    Each layer routes ``tokens_per_layer x top_k`` tokens. Between layers, a share ``affinity`` of the
    tokens at expert i (rounded) goes on to a fixed preferred expert of the next layer (a random
    permutation, so preferences do not collide); the rest spread over the next layer's experts by its
    Zipf popularity (multinomial, seeded). The next layer's counts are the column sums, so
    ``transitions[l].sum(1) == tokens[l]`` and ``transitions[l].sum(0) == tokens[l+1]``.
    """
    if layers < 1 or experts < 1:
        raise InputError(f"synthetic routing: expected at least one layer and one expert (got {layers}, {experts})")
    if not 1 <= top_k <= experts:
        raise InputError(f"synthetic routing: top_k: expected 1..{experts}, got {top_k}")
    if tokens_per_layer < 0:
        raise InputError(f"synthetic routing: tokens_per_layer: expected >= 0, got {tokens_per_layer}")
    if not (skew >= 0 and math.isfinite(skew)):
        raise InputError(f"--synthetic: expected a Zipf skew >= 0, got {skew}")
    if not 0.0 <= affinity <= 1.0:
        raise InputError(f"--affinity: expected a share in [0, 1], got {affinity}")
    rng = np.random.default_rng(seed)
    total = int(tokens_per_layer) * top_k
    tokens = np.zeros((layers, experts))
    trans = np.zeros((max(layers - 1, 0), experts, experts))
    tokens[0] = rng.multinomial(total, _zipf_popularity(experts, skew, top_k, rng))
    for l in range(layers - 1):
        p_next = _zipf_popularity(experts, skew, top_k, rng)
        pref = rng.permutation(experts)
        stay = np.rint(affinity * tokens[l])
        rest = (tokens[l] - stay).astype(np.int64)
        trans[l] = rng.multinomial(rest, p_next)
        trans[l, np.arange(experts), pref] += stay
        tokens[l + 1] = trans[l].sum(axis=0)
    return Routing(tokens, trans if layers > 1 else None)


# -- the placement ----------------------------------------------------------------------------------------

@dataclass
class Placement:
    """An expert placement and what it costs. ``assignment[l, e]`` is the GPU of expert e of MoE layer l.

    ``objective = w_load x load_term + w_traffic x traffic_term`` (tokens; see the module docstring);
    ``baselines`` holds the same objective for round-robin and greedy placement; ``gap`` is
    ``(objective - lower_bound) / objective``.
    """

    assignment: np.ndarray
    objective: float
    load_term: float
    traffic_term: float
    baselines: dict[str, float]
    gap: float
    lower_bound: float
    solve_time_s: float
    status: str
    layer_time_before_s: float
    layer_time_after_s: float
    gpus: int
    gpus_per_node: int
    capacity: int
    method: str
    solver: str
    cross_node_tokens: float = 0.0
    cross_gpu_tokens: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: ``placement`` (layer -> expert -> gpu) and the numbers (`plan experts --json`)."""
        return {
            "placement": self.assignment.astype(int).tolist(),
            "objective": self.objective,
            "load_term": self.load_term,
            "traffic_term": self.traffic_term,
            "baselines": dict(self.baselines),
            "gap": self.gap,
            "lower_bound": self.lower_bound,
            "solve_time_s": self.solve_time_s,
            "status": self.status,
            "method": self.method,
            "solver": self.solver,
            "gpus": self.gpus,
            "gpus_per_node": self.gpus_per_node,
            "capacity": self.capacity,
            "cross_gpu_tokens": self.cross_gpu_tokens,
            "cross_node_tokens": self.cross_node_tokens,
            "layer_time_before_s": self.layer_time_before_s,
            "layer_time_after_s": self.layer_time_after_s,
            "notes": list(self.notes),
        }


class _Instance:
    """Routing, topology and weights; evaluates placements."""

    def __init__(self, tokens: np.ndarray, trans: np.ndarray | None, gpus: int, per_node: int, capacity: int,
                 w_load: float, w_traffic: float, cross_node_weight: float):
        self.t = tokens
        self.T = trans if trans is not None and trans.size and trans.any() else None
        self.L, self.E = tokens.shape
        self.G, self.gpn, self.cap = gpus, per_node, capacity
        self.node = np.arange(gpus) // per_node
        self.nodes = int(self.node[-1]) + 1
        same_node = self.node[:, None] == self.node[None, :]
        self.D = np.where(same_node, 1.0, cross_node_weight)
        np.fill_diagonal(self.D, 0.0)
        self.cnw = cross_node_weight
        self.wl, self.wt = w_load, w_traffic

    def loads(self, a: np.ndarray) -> np.ndarray:
        out = np.zeros((self.L, self.G))
        for l in range(self.L):
            out[l] = np.bincount(a[l], weights=self.t[l], minlength=self.G)
        return out

    def traffic_per_transition(self, a: np.ndarray) -> np.ndarray:
        if self.T is None:
            return np.zeros(max(self.L - 1, 0))
        return np.array([(self.T[l] * self.D[a[l]][:, a[l + 1]]).sum() for l in range(self.L - 1)]) / self.G

    def terms(self, a: np.ndarray) -> tuple[float, float]:
        return float(self.loads(a).max(axis=1).sum()), float(self.traffic_per_transition(a).sum())

    def objective(self, a: np.ndarray) -> float:
        load, traffic = self.terms(a)
        return self.wl * load + self.wt * traffic

    def layer_cost(self, l: int, a: np.ndarray, left: bool = True, right: bool = True) -> np.ndarray:
        """(E, G) traffic cost of putting each expert of layer l on each GPU, neighbours fixed, per GPU."""
        c = np.zeros((self.E, self.G))
        if self.T is None:
            return c
        if left and l > 0:
            c += self.T[l - 1].T @ self.D[a[l - 1]]
        if right and l < self.L - 1:
            c += self.T[l] @ self.D[a[l + 1]]
        return c / self.G

    def sub_objective(self, l: int, col: np.ndarray, cost: np.ndarray) -> float:
        load = np.bincount(col, weights=self.t[l], minlength=self.G).max()
        return self.wl * float(load) + self.wt * float(cost[np.arange(self.E), col].sum())


# -- baselines and greedy ---------------------------------------------------------------------------------

def round_robin(layers: int, experts: int, gpus: int) -> np.ndarray:
    """Expert e on GPU e mod G in every layer."""
    return np.tile(np.arange(experts) % gpus, (layers, 1))


def _greedy_layer(inst: _Instance, l: int, prev: np.ndarray | None) -> np.ndarray:
    """Heaviest expert first to the least-loaded GPU with room; ties toward its heaviest predecessor's GPU,
    then that GPU's node, then the lowest id."""
    G, t = inst.G, inst.t[l]
    load, count = np.zeros(G), np.zeros(G, dtype=int)
    col = np.empty(inst.E, dtype=int)
    pred_gpu = None
    if prev is not None and inst.T is not None:
        heavy = inst.T[l - 1].argmax(axis=0)
        has_pred = inst.T[l - 1].max(axis=0) > 0
        pred_gpu = np.where(has_pred, prev[heavy], -1)
    order = np.lexsort((np.arange(inst.E), -t))
    ids = np.arange(G)
    for f in order:
        room = count < inst.cap
        best = load[room].min()
        cand = ids[room & (load == best)]
        g = cand[0]
        if pred_gpu is not None and pred_gpu[f] >= 0 and len(cand) > 1:
            pg = pred_gpu[f]
            if pg in cand:
                g = pg
            else:
                same = cand[inst.node[cand] == inst.node[pg]]
                if len(same):
                    g = same[0]
        col[f] = g
        load[g] += t[f]
        count[g] += 1
    return col


def greedy(inst: _Instance) -> np.ndarray:
    a = np.empty((inst.L, inst.E), dtype=int)
    for l in range(inst.L):
        a[l] = _greedy_layer(inst, l, a[l - 1] if l else None)
    return a


def _cost_greedy_layer(inst: _Instance, l: int, cost: np.ndarray) -> np.ndarray:
    """Heaviest expert first to the GPU that raises ``w_load x max load + w_traffic x cost`` least."""
    G, t = inst.G, inst.t[l]
    load, count = np.zeros(G), np.zeros(G, dtype=int)
    col = np.empty(inst.E, dtype=int)
    peak = 0.0
    for f in np.lexsort((np.arange(inst.E), -t)):
        score = inst.wl * np.maximum(load + t[f], peak) + inst.wt * cost[f] + 1e-9 * load
        score[count >= inst.cap] = np.inf
        g = int(np.argmin(score))
        col[f] = g
        load[g] += t[f]
        count[g] += 1
        peak = max(peak, load[g])
    return col


def _local_search(inst: _Instance, l: int, col: np.ndarray, cost: np.ndarray, deadline: float,
                  max_rounds: int = 2000) -> np.ndarray:
    """Improving swaps of two experts (and moves into free slots) for layer l with its traffic costs fixed.

    Each round scores every swap and move against the current loads, then applies the best swap of each
    expert in order of gain, skipping GPUs already touched that round and re-checking each exactly.
    """
    E, G, t = inst.E, inst.G, inst.t[l]
    wl, wt = inst.wl, inst.wt
    col = col.copy()
    load = np.bincount(col, weights=t, minlength=G)
    count = np.bincount(col, minlength=G)
    ar = np.arange(E)
    eps = 1e-9 * max(float(t.sum()) * wl + float(np.abs(cost).sum()) * wt, 1.0)
    for _ in range(max_rounds):
        if time.perf_counter() > deadline:
            break
        peak = load.max()
        top = np.argsort(-load, kind="stable")[:3]
        mx = np.full((G, G), load[top[0]])  # the largest load outside GPUs a and b
        if G > 1:
            mx[top[0], :] = load[top[1]]
            mx[:, top[0]] = load[top[1]]
            mx[top[0], top[1]] = mx[top[1], top[0]] = load[top[2]] if G > 2 else 0.0
        here = cost[ar, col]
        cc = cost[:, col]  # cc[f, h]: cost of f on h's GPU
        g1, g2 = col[:, None], col[None, :]
        n1 = load[g1] + (t[None, :] - t[:, None])
        n2 = load[g2] - (t[None, :] - t[:, None])
        delta = wl * (np.maximum(np.maximum(n1, n2), mx[g1, g2]) - peak)
        delta += wt * (cc + cc.T - here[:, None] - here[None, :])
        delta[g1 == g2] = np.inf
        best_h = delta.argmin(axis=1)
        gain = delta[ar, best_h]
        rows = np.nonzero(gain < -eps)[0]
        applied = 0
        if len(rows):
            touched = np.zeros(G, dtype=bool)
            for f in rows[np.argsort(gain[rows], kind="stable")]:
                h = best_h[f]
                a, b = col[f], col[h]
                if touched[a] or touched[b]:
                    continue
                la, lb = load[a], load[b]
                load[a], load[b] = la - t[f] + t[h], lb - t[h] + t[f]
                new_peak = load.max()
                d = wl * (new_peak - peak) + wt * (cost[f, b] + cost[h, a] - cost[f, a] - cost[h, b])
                if d < -eps:
                    col[f], col[h] = b, a
                    touched[a] = touched[b] = True
                    peak = new_peak
                    applied += 1
                else:
                    load[a], load[b] = la, lb
        if not applied and count.min() < inst.cap:  # a move into a free slot
            m_new = np.maximum(np.maximum(load[None, :] + t[:, None], (load[col] - t)[:, None]), mx[col, :])
            dm = wl * (m_new - peak) + wt * (cost - here[:, None])
            dm[:, count >= inst.cap] = np.inf
            dm[ar, col] = np.inf
            k = int(np.argmin(dm))
            if dm.flat[k] < -eps:
                f, g = divmod(k, G)
                load[col[f]] -= t[f]
                count[col[f]] -= 1
                load[g] += t[f]
                count[g] += 1
                col[f] = g
                applied = 1
        if not applied:
            break
    return col


# -- MILP backends ----------------------------------------------------------------------------------------

@dataclass
class _Milp:
    """min c x, row_lo <= A x <= row_hi, col bounds, integrality (1 = integer); A as COO triplets."""

    c: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    integer: np.ndarray


def _highspy():
    try:
        import highspy  # noqa: F401

        return highspy
    except Exception:  # not installed, or a build this machine cannot load
        return None


def _solve_highspy(hs, m: _Milp, start: np.ndarray | None, time_limit: float):
    from scipy.sparse import csc_matrix

    n, nr = len(m.c), len(m.row_lo)
    A = csc_matrix((m.vals, (m.rows, m.cols)), shape=(nr, n))
    A.sum_duplicates()
    lp = hs.HighsLp()
    lp.num_col_, lp.num_row_ = n, nr
    lp.col_cost_ = m.c.astype(float)
    lp.col_lower_, lp.col_upper_ = m.col_lo.astype(float), m.col_hi.astype(float)
    inf = hs.kHighsInf
    lp.row_lower_ = np.where(np.isfinite(m.row_lo), m.row_lo, -inf).astype(float)
    lp.row_upper_ = np.where(np.isfinite(m.row_hi), m.row_hi, inf).astype(float)
    lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(float)
    lp.integrality_ = [hs.HighsVarType.kInteger if i else hs.HighsVarType.kContinuous for i in m.integer]
    h = hs.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("mip_rel_gap", MIP_REL_GAP)
    h.passModel(lp)
    if start is not None:
        sol = hs.HighsSolution()
        sol.col_value = [float(v) for v in start]
        h.setSolution(sol)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    bound = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else -np.inf
    if info.primal_solution_status != 2:  # no feasible point
        return None, status, bound
    return np.asarray(h.getSolution().col_value, dtype=float), status, bound


def _solve_pulp(m: _Milp, time_limit: float):
    import pulp

    from . import milp

    try:
        solver = milp.solver(max(time_limit, 0.01))
    except InputError:
        return None, "no MILP solver", -np.inf
    if isinstance(solver, pulp.HiGHS):
        solver.gapRel = MIP_REL_GAP
    else:
        solver.optionsDict["gapRel"] = MIP_REL_GAP
    prob = pulp.LpProblem("experts", pulp.LpMinimize)
    xs = []
    for i in range(len(m.c)):
        lo = None if not np.isfinite(m.col_lo[i]) else float(m.col_lo[i])
        hi = None if not np.isfinite(m.col_hi[i]) else float(m.col_hi[i])
        xs.append(milp.var(prob, f"x{i}", lo, hi, "Integer" if m.integer[i] else "Continuous"))
    prob += pulp.LpAffineExpression([(xs[i], float(v)) for i, v in enumerate(m.c) if v])
    order = np.argsort(m.rows, kind="stable")
    bounds = np.searchsorted(m.rows[order], np.arange(len(m.row_lo) + 1))
    for r in range(len(m.row_lo)):
        idx = order[bounds[r]:bounds[r + 1]]
        expr = pulp.LpAffineExpression([(xs[int(m.cols[k])], float(m.vals[k])) for k in idx])
        lo, hi = m.row_lo[r], m.row_hi[r]
        if np.isfinite(lo) and np.isfinite(hi) and lo == hi:
            prob += expr == float(lo)
        else:
            if np.isfinite(hi):
                prob += expr <= float(hi)
            if np.isfinite(lo):
                prob += expr >= float(lo)
    prob.solve(solver)
    vals = [v.value() for v in xs]
    feasible = (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    if any(v is None for v in vals) or prob.sol_status not in feasible:
        return None, pulp.LpStatus[prob.status], -np.inf
    x = np.asarray(vals, dtype=float)
    if prob.sol_status == pulp.LpSolutionOptimal:  # proven (within the solver's gap tolerance)
        return x, "Optimal", float(m.c @ x)
    return x, "Time limit reached", -np.inf


class _Backend:
    def __init__(self, prefer: str = "auto"):
        self.hs = _highspy() if prefer in ("auto", "highspy") else None
        if prefer == "highspy" and self.hs is None:
            raise InputError("solver: highspy is not installed (pip install highspy)")
        self.name = "HiGHS (highspy)" if self.hs is not None else "pulp"

    def solve(self, m: _Milp, start: np.ndarray | None, time_limit: float):
        if self.hs is not None:
            return _solve_highspy(self.hs, m, start, time_limit)
        return _solve_pulp(m, time_limit)


def _layer_milp(inst: _Instance, l: int, cost: np.ndarray) -> _Milp:
    """x[f,g] at f*G+g, then M: assignment, capacity and load rows."""
    E, G = inst.E, inst.G
    t = inst.t[l]
    n = E * G + 1
    f_idx = np.repeat(np.arange(E), G)
    g_idx = np.tile(np.arange(G), E)
    xcol = np.arange(E * G)
    nz = t[f_idx] > 0
    rows = np.concatenate([f_idx, E + g_idx, (E + G + g_idx)[nz], E + G + np.arange(G)])
    cols = np.concatenate([xcol, xcol, xcol[nz], np.full(G, E * G)])
    vals = np.concatenate([np.ones(E * G), np.ones(E * G), t[f_idx][nz], -np.ones(G)])
    c = np.concatenate([inst.wt * cost.ravel(), [inst.wl]])
    row_lo = np.concatenate([np.ones(E), np.full(G, -np.inf), np.full(G, -np.inf)])
    row_hi = np.concatenate([np.ones(E), np.full(G, float(inst.cap)), np.zeros(G)])
    col_lo = np.zeros(n)
    col_hi = np.concatenate([np.ones(E * G), [np.inf]])
    col_lo[-1] = _load_bound(t, G, inst.cap)
    integer = np.concatenate([np.ones(E * G, dtype=bool), [False]])
    return _Milp(c, rows, cols, vals, row_lo, row_hi, col_lo, col_hi, integer)


def _layer_start(inst: _Instance, l: int, col: np.ndarray) -> np.ndarray:
    x = np.zeros(inst.E * inst.G + 1)
    x[np.arange(inst.E) * inst.G + col] = 1.0
    x[-1] = np.bincount(col, weights=inst.t[l], minlength=inst.G).max()
    return x


def _decode(x: np.ndarray, E: int, G: int, cap: int) -> np.ndarray | None:
    X = x[:E * G].reshape(E, G)
    col = X.argmax(axis=1)
    if not np.allclose(X[np.arange(E), col], 1.0, atol=1e-4) or np.bincount(col, minlength=G).max() > cap:
        return None
    return col


def _joint_milp(inst: _Instance) -> tuple[_Milp, int, list[tuple[int, np.ndarray, np.ndarray]]]:
    """All layers at once; traffic linearised with a 'different GPU' and a 'different node' variable per
    (i, j) pair with tokens, ``s >= x[i,a] - x[j,a]`` per GPU a, ``n >= sum_{a in N} x[i,a] - x[j,a]`` per node."""
    L, E, G = inst.L, inst.E, inst.G
    nx = L * E * G
    rows, cols, vals, c = [], [], [], [np.zeros(nx)]
    row_lo, row_hi = [], []
    r = 0

    def xi(l, f, g):
        return (l * E + f) * G + g

    # assignment
    for l in range(L):
        for f in range(E):
            rows += [r] * G
            cols += [xi(l, f, g) for g in range(G)]
            vals += [1.0] * G
            row_lo.append(1.0)
            row_hi.append(1.0)
            r += 1
    # capacity
    for l in range(L):
        for g in range(G):
            rows += [r] * E
            cols += [xi(l, f, g) for f in range(E)]
            vals += [1.0] * E
            row_lo.append(-np.inf)
            row_hi.append(float(inst.cap))
            r += 1
    # load: sum t x - M_l <= 0
    mcol = nx
    c.append(np.full(L, inst.wl))
    for l in range(L):
        for g in range(G):
            fs = [f for f in range(E) if inst.t[l, f] > 0]
            rows += [r] * (len(fs) + 1)
            cols += [xi(l, f, g) for f in fs] + [mcol + l]
            vals += [float(inst.t[l, f]) for f in fs] + [-1.0]
            row_lo.append(-np.inf)
            row_hi.append(0.0)
            r += 1
    nxt = nx + L
    pairs = []
    if inst.T is not None:
        extra = inst.cnw - 1.0
        for l in range(L - 1):
            ii, jj = np.nonzero(inst.T[l])
            pairs.append((l, ii, jj))
            for i, j in zip(ii, jj):
                w = inst.wt * inst.T[l, i, j] / G
                s = nxt
                c.append(np.array([w]))
                nxt += 1
                for g in range(G):
                    rows += [r, r, r]
                    cols += [xi(l, i, g), xi(l + 1, j, g), s]
                    vals += [1.0, -1.0, -1.0]
                    row_lo.append(-np.inf)
                    row_hi.append(0.0)
                    r += 1
                if inst.nodes > 1 and extra > 0:
                    nv = nxt
                    c.append(np.array([w * extra]))
                    nxt += 1
                    for node in range(inst.nodes):
                        gs = np.nonzero(inst.node == node)[0]
                        rows += [r] * (2 * len(gs) + 1)
                        cols += [xi(l, i, g) for g in gs] + [xi(l + 1, j, g) for g in gs] + [nv]
                        vals += [1.0] * len(gs) + [-1.0] * len(gs) + [-1.0]
                        row_lo.append(-np.inf)
                        row_hi.append(0.0)
                        r += 1
    n = nxt
    col_lo = np.zeros(n)
    col_hi = np.ones(n)
    col_hi[mcol:mcol + L] = np.inf
    for l in range(L):
        col_lo[mcol + l] = _load_bound(inst.t[l], G, inst.cap)
    integer = np.zeros(n, dtype=bool)
    integer[:nx] = True
    milp = _Milp(np.concatenate(c), np.asarray(rows), np.asarray(cols), np.asarray(vals, dtype=float),
                 np.asarray(row_lo), np.asarray(row_hi), col_lo, col_hi, integer)
    return milp, nx, pairs


def _joint_size(inst: _Instance) -> int:
    pairs = 0 if inst.T is None else int(np.count_nonzero(inst.T))
    return inst.L * inst.E * inst.G + inst.L + pairs * (2 if inst.nodes > 1 else 1)


def _joint_start(inst: _Instance, a: np.ndarray, n: int, pairs) -> np.ndarray:
    L, E, G = inst.L, inst.E, inst.G
    x = np.zeros(n)
    for l in range(L):
        x[(l * E + np.arange(E)) * G + a[l]] = 1.0
    x[L * E * G:L * E * G + L] = inst.loads(a).max(axis=1)
    k = L * E * G + L
    two = inst.nodes > 1 and inst.cnw > 1.0
    for l, ii, jj in pairs:
        for i, j in zip(ii, jj):
            x[k] = float(a[l, i] != a[l + 1, j])
            k += 1
            if two:
                x[k] = float(inst.node[a[l, i]] != inst.node[a[l + 1, j]])
                k += 1
    return x


# -- bounds -----------------------------------------------------------------------------------------------

def _load_bound(t: np.ndarray, G: int, cap: int) -> float:
    """A lower bound on the busiest GPU's tokens in one layer (see the module docstring)."""
    s = np.sort(t)[::-1]
    best = max(float(s.sum()) / G, float(s[0]) if len(s) else 0.0)
    for m in range(2, cap + 1):
        top = (m - 1) * G + 1
        if top > len(s):
            break
        best = max(best, float(s[top - m:top].sum()))
    return best


def _traffic_bound(inst: _Instance) -> float:
    if inst.T is None:
        return 0.0
    cap, big = inst.cap, inst.cap * inst.gpn
    near, far = min(1.0, inst.cnw), max(0.0, inst.cnw - 1.0)
    total = 0.0
    for l in range(inst.L - 1):
        best = 0.0
        for M in (inst.T[l], inst.T[l].T):  # receiving side, sending side
            s = -np.sort(-M, axis=0)  # each column sorted descending
            incoming = s.sum(axis=0)
            b = near * (incoming - s[:cap].sum(axis=0)).sum()
            if inst.nodes > 1:
                b += far * (incoming - s[:big].sum(axis=0)).sum()
            best = max(best, float(b))
        total += best
    return total / inst.G


def lower_bound(inst: _Instance) -> float:
    load = sum(_load_bound(inst.t[l], inst.G, inst.cap) for l in range(inst.L))
    return inst.wl * load + inst.wt * _traffic_bound(inst)


# -- predicted layer time ---------------------------------------------------------------------------------

def _layer_times(db, ref, model, inst: _Instance, a: np.ndarray, precision: str) -> np.ndarray:
    """Per MoE layer: routed-expert GEMMs on the busiest GPU plus the all-to-all to the next layer (s)."""
    from ..comm import collective_time
    from ..ops import WEIGHT_BYTES, compute_dtype
    from ..roofline import device_rates, gemm_time, memory_time

    rates = device_rates(ref.accelerator)
    dtype = compute_dtype(precision)
    in_bytes = 2.0 if dtype in ("bf16", "fp16", "fp32", "tf32") else 1.0
    w_bytes = WEIGHT_BYTES[precision]
    act = 2.0
    h, fe = model.hidden, model.d_expert
    up = 2 if model.activation in ("swiglu", "geglu") else 1
    loads = inst.loads(a)
    groups = np.stack([np.bincount(a[l], minlength=inst.G) for l in range(inst.L)]).astype(float)
    busy = (loads > 0) & (groups > 0)
    m = np.where(busy, loads / np.maximum(groups, 1), 1.0)
    gr = np.maximum(groups, 1)
    t_up = gemm_time(rates, m, up * fe, h, dtype, in_bytes, w_bytes, act, gr, grouped=True)[0]
    t_act = memory_time(rates, m * gr * (up + 1) * fe * act)[0]
    t_down = gemm_time(rates, m, h, fe, dtype, in_bytes, w_bytes, act, gr, grouped=True)[0]
    compute = np.where(busy, t_up + t_act + t_down, 0.0).max(axis=1)
    comm = np.zeros(inst.L)
    if inst.T is not None and inst.G > 1:
        per_token = h * act
        g = inst.gpn
        for l in range(inst.L - 1):
            P = np.zeros((inst.E, inst.G))
            P[np.arange(inst.E), a[l]] = 1.0
            Q = np.zeros((inst.E, inst.G))
            Q[np.arange(inst.E), a[l + 1]] = 1.0
            F = P.T @ inst.T[l] @ Q  # tokens GPU -> GPU
            np.fill_diagonal(F, 0.0)
            same = inst.node[:, None] == inst.node[None, :]
            intra = np.where(same, F, 0.0)
            cross = np.where(same, 0.0, F)
            b_intra = max(intra.sum(1).max(), intra.sum(0).max()) * per_token
            b_cross = max(cross.sum(1).max(), cross.sum(0).max()) * per_token
            t = 0.0
            if g > 1 and b_intra > 0:
                t = float(collective_time(db, ref, "all_to_all", b_intra * g / (g - 1), g, per_node=g).time_s[0])
            if inst.nodes > 1 and b_cross > 0:
                n = inst.G
                tc = float(collective_time(db, ref, "all_to_all", b_cross * n / (n - g), n, per_node=g).time_s[0])
                t = max(t, tc)
            comm[l] = t
    return compute + comm


# -- the solver -------------------------------------------------------------------------------------------

def place_experts(model, routing: Routing, gpus: int, gpus_per_node: int | None = None, system: str = "dgx-h100",
                  capacity: int | None = None, w_load: float = 1.0, w_traffic: float = 1.0,
                  cross_node_weight: float = 4.0, time_limit: float = 60.0, db=None, precision: str = "bf16",
                  memory_gib: float | None = None, method: str = "auto", solver: str = "auto") -> Placement:
    """Place every routed expert of every MoE layer on a GPU (see the module docstring).

    ``model``: a catalog id, config path or :class:`~perfmodel.models.ModelArch` (must be MoE).
    ``gpus_per_node``: default the system's node size. ``capacity``: experts per GPU per layer, default
    ``ceil(E/G)``, lowered when the expert weights of all MoE layers (``precision``) would not fit in
    ``memory_gib`` (default the accelerator's memory). ``method``: ``auto`` (joint ILP when small, else by
    layer), ``joint`` or ``layered``. ``solver``: ``auto`` (highspy, else PuLP), ``highspy`` or ``pulp``.
    ``time_limit`` bounds the whole call, in seconds.
    """
    t_start = time.perf_counter()
    from ..models import get_model
    from ..ops import WEIGHT_BYTES, check_precision

    model = get_model(model)
    if not model.is_moe:
        raise InputError(f"--model {model.id}: not a mixture-of-experts model (experts: 0); expert placement "
                         f"needs routed experts")
    if db is None:
        from ..specdb import load_database

        db = load_database()
    precision = check_precision(precision)
    L, E = model.moe_layers, model.experts
    tokens = np.asarray(routing.tokens, dtype=float)
    if tokens.shape != (L, E):
        raise InputError(f"routing: tokens: expected shape ({L}, {E}) (MoE layers x experts of {model.id}), "
                         f"got {tokens.shape}")
    trans = routing.transitions
    if trans is not None:
        trans = np.asarray(trans, dtype=float)
        if trans.shape != (L - 1, E, E):
            raise InputError(f"routing: transitions: expected shape ({L - 1}, {E}, {E}) (MoE layer pairs x "
                             f"experts x experts of {model.id}), got {trans.shape}")
        _as_counts("routing", "transitions", trans, trans.shape, ("layer pairs", "experts", "experts"))
    _as_counts("routing", "tokens", tokens, tokens.shape, ("MoE layers", "experts"))
    if method not in ("auto", "joint", "layered"):
        raise InputError(f"method: expected auto, joint or layered (got '{method}')")
    if solver not in ("auto", "highspy", "pulp"):
        raise InputError(f"solver: expected auto, highspy or pulp (got '{solver}')")
    if gpus < 1:
        raise InputError(f"--gpus: expected a positive GPU count, got {gpus}")
    ref = db.resolve_system(system, gpus)
    per_node = gpus_per_node if gpus_per_node is not None else ref.system.gpus_per_node
    if per_node < 1:
        raise InputError(f"--gpus-per-node: expected a positive count, got {per_node}")
    per_node = min(per_node, gpus)
    if gpus % per_node:
        raise InputError(f"--gpus {gpus}: not a whole number of nodes of {per_node} GPUs (--gpus-per-node)")
    if not (cross_node_weight >= 1.0 and math.isfinite(cross_node_weight)):
        raise InputError(f"cross_node_weight: expected >= 1 (crossing nodes costs at least a hop within one), "
                         f"got {cross_node_weight}")
    if w_load < 0 or w_traffic < 0:
        raise InputError(f"weights: expected w_load, w_traffic >= 0 (got {w_load}, {w_traffic})")
    need = math.ceil(E / gpus)
    if capacity is None:
        capacity = need
    if capacity < 1 or capacity * gpus < E:
        raise InputError(f"--capacity {capacity}: {gpus} GPUs x {capacity} experts hold {capacity * gpus} of "
                         f"{E} experts per layer, {E - capacity * gpus} short; use at least {need} per GPU "
                         f"or {math.ceil(E / max(capacity, 1))} GPUs")
    notes: list[str] = []
    expert_bytes = model.mlp_params(model.d_expert, bias=model.expert_bias) * WEIGHT_BYTES[precision]
    mem_gib = memory_gib if memory_gib is not None else ref.accelerator.usable_memory_gb * 1e9 / 2**30
    per_expert_all_layers = expert_bytes * L / 2**30
    fit = int(mem_gib // per_expert_all_layers) if per_expert_all_layers > 0 else capacity
    if fit < need:
        missing = need * per_expert_all_layers - mem_gib
        raise InputError(f"--gpus {gpus}: {need} experts per GPU x {L} MoE layers of {model.id} need "
                         f"{need * per_expert_all_layers:.1f} GiB of {precision} expert weights per GPU, "
                         f"{missing:.1f} GiB more than the {mem_gib:.1f} GiB available; use more GPUs")
    if fit < capacity:
        notes.append(f"capacity lowered from {capacity} to {fit} experts per GPU: expert weights "
                     f"({per_expert_all_layers:.2f} GiB per expert slot over {L} layers) must fit {mem_gib:.1f} GiB")
        capacity = fit

    inst = _Instance(tokens, trans, gpus, per_node, capacity, w_load, w_traffic, cross_node_weight)
    rr = round_robin(L, E, gpus)
    gr = greedy(inst)
    base = {"round_robin": inst.objective(rr), "greedy": inst.objective(gr)}
    lb = lower_bound(inst)
    backend = _Backend(solver)
    deadline = t_start + max(time_limit, 0.0) * 0.92 - 0.3  # room for evaluation and layer times

    best = gr.copy()
    status_parts: list[str] = []
    use_joint = method == "joint" or (method == "auto" and _joint_size(inst) <= JOINT_MAX_VARS)
    if use_joint:
        used = "joint"
        layered, _ = _layered(inst, backend, gr, deadline - 0.5 * (deadline - time.perf_counter()))
        if inst.objective(layered) < inst.objective(best):
            best = layered
        joint, _, pairs = _joint_milp(inst)
        x, st, dual = backend.solve(joint, _joint_start(inst, best, len(joint.c), pairs),
                                    max(deadline - time.perf_counter(), 0.05))
        if x is not None:
            cols = [_decode(x[l * E * gpus:(l + 1) * E * gpus], E, gpus, capacity) for l in range(L)]
            if all(c is not None for c in cols):
                a = np.stack(cols)
                if inst.objective(a) <= inst.objective(best) + 1e-9:
                    best = a
        if np.isfinite(dual):
            lb = max(lb, dual)
        status_parts.append(f"joint ILP: {st.lower()}")
    else:
        used = "layered"
        best, st = _layered(inst, backend, gr, deadline)
        status_parts.append(st)

    obj = inst.objective(best)
    if obj > base["greedy"]:  # never worse than greedy (cannot happen with the per-layer checks)
        best, obj = gr, base["greedy"]
    load, traffic = inst.terms(best)
    lb = min(lb, obj)
    gap = (obj - lb) / obj if obj > 0 else 0.0
    gap = 0.0 if gap < 1e-9 else gap
    status = "optimal" if gap <= 1e-6 else ", ".join(status_parts)
    before = _layer_times(db, ref, model, inst, rr, precision)
    after = _layer_times(db, ref, model, inst, best, precision)
    cross_gpu = cross_node = 0.0
    if inst.T is not None:
        for l in range(L - 1):
            diff = best[l][:, None] != best[l + 1][None, :]
            xn = inst.node[best[l]][:, None] != inst.node[best[l + 1]][None, :]
            cross_gpu += float(inst.T[l][diff].sum())
            cross_node += float(inst.T[l][xn].sum())
    return Placement(best, obj, load, traffic, base, gap, lb, time.perf_counter() - t_start, status,
                     float(before.mean()), float(after.mean()), gpus, per_node, capacity, used, backend.name,
                     cross_node, cross_gpu, notes)


RESTRICT_K = 4  # large layers: each expert may move to its RESTRICT_K cheapest GPUs (by traffic) or stay
FULL_LAYER_VARS = 4096  # layers with at most E x G of this many variables get the unrestricted ILP


def _ilp_layer(inst: _Instance, backend: _Backend, l: int, col: np.ndarray, cost: np.ndarray,
               budget: float) -> tuple[np.ndarray, str]:
    """The layer ILP with ``col`` as MIP start; the result replaces ``col`` only when it is better."""
    milp = _layer_milp(inst, l, cost)
    if inst.E * inst.G > FULL_LAYER_VARS:  # a large neighbourhood around col: fix the other x[f,g] to 0
        near = np.argsort(cost + 1e-12 * np.arange(inst.G), axis=1, kind="stable")[:, :RESTRICT_K]
        allow = np.zeros((inst.E, inst.G), dtype=bool)
        allow[np.arange(inst.E)[:, None], near] = True
        allow[np.arange(inst.E), col] = True
        milp.col_hi[:-1] = np.where(allow.ravel(), 1.0, 0.0)
    x, st, _ = backend.solve(milp, _layer_start(inst, l, col), budget)
    if x is not None:
        new = _decode(x, inst.E, inst.G, inst.cap)
        if new is not None and inst.sub_objective(l, new, cost) < inst.sub_objective(l, col, cost) - 1e-9:
            return new, st
    return col, st


def _layered(inst: _Instance, backend: _Backend, start: np.ndarray, deadline: float,
             use_ilp: bool = True) -> tuple[np.ndarray, str]:
    """Forward pass (each layer given the previous one: greedy variants and local search), local-search
    sweeps with both neighbours fixed until they stop improving, then ILP sweeps while time remains."""
    L = inst.L
    a = start.copy()
    for l in range(L):
        cost = inst.layer_cost(l, a, left=True, right=False)
        cands = [a[l], _greedy_layer(inst, l, a[l - 1] if l else None), _cost_greedy_layer(inst, l, cost)]
        cands = [_local_search(inst, l, c, cost, deadline) for c in cands]
        a[l] = min(cands, key=lambda c: inst.sub_objective(l, c, cost))
    ls_sweeps = ilp_sweeps = 0
    while L > 1 and inst.T is not None and time.perf_counter() < deadline and ls_sweeps < 50:
        before = inst.objective(a)
        for l in (range(L) if ls_sweeps % 2 else range(L - 1, -1, -1)):
            a[l] = _local_search(inst, l, a[l], inst.layer_cost(l, a), deadline)
        ls_sweeps += 1
        if inst.objective(a) >= before - 1e-9 * max(before, 1.0):
            break
    statuses: list[str] = []
    while use_ilp and time.perf_counter() < deadline - 0.05:
        before = inst.objective(a)
        order = list(range(L)) if ilp_sweeps % 2 == 0 else list(range(L - 1, -1, -1))
        for i, l in enumerate(order):
            now = time.perf_counter()
            if now >= deadline - 0.02:
                break
            cost = inst.layer_cost(l, a)
            a[l], st = _ilp_layer(inst, backend, l, a[l], cost, max((deadline - now) / (L - i), 0.02))
            a[l] = _local_search(inst, l, a[l], cost, deadline)
            statuses.append(st)
        ilp_sweeps += 1
        if inst.objective(a) >= before - 1e-9 * max(before, 1.0):
            break
    optimal = sum(s == "Optimal" for s in statuses)
    summary = f"layered: {ls_sweeps} local-search sweeps, {ilp_sweeps} ILP sweeps ({optimal}/{len(statuses)} " \
              f"layer ILPs optimal"
    summary += ", time limit)" if any(s == "Time limit reached" for s in statuses) else ")"
    return a, summary
