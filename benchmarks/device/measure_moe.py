"""Grouped (MoE expert) GEMMs against one dense GEMM of the same bytes: do the experts stream at HBM speed?

Mixtral-8x7B and a 64-expert shape; tokens spread evenly over experts (top-k already applied: ``rows`` is
tokens x k). ``torch._grouped_mm`` (BF16, CUTLASS grouped kernel) and, where available,
``torch._scaled_grouped_mm`` (FP8 rowwise). CUDA-graph replays, weights rotating past L2.

Run:  python benchmarks/device/measure_moe.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from measure_gpu import graph_time_s  # noqa: E402


def case(groups, k, n, rows, dtype):
    per = rows // groups
    offs = torch.arange(per, per * groups + 1, per, device="cuda", dtype=torch.int32)
    w_bytes = groups * k * n * (2 if dtype == "bf16" else 1)
    copies = max(2, min(16, int(1e9 // w_bytes) + 1))
    if dtype == "bf16":
        a = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        ws = [torch.randn(groups, n, k, device="cuda", dtype=torch.bfloat16).transpose(-2, -1) for _ in range(copies)]

        def fn(i):
            torch._grouped_mm(a, ws[i % copies], offs=offs)
    else:
        a = torch.randn(rows, k, device="cuda").to(torch.float8_e4m3fn)
        ws = [torch.randn(groups, n, k, device="cuda").to(torch.float8_e4m3fn).transpose(-2, -1)
              for _ in range(copies)]
        sa = torch.ones(rows, device="cuda", dtype=torch.float32)
        sb = torch.ones(groups, n, device="cuda", dtype=torch.float32)

        def fn(i):
            torch._scaled_grouped_mm(a, ws[i % copies], sa, sb, offs=offs, out_dtype=torch.bfloat16)
    t = graph_time_s(fn, copies * max(1, 40 // copies))
    flops = 2.0 * rows * k * n
    return {"groups": groups, "k": k, "n": n, "rows": rows, "dtype": dtype, "time_us": t * 1e6,
            "tflops": flops / t / 1e12, "weight_gbps": w_bytes / t / 1e9}


def main():
    out = []
    for dtype in ("bf16", "fp8"):
        for groups, k, n in ((8, 4096, 28672), (8, 14336, 4096), (64, 2048, 2816)):
            for rows in (16 * groups // 8 if groups == 8 else 64, 128, 512, 2048, 8192):
                rows = max(rows, groups * 16)
                rows -= rows % (groups * 16)
                try:
                    r = case(groups, k, n, rows, dtype)
                except Exception as e:  # noqa: BLE001
                    r = {"groups": groups, "k": k, "n": n, "rows": rows, "dtype": dtype, "error": repr(e)[:300]}
                print(r, flush=True)
                out.append(r)
                torch.cuda.empty_cache()
    p = torch.cuda.get_device_properties(0)
    json.dump({"environment": {"gpu": p.name, "torch": torch.__version__}, "rows": out}, open(sys.argv[1], "w"),
              indent=1)


if __name__ == "__main__":
    main()
