"""Decode and prefill steps of a Llama-3.1-8B-shaped decoder with FP8 weights (BF16 KV cache).

Every projection is ``torch._scaled_mm`` with per-tensor scales; the activation's cast to FP8 is fused
into the preceding RMSNorm / SiLU-gating by ``torch.compile`` (as serving engines fuse quantisation into
the norm), the attention output is cast by one small kernel. SDPA attention over a static BF16 cache,
CUDA-graph replay, random weights.

Run:  python benchmarks/device/measure_fp8_decode.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from measure_gpu import graph_time_s  # noqa: E402

E4M3 = torch.float8_e4m3fn


@torch.compile
def rms_q(x, w):
    v = x.float().pow(2).mean(-1, keepdim=True)
    return ((x.float() * torch.rsqrt(v + 1e-5)) * w.float()).to(E4M3)


@torch.compile
def swiglu_q(g, u):
    return (F.silu(g.float()) * u.float()).to(E4M3)


class Fp8Llama:
    def __init__(self, layers=32, hidden=4096, heads=32, kv=8, ffn=14336, vocab=128256, max_b=128, max_len=1032):
        d = hidden // heads
        self.h, self.nh, self.nkv, self.d, self.ffn = hidden, heads, kv, d, ffn
        w = lambda n, k: (torch.randn(n, k, device="cuda") * 0.02).to(E4M3)  # noqa: E731
        self.layers = [{
            "qkv": w((heads + 2 * kv) * d, hidden), "o": w(hidden, heads * d), "gu": w(2 * ffn, hidden),
            "down": w(hidden, ffn), "n1": torch.ones(hidden, device="cuda", dtype=torch.bfloat16),
            "n2": torch.ones(hidden, device="cuda", dtype=torch.bfloat16),
            "k": torch.zeros(max_b, kv, max_len, d, device="cuda", dtype=torch.bfloat16),
            "v": torch.zeros(max_b, kv, max_len, d, device="cuda", dtype=torch.bfloat16),
        } for _ in range(layers)]
        self.emb = torch.randn(vocab, hidden, device="cuda", dtype=torch.bfloat16) * 0.02
        self.head = w(vocab, hidden)
        self.nf = torch.ones(hidden, device="cuda", dtype=torch.bfloat16)
        self.one = torch.ones((), device="cuda")

    def mm(self, x8, w8):
        return torch._scaled_mm(x8, w8.t(), scale_a=self.one, scale_b=self.one, out_dtype=torch.bfloat16)

    def decode(self, tokens, pos):
        b = tokens.shape[0]
        x = self.emb[tokens]
        for L in self.layers:
            q, k, v = self.mm(rms_q(x, L["n1"]), L["qkv"]).split([self.nh * self.d, self.nkv * self.d,
                                                                  self.nkv * self.d], -1)
            L["k"][:b, :, pos] = k.view(b, self.nkv, self.d)
            L["v"][:b, :, pos] = v.view(b, self.nkv, self.d)
            a = F.scaled_dot_product_attention(q.view(b, self.nh, 1, self.d), L["k"][:b, :, :pos + 1],
                                               L["v"][:b, :, :pos + 1], enable_gqa=True)
            x = x + self.mm(a.reshape(b, -1).to(E4M3), L["o"])
            g, u = self.mm(rms_q(x, L["n2"]), L["gu"]).split(self.ffn, -1)
            x = x + self.mm(swiglu_q(g, u), L["down"])
        return self.mm(rms_q(x, self.nf), self.head)

    def prefill(self, tokens):
        b, s = tokens.shape
        x = self.emb[tokens].view(b * s, -1)
        for L in self.layers:
            q, k, v = self.mm(rms_q(x, L["n1"]), L["qkv"]).split([self.nh * self.d, self.nkv * self.d,
                                                                  self.nkv * self.d], -1)
            q = q.view(b, s, self.nh, self.d).transpose(1, 2)
            k = k.view(b, s, self.nkv, self.d).transpose(1, 2)
            v = v.view(b, s, self.nkv, self.d).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + self.mm(a.transpose(1, 2).reshape(b * s, -1).to(E4M3), L["o"])
            g, u = self.mm(rms_q(x, L["n2"]), L["gu"]).split(self.ffn, -1)
            x = x + self.mm(swiglu_q(g, u), L["down"])
        return self.mm(rms_q(x[-16:], self.nf), self.head)


def main():
    m = Fp8Llama()
    rows = []
    with torch.no_grad():
        for b in (16, 32, 64, 128):
            tok = torch.randint(0, 128256, (b,), device="cuda")
            m.decode(tok, 1024)
            t = graph_time_s(lambda i: m.decode(tok, 1024), 3, replays=5)
            rows.append({"phase": "decode", "batch": b, "context": 1025, "step_ms": t * 1e3})
            print(rows[-1], flush=True)
        for s in (512, 2048):
            tok = torch.randint(0, 128256, (1, s), device="cuda")
            m.prefill(tok)
            t = graph_time_s(lambda i: m.prefill(tok), 2, replays=5)
            rows.append({"phase": "prefill", "batch": 1, "seq": s, "step_ms": t * 1e3})
            print(rows[-1], flush=True)
    p = torch.cuda.get_device_properties(0)
    json.dump({"environment": {"gpu": p.name, "torch": torch.__version__},
               "note": "FP8 e4m3 weights and activations (per-tensor scale 1), BF16 KV cache and attention",
               "rows": rows}, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
