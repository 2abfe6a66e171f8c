"""Per-layer operator lists (perfmodel/ops.py): byte and FLOP counts by hand."""

from __future__ import annotations

import numpy as np
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


def test_tile_choice_pads_past_a_multiple_of_128_to_the_next_64():
    """M = 261, N = 1,024, K = 8,192 on 132 SMs: 128-row tiles pad M to 384 (3 x 8 = 24 tiles, split-K 5
    ways: 120 of 132 SMs at 261/384 useful rows = 0.618); 64-row tiles pad to 320 (5 x 8 = 40 tiles, split
    3 ways: 120 of 132 SMs at 261/320 = 0.742). The library takes the better."""
    from perfmodel.roofline import tile_utilisation

    u = tile_utilisation(261, 1024, 8192, 132)
    assert u == pytest.approx(261 / 320 * 120 / 132)
    assert tile_utilisation(256, 1024, 8192, 132) >= u  # no padding at all
    arr = tile_utilisation(np.array([261.0, 256.0]), np.array([1024.0, 1024.0]), np.array([8192.0, 8192.0]), 132)
    assert arr[0] == pytest.approx(u)


def test_gemm_overlap_norm_on_and_off_the_ridge():
    """Compute and memory combine as a 6-norm: equal times give 2^(1/6) = 1.122 of either; a 2:1 split
    gives (1 + 2^-6)^(1/6) = 1.0026 of the larger; scalar and array paths agree; a longer memory time is
    never faster (more bandwidth is never slower)."""
    from perfmodel.roofline import RIDGE_OVERLAP_P, overlap

    assert RIDGE_OVERLAP_P == 6.0
    assert overlap(1e-3, 1e-3) == pytest.approx(1e-3 * 2 ** (1 / 6))
    assert overlap(2e-3, 1e-3) == pytest.approx(2e-3 * (1 + 2.0 ** -6) ** (1 / 6))
    assert overlap(0.0, 0.0) == 0.0
    tc = np.array([1e-3, 2e-3, 0.0, 5e-6])
    tm = np.array([1e-3, 1e-3, 0.0, 1e-9])
    assert np.allclose(overlap(tc, tm), [overlap(float(a), float(b)) for a, b in zip(tc, tm)])
    mem = np.linspace(1e-4, 4e-3, 50)
    assert np.all(np.diff(overlap(np.full(50, 1e-3), mem)) > 0)
