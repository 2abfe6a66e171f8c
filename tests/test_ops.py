"""Per-layer operator lists (perfmodel/ops.py): byte and FLOP counts by hand."""

from __future__ import annotations

import pytest

from perfmodel.models import get_model
from perfmodel.ops import Shard, layer_ops


def _by_name(ops):
    return {op.name: op for op in ops}


def test_moe_token_permutation_and_combine_bytes():
    """Mixtral 8x7B, 64 tokens, top-2, BF16 activations: the permute reads 64 rows and writes 128,
    the combine reads 128 and writes 64, each row 4,096 x 2 bytes."""
    m = get_model("mixtral-8x7b")
    ops = _by_name(layer_ops(m, Shard(tp=1), 64, 64, 1024, "decode", 2.0, 1.0, 1.0, moe=True))
    row = 4096 * 2
    assert ops["moe_permute"].nbytes == pytest.approx(64 * 3 * row)
    assert ops["moe_combine"].nbytes == pytest.approx(64 * 3 * row)
    assert ops["moe_permute"].kind == ops["moe_combine"].kind == "memory"


def test_dense_layer_has_no_permutation():
    m = get_model("llama-3.1-8b")
    names = {op.name for op in layer_ops(m, Shard(tp=1), 64, 64, 1024, "decode", 2.0, 1.0, 1.0, moe=False)}
    assert not names & {"moe_permute", "moe_combine", "router"}


def test_attention_carries_its_key_length():
    m = get_model("llama-3.1-8b")
    ops = _by_name(layer_ops(m, Shard(tp=1), 2048, 1, 2048, "prefill", 2.0, 2.0, 2.0, moe=False))
    assert ops["attention"].keys == 2048
    # causal prefill FLOPs: 4 * (s(s+1)/2) * heads * head_dim
    assert ops["attention"].flops == pytest.approx(4 * 2048 * 2049 / 2 * 32 * 128)
