"""A finite burst: ``n`` requests issued at once to one continuous-batching engine instance.

This is what serving benchmarks run at "QPS = inf" (e.g. TensorRT-LLM's Triton table, 500 requests):
the figures they print are means over requests, so ramp-up and drain matter, and a request's tokens
come out between other requests' prompts only while prompts remain in the queue.

The engine admits at most ``cap`` sequences. Each iteration spends a token budget
(``max_num_tokens``; TensorRT-LLM and vLLM count one token per decoding sequence against it) first on
the decoding sequences, then on queued prompts first-come first-served, splitting a prompt over
iterations when the budget runs out. An iteration costs ``decode_s(d) + prompt tokens x
prefill_s_per_token``, the same additive cost the steady-state offline formula uses. A prompt's last
chunk yields its first token; each later iteration yields one more. ITL is per request
``(t_last - t_first) / (osl - 1)``, averaged over requests, as benchmark clients report it. Requests
may carry their own output lengths (``spread_outputs``): the run then ends with the longest ones
decoding at a small batch, as a real dataset's does.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class BurstResult:
    makespan_s: float
    mean_ttft_s: float
    mean_itl_s: float
    mean_e2e_s: float


def spread_outputs(n: int, points) -> list[int]:
    """Output lengths for ``n`` requests drawn from equal-weight ``points`` in a fixed low-discrepancy order
    (the golden-ratio sequence), so any run of consecutive requests holds a fair mix of short and long ones,
    as a shuffled benchmark dataset does, with no random numbers."""
    pts = sorted(points)
    phi = (5 ** 0.5 - 1) / 2
    return [max(int(round(pts[int(((j + 1) * phi) % 1.0 * len(pts))])), 1) for j in range(n)]


def simulate_burst(n: int, cap: int, isl: float, osl: float, budget_tokens: int,
                   decode_s: Callable[[int], float], prefill_s_per_token: float,
                   outputs: Sequence[int] | None = None) -> BurstResult:
    """Run ``n`` requests of ``isl`` prompt and ``osl`` output tokens, all queued at t = 0, to the end.
    ``outputs`` gives each request its own output length instead (in issue order)."""
    if n < 1 or cap < 1:
        raise ValueError("a burst needs at least one request and one engine slot")
    if outputs is not None and len(outputs) != n:
        raise ValueError("outputs: one length a request")
    lengths = [max(int(round(osl)), 1)] * n if outputs is None else [max(int(o), 1) for o in outputs]
    t = 0.0
    it = 0
    queued = n  # prompts not yet started
    partial = 0.0  # tokens already done of the prompt at the queue head (admitted)
    decoding = 0  # sequences emitting a token each iteration
    running: list[tuple[int, int, float, int]] = []  # heap of (finish_iteration, order, t_first, out_tokens)
    order = itertools.count()
    sum_ttft = sum_itl = sum_e2e = 0.0
    n_itl = sum(1 for o in lengths if o > 1)  # ITL needs two tokens
    while queued or decoding:
        budget = max(budget_tokens - decoding, 0)
        prompt_tokens = 0.0
        started: list[int] = []  # output lengths of the prompts finished this iteration
        slots = cap - decoding - (1 if partial > 0 else 0)  # a half-done prompt already holds its slot
        while queued and budget > 0 and (partial > 0 or slots > 0):
            if partial == 0:
                slots -= 1
            need = isl - partial
            take = min(need, budget)
            prompt_tokens += take
            budget -= take
            if take >= need:
                started.append(lengths[n - queued])
                queued -= 1
                partial = 0.0
            else:
                partial += take
        if prompt_tokens == 0:
            # nothing to admit (slots full or queue empty): decode until the next sequence finishes
            k = max(running[0][0] - it, 1)
            t += k * decode_s(decoding)
            it += k
        else:
            t += decode_s(decoding) + prompt_tokens * prefill_s_per_token
            it += 1
        while running and running[0][0] <= it:
            _, _, t_first, out = heapq.heappop(running)
            decoding -= 1
            sum_itl += (t - t_first) / (out - 1)
            sum_e2e += t
        for out in started:
            sum_ttft += t
            if out > 1:
                heapq.heappush(running, (it + out - 1, next(order), t, out))
                decoding += 1
            else:
                sum_e2e += t
    return BurstResult(t, sum_ttft / n, sum_itl / max(n_itl, 1), sum_e2e / n)


def drain_time_s(c: float, outputs, step_s: Callable[[np.ndarray], np.ndarray]) -> float:
    """Time for ``c`` in-flight sequences to finish once arrivals stop, decoding at ``step_s(concurrency)``
    (vectorised over an array of concurrencies).

    A sequence met in a steady batch is drawn in proportion to its output length ``o`` (long answers stay
    in the batch longer) and is uniformly far through it, so its remaining tokens ``r`` are uniform on
    ``[0, o]``: ``P(r > k) = sum_j (o_j - k)^+ / sum_j o_j`` over the equal-weight output lengths
    ``outputs``. Iteration ``k`` runs ``c P(r > k)`` sequences; the drain ends when fewer than half a
    sequence is expected to remain."""
    o = np.sort(np.maximum(np.asarray(outputs, dtype=float).ravel(), 1.0))
    k = np.arange(int(math.ceil(o[-1])), dtype=float)
    above = o.size - np.searchsorted(o, k, side="right")  # how many o_j exceed k
    tail = np.concatenate([np.cumsum(o[::-1])[::-1], [0.0]])  # sum of the o_j from index i on
    alive = c * (tail[o.size - above] - k * above) / o.sum()
    alive = alive[alive >= 0.5]
    return float(np.sum(step_s(np.maximum(alive, 1.0)))) if alive.size else 0.0
