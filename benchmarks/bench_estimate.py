"""Speed of one serving estimate in the library and of the CLI including imports.

Run: python benchmarks/bench_estimate.py   (prints median wall times; the README quotes them)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def library_ms(repeats: int = 30) -> dict[str, float]:
    from perfmodel import load_database
    from perfmodel.inference import estimate_inference

    db = load_database()
    cases = {
        "llama-3.1-8b, 1 x h100-sxm": dict(model="llama-3.1-8b", system="1 x h100-sxm", isl=1000, osl=1000,
                                           precision="fp8"),
        "llama-3.1-405b, tp8 dgx-h100": dict(model="llama-3.1-405b", system="dgx-h100", isl=2048, osl=2048, tp=8,
                                             gpus=8, precision="fp8"),
        "deepseek-v3, attention-dp ep8 hgx-h200": dict(model="deepseek-v3", system="hgx-h200", isl=1000, osl=1000,
                                                       tp=8, ep=8, gpus=8, attention_dp=True, precision="fp8"),
        "llama-2-70b server SLOs, osl std 230, hgx-h200": dict(
            model="llama-2-70b", system="hgx-h200", isl=222, osl=292, gpus=8, precision="fp8", scenario="server",
            slo_ttft_ms=450, slo_tpot_ms=40, osl_std=230),
    }
    out = {}
    for name, kw in cases.items():
        estimate_inference(db=db, **kw)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            estimate_inference(db=db, breakdown=False, **kw)
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = statistics.median(times)
    return out


def cli_s(repeats: int = 5) -> float:
    cmd = [sys.executable, "-m", "perfmodel", "estimate", "infer", "--model", "llama-3.1-70b", "--system",
           "8 x h100-sxm", "--tp", "8", "--precision", "fp8", "--isl", "1000", "--osl", "1000", "--json"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    for name, ms in library_ms().items():
        print(f"library estimate_inference  {name:42s} {ms:7.1f} ms (median of 30)")
    print(f"CLI estimate infer (70B tp8, incl. imports)                  {cli_s():7.2f} s (median of 5)")
