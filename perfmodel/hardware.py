"""The hardware-spec schema: accelerators, memory/storage tiers, links and systems.

Every number in a spec file is a :class:`Spec`: a value with the source it came from (a key into the
file's ``sources`` table, which gives the document title and URL) or a ``derived`` note saying how it
was computed from other numbers. Field names carry units (``memory_gb``, ``bandwidth_gbps``); the
unit and the plausible range of each field are declared once, in :data:`UNITS`, so loading can reject a
number given in the wrong unit (bytes where GB were meant, bits where bytes were meant).

Conventions: GB = 1e9 bytes, ``_gbps`` = GB/s (1e9 bytes per second, *not* gigabits), TFLOP/s are
**dense** (no 2:4 sparsity), link bandwidths are **per direction**.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    """A document a number was read from."""

    title: str
    url: str | None = None
    note: str | None = None


class Spec(Strict):
    """One number with its provenance.

    ``source`` is a key of the file's ``sources``; ``derived`` says how the number follows from others;
    ``assumed`` marks a modelling assumption that no read source gives (why it was chosen). A number needs
    at least one of the three; ``hardware show`` labels assumptions so nobody mistakes them for figures.
    """

    value: float
    source: str | None = None
    derived: str | None = None
    assumed: str | None = None
    note: str | None = None

    @field_validator("value")
    @classmethod
    def _finite_positive(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("expected a positive, finite number")
        return v

    @model_validator(mode="after")
    def _has_provenance(self) -> "Spec":
        if not (self.source or self.derived or self.assumed):
            raise ValueError(
                "every number needs a 'source' (a key of 'sources'), a 'derived' note or an 'assumed' reason"
            )
        return self


class Dtype(str, Enum):
    fp64 = "fp64"
    fp64_tensor = "fp64_tensor"
    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"
    int8 = "int8"
    fp6 = "fp6"
    fp4 = "fp4"
    int4 = "int4"


# field name -> (unit, lowest plausible, highest plausible). Ranges catch wrong units, not rare parts.
UNITS: dict[str, tuple[str, float, float]] = {
    "peak_tflops": ("TFLOP/s", 0.05, 50_000),
    "sparse_tflops": ("TFLOP/s", 0.05, 100_000),
    "memory_gb": ("GB", 1, 1_000_000),
    "memory_visible_gb": ("GB", 1, 1_000_000),
    "memory_bandwidth_gbps": ("GB/s", 10, 100_000),
    "l2_cache_mb": ("MB", 0.1, 2_000),
    "llc_mb": ("MB", 0.1, 10_000),
    "compute_units": ("count", 1, 100_000),
    "boost_clock_mhz": ("MHz", 100, 10_000),
    "tdp_w": ("W", 5, 5_000),
    "price_per_hour_usd": ("USD/h", 0.01, 1_000),
    "gemm_peak_fraction": ("fraction", 0.05, 1.0),
    "sustained_gemm_ratio": ("fraction", 0.3, 1.0),
    "attention_peak_fraction": ("fraction", 0.05, 1.0),
    "attention_ramp_keys": ("tokens", 0, 1_000_000),
    "grouped_gemm_ratio": ("fraction", 0.05, 1.0),
    "grouped_gemm_gbps": ("GB/s", 10, 100_000),
    "memory_bandwidth_fraction": ("fraction", 0.05, 1.0),
    "weight_streaming_fraction": ("fraction", 0.05, 1.0),
    "kernel_floor_us": ("us", 0.1, 1_000),
    "fp8_kv_decode_gbps_per_sm": ("GB/s", 0.1, 10_000),
    "capacity_gb": ("GB", 0.001, 10_000_000),
    "read_gbps": ("GB/s", 0.01, 100_000),
    "write_gbps": ("GB/s", 0.01, 100_000),
    "latency_us": ("us", 0.001, 100_000),
    "internal_bandwidth_gbps": ("GB/s", 1, 1_000_000),
    "compute_per_unit_gflops": ("GFLOP/s", 0.001, 1_000_000),
    "units": ("count", 1, 10_000_000),
    "clock_mhz": ("MHz", 10, 10_000),
    "bandwidth_gbps": ("GB/s", 0.1, 100_000),
    "achievable_fraction": ("fraction", 0.05, 1.0),
    "accelerators_per_node": ("count", 1, 100_000),
    "links_per_accelerator": ("links", 0.1, 1_000),  # fractional where GPUs share one link (GB200: 2 per Grace C2C)
    "domain_size": ("count", 1, 100_000),
    "ranks": ("count", 2, 100_000),
    "busbw_gbps": ("GB/s", 0.01, 100_000),
    "nics_per_node": ("count", 1, 10_000),
    "nic_bandwidth_gbps": ("GB/s", 0.1, 100_000),
    "cpu_cores": ("count", 1, 100_000),
    "node_power_w": ("W", 10, 2_000_000),
}

FRACTION_FIELDS = {k for k, (u, *_r) in UNITS.items() if u == "fraction"}
COUNT_FIELDS = {k for k, (u, *_r) in UNITS.items() if u == "count"}


def unit_of(field: str) -> str:
    return UNITS[field][0]


class Entry(Strict):
    """What every spec file has: an id, its kind, a display name and its sources."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")]
    name: str
    description: str | None = None
    sources: dict[str, Source] = Field(default_factory=dict)

    def specs(self) -> list[tuple[str, Spec]]:
        """Every sourced number in the entry as (dotted field path, Spec)."""
        out: list[tuple[str, Spec]] = []
        _walk(self, "", out)
        return out

    @model_validator(mode="after")
    def _check_numbers(self) -> "Entry":
        for path, spec in self.specs():
            if spec.source and spec.source not in self.sources:
                known = ", ".join(sorted(self.sources)) or "none defined"
                raise ValueError(
                    f"{path}.source: '{spec.source}' is not a key of 'sources' (known: {known})"
                )
            field = _unit_field(path)
            if field is None:
                continue
            unit, lo, hi = UNITS[field]
            if not lo <= spec.value <= hi:
                raise ValueError(
                    f"{path}.value: expected {unit} between {lo:g} and {hi:g}, got {spec.value:g}"
                    f"{_unit_hint(unit, spec.value, hi)}"
                )
            if field in COUNT_FIELDS and spec.value != int(spec.value):
                raise ValueError(f"{path}.value: expected a whole count, got {spec.value:g}")
        return self


def _unit_hint(unit: str, value: float, hi: float) -> str:
    if value > hi and unit in ("GB", "GB/s"):
        return " (was it given in bytes or bits? this field is in " + unit + ")"
    if unit == "fraction" and value > 1:
        return " (fractions are 0-1, not percent)"
    return ""


def _unit_field(path: str) -> str | None:
    for part in reversed(path.split(".")):
        if part in UNITS:
            return part
    return None


def _walk(obj: BaseModel, prefix: str, out: list[tuple[str, Spec]]) -> None:
    for name in type(obj).model_fields:
        val = getattr(obj, name)
        path = f"{prefix}{name}"
        if isinstance(val, Spec):
            out.append((path, val))
        elif isinstance(val, BaseModel):
            _walk(val, path + ".", out)
        elif isinstance(val, dict):
            for k, v in val.items():
                key = k.value if isinstance(k, Enum) else k
                if isinstance(v, Spec):
                    out.append((f"{path}.{key}", v))
                elif isinstance(v, BaseModel) and not isinstance(v, Source):
                    _walk(v, f"{path}.{key}.", out)
        elif isinstance(val, list):
            for i, v in enumerate(val):
                if isinstance(v, BaseModel):
                    _walk(v, f"{path}.{i}.", out)


class Efficiency(Strict):
    """Achievable fractions of peak, measured by microbenchmarks: global per device, each cited.

    ``gemm_peak_fraction`` is the best fraction of the dense peak a large, well-shaped GEMM reaches
    (a "maximum achievable matmul FLOPS" measurement), per dtype; shape effects (tile and wave
    quantisation) are modelled on top of it. ``sustained_gemm_ratio`` is what remains of that under
    continuous tensor-core load, where a power-capped part settles at a lower clock (an H100 SXM at
    700 W runs 8192^3 BF16 GEMMs at ~1,380 MHz, not 1,980): sustained / burst throughput, per dtype;
    1 where ``gemm_peak_fraction`` was itself measured at the loaded clock (AMD's MAF).
    ``attention_peak_fraction`` (``forward``, ``backward``) is the share of the dense BF16 peak a fused
    causal attention kernel approaches under continuous load on long sequences, counting causal FLOPs
    (backward = 2.5x the forward's), and ``attention_ramp_keys`` the key length at which it reaches half
    of that: ``rate = peak x fraction x keys / (keys + ramp)``, each query tile's fixed work (loading Q,
    writing O, the backward's dQ reduction) amortised over the keys it visits. Without them attention
    runs at the sustained GEMM rate. ``forward_fp8`` is the share of the dense FP8 peak an FP8 fused
    attention forward approaches (TensorRT-LLM's FP8 context FMHA, FlashAttention-3 in FP8), which
    serving engines run for the prefill of FP8-quantized models with an FP8 KV cache; it uses the
    forward ramp. ``grouped_gemm_ratio`` and ``grouped_gemm_gbps`` describe the grouped
    kernels MoE experts run on: their compute-bound rate relative to a dense GEMM's, and the rate they
    stream expert weights at when few tokens reach each expert, which a grouped kernel's in-flight loads
    cap below what HBM allows (the same ~2.3-2.9 TB/s measured on H100 and on the faster-memory H200).
    ``memory_bandwidth_fraction`` is the achievable share of the HBM bandwidth (STREAM/BabelStream
    copy); ``weight_streaming_fraction``, where measured apart from it, the share at which a memory-bound
    GEMM (a decode projection) streams its weights, a rate set by the GEMM kernel's loads in flight that
    can sit below STREAM's (SM100: 0.73 in vLLM's weight-streaming GEMMs, 0.89 in a triad); without it
    GEMMs stream at ``memory_bandwidth_fraction``. ``kernel_floor_us`` is the smallest time a kernel takes
    (launch plus ramp), which dominates tiny decode steps. ``fp8_kv_decode_gbps_per_sm`` is the rate, per SM, at which a decode attention kernel
    works through an FP8 KV cache when the SMs, not HBM, limit it (the cache's bytes must be unpacked and
    fed to the tensor cores): decode attention streams an FP8 cache at the lower of HBM and this times
    the SM count.
    """

    gemm_peak_fraction: dict[Dtype, Spec] = Field(default_factory=dict)
    sustained_gemm_ratio: dict[Dtype, Spec] = Field(default_factory=dict)
    attention_peak_fraction: dict[Literal["forward", "backward", "forward_fp8"], Spec] = Field(default_factory=dict)
    attention_ramp_keys: dict[Literal["forward", "backward"], Spec] = Field(default_factory=dict)
    grouped_gemm_ratio: dict[Dtype, Spec] = Field(default_factory=dict)
    grouped_gemm_gbps: dict[Dtype, Spec] = Field(default_factory=dict)
    memory_bandwidth_fraction: Spec | None = None
    weight_streaming_fraction: Spec | None = None
    kernel_floor_us: Spec | None = None
    fp8_kv_decode_gbps_per_sm: Spec | None = None


class Accelerator(Entry):
    """A GPU/NPU/TPU: dense peak rates per dtype, memory, caches, compute units, power and price."""

    kind: Literal["accelerator"]
    vendor: str
    form_factor: str | None = None
    peak_tflops: dict[Dtype, Spec]
    sparse_tflops: dict[Dtype, Spec] = Field(default_factory=dict)
    memory_type: str
    memory_gb: Spec
    memory_visible_gb: Spec | None = Field(
        default=None, description="memory the runtime reports as total (cudaMemGetInfo); firmware keeps the rest")
    memory_bandwidth_gbps: Spec
    l2_cache_mb: Spec | None = None
    llc_mb: Spec | None = None
    compute_unit_name: str = "SM"
    compute_units: Spec | None = None
    boost_clock_mhz: Spec | None = None
    tdp_w: Spec | None = None
    price_per_hour_usd: Spec | None = None
    efficiency: Efficiency = Field(default_factory=Efficiency)
    default_system: str | None = Field(
        default=None, description="system id used when a system is written as 'N x DEVICE'"
    )
    counted_as: str | None = Field(
        default=None, description="the accelerator id jobs count as one GPU when it differs (MI250X: its GCD)"
    )

    @model_validator(mode="after")
    def _sparse_not_below_dense(self) -> "Accelerator":
        if not self.peak_tflops:
            raise ValueError("peak_tflops: expected at least one dtype with a dense peak")
        for dt, sp in self.sparse_tflops.items():
            dense = self.peak_tflops.get(dt)
            if dense is None:
                raise ValueError(f"sparse_tflops.{dt.value}: no dense peak_tflops.{dt.value} to compare with")
            if sp.value < dense.value:
                raise ValueError(
                    f"sparse_tflops.{dt.value}: sparse ({sp.value:g}) must not be below dense ({dense.value:g})"
                )
        if self.memory_visible_gb is not None and self.memory_visible_gb.value > self.memory_gb.value:
            raise ValueError(f"memory_visible_gb: the runtime cannot see more ({self.memory_visible_gb.value:g} GB) "
                             f"than the device holds (memory_gb {self.memory_gb.value:g})")
        return self

    @property
    def usable_memory_gb(self) -> float:
        """GB a framework can allocate from: the runtime-visible total where measured, else the capacity."""
        return (self.memory_visible_gb or self.memory_gb).value

    def peak(self, dtype: str) -> float:
        """Dense peak TFLOP/s for a dtype, with fp16<->bf16 and int8<->fp8 treated as interchangeable."""
        for d in (dtype, *_DTYPE_FALLBACK.get(dtype, ())):
            s = self.peak_tflops.get(Dtype(d))
            if s is not None:
                return s.value
        from .errors import InputError

        have = ", ".join(d.value for d in self.peak_tflops)
        raise InputError(f"{self.id}: no dense peak for dtype '{dtype}' (it has: {have})")


_DTYPE_FALLBACK = {"bf16": ("fp16",), "fp16": ("bf16",), "int8": ("fp8",), "fp8": ("int8",)}


class TierType(str, Enum):
    host_dram = "host_dram"
    cpu_memory = "cpu_memory"
    cxl = "cxl"
    nvme = "nvme"
    pim = "pim"


class Pim(Strict):
    """Processing-in-memory: bandwidth seen by the in-memory compute, compute per bank or channel."""

    unit_kind: Literal["bank", "channel", "tile", "pseudo_channel", "stack"]
    units: Spec
    internal_bandwidth_gbps: Spec
    compute_per_unit_gflops: Spec
    clock_mhz: Spec | None = None
    precision: str = "fp16"
    supported_ops: list[str]

    @property
    def compute_gflops(self) -> float:
        return self.units.value * self.compute_per_unit_gflops.value


class Tier(Entry):
    """A memory or storage tier: capacity, read/write bandwidth, latency, and the link it hangs off."""

    kind: Literal["tier"]
    tier_type: TierType
    technology: str
    capacity_gb: Spec
    read_gbps: Spec
    write_gbps: Spec
    latency_us: Spec
    link: str | None = Field(default=None, description="link id that attaches the tier (PCIe, C2C)")
    pim: Pim | None = None

    @model_validator(mode="after")
    def _pim_present(self) -> "Tier":
        if (self.tier_type == TierType.pim) != (self.pim is not None):
            raise ValueError("pim: expected a 'pim' block exactly when tier_type is 'pim'")
        return self


class LinkType(str, Enum):
    nvlink = "nvlink"
    nvlink_c2c = "nvlink_c2c"
    xgmi = "xgmi"
    pcie = "pcie"
    infiniband = "infiniband"
    roce = "roce"
    slingshot = "slingshot"
    ethernet = "ethernet"
    ici = "ici"
    unified_bus = "unified_bus"


class Link(Entry):
    """A link or network port: bandwidth per direction and latency."""

    kind: Literal["link"]
    link_type: LinkType
    scope: Literal["scale_up", "scale_out", "host", "chip_to_chip"]
    bandwidth_gbps: Spec = Field(description="per direction, per link or port, GB/s")
    latency_us: Spec
    achievable_fraction: Spec | None = None

    @property
    def efficiency(self) -> float:
        """Measured share of the link's bandwidth that transfers reach (1 when none is recorded)."""
        return self.achievable_fraction.value if self.achievable_fraction else 1.0

    @property
    def achievable_gbps(self) -> float:
        """GB/s one link or port sustains per direction: its bandwidth times its measured efficiency."""
        return self.bandwidth_gbps.value * self.efficiency


class Topology(str, Enum):
    switch = "switch"
    full_mesh = "full_mesh"
    partial_mesh = "partial_mesh"
    torus_2d = "torus_2d"
    torus_3d = "torus_3d"
    none = "none"


class AllReduceCurve(Strict):
    """A measured nccl-tests all-reduce sweep on one scale-up domain: buffer bytes -> bus bandwidth."""

    ranks: Spec
    busbw_gbps: dict[int, Spec]

    @model_validator(mode="after")
    def _sizes(self) -> "AllReduceCurve":
        if len(self.busbw_gbps) < 2 or any(b <= 0 for b in self.busbw_gbps):
            raise ValueError("busbw_gbps: expected at least two positive buffer sizes (bytes) as keys")
        return self


class ScaleUp(Strict):
    """The scale-up domain. ``all_reduce_curves`` are optional measured nccl-tests sweeps (default
    algorithm, one per rank count): NCCL's mid-size all-reduce runs well below its asymptote (fewer
    channels, pipeline fill), which the alpha-beta model does not capture, and tensor-parallel
    all-reduces live at those sizes."""

    link: str
    links_per_accelerator: Spec
    topology: Topology
    domain_size: Spec
    in_network_reduction: Literal["none", "nvls", "sharp"] = "none"
    all_reduce_curves: list[AllReduceCurve] = Field(default_factory=list)


class ScaleOut(Strict):
    link: str
    nics_per_node: Spec
    in_network_reduction: Literal["none", "sharp"] = "none"


class Host(Strict):
    cpu: str
    cpu_cores: Spec | None = None
    link: str = Field(description="host<->accelerator link id (PCIe, NVLink-C2C, Infinity Fabric)")
    links_per_accelerator: Spec | None = None
    memory_tier: str
    memory_gb: Spec


class TierSlot(Strict):
    tier: str
    capacity_gb: Spec | None = None


class System(Entry):
    """A node or scale-up domain: accelerators, scale-up and scale-out links, host and tiers."""

    kind: Literal["system"]
    accelerator: str
    accelerators_per_node: Spec
    scale_up: ScaleUp
    scale_out: ScaleOut | None = None
    host: Host
    tiers: list[TierSlot] = Field(default_factory=list)
    node_power_w: Spec | None = None

    @property
    def gpus_per_node(self) -> int:
        return int(self.accelerators_per_node.value)

    def referenced_ids(self) -> list[tuple[str, str, str]]:
        """(field path, kind, id) for every id this system names, checked after the whole DB loads."""
        refs = [
            ("accelerator", "accelerator", self.accelerator),
            ("scale_up.link", "link", self.scale_up.link),
            ("host.link", "link", self.host.link),
            ("host.memory_tier", "tier", self.host.memory_tier),
        ]
        if self.scale_out is not None:
            refs.append(("scale_out.link", "link", self.scale_out.link))
        refs += [(f"tiers.{i}.tier", "tier", t.tier) for i, t in enumerate(self.tiers)]
        return refs


AnyEntry = Annotated[Union[Accelerator, Tier, Link, System], Field(discriminator="kind")]
KINDS = ("accelerator", "tier", "link", "system")
ENTRY_TYPES: dict[str, type[Entry]] = {
    "accelerator": Accelerator,
    "tier": Tier,
    "link": Link,
    "system": System,
}
