"""Burst against sustained GEMM throughput, with the SM clock and board power sampled through NVML.

A "maximum achievable matmul" figure is the best shape of a sweep of short runs; a training or serving
job keeps the tensor cores busy for hours, where a 700 W part settles at a lower clock. This measures
both on the GPU it runs on, and a Llama-3.1-8B-shaped decoder with its elementwise work fused by
``torch.compile`` (norms, SwiGLU), as an engine would run it.

Run:  python benchmarks/device/measure_sustained.py OUT.json
"""

from __future__ import annotations

import json
import sys
import threading
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from measure_gpu import TinyLlama, graph_time_s  # noqa: E402

OUT: dict = {}


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        import pynvml
        pynvml.nvmlInit()
        self.nv = pynvml
        self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.rows = []
        self.stop = False

    def run(self):
        nv, h = self.nv, self.h
        while not self.stop:
            self.rows.append((time.time(), nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                              nv.nvmlDeviceGetPowerUsage(h) / 1e3, nv.nvmlDeviceGetTemperature(h, 0)))
            time.sleep(0.05)

    def window(self, t0, t1):
        r = [x for x in self.rows if t0 <= x[0] <= t1]
        if not r:
            return {}
        return {"sm_mhz_mean": sum(x[1] for x in r) / len(r), "power_w_mean": sum(x[2] for x in r) / len(r),
                "temp_c_max": max(x[3] for x in r), "samples": len(r)}


def gemm_fn(n, dtype):
    if dtype == "bf16":
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
        return lambda i: torch.matmul(a, b, out=c)
    a = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()
    one = torch.ones((), device="cuda")
    return lambda i: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


def sustained(sampler, n, dtype, seconds):
    fn = gemm_fn(n, dtype)
    flops = 2.0 * n**3
    for _ in range(3):
        fn(0)
    torch.cuda.synchronize()
    time.sleep(2.0)  # let the clock recover between tests
    burst = []
    for _ in range(3):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for i in range(10):
            fn(i)
        e1.record()
        e1.synchronize()
        burst.append(flops * 10 / (e0.elapsed_time(e1) * 1e-3) / 1e12)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g):
            for i in range(20):
                fn(i)
    torch.cuda.synchronize()
    series = []
    t_start = time.time()
    while time.time() - t_start < seconds:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        series.append((time.time() - t_start, flops * 20 / (e0.elapsed_time(e1) * 1e-3) / 1e12))
    t_end = time.time()
    last = [x[1] for x in series if x[0] > seconds - 5]
    first = [x[1] for x in series if x[0] < 1]
    return {"n": n, "dtype": dtype, "burst_tflops": max(burst), "first_second_tflops": sum(first) / len(first),
            "last_5s_tflops": sum(last) / len(last), "seconds": seconds,
            "clock_first_second": sampler.window(t_start, t_start + 1),
            "clock_last_5s": sampler.window(t_end - 5, t_end),
            "series": [(round(a, 2), round(b, 1)) for a, b in series[:: max(1, len(series) // 60)]]}


def fused_llama():
    rms = torch.compile(TinyLlama._rms)
    silu_mul = torch.compile(lambda g, u: F.silu(g) * u)

    class Fused(TinyLlama):
        @staticmethod
        def _rms(x, w):
            return rms(x, w)

    cfg = dict(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256)
    m = Fused(**cfg, max_batch=128, max_len=1032)
    orig_decode = m.decode
    rows = []
    with torch.no_grad():
        import types

        def decode(self, tokens, pos):
            b = tokens.shape[0]
            x = self.emb[tokens]
            for L in self.layers:
                h = self._rms(x, L["n1"])
                q, k, v = (h @ L["qkv"].t()).split([self.nh * self.d, self.nkv * self.d, self.nkv * self.d], -1)
                L["k"][:b, :, pos] = k.view(b, self.nkv, self.d)
                L["v"][:b, :, pos] = v.view(b, self.nkv, self.d)
                a = F.scaled_dot_product_attention(q.view(b, self.nh, 1, self.d), L["k"][:b, :, :pos + 1],
                                                   L["v"][:b, :, :pos + 1], enable_gqa=True)
                x = x + a.reshape(b, -1) @ L["o"].t()
                h = self._rms(x, L["n2"])
                g, u = (h @ L["gu"].t()).split(self.ffn, dim=-1)
                x = x + silu_mul(g, u) @ L["down"].t()
            return self._rms(x, self.nf) @ self.head.t()

        m.decode = types.MethodType(decode, m)
        del orig_decode
        for b in (1, 8, 32, 64, 128):
            tok = torch.randint(0, cfg["vocab"], (b,), device="cuda")
            for _ in range(2):
                m.decode(tok, 1024)
            t = graph_time_s(lambda i: m.decode(tok, 1024), 3, replays=5)
            rows.append({"phase": "decode", "batch": b, "context": 1025, "step_ms": t * 1e3})
            print(rows[-1], flush=True)
        for s in (512, 2048):
            tok = torch.randint(0, cfg["vocab"], (1, s), device="cuda")
            m.prefill(tok)
            t = graph_time_s(lambda i: m.prefill(tok), 2, replays=5)
            rows.append({"phase": "prefill", "batch": 1, "seq": s, "step_ms": t * 1e3})
            print(rows[-1], flush=True)
    OUT["llama8b_fused"] = {"config": cfg, "rows": rows,
                            "note": "torch.compile fuses RMSNorm and SiLU*mul; GEMMs cuBLAS; SDPA; CUDA graph"}


def main():
    path = sys.argv[1]
    sampler = Sampler()
    sampler.start()
    OUT["idle_clock"] = sampler.window(time.time() - 1, time.time() + 1)
    res = []
    for n, dt, sec in ((8192, "bf16", 25), (8192, "fp8", 20), (4096, "bf16", 10)):
        try:
            r = sustained(sampler, n, dt, sec)
            print({k: v for k, v in r.items() if k != "series"}, flush=True)
            res.append(r)
        except Exception as e:  # noqa: BLE001
            res.append({"n": n, "dtype": dt, "error": repr(e)[:300]})
            print("sustained failed", repr(e)[:300], flush=True)
        OUT["sustained"] = res
        json.dump(OUT, open(path, "w"), indent=1)
    try:
        fused_llama()
    except Exception as e:  # noqa: BLE001
        OUT["llama8b_fused_error"] = repr(e)[:500]
        print("fused failed", repr(e)[:500], flush=True)
    sampler.stop = True
    json.dump(OUT, open(path, "w"), indent=1)


if __name__ == "__main__":
    main()
