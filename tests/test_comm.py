"""Collectives: nccl-tests bus-bandwidth factors, alpha-beta terms, the hierarchical volume, topology."""

from __future__ import annotations

import pytest

from perfmodel.comm import BUSBW_FACTOR, collective_time, place_group
from perfmodel.errors import InputError


@pytest.mark.parametrize(
    "coll,n,factor",
    [("all_reduce", 8, 2 * 7 / 8), ("all_reduce", 2, 1.0), ("all_gather", 8, 7 / 8), ("reduce_scatter", 4, 3 / 4),
     ("all_to_all", 8, 7 / 8), ("broadcast", 8, 1.0), ("send_recv", 2, 1.0)],
)
def test_busbw_factors(db, coll, n, factor):
    assert BUSBW_FACTOR[coll](n) == pytest.approx(factor)
    res = collective_time(db, db.system("dgx-h100"), coll, 1 << 28, n, "ring" if coll == "all_reduce" else None)
    assert res.busbw_gbps[0] / res.algbw_gbps[0] == pytest.approx(factor)


def test_ring_all_reduce_large_message_is_link_bound(db):
    """Ring busbw approaches the achievable per-GPU NVLink bandwidth: 18 x 25 GB/s x 0.816."""
    s = db.system("dgx-h100")
    res = collective_time(db, s, "all_reduce", 16 << 30, 8, "ring")
    assert res.busbw_gbps[0] == pytest.approx(18 * 25 * 0.816, rel=0.01)


def test_small_message_latency_matches_nccl_ll(db):
    """8-rank ring LL: 6.6 us base + 2(n-1) x 0.6 us = 15.0 us (NCCL tuning.cc constants)."""
    res = collective_time(db, db.system("dgx-h100"), "all_reduce", 8, 8, "ring")
    assert res.time_s[0] * 1e6 == pytest.approx(6.6 + 14 * 0.6, rel=1e-3)


def test_nvls_beats_ring_on_large_messages(db):
    s = db.system("dgx-h100")
    nvls = collective_time(db, s, "all_reduce", 1 << 30, 8, "nvls")
    ring = collective_time(db, s, "all_reduce", 1 << 30, 8, "ring")
    assert nvls.time_s[0] < ring.time_s[0]
    auto = collective_time(db, db.system("dgx-b200"), "all_reduce", 1 << 30, 8)  # no measured curve: the model
    assert auto.algorithm == ["nvls"]
    with pytest.raises(InputError, match="--algorithm nvls"):
        collective_time(db, db.system("mi300x-8"), "all_reduce", 1 << 30, 8, "nvls")


def test_hierarchical_all_reduce_volume(db):
    """2 nodes x 8 GPUs: intra RS(S) + inter ring AR of S/8 on each GPU's own NIC + intra AG(S).

    The inter-node phase moves 2(N-1)/N x S/g bytes per rank (not S, not S/g x g): checked against the
    hand formula with message sizes large enough that latency is negligible.
    """
    s = db.system("dgx-h100")
    S = 8 << 30
    res = collective_time(db, s, "all_reduce", S, 16, "ring")
    nvl = 18 * 25 * 0.816e9
    nic = db.link("ib-ndr-400").bandwidth_gbps.value * 1e9  # one 400G NIC per GPU
    eff = db.link("ib-ndr-400").achievable_fraction
    nic *= eff.value if eff else 1.0
    intra = 2 * (7 / 8) * S / nvl
    inter = 2 * (1 / 2) * (S / 8) / nic
    assert res.time_s[0] == pytest.approx(intra + inter, rel=0.01)


def test_full_mesh_small_groups_see_fewer_links(db):
    """On MI300X's xGMI full mesh a 2-GPU group has one direct link; an NVSwitch group keeps all links."""
    mi = db.system("mi300x-8")
    two = collective_time(db, mi, "all_reduce", 1 << 30, 2, "ring").busbw_gbps[0]
    eight = collective_time(db, mi, "all_reduce", 1 << 30, 8, "ring").busbw_gbps[0]
    assert eight / two == pytest.approx(7, rel=0.02)
    h = db.system("dgx-h100")
    assert collective_time(db, h, "all_reduce", 1 << 30, 2, "ring").busbw_gbps[0] == pytest.approx(
        collective_time(db, h, "all_reduce", 1 << 30, 8, "ring").busbw_gbps[0], rel=0.01)


def test_more_bandwidth_never_slower(db):
    s = db.system("dgx-h100")
    t_h100 = collective_time(db, s, "all_reduce", 1 << 28, 8, "ring").time_s[0]
    t_b200 = collective_time(db, db.system("dgx-b200"), "all_reduce", 1 << 28, 8, "ring").time_s[0]
    assert t_b200 < t_h100


def test_group_placement_and_errors(db):
    g = place_group(db, db.system("dgx-h100"), 32)
    assert (g.per_node, g.nodes) == (8, 4)
    assert place_group(db, db.system("gb200-nvl72"), 64).nodes == 1  # one NVLink domain of 72
    with pytest.raises(InputError, match="--collective"):
        collective_time(db, db.system("dgx-h100"), "allreduce", 1, 8)
    with pytest.raises(InputError, match="--bytes"):
        collective_time(db, db.system("dgx-h100"), "all_reduce", -1, 8)
    with pytest.raises(InputError, match="scale-up domains"):
        collective_time(db, db.system("dgx-h100"), "all_reduce", 1, 12)
    with pytest.raises(InputError, match="scale_out"):
        collective_time(db, db.system("rtx-4090-workstation"), "all_reduce", 1, 2)


def test_measured_all_reduce_curve_replaces_the_model_inside_its_range(db):
    """dgx-h100 carries a measured 8-rank nccl-tests curve: its points come back exactly, sizes between
    them interpolate linearly in log2(size), and outside it (smaller, other rank counts, a forced
    algorithm) the alpha-beta model answers."""
    import math

    s = db.system("dgx-h100")
    at = lambda nbytes, n=8, alg=None: collective_time(db, s, "all_reduce", nbytes, n, alg)
    assert at(64 << 20).busbw_gbps[0] == pytest.approx(357.44)
    assert at(64 << 20).algorithm == ["measured"]
    mid = 48 << 20  # between 32 MiB (293.02) and 64 MiB (357.44)
    frac = (math.log2(mid) - 25) / (26 - 25)
    assert at(mid).busbw_gbps[0] == pytest.approx(293.02 + frac * (357.44 - 293.02))
    assert at(64 << 30).busbw_gbps[0] == pytest.approx(479.72)  # held beyond the last point
    assert at(256 << 10).algorithm != ["measured"]
    assert at(64 << 20, n=4).busbw_gbps[0] == pytest.approx(305.61)  # its own 4-rank curve
    assert at(64 << 20, n=2).algorithm != ["measured"]  # the 2-rank curve starts at 256 MiB
    assert at(64 << 20, alg="ring").algorithm == ["ring"]
    sizes = [2**k for k in range(10, 34)]
    times = collective_time(db, s, "all_reduce", sizes, 8).time_s
    assert all(b >= a for a, b in zip(times, times[1:]))  # more bytes never take less time


def test_gb200_tray_all_reduce_reads_azures_ring_curve(db):
    """gb200-nvl72's 4-rank all-reduce is Azure's ND GB200 v6 nccl-tests curve (NCCL_ALGO=Ring, one 4-GPU
    tray): 16 MiB moves at 331.09 GB/s of bus bandwidth, so 2 x 3/4 x 16 MiB / 331.09 GB/s = 76.0 us; other
    rank counts stay on the alpha-beta model."""
    s = db.system("gb200-nvl72")
    r = collective_time(db, s, "all_reduce", 16 << 20, 4)
    assert r.algorithm == ["measured"]
    assert r.time_s[0] == pytest.approx(1.5 * (16 << 20) / 331.09e9)
    assert collective_time(db, s, "all_reduce", 16 << 20, 8).algorithm != ["measured"]


def test_measured_curve_needs_two_points(tmp_path):
    from perfmodel.specdb import load_database
    from perfmodel.errors import InputError as SpecError

    (tmp_path / "x.yaml").write_text(
        "id: x-node\nkind: system\nname: x\nsources: {s: {title: t}}\naccelerator: h100-sxm\n"
        "accelerators_per_node: {value: 8, source: s}\n"
        "scale_up: {link: nvlink4, links_per_accelerator: {value: 18, source: s}, topology: switch,\n"
        "  domain_size: {value: 8, source: s}, all_reduce_curves: [{ranks: {value: 8, source: s},\n"
        "  busbw_gbps: {1048576: {value: 40, source: s}}}]}\n"
        "host: {cpu: c, link: pcie5-x16, memory_tier: host-ddr5, memory_gb: {value: 1, source: s}}\n")
    with pytest.raises(SpecError, match="at least two"):
        load_database([str(tmp_path)])
