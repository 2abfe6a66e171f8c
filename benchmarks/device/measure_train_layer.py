"""Forward + backward time of Llama-3.1-8B-shaped decoder layers in BF16 on one GPU (no optimizer step).

cuBLAS GEMMs, cuDNN causal attention (K/V expanded to the query heads, since PyTorch's cuDNN path takes
equal head counts), RMSNorm and SiLU-gating fused by torch.compile, autograd backward. Four layers are
stacked and timed together after warm-up (clock settled); the result is per layer.

Run:  python benchmarks/device/measure_train_layer.py OUT.json
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

H, HEADS, KV, D, FFN = 4096, 32, 8, 128, 14336


@torch.compile
def rms(x, w):
    v = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(v + 1e-5)).to(x.dtype) * w


@torch.compile
def swiglu(g, u):
    return F.silu(g) * u


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        mk = lambda *s: torch.nn.Parameter(torch.randn(*s, device="cuda", dtype=torch.bfloat16) * 0.02)  # noqa: E731
        self.qkv, self.o = mk((HEADS + 2 * KV) * D, H), mk(H, HEADS * D)
        self.gu, self.down = mk(2 * FFN, H), mk(H, FFN)
        self.n1 = torch.nn.Parameter(torch.ones(H, device="cuda", dtype=torch.bfloat16))
        self.n2 = torch.nn.Parameter(torch.ones(H, device="cuda", dtype=torch.bfloat16))

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (rms(x, self.n1) @ self.qkv.t()).split([HEADS * D, KV * D, KV * D], -1)
        q = q.view(b, s, HEADS, D).transpose(1, 2)
        k = k.view(b, s, KV, D).transpose(1, 2).repeat_interleave(HEADS // KV, 1)
        v = v.view(b, s, KV, D).transpose(1, 2).repeat_interleave(HEADS // KV, 1)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + a.transpose(1, 2).reshape(b, s, -1) @ self.o.t()
        g, u = (rms(x, self.n2) @ self.gu.t()).split(FFN, -1)
        return x + swiglu(g, u) @ self.down.t()


def main():
    layers = torch.nn.Sequential(*[Layer() for _ in range(4)])
    rows = []
    for seq, mb in ((4096, 1), (8192, 1), (4096, 2)):
        x = torch.randn(mb, seq, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn(mb, seq, H, device="cuda", dtype=torch.bfloat16)

        def step():
            layers(x).backward(g)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t_end = time.time() + 1.0
        while time.time() < t_end:
            step()
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        times.sort()
        fwd = []
        with torch.no_grad():
            for _ in range(5):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                layers(x)
                b.record()
                b.synchronize()
                fwd.append(a.elapsed_time(b) / 1e3)
        fwd.sort()
        rows.append({"seq": seq, "micro_batch": mb, "fwd_bwd_ms_per_layer": times[5] / 4 * 1e3,
                     "fwd_ms_per_layer": fwd[2] / 4 * 1e3})
        print(rows[-1], flush=True)
        layers.zero_grad(set_to_none=True)
    p = torch.cuda.get_device_properties(0)
    json.dump({"environment": {"gpu": p.name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()},
               "config": {"hidden": H, "heads": HEADS, "kv_heads": KV, "head_dim": D, "ffn": FFN, "layers_timed": 4},
               "rows": rows}, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
