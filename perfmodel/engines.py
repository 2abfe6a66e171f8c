"""Serving-engine defaults that shape an inference estimate: batch caps, chunk size, memory share, KV pages.

These are software settings, not hardware: the largest batch a scheduler admits, the tokens it batches
in one prefill step, the share of GPU memory it takes, and the KV-cache page size. Each default is the
engine's documented one; ``default`` is a memory-limited engine with TensorRT-LLM-like settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Engine:
    name: str
    max_batch: int  # sequences the scheduler runs at once
    max_num_tokens: int  # tokens batched in one forward (prefill chunk budget)
    memory_fraction: float  # share of memory the engine takes: of the whole device, or of what is free
    block_tokens: int  # KV-cache page size
    source: str
    fraction_of_free: bool = False  # TensorRT-LLM: KV gets a fraction of memory left after weights


ENGINES = {
    "default": Engine("default", 2048, 8192, 0.90, 32,
                      "TensorRT-LLM defaults: trtllm-build --max_batch_size 2048 and --max_num_tokens 8192, "
                      "kv_cache_free_gpu_mem_fraction 0.9, tokens_per_block 32 "
                      "(https://nvidia.github.io/TensorRT-LLM/commands/trtllm-build.html)", True),
    "trtllm": Engine("trtllm", 2048, 8192, 0.90, 32,
                     "TensorRT-LLM trtllm-build defaults (https://nvidia.github.io/TensorRT-LLM/commands/trtllm-build.html)",
                     True),
    "vllm": Engine("vllm", 256, 8192, 0.90, 16,
                   "vLLM engine arguments: max_num_seqs 256, gpu_memory_utilization 0.9, block_size 16 "
                   "(https://docs.vllm.ai/en/latest/configuration/engine_args.html)"),
    "sglang": Engine("sglang", 4096, 8192, 0.88, 1,
                     "SGLang server arguments: mem_fraction_static ~0.88, chunked_prefill_size 8192, page_size 1 "
                     "(https://docs.sglang.ai/backend/server_arguments.html)"),
}


def get_engine(name: str | None) -> Engine:
    key = (name or "default").lower()
    for alias, eng in (("tensorrt", "trtllm"), ("trt", "trtllm"), ("vllm", "vllm"), ("sglang", "sglang")):
        if key.startswith(alias):
            key = eng
    if key not in ENGINES:
        raise InputError(f"--engine: expected one of {', '.join(ENGINES)} (got '{name}')")
    return ENGINES[key]


def engine_from_text(text: str | None) -> str | None:
    """The engine a free-text description names (validation cases), or None for the default."""
    t = (text or "").lower()
    for needle, key in (("tensorrt", "trtllm"), ("trt-llm", "trtllm"), ("vllm", "vllm"), ("sglang", "sglang")):
        if needle in t:
            return key
    return None
