"""Measure what perfmodel's roofline predicts, on the GPU this runs on (PyTorch + CUDA).

Writes one JSON file of raw results; ``benchmarks/device/to_cases.py`` turns it into validation cases.
Every timed region is a CUDA graph of back-to-back kernels replayed several times, so the numbers are
device time without Python launch gaps. Weight operands rotate over enough copies to exceed the L2
cache, as in a model whose every layer has its own weights.

Sections: environment, GEMM (bf16, fp8 per-tensor scaled) over decode and prefill shapes, HBM bandwidth
(read / copy / triad), kernel floor (tiny kernels in a graph and launched eagerly), attention (SDPA
prefill forward, decode over a KV cache), a Llama-3.1-8B-shaped decode step (random weights), and
``oddm``: GEMMs at serving batch sizes that are not multiples of 64 or 128 (M 136-1,000), which test
the roofline's choice between 128- and 64-row tiles directly (the main sweep's M are powers of two).

Run:  python benchmarks/device/measure_gpu.py OUT.json [--quick] [--burst]
          [--only=floor,membw,gemm,attention,steps,oddm]

``--burst`` times each GEMM as a short (~10 ms) run after a 0.3 s pause, which is what a
maximum-achievable-matmul sweep reports; without it every shape runs back-to-back for ~0.2 s, at the
power-limited clock a training or serving job sees (measure_sustained.py shows the difference).
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn.functional as F

L2_DEFEAT_BYTES = 512 * 2**20
BURST = False
RESULTS: dict = {"sections": {}}


def _save(path):
    with open(path, "w") as f:
        json.dump(RESULTS, f, indent=1)


def graph_time_s(fn, calls_per_graph: int, replays: int = 5, warmup: int = 2, best: bool = False) -> float:
    """Median (or best) seconds per call of ``fn(i)`` (i = call index) over graph replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls_per_graph):
            fn(i)
    for _ in range(warmup):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3 / calls_per_graph)
    del g
    times.sort()
    return times[0] if best else times[len(times) // 2]


def environment():
    p = torch.cuda.get_device_properties(0)
    env = {
        "gpu": p.name, "sms": p.multi_processor_count, "memory_bytes": p.total_memory,
        "l2_bytes": getattr(p, "L2_cache_size", None), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cublas_workspace": None,
    }
    try:
        import subprocess
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        env["nvidia_smi"] = repr(e)
    RESULTS["environment"] = env


def _copies(nbytes_each: int) -> int:
    return max(2, math.ceil(L2_DEFEAT_BYTES / max(nbytes_each, 1)))


def gemm_case(m, n, k, dtype):
    """C[m,n] = A[m,k] @ W[n,k]^T, W rotating over copies; returns TFLOP/s."""
    dev = "cuda"
    if dtype == "bf16":
        w_bytes = n * k * 2
        ncopy = min(_copies(w_bytes), 64)
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(ncopy)]
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        outs = [torch.empty(m, n, device=dev, dtype=torch.bfloat16) for _ in range(2)]

        def fn(i):
            torch.matmul(a, ws[i % ncopy].t(), out=outs[i % 2])
    else:
        w_bytes = n * k
        ncopy = min(_copies(w_bytes), 64)
        ws = [(torch.randn(n, k, device=dev) * 0.02).to(torch.float8_e4m3fn) for _ in range(ncopy)]
        a = torch.randn(m, k, device=dev).to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev, dtype=torch.float32)

        def fn(i):
            torch._scaled_mm(a, ws[i % ncopy].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    flops = 2.0 * m * n * k
    est = max(flops / 600e12, (w_bytes + m * k * 2) / 2.5e12, 5e-6)
    if BURST:
        # a microbenchmark's number: ~10 ms of work after the clock has recovered (what a
        # max-achievable-matmul sweep reports), best of the replays
        calls = int(min(max(0.01 / est, 4), 1000))
        calls = max(min(ncopy, calls), calls // ncopy * ncopy)
        torch.cuda.synchronize()
        time.sleep(0.3)
        t = graph_time_s(fn, calls, replays=3, warmup=0, best=True)
    else:
        calls = int(min(max(0.02 / est, 20), 2000))
        calls = max(ncopy, calls // ncopy * ncopy)
        t = graph_time_s(fn, calls)
    del ws
    torch.cuda.empty_cache()
    return {"m": m, "n": n, "k": k, "dtype": dtype, "time_us": t * 1e6, "tflops": flops / t / 1e12,
            "weight_copies": ncopy}


def _gemm_row(shape, m, n, k, dtype) -> dict:
    """One timed GEMM as a result row; a failure is recorded, not raised, so the sweep goes on."""
    try:
        return {**gemm_case(m, n, k, dtype), "shape": shape}
    except Exception as e:  # noqa: BLE001
        return {"m": m, "n": n, "k": k, "dtype": dtype, "shape": shape, "error": repr(e)[:200]}


def gemms(quick):
    rows = []
    layer_shapes = {
        "llama70b_tp8_qkv": (1280, 8192), "llama70b_tp8_o": (8192, 1024),
        "llama70b_tp8_gateup": (7168, 8192), "llama70b_tp8_down": (8192, 3584),
        "llama70b_tp1_qkv": (10240, 8192), "llama70b_tp1_gateup": (57344, 8192),
        "llama70b_tp1_down": (8192, 28672),
        "llama8b_qkv": (6144, 4096), "llama8b_o": (4096, 4096), "llama8b_gateup": (28672, 4096),
        "llama8b_down": (4096, 14336),
    }
    ms = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] if not quick else [16, 256, 4096]
    for dtype in ("bf16", "fp8"):
        for name, (n, k) in layer_shapes.items():
            for m in ms:
                if name.startswith("llama70b_tp1") and m > 4096:
                    continue
                rows.append(_gemm_row(name, m, n, k, dtype))
        for s in (1024, 2048, 4096, 8192, 16384):
            rows.append(_gemm_row("square", s, s, s, dtype))
        print(f"gemm {dtype} done", flush=True)
    RESULTS["sections"]["gemm"] = rows


def odd_m_gemms(quick):
    """Decode-batch GEMMs just past and between tile multiples, Llama-3.1-70B TP1/TP8 and 8B shapes."""
    rows = []
    shapes = {"llama70b_tp1_qkv": (10240, 8192), "llama70b_tp8_gateup": (7168, 8192),
              "llama8b_gateup": (28672, 4096), "llama8b_down": (4096, 14336)}
    ms = [136, 200, 261, 300, 330, 400, 448, 520, 600, 700, 800, 900, 1000] if not quick else [136, 261, 520]
    for dtype in ("bf16", "fp8"):
        for name, (n, k) in shapes.items():
            for m in ms:
                rows.append(_gemm_row(name, m, n, k, dtype))
        print(f"odd-M gemm {dtype} done", flush=True)
    RESULTS["sections"]["oddm"] = rows


def membw():
    rows = []
    for nbytes in (2**26, 2**28, 2**30, 2**32):
        n = nbytes // 4
        x = torch.ones(n, device="cuda", dtype=torch.float32)
        y = torch.ones(n, device="cuda", dtype=torch.float32)
        z = torch.ones(n, device="cuda", dtype=torch.float32)
        acc = torch.zeros((), device="cuda", dtype=torch.float32)
        calls = max(4, int(0.05 / (nbytes / 2.5e12)))
        calls = min(calls, 200)
        t = graph_time_s(lambda i: y.copy_(x), calls)
        rows.append({"op": "copy", "bytes": 2 * nbytes, "array_bytes": nbytes, "time_us": t * 1e6,
                     "gbps": 2 * nbytes / t / 1e9})
        t = graph_time_s(lambda i: torch.sum(x, dim=0, out=acc), calls)
        rows.append({"op": "read", "bytes": nbytes, "array_bytes": nbytes, "time_us": t * 1e6,
                     "gbps": nbytes / t / 1e9})
        t = graph_time_s(lambda i: torch.add(y, z, alpha=3.0, out=x), calls)
        rows.append({"op": "triad", "bytes": 3 * nbytes, "array_bytes": nbytes, "time_us": t * 1e6,
                     "gbps": 3 * nbytes / t / 1e9})
        del x, y, z
        torch.cuda.empty_cache()
    RESULTS["sections"]["membw"] = rows
    print("membw done", flush=True)


def kernel_floor():
    x = torch.zeros(1, device="cuda")
    out = {}
    out["graph_tiny_add_us"] = graph_time_s(lambda i: x.add_(1.0), 2000) * 1e6
    a = torch.randn(16, 16, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(16, 16, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(16, 16, device="cuda", dtype=torch.bfloat16)
    out["graph_tiny_gemm_us"] = graph_time_s(lambda i: torch.matmul(a, b, out=c), 2000) * 1e6
    torch.cuda.synchronize()
    for _ in range(100):
        x.add_(1.0)
    torch.cuda.synchronize()
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    torch.cuda.synchronize()
    out["eager_tiny_add_us"] = (time.perf_counter() - t0) / n * 1e6
    RESULTS["sections"]["kernel_floor"] = out
    print("floor done", out, flush=True)


def attention(quick):
    rows = []
    heads, kv_heads, d = 64, 8, 128
    for s in ((1024, 4096, 16384) if quick else (1024, 2048, 4096, 8192, 16384)):
        b = max(1, 16384 // s)
        q = torch.randn(b, heads, s, d, device="cuda", dtype=torch.bfloat16)
        kk = torch.randn(b, kv_heads, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, kv_heads, s, d, device="cuda", dtype=torch.bfloat16)
        try:
            t = graph_time_s(lambda i: F.scaled_dot_product_attention(q, kk, v, is_causal=True, enable_gqa=True), 10)
            flops = 4.0 * b * heads * d * s * s / 2
            rows.append({"phase": "prefill_causal", "batch": b, "seq": s, "heads": heads, "kv_heads": kv_heads,
                         "head_dim": d, "time_us": t * 1e6, "tflops_causal": flops / t / 1e12})
        except Exception as e:  # noqa: BLE001
            rows.append({"phase": "prefill_causal", "seq": s, "error": repr(e)[:200]})
        del q, kk, v
    for ctx in (1024, 4096):
        for b in ((1, 16, 64) if quick else (1, 4, 16, 64, 128)):
            q = torch.randn(b, heads, 1, d, device="cuda", dtype=torch.bfloat16)
            ncopy = max(2, min(8, _copies(b * kv_heads * ctx * d * 4)))
            kvs = [(torch.randn(b, kv_heads, ctx, d, device="cuda", dtype=torch.bfloat16),
                    torch.randn(b, kv_heads, ctx, d, device="cuda", dtype=torch.bfloat16)) for _ in range(ncopy)]
            try:
                t = graph_time_s(lambda i: F.scaled_dot_product_attention(q, *kvs[i % ncopy], enable_gqa=True),
                                 ncopy * 10)
                kv_bytes = 2 * b * kv_heads * ctx * d * 2
                rows.append({"phase": "decode", "batch": b, "context": ctx, "heads": heads, "kv_heads": kv_heads,
                             "head_dim": d, "time_us": t * 1e6, "kv_gbps": kv_bytes / t / 1e9})
            except Exception as e:  # noqa: BLE001
                rows.append({"phase": "decode", "batch": b, "context": ctx, "error": repr(e)[:200]})
            del kvs
            torch.cuda.empty_cache()
    RESULTS["sections"]["attention"] = rows
    print("attention done", flush=True)


class TinyLlama:
    """A Llama-architecture decoder with random weights: static KV cache, SDPA, bf16."""

    def __init__(self, layers, hidden, heads, kv_heads, ffn, vocab, max_batch, max_len):
        dev, dt = "cuda", torch.bfloat16
        self.h, self.nh, self.nkv, self.d = hidden, heads, kv_heads, hidden // heads
        self.layers = []
        for _ in range(layers):
            self.layers.append({
                "qkv": torch.randn((heads + 2 * kv_heads) * self.d, hidden, device=dev, dtype=dt) * 0.02,
                "o": torch.randn(hidden, heads * self.d, device=dev, dtype=dt) * 0.02,
                "gu": torch.randn(2 * ffn, hidden, device=dev, dtype=dt) * 0.02,
                "down": torch.randn(hidden, ffn, device=dev, dtype=dt) * 0.02,
                "n1": torch.ones(hidden, device=dev, dtype=dt), "n2": torch.ones(hidden, device=dev, dtype=dt),
                "k": torch.zeros(max_batch, kv_heads, max_len, self.d, device=dev, dtype=dt),
                "v": torch.zeros(max_batch, kv_heads, max_len, self.d, device=dev, dtype=dt),
            })
        self.emb = torch.randn(vocab, hidden, device=dev, dtype=dt) * 0.02
        self.head = torch.randn(vocab, hidden, device=dev, dtype=dt) * 0.02
        self.nf = torch.ones(hidden, device=dev, dtype=dt)
        self.ffn = ffn

    @staticmethod
    def _rms(x, w):
        v = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(v + 1e-5)).to(x.dtype) * w

    def decode(self, tokens, pos):
        """One decode step for ``tokens`` [B] at cache position ``pos`` (static)."""
        b = tokens.shape[0]
        x = self.emb[tokens]
        for L in self.layers:
            h = self._rms(x, L["n1"])
            qkv = h @ L["qkv"].t()
            q, k, v = qkv.split([self.nh * self.d, self.nkv * self.d, self.nkv * self.d], dim=-1)
            q = q.view(b, self.nh, 1, self.d)
            L["k"][:b, :, pos] = k.view(b, self.nkv, self.d)
            L["v"][:b, :, pos] = v.view(b, self.nkv, self.d)
            a = F.scaled_dot_product_attention(q, L["k"][:b, :, :pos + 1], L["v"][:b, :, :pos + 1], enable_gqa=True)
            x = x + a.reshape(b, self.nh * self.d) @ L["o"].t()
            h = self._rms(x, L["n2"])
            g, u = (h @ L["gu"].t()).split(self.ffn, dim=-1)
            x = x + (F.silu(g) * u) @ L["down"].t()
        return self._rms(x, self.nf) @ self.head.t()

    def prefill(self, tokens):
        b, s = tokens.shape
        x = self.emb[tokens]
        for L in self.layers:
            h = self._rms(x, L["n1"])
            q, k, v = (h @ L["qkv"].t()).split([self.nh * self.d, self.nkv * self.d, self.nkv * self.d], dim=-1)
            q = q.view(b, s, self.nh, self.d).transpose(1, 2)
            k = k.view(b, s, self.nkv, self.d).transpose(1, 2)
            v = v.view(b, s, self.nkv, self.d).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + a.transpose(1, 2).reshape(b, s, -1) @ L["o"].t()
            h = self._rms(x, L["n2"])
            g, u = (h @ L["gu"].t()).split(self.ffn, dim=-1)
            x = x + (F.silu(g) * u) @ L["down"].t()
        return self._rms(x[:, -1], self.nf) @ self.head.t()


def decode_steps(quick):
    cfg = dict(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256)
    max_b, ctx = 128, 1024
    m = TinyLlama(**cfg, max_batch=max_b, max_len=ctx + 8)
    rows = []
    for b in ((1, 32, 128) if quick else (1, 8, 32, 64, 128)):
        tok = torch.randint(0, cfg["vocab"], (b,), device="cuda")
        try:
            with torch.no_grad():
                t = graph_time_s(lambda i: m.decode(tok, ctx), 3, replays=5)
            rows.append({"phase": "decode", "batch": b, "context": ctx + 1, "step_ms": t * 1e3,
                         "eager": False})
        except Exception as e:  # noqa: BLE001
            rows.append({"phase": "decode", "batch": b, "error": repr(e)[:300]})
    tok = torch.randint(0, cfg["vocab"], (1,), device="cuda")
    with torch.no_grad():
        for _ in range(3):
            m.decode(tok, ctx)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            m.decode(tok, ctx)
        torch.cuda.synchronize()
    rows.append({"phase": "decode", "batch": 1, "context": ctx + 1, "step_ms": (time.perf_counter() - t0) / 10 * 1e3,
                 "eager": True})
    for s in (512, 2048):
        tok = torch.randint(0, cfg["vocab"], (1, s), device="cuda")
        with torch.no_grad():
            try:
                t = graph_time_s(lambda i: m.prefill(tok), 2, replays=5)
                rows.append({"phase": "prefill", "batch": 1, "seq": s, "step_ms": t * 1e3})
            except Exception as e:  # noqa: BLE001
                rows.append({"phase": "prefill", "seq": s, "error": repr(e)[:300]})
    RESULTS["sections"]["llama8b_steps"] = {"config": cfg, "rows": rows}
    print("llama steps done", rows, flush=True)


def main():
    global BURST
    path = sys.argv[1]
    quick = "--quick" in sys.argv
    BURST = "--burst" in sys.argv
    RESULTS["gemm_mode"] = "burst" if BURST else "sustained"
    environment()
    _save(path)
    only = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")]
    for name, fn in (("floor", kernel_floor), ("membw", membw), ("gemm", lambda: gemms(quick)),
                     ("attention", lambda: attention(quick)), ("steps", lambda: decode_steps(quick)),
                     ("oddm", lambda: odd_m_gemms(quick))):
        if only and name not in only[0].split(","):
            continue
        t0 = time.time()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            RESULTS["sections"][name + "_error"] = repr(e)[:500]
            print(name, "failed", repr(e)[:500], flush=True)
        RESULTS.setdefault("section_wall_s", {})[name] = time.time() - t0
        _save(path)
        torch.cuda.empty_cache()
    print(json.dumps(RESULTS["environment"]), flush=True)


if __name__ == "__main__":
    main()
