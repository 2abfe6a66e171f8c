"""Time of one operator on one device: a roofline with physically grounded efficiency.

``time = max(compute, memory) + floor`` where

* compute = FLOPs / (dense peak x achievable GEMM fraction x sustained ratio x shape utilisation). The
  achievable fraction is the device's measured "maximum achievable matmul" share of peak (cited in its
  spec file), a short-run figure; the sustained ratio is what a power-capped part keeps of it under
  continuous load (training and serving; measured on H100 and H200, benchmarks/device); the
  shape utilisation is tile and wave quantisation: an M x N output is cut into 128 x 128 tiles (the
  common CUTLASS / hipBLASLt macro-tile), each tile runs on one SM/CU, and the last wave of tiles leaves
  SMs idle. Small outputs with a long K are split along K (split-K, as cuBLAS does) to fill the machine.
* memory = bytes moved / (HBM bandwidth x achievable fraction, STREAM-measured, cited; a GEMM's weight
  stream uses its own measured fraction where a device has one).
* floor = the device's per-kernel floor (launch, pipeline fill and tail), added once per kernel.

A GEMM's compute and memory times overlap imperfectly: near the ridge (compute ~ memory) its software
pipeline must keep both the tensor cores and HBM busy at once through a few shared-memory stages, and it
manages neither fully. A GEMM therefore takes the ``RIDGE_OVERLAP_P``-norm of the two,
``(compute^p + memory^p)^(1/p)``: the larger of the two away from the ridge, 2^(1/p) of it on the ridge.

A constant efficiency factor misses GEMMs by 2-4x across shapes (a 1024^3 GEMM on an H100 fills 64 of
132 SMs); the tile model is what makes small and skinny shapes slow. All functions take numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .hardware import Accelerator

TILE_M = 128
TILE_MS = (TILE_M, 64)  # output-tile heights the library chooses between
TILE_N = 128
SPLIT_K_CHUNK = 256  # smallest K slice a split-K kernel hands to one SM
STREAM_K_STEP = 64  # K depth of one main-loop iteration, the unit stream-K deals out

# Norm that combines a GEMM's compute and memory times (module docstring). Measured: over perfmodel's four
# stored 224-GEMM sweeps (H100 and H200, burst and sustained; benchmarks/device/results/*_gemm_burst.json
# and *_sweep_sustained.json, BF16 and FP8, M 64-8192), the plain max() runs the 130 GEMMs within 1.5x of the
# ridge 4.8% fast on average; p = 6 removes that bias (-0.7%) and cuts the mean |log error| of all 896 from
# 6.45% to 6.22% (p = 5-8 are within 0.05% of it). On the ridge it adds 12%.
RIDGE_OVERLAP_P = 6.0

# Used only when a device's spec file has no measured value; `efficiency_report()` lists which.
FALLBACK_GEMM_FRACTION = 0.7
FALLBACK_MEMORY_FRACTION = 0.8
FALLBACK_KERNEL_FLOOR_US = 4.0
# Sustained / burst tensor throughput, the mean of perfmodel's H100 SXM and H200 SXM measurements
# (benchmarks/device/results/*_sustained.json: 8192^3 for 20-25 s at the 700 W cap; BF16 0.867 and
# 0.848, FP8 0.855 and 0.867). Carried to devices with no such measurement and listed as a fallback.
FALLBACK_SUSTAINED_RATIO = 0.86


_FALLBACK_TEXT = {
    "gemm_peak_fraction": f"GEMMs at {FALLBACK_GEMM_FRACTION:g} of peak",
    "sustained_gemm_ratio": f"{FALLBACK_SUSTAINED_RATIO:g} of the short-run GEMM rate under load "
                            "(H100/H200 measurement)",
    "grouped_gemm_ratio": "MoE expert GEMMs timed as dense GEMMs",
    "attention_peak_fraction": "fused attention at the GEMM rate",
    "memory_bandwidth_fraction": f"{FALLBACK_MEMORY_FRACTION:g} of HBM bandwidth",
    "kernel_floor_us": f"{FALLBACK_KERNEL_FLOOR_US:g} us per kernel",
    "compute_units": "108 SMs for tile quantisation",
}


def fallback_notes(rates: "DeviceRates", dtype: str | None = None) -> list[str]:
    """One line per efficiency number the device's spec lacks, saying what is used instead; with ``dtype``,
    also a line when GEMMs in that dtype borrow another dtype's measured fraction of peak."""
    notes = [f"{rates.id}: no measured {f}; assumed {_FALLBACK_TEXT.get(f, 'perfmodel default')}"
             for f in rates.fallbacks]
    if dtype and "gemm_peak_fraction" not in rates.fallbacks and dtype not in rates.gemm_fraction:
        notes.append(f"{rates.id}: no measured {dtype} GEMM fraction of peak; its BF16 figure "
                     f"({rates.gemm_fraction['_default']:g}) is used")
    if dtype and "sustained_gemm_ratio" not in rates.fallbacks and dtype not in rates.sustained_ratio:
        notes.append(f"{rates.id}: no measured {dtype} sustained GEMM ratio; assumed "
                     f"{rates.sustained_ratio['_default']:g} of the short-run rate")
    return notes


@dataclass(frozen=True)
class DeviceRates:
    """The few numbers of an accelerator the roofline needs, resolved once."""

    id: str
    sms: int
    hbm_gbps: float
    mem_fraction: float
    floor_s: float
    gemm_fraction: dict[str, float]
    peaks: dict[str, float]
    fallbacks: tuple[str, ...]
    sustained_ratio: dict[str, float]
    sustained: bool
    attention_fraction: dict[str, float]
    attention_ramp: dict[str, float]
    grouped_ratio: dict[str, float]
    grouped_gbps: dict[str, float]
    fp8_kv_decode_gbps: float | None = None  # SM-side ceiling of decode attention over an FP8 KV cache
    weight_stream_fraction: float | None = None  # share of HBM a memory-bound GEMM streams weights at

    def peak_tflops(self, dtype: str) -> float:
        return self.peaks[dtype]

    def decode_kv_gbps(self, kv_bytes: float) -> float:
        """GB/s a decode attention kernel reads a KV cache of ``kv_bytes`` per element at: the HBM rate, or
        for an FP8 cache the lower SM-side ceiling where the device has one (``fp8_kv_decode_gbps_per_sm``)."""
        if kv_bytes == 1.0 and self.fp8_kv_decode_gbps:
            return min(self.achievable_gbps, self.fp8_kv_decode_gbps)
        return self.achievable_gbps

    def achievable_tflops(self, dtype: str) -> float:
        """Large-GEMM TFLOP/s: sustained (a job's steady state) or, with ``sustained=False``, the short-run
        figure a GEMM microbenchmark reports."""
        burst = self.peaks[dtype] * self.gemm_fraction.get(dtype, self.gemm_fraction["_default"])
        if not self.sustained:
            return burst
        return burst * self.sustained_ratio.get(dtype, self.sustained_ratio["_default"])

    def attention_tflops(self, dtype: str, backward: bool = False, keys=None):
        """Fused-attention TFLOP/s of one pass over ``keys`` keys per query tile: measured
        (``attention_peak_fraction`` with its ``attention_ramp_keys``) or, without a measurement, the BF16
        GEMM rate. ``dtype="fp8"`` is an FP8 attention forward, at its own measured fraction of the FP8 peak
        where there is one; elsewhere it falls back to the 16-bit kernel."""
        which = "backward" if backward else "forward"
        frac = self.attention_fraction.get(which)
        base = "bf16" if dtype in ("fp8", "fp4", "int8") else dtype  # the 16-bit kernel's dtype
        peak = self.peaks.get(base, self.peaks.get("bf16", 0.0))
        fp8 = self.attention_fraction.get("forward_fp8")
        if dtype == "fp8" and not backward and fp8 is not None and self.peaks.get("fp8", 0.0) > 0:
            frac, peak = fp8, self.peaks["fp8"]
        # otherwise attention runs in 16-bit, even in FP8/FP4 deployments
        if frac is None or peak <= 0:
            return self.achievable_tflops(base)
        rate = peak * frac
        ramp = self.attention_ramp.get(which, 0.0)
        if keys is None or ramp <= 0:
            return rate
        return rate * keys / (keys + ramp)

    @property
    def achievable_gbps(self) -> float:
        return self.hbm_gbps * self.mem_fraction

    @property
    def gemm_gbps(self) -> float:
        """GB/s a memory-bound GEMM streams its operands at: ``weight_streaming_fraction`` where measured,
        else the STREAM-class ``achievable_gbps``."""
        return self.hbm_gbps * (self.weight_stream_fraction or self.mem_fraction)


_COMPUTE_FALLBACK = {
    "fp16": ("bf16",), "bf16": ("fp16",), "fp8": ("int8", "bf16"), "int8": ("fp8", "bf16"),
    "fp4": ("fp8", "int8", "bf16"), "fp32": ("tf32", "bf16"), "tf32": ("fp32",),
}


def _per_dtype(specs: dict, name: str, fallback: float, fallbacks: list[str],
               borrow: bool = True) -> dict[str, float]:
    """A per-dtype efficiency table with a ``_default`` (its BF16 entry, else any, else ``fallback``).
    ``borrow=False``: a dtype the table lacks gets ``fallback``, never another dtype's entry."""
    out = {d.value: s.value for d, s in specs.items()}
    if not out:
        fallbacks.append(name)
    out["_default"] = out.get("bf16", next(iter(out.values()), fallback) if borrow else fallback)
    return out


def device_rates(acc: Accelerator, sustained: bool = True) -> DeviceRates:
    """Resolve peaks per dtype (with the fallbacks a framework would use) and efficiency numbers.

    ``sustained=False`` gives the short-run GEMM rate of a microbenchmark instead of a job's steady state.
    """
    peaks = {d.value: s.value for d, s in acc.peak_tflops.items()}
    for dt, alts in _COMPUTE_FALLBACK.items():
        if dt not in peaks:
            for a in alts:
                if a in peaks:
                    peaks[dt] = peaks[a]
                    break
    eff = acc.efficiency
    fallbacks = []
    frac = _per_dtype(eff.gemm_peak_fraction, "gemm_peak_fraction", FALLBACK_GEMM_FRACTION, fallbacks)
    # a ratio measured for one dtype (a fraction taken at the loaded clock) says nothing of another dtype's
    ratio = _per_dtype(eff.sustained_gemm_ratio, "sustained_gemm_ratio", FALLBACK_SUSTAINED_RATIO, fallbacks,
                       borrow=False)
    attn = {k: v.value for k, v in eff.attention_peak_fraction.items()}
    ramp = {k: v.value for k, v in eff.attention_ramp_keys.items()}
    g_ratio = {d.value: v.value for d, v in eff.grouped_gemm_ratio.items()}
    g_gbps = {d.value: v.value for d, v in eff.grouped_gemm_gbps.items()}
    if not g_ratio and not g_gbps:
        fallbacks.append("grouped_gemm_ratio")
    if not attn:
        fallbacks.append("attention_peak_fraction")
    if eff.memory_bandwidth_fraction is not None:
        mem = eff.memory_bandwidth_fraction.value
    else:
        mem = FALLBACK_MEMORY_FRACTION
        fallbacks.append("memory_bandwidth_fraction")
    if eff.kernel_floor_us is not None:
        floor = eff.kernel_floor_us.value
    else:
        floor = FALLBACK_KERNEL_FLOOR_US
        fallbacks.append("kernel_floor_us")
    sms = int(acc.compute_units.value) if acc.compute_units else 108
    if acc.compute_units is None:
        fallbacks.append("compute_units")
    kv8 = eff.fp8_kv_decode_gbps_per_sm.value * sms if eff.fp8_kv_decode_gbps_per_sm is not None else None
    stream = eff.weight_streaming_fraction.value if eff.weight_streaming_fraction is not None else None
    return DeviceRates(acc.id, sms, acc.memory_bandwidth_gbps.value, mem, floor * 1e-6, frac, peaks,
                       tuple(fallbacks), ratio, sustained, attn, ramp, g_ratio, g_gbps, kv8, stream)


def _tile_utilisation_scalar(m: float, n: float, k: float, sms: int, groups: float, tile_m: int) -> float:
    tm, tn = math.ceil(m / tile_m), math.ceil(n / TILE_N)
    tiles = tm * tn * max(math.ceil(groups), 1)
    pad = (m * n) / (tm * tile_m * tn * TILE_N)
    if tiles >= sms and groups <= 1:
        work = tiles * max(math.ceil(k / STREAM_K_STEP), 1)
    else:
        work = tiles * min(max(math.floor(sms / max(tiles, 1)), 1), max(math.floor(k / SPLIT_K_CHUNK), 1))
    return pad * work / (math.ceil(work / sms) * sms)


def _tile_utilisation_array(m, n, k, sms: int, groups, tile_m: int):
    tm, tn = np.ceil(m / tile_m), np.ceil(n / TILE_N)
    tiles = tm * tn * np.maximum(np.ceil(groups), 1)
    pad = (m * n) / (tm * tile_m * tn * TILE_N)
    split = np.clip(np.floor(sms / np.maximum(tiles, 1)), 1, np.maximum(np.floor(k / SPLIT_K_CHUNK), 1))
    stream_k = (tiles >= sms) & (groups <= 1)
    work = np.where(stream_k, tiles * np.maximum(np.ceil(k / STREAM_K_STEP), 1), tiles * split)
    waves = np.ceil(work / sms)
    return pad * work / (waves * sms)


def tile_utilisation(m, n, k, sms: int, groups=1):
    """Share of the machine's tensor throughput a GEMM's tiling keeps busy (0-1].

    Fewer output tiles than SMs: split-K fills the machine. More: the library's stream-K scheduling
    (CUTLASS 3 / cuBLASLt / hipBLASLt) deals the tiles' main-loop iterations out evenly over the SMs, so
    only the last partial round of iterations, not a whole wave of tiles, is lost. ``groups``
    independent GEMMs of the same shape launched as one grouped/batched kernel (MoE experts, per-head
    products) share whole-tile waves. The library picks the better of 128- and 64-row tiles (the height
    of one and of two Hopper warpgroup MMAs; CUTLASS ships both), so an M just past a multiple of 128
    pads to the next 64, not the next 128. Scalars take a plain-Python path (plan searches call this often).
    """
    if all(np.ndim(x) == 0 for x in (m, n, k, groups)):
        return max(_tile_utilisation_scalar(float(m), float(n), float(k), sms, float(groups), t) for t in TILE_MS)
    m, n, k, groups = (np.asarray(x, dtype=float) for x in (m, n, k, groups))
    return np.maximum.reduce([_tile_utilisation_array(m, n, k, sms, groups, t) for t in TILE_MS])


def gemm_time(rates: DeviceRates, m, n, k, dtype: str, in_bytes: float, w_bytes: float, out_bytes: float = 2.0,
              groups=1, grouped: bool = False):
    """One GEMM kernel C[m,n] = A[m,k] @ W[k,n] (``groups`` of them, batched): (time_s, flops, bytes,
    compute_s, memory_s), with weights in ``w_bytes`` per element and one kernel floor.

    ``grouped=True`` is a grouped (MoE expert) kernel: its compute rate is scaled by the device's
    ``grouped_gemm_ratio`` and its streaming rate capped at ``grouped_gemm_gbps`` where measured."""
    scalar = all(np.ndim(x) == 0 for x in (m, n, k, groups))
    if not scalar:
        m, n, k, groups = (np.asarray(x, dtype=float) for x in (m, n, k, groups))
    flops = 2.0 * m * n * k * groups
    nbytes = (m * k * in_bytes + k * n * w_bytes + m * n * out_bytes) * groups
    util = tile_utilisation(m, n, k, rates.sms, groups)
    tflops, gbps = rates.achievable_tflops(dtype), rates.gemm_gbps
    if grouped:
        tflops *= rates.grouped_ratio.get(dtype, 1.0)
        gbps = min(gbps, rates.grouped_gbps.get(dtype, gbps))
    t_comp = flops / (tflops * 1e12 * util)
    t_mem = nbytes / (gbps * 1e9)
    return overlap(t_comp, t_mem) + rates.floor_s, flops, nbytes, t_comp, t_mem


def overlap(t_comp, t_mem):
    """Time of a kernel whose compute and memory streams overlap imperfectly: the ``RIDGE_OVERLAP_P``-norm
    of the two (scaled by the larger, so huge and tiny times stay finite)."""
    p = RIDGE_OVERLAP_P
    if np.ndim(t_comp) == 0 and np.ndim(t_mem) == 0:
        hi = max(t_comp, t_mem)
        if hi <= 0:
            return hi
        return hi * ((t_comp / hi) ** p + (t_mem / hi) ** p) ** (1.0 / p)
    t_comp, t_mem = np.asarray(t_comp, dtype=float), np.asarray(t_mem, dtype=float)
    hi = np.maximum(t_comp, t_mem)
    safe = np.where(hi > 0, hi, 1.0)
    return np.where(hi > 0, hi * ((t_comp / safe) ** p + (t_mem / safe) ** p) ** (1.0 / p), hi)


def memory_time(rates: DeviceRates, nbytes, kernels=1):
    """A bandwidth-bound kernel (norm, elementwise, embedding gather, KV read)."""
    if np.ndim(nbytes) == 0 and np.ndim(kernels) == 0:
        t_mem = float(nbytes) / (rates.achievable_gbps * 1e9)
        return t_mem + rates.floor_s * kernels, t_mem
    nbytes = np.asarray(nbytes, dtype=float)
    t_mem = nbytes / (rates.achievable_gbps * 1e9)
    return t_mem + rates.floor_s * np.asarray(kernels, dtype=float), t_mem


def attention_time(rates: DeviceRates, flops, nbytes, parallel_tiles, dtype: str = "bf16", backward: bool = False,
                   keys=None, gbps: float | None = None):
    """A fused attention kernel (one pass): compute at the device's attention rate for ``keys`` keys per
    query over its (batch x heads x query-tile) grid, or its memory time (at ``gbps``, default the
    achievable HBM rate), whichever is longer."""
    rate = rates.attention_tflops(dtype, backward, keys) * 1e12
    gbps = rates.achievable_gbps if gbps is None else gbps
    if all(np.ndim(x) == 0 for x in (flops, nbytes, parallel_tiles)):
        tiles = float(parallel_tiles)
        util = tiles / max(math.ceil(tiles / rates.sms) * rates.sms, 1) if tiles > 0 else 1.0
        t_comp = flops / (rate * util)
        t_mem = nbytes / (gbps * 1e9)
        return max(t_comp, t_mem) + rates.floor_s, t_comp, t_mem
    flops, nbytes, tiles = (np.asarray(x, dtype=float) for x in (flops, nbytes, parallel_tiles))
    waves = np.ceil(tiles / rates.sms)
    util = np.where(tiles > 0, tiles / np.maximum(waves * rates.sms, 1), 1.0)
    t_comp = flops / (rate * util)
    t_mem = nbytes / (gbps * 1e9)
    return np.maximum(t_comp, t_mem) + rates.floor_s, t_comp, t_mem
