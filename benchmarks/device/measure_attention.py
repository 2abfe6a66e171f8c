"""Fused causal attention forward and backward throughput (PyTorch SDPA: FlashAttention-2 and cuDNN).

Training attention runs the backward pass, which does 2.5x the forward's matrix work with more
synchronisation; this measures what each pass reaches at the power-capped clock, in causal FLOP/s
(4 b h s^2 d / 2 forward, 2.5x that backward). Each timing is the median of CUDA-graph-free loops of
~0.2 s after a 0.3 s warm run, so the clock has settled.

Run:  python benchmarks/device/measure_attention.py OUT.json
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(fn, seconds=0.2):
    fn()
    torch.cuda.synchronize()
    t_end = time.time() + 0.3
    while time.time() < t_end:
        fn()
    torch.cuda.synchronize()
    n, times = 0, []
    t0 = time.time()
    while time.time() - t0 < seconds or n < 5:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
        n += 1
    times.sort()
    return times[len(times) // 2]


def main():
    rows = []
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        for heads, kv, d in ((32, 8, 128), (64, 8, 128)):
            for s in (2048, 4096, 8192, 16384):
                b = max(1, 16384 // s)
                try:
                    q = torch.randn(b, heads, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    k = torch.randn(b, kv, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    v = torch.randn(b, kv, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    gqa = kv != heads
                    if backend == SDPBackend.CUDNN_ATTENTION and gqa:
                        # cuDNN SDPA in PyTorch takes equal head counts: expand K/V as TE's GQA path does
                        k2 = k.detach().repeat_interleave(heads // kv, 1).requires_grad_()
                        v2 = v.detach().repeat_interleave(heads // kv, 1).requires_grad_()
                        kk, vv, flag = k2, v2, False
                    else:
                        kk, vv, flag = k, v, gqa
                    with sdpa_kernel([backend]):
                        out = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=flag)
                        g = torch.randn_like(out)
                        t_f = timed(lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=flag))

                        def fb():
                            o = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=flag)
                            o.backward(g)
                        t_fb = timed(fb)
                    fwd_flops = 4.0 * b * heads * s * s * d / 2
                    rows.append({"backend": backend.name, "batch": b, "heads": heads, "kv_heads": kv, "head_dim": d,
                                 "seq": s, "fwd_ms": t_f * 1e3, "bwd_ms": (t_fb - t_f) * 1e3,
                                 "fwd_tflops": fwd_flops / t_f / 1e12,
                                 "bwd_tflops": 2.5 * fwd_flops / (t_fb - t_f) / 1e12})
                    print(rows[-1], flush=True)
                    del q, k, v, kk, vv, out, g
                except Exception as e:  # noqa: BLE001
                    rows.append({"backend": backend.name, "heads": heads, "seq": s, "error": repr(e)[:300]})
                    print(rows[-1], flush=True)
                torch.cuda.empty_cache()
    p = torch.cuda.get_device_properties(0)
    json.dump({"environment": {"gpu": p.name, "torch": torch.__version__, "cuda": torch.version.cuda,
                               "cudnn": torch.backends.cudnn.version()}, "rows": rows},
              open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
