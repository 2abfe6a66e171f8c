"""Serving-engine defaults that shape an inference estimate: batch caps, chunk size, memory share, KV pages.

These are software settings, not hardware: the largest batch a scheduler admits, the tokens it batches
in one prefill step, the share of GPU memory it takes, and the KV-cache page size. Each default is the
engine's documented one; ``default`` is a memory-limited engine with TensorRT-LLM-like settings.

``trtllm-bench`` is TensorRT-LLM's benchmark flow, which does not use fixed limits: ``trtllm-bench build
--dataset`` (and the PyTorch backend's ``throughput`` without explicit limits) sizes the batch and the
token budget from the workload; ``trtllm_bench_limits`` restates that heuristic.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .errors import InputError, did_you_mean


# fields the user gives in other units: shown under the setting's name, in its unit
_SHOWN_AS = {"host_overhead_s": ("host_overhead_ms", 1e3)}

TRT_EXECUTOR_HOST_MS = 0.9
"""Time per iteration that TensorRT-LLM's C++ executor (TensorRT engines, in-flight batching) spends on the
host while the GPU waits: it reads the step's sampled tokens back, updates and schedules the requests and
stages the next step's inputs before launching it, with no overlap of the two. Measured as the mean
inter-token latency less the modelled step at the lightest load NVIDIA published, 2 requests/s of 16-token
answers (one sequence in flight): 7, 5, 18 and 15 ms against modelled 6.19, 4.75, 16.92 and 13.52 ms for
Llama-3.1 8B on one H100 and one H200 and 70B at TP 4 on each (BF16), gaps of 0.81, 0.25, 1.08 and 1.48
ms, mean 0.9 ms (+-0.3 ms, the table rounds to whole milliseconds). Source: NVIDIA/TensorRT-LLM
docs/source/performance/perf-overview.md @258c7540, Online Serving Measurements (TensorRT-LLM 0.14.0 behind
Triton's tensorrtllm_backend, which runs the same executor). Heavier loads cost more per iteration (more
requests to update), so at large batch this is a floor. The PyTorch backend overlaps this work with the
next step (its overlap scheduler, on by default), and vLLM and SGLang are not measured: they carry none."""


@dataclass(frozen=True)
class Engine:
    name: str
    max_batch: int  # sequences the scheduler runs at once
    max_num_tokens: int  # tokens batched in one forward (prefill chunk budget)
    memory_fraction: float  # share of memory the engine takes: of the whole device, or of what is free
    block_tokens: int  # KV-cache page size
    source: str
    fraction_of_free: bool = False  # TensorRT-LLM: KV gets a fraction of memory left after weights
    tuned: bool = False  # limits sized per workload by ``trtllm_bench_limits``; the fields are its ceilings
    pinned: tuple[str, ...] = ()  # fields the user set, which workload tuning leaves alone
    host_overhead_s: float = 0.0  # time the GPU idles each iteration while the host schedules

    @property
    def label(self) -> str:
        """The name, with the settings the user gave: ``vllm:max_batch=512,max_num_tokens=1024``."""
        if not self.pinned:
            return self.name
        shown = []
        for f in self.pinned:
            name, scale = _SHOWN_AS.get(f, (f, 1))
            shown.append(f"{name}={getattr(self, f) * scale:g}")
        return self.name + ":" + ",".join(shown)


_TRT_HOST_S = TRT_EXECUTOR_HOST_MS / 1e3
_TRT_HOST = f"; {TRT_EXECUTOR_HOST_MS:g} ms of executor host time per iteration (engines.TRT_EXECUTOR_HOST_MS)"
ENGINES = {
    "default": Engine("default", 2048, 8192, 0.90, 32,
                      "TensorRT-LLM defaults: trtllm-build --max_batch_size 2048 and --max_num_tokens 8192, "
                      "kv_cache_free_gpu_mem_fraction 0.9, tokens_per_block 32 "
                      "(https://nvidia.github.io/TensorRT-LLM/commands/trtllm-build.html)" + _TRT_HOST, True,
                      host_overhead_s=_TRT_HOST_S),
    "trtllm": Engine("trtllm", 2048, 8192, 0.90, 32,
                     "TensorRT-LLM trtllm-build defaults (https://nvidia.github.io/TensorRT-LLM/commands/trtllm-build.html)"
                     + _TRT_HOST, True, host_overhead_s=_TRT_HOST_S),
    "trtllm-bench": Engine("trtllm-bench", 4096, 8192, 0.95, 32,
                           "TensorRT-LLM trtllm-bench: max_batch_size / max_num_tokens from the dataset's ISL/OSL "
                           "(tensorrt_llm/bench/build/tuning.py, calc_engine_setting and finetune_setting); "
                           "kv_cache_free_gpu_mem_fraction 0.95 as NVIDIA runs it "
                           "(docs/source/performance/perf-overview.md)" + _TRT_HOST, True, True,
                           host_overhead_s=_TRT_HOST_S),
    "vllm": Engine("vllm", 256, 8192, 0.90, 16,
                   "vLLM engine arguments: max_num_seqs 256, gpu_memory_utilization 0.9, block_size 16 "
                   "(https://docs.vllm.ai/en/latest/configuration/engine_args.html)"),
    "sglang": Engine("sglang", 4096, 8192, 0.88, 1,
                     "SGLang server arguments: mem_fraction_static ~0.88, chunked_prefill_size 8192, page_size 1 "
                     "(https://docs.sglang.ai/backend/server_arguments.html)"),
}


_ALIASES = {"tensorrt-llm": "trtllm", "tensorrt_llm": "trtllm", "tensorrt": "trtllm", "trt-llm": "trtllm",
            "trt": "trtllm"}

# engine settings by the names the engines' own flags use -> (Engine field, type)
SETTINGS = {
    "max_batch": ("max_batch", int), "max_num_seqs": ("max_batch", int), "max_batch_size": ("max_batch", int),
    "gpu_batch_size": ("max_batch", int),
    "max_num_tokens": ("max_num_tokens", int), "max_num_batched_tokens": ("max_num_tokens", int),
    "chunked_prefill_size": ("max_num_tokens", int),
    "memory_fraction": ("memory_fraction", float), "gpu_memory_utilization": ("memory_fraction", float),
    "kv_cache_free_gpu_mem_fraction": ("memory_fraction", float),
    "kv_cache_free_gpu_memory_fraction": ("memory_fraction", float), "mem_fraction_static": ("memory_fraction", float),
    "block_tokens": ("block_tokens", int), "block_size": ("block_tokens", int), "tokens_per_block": ("block_tokens", int),
    "page_size": ("block_tokens", int),
    "host_overhead_ms": ("host_overhead_s", float),
}


def get_engine(name: str | None) -> Engine:
    """An engine by name (``default``, ``trtllm``, ``trtllm-bench``, ``vllm``, ``sglang``, or TensorRT-LLM's
    other spellings), optionally with settings after a colon in the engines' own flag names:
    ``vllm:max_num_seqs=512,max_num_batched_tokens=1024``. A misspelt name or setting is an input error
    that suggests the closest."""
    text = (name or "default").strip()
    base, _, extra = text.partition(":")
    key = base.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ENGINES:
        hint = did_you_mean(key, list(ENGINES) + list(_ALIASES))
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)} (got '{base}'){hint}")
    eng = ENGINES[key]
    changes: dict = {}
    for item in filter(None, (x.strip() for x in extra.split(","))):
        flag, eq, value = item.partition("=")
        flag = flag.strip().lower().lstrip("-").replace("-", "_")
        if flag not in SETTINGS:
            hint = did_you_mean(flag, SETTINGS)
            raise InputError(f"--engine: unknown setting '{flag}' (expected NAME=VALUE with NAME one of "
                             f"max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, block_size, ...){hint}")
        field, kind = SETTINGS[flag]
        try:
            v = kind(value.strip()) if eq else None
        except ValueError:
            v = None
        zero_ok = field == "host_overhead_s"  # 0 turns an engine's host time off
        if v is None or v < 0 or (v == 0 and not zero_ok) or not math.isfinite(v) or \
                (field == "memory_fraction" and v > 1):
            what = {"memory_fraction": "a fraction in (0, 1]", "host_overhead_s": "milliseconds, 0 or more"}.get(
                field, "a positive whole number")
            raise InputError(f"--engine: setting {flag} expects {what} (got '{value.strip()}')")
        changes[field] = v / 1e3 if field == "host_overhead_s" else v
    if changes:
        eng = dataclasses.replace(eng, pinned=tuple(sorted(changes)), **changes)
    return eng


_FLAG = re.compile(r"(?<![a-z_])-{0,2}(" + "|".join(sorted((k.replace("_", "[-_]") for k in SETTINGS), key=len, reverse=True))
                   + r")[\s=:]+([0-9]*\.?[0-9]+)", re.IGNORECASE)


def engine_from_text(text: str | None) -> str | None:
    """The engine a free-text description names (validation cases), or None for the default, with any
    settings the text states in the engine's own flag names (``--max-num-seqs 512``, ``gpu_batch_size
    2048``) appended as ``name:flag=value,...`` for :func:`get_engine`."""
    t = (text or "").lower()
    for needle, key in (("trtllm-bench", "trtllm-bench"), ("gptmanagerbenchmark", "trtllm-bench"), ("tensorrt", "trtllm"),
                        ("trt-llm", "trtllm"), ("vllm", "vllm"), ("sglang", "sglang")):
        if needle in t:
            flags = [f"{m.group(1).lower().replace('-', '_')}={m.group(2)}" for m in _FLAG.finditer(t)]
            if key.startswith("trtllm") and "pytorch" in t and not any(f.startswith("host_overhead") for f in flags):
                flags.append("host_overhead_ms=0")  # the PyTorch backend overlaps its host work (TRT_EXECUTOR_HOST_MS)
            return key + (":" + ",".join(flags) if flags else "")
    return None


def _round_up(x: float, step: int) -> int:
    return step * math.ceil(x / step)


def trtllm_bench_limits(kv_max_requests: float, isl: float, osl: float, pp: int) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) that ``trtllm-bench`` builds for a workload, from the requests of
    ``isl + osl`` tokens its KV estimate holds: the batch is that count (at most 4,096, per pipeline stage)
    rounded up to a multiple of 32 (at least 64), 128 or 256; the token budget is the batch times
    ``1 + isl/osl`` (the prompt tokens its decode tokens arrive with, at most 32,768) rounded up to a
    multiple of 256 (at least 2,048), 512 or 1,024.
    Source: NVIDIA/TensorRT-LLM tensorrt_llm/bench/build/tuning.py, ``finetune_setting``."""
    bs = min(kv_max_requests, 4096) / max(pp, 1)
    tokens = min(bs * (1 + isl / osl), 32768)
    if bs < 256:
        max_bs = max(64, _round_up(bs, 32))
    else:
        max_bs = _round_up(bs, 128 if bs < 1024 else 256)
    if tokens < 4096:
        max_tokens = max(2048, _round_up(tokens, 256))
    else:
        max_tokens = _round_up(tokens, 512 if tokens < 8192 else 1024)
    return max_bs, max_tokens


def tune(engine: Engine, params: float, kv_bytes_per_token: float, memory_bytes: float, w_bytes: float,
         isl: float, osl: float, pp: int) -> Engine:
    """The engine with its workload-sized limits, if it has them (``Engine.tuned``).

    ``trtllm-bench`` estimates the requests its KV cache holds as (the GPUs' memory minus every parameter
    at the weight precision) x 0.95 / (KV bytes of one token, all layers and ranks, x (isl + osl)), with
    no allowance for activations: an optimistic bound that the runtime's KV pool then trims."""
    if not engine.tuned:
        return engine
    requests = max(memory_bytes - params * w_bytes, 0.0) * 0.95 / (kv_bytes_per_token * (isl + osl))
    max_bs, max_tokens = trtllm_bench_limits(requests, isl, osl, pp)
    tuned = {k: v for k, v in (("max_batch", max_bs), ("max_num_tokens", max_tokens)) if k not in engine.pinned}
    return dataclasses.replace(engine, **tuned)
