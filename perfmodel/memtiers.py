"""The memory and storage a job can use beyond HBM: host DRAM, CXL expanders, NVMe drives, PIM.

``--host-memory TIER[:SIZE]``, ``--cxl TIER[:SIZE][,TIER[:SIZE]...]``, ``--nvme ...`` and ``--pim
TIER[:SIZE]`` describe the machine one GPU sees (sizes take units: ``512GiB``, ``2TB``; a tier without a
size uses its database capacity, one card or drive each). Everything is per GPU: a node's host memory and
devices are shared by its GPUs, so their capacity and bandwidth are divided by the GPUs per node.

Bandwidths are effective: a device is read no faster than its own figure nor than the link it hangs off
(PCIe x8 for a CXL card, x4 for an NVMe drive, times the link's achievable fraction); several cards or
drives add up. Host DRAM is read by the CPU at its own bandwidth, and by the GPU over the host link
(PCIe or NVLink-C2C); data on NVMe or CXL reaches the GPU through that same host link (or directly, with
GPUDirect Storage, still bounded by the GPU's PCIe link).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError
from .hardware import Tier, TierType
from .specdb import Database, SystemRef
from .units import parse_size


@dataclass(frozen=True)
class TierUse:
    """One tier as a GPU sees it: capacity, read/write bandwidth and latency, after sharing and links."""

    kind: str  # host, cxl, nvme, pim
    ids: tuple[str, ...]
    capacity_bytes: float
    read_gbps: float
    write_gbps: float
    latency_us: float

    def describe(self) -> str:
        return f"{'+'.join(self.ids)} ({self.capacity_bytes / 2**30:,.0f} GiB, {self.read_gbps:,.1f} GB/s read)"


@dataclass
class Machine:
    """HBM plus the tiers one GPU can use, and the link between the GPU and the host."""

    system: SystemRef
    hbm_bytes: float
    gpu_host_gbps: float  # GPU <-> host, per direction, achievable
    host_link: str
    host: TierUse
    cxl: TierUse | None = None
    nvme: TierUse | None = None
    pim: TierUse | None = None
    pim_tier: Tier | None = None
    notes: list[str] = field(default_factory=list)

    def tiers(self) -> list[TierUse]:
        return [t for t in (self.host, self.cxl, self.nvme) if t is not None]


def _link_gbps(db: Database, link_id: str | None) -> float:
    if not link_id:
        return float("inf")
    return db.link(link_id).achievable_gbps


def _parse_list(db: Database, text: str, flag: str, want: tuple[TierType, ...]) -> list[tuple[Tier, float]]:
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            raise InputError(f"{flag}: empty tier in '{text}'")
        tid, _, size = item.partition(":")
        tier = db.tier(tid.strip())
        if tier.tier_type not in want:
            kinds = " or ".join(w.value for w in want)
            raise InputError(f"{flag} {tid}: is a {tier.tier_type.value} tier, expected {kinds}")
        cap = parse_size(size, flag) if size else tier.capacity_gb.value * 1e9
        if cap <= 0:
            raise InputError(f"{flag} {item}: expected a positive capacity")
        out.append((tier, cap))
    return out


def _combine(db: Database, kind: str, parts: list[tuple[Tier, float]], share: int) -> TierUse:
    """Cards or drives side by side: capacities and link-bounded bandwidths add; shared by `share` GPUs."""
    cap = sum(c for _, c in parts)
    read = sum(min(t.read_gbps.value, _link_gbps(db, t.link)) for t, _ in parts)
    write = sum(min(t.write_gbps.value, _link_gbps(db, t.link)) for t, _ in parts)
    lat = max(t.latency_us.value for t, _ in parts)
    return TierUse(kind, tuple(t.id for t, _ in parts), cap / share, read / share, write / share, lat)


def describe_machine(db: Database, ref: SystemRef, host_memory: str | None = None, cxl: str | None = None,
                     nvme: str | None = None, pim: str | None = None) -> Machine:
    """The tiers one GPU of ``ref`` can use, from the CLI's tier flags (defaults: the system's host memory)."""
    sysm = ref.system
    share = min(sysm.gpus_per_node, max(ref.gpus, 1))
    if host_memory:
        parts = _parse_list(db, host_memory, "--host-memory", (TierType.host_dram, TierType.cpu_memory))
        if len(parts) != 1:
            raise InputError("--host-memory: give one tier (TIER[:SIZE])")
    else:
        tier = db.tier(sysm.host.memory_tier)
        parts = [(tier, sysm.host.memory_gb.value * 1e9)]
    host_tier, host_cap = parts[0]
    # host DRAM is read by the CPU at the DRAM's bandwidth; sharing splits it over the node's GPUs
    host = TierUse("host", (host_tier.id,), host_cap / share, host_tier.read_gbps.value / share,
                   host_tier.write_gbps.value / share, host_tier.latency_us.value)
    n_links = sysm.host.links_per_accelerator.value if sysm.host.links_per_accelerator else 1
    gpu_host = n_links * _link_gbps(db, sysm.host.link)
    m = Machine(ref, ref.accelerator.usable_memory_gb * 1e9, gpu_host, sysm.host.link, host)
    if cxl:
        m.cxl = _combine(db, "cxl", _parse_list(db, cxl, "--cxl", (TierType.cxl,)), share)
    if nvme:
        m.nvme = _combine(db, "nvme", _parse_list(db, nvme, "--nvme", (TierType.nvme,)), share)
    if pim:
        parts = _parse_list(db, pim, "--pim", (TierType.pim,))
        if len(parts) != 1:
            raise InputError("--pim: give one PIM tier (TIER[:SIZE])")
        m.pim_tier = parts[0][0]
        m.pim = _combine(db, "pim", parts, 1)
    return m
