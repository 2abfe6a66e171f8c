"""Training with offload: ZeRO-Offload, ZeRO-Infinity and Fuyou over the tiers of ``memtiers.Machine``.

Everything is per GPU, per optimizer step (``global_batch`` sequences = ``m`` micro-batches per DP rank).
``P`` below is the parameters one GPU's pipeline stage / tensor slice holds (``P_total / (tp pp)``) and
``P_d = P / dp`` its data-parallel partition (what the optimizer of one GPU updates). The GPU time
(forward, backward, recomputation, TP/PP/DP collectives) is ``estimate_training``'s breakdown for the
same plan, less its optimizer step; the backward is 2/3 of its ``compute`` plus its ``recompute``.

**zero-offload** (Ren et al. 2021, "ZeRO-Offload: Democratizing Billion-Scale Model Training", USENIX
ATC'21). 16-bit params and activations on the GPU; fp32 master params, fp32 grads and Adam m, v (16 B per
param of ``P_d``) in host DRAM, spilling to CXL when DRAM is short (or all on CXL with
``optimizer_tier="cxl"``). Each micro-batch's backward streams its 16-bit gradient partition D2H
(``2 P_d`` bytes over ``machine.gpu_host_gbps``, accumulated into the fp32 grads on the host, as
DeepSpeed's stage-1/2 CPU offload does); only ``max(0, d2h - backward)`` is exposed. After the last
backward the CPU Adam step (``ADAM_BYTES_PER_PARAM`` = 34 B of DRAM traffic per param, at the host tier's
bandwidth per GPU times ``CPU_STREAM_FRACTION``; the CXL share at the CXL tier's) runs chunk-pipelined
with the H2D copy of the new 16-bit params (``2 P_d``): tail = ``max(cpu, h2d)``. With
``delayed_update=True`` (the paper's one-step delayed parameter update, DPU, off by default as it changes
the optimizer semantics) the tail overlaps the next step's GPU work: exposed ``max(0, tail - gpu)``.

**zero-infinity** (Rajbhandari et al. 2021, "ZeRO-Infinity: Breaking the GPU Memory Wall for Extreme
Scale Deep Learning", SC'21). 16-bit params and fp32 optimizer states (p32, m, v: 12 B) on NVMe; 16-bit
gradients in a host buffer (DeepSpeed ``stage3.py`` allocates ``grad_partitions_flat_buffer``, 2 B per
param of the partition, on the offload device, pinned when ``pin_memory``); activation checkpoints in host
DRAM under full recomputation (its ``cpu_checkpointing``). Per micro-batch each layer's params are read
from NVMe twice (forward, backward: ``2 x 2 P_d``) through pinned staging buffers and the host link;
gradients go D2H. Each path runs at its slowest link: NVMe (read/write of the drives per GPU), host DRAM
(each byte crosses it twice: DMA in, DMA out), host link. Prefetch overlaps I/O with compute layer by
layer: exposed = ``sum_layers max(0, io_layer - compute_layer)``. The optimizer step follows the backward:
read 12 B, write 12 B + 2 B (new 16-bit params) per param from/to NVMe, pipelined with the CPU Adam (or,
``optimizer_device="gpu"``, with the H2D/D2H of the states and an HBM-bound GPU Adam):
``max(nvme, cpu or host link)``.

**fuyou** (Liao et al. 2024, "Adding NVMe SSDs to Enable and Accelerate 100B Model Fine-tuning on a
Single GPU", arXiv:2403.06504). One GPU, little host DRAM. 16-bit params, fp32 optimizer states and the
activations that do not fit in HBM live on the SSDs; params stream through the GPU (forward and
backward), activations are written during the forward and read back in the backward, and the CPU Adam
consumes each layer's gradients as the backward produces them (synchronous out-of-core Adam, reading and
writing the 12 B of states and writing 2 B of new params per param on the SSDs). Forward =
``max(gpu fwd, SSD, host link)``; backward = ``max(gpu bwd, SSD, host link, CPU Adam)``; plus the
unoverlapped remainder: the last layer's optimizer update after the backward ends.

**Memory per tier.** GPU: resident 16-bit params (zero-offload) or a prefetch window of the largest
parameter unit (a layer or the embedding) for the current, next and one in flight, 16-bit grad buckets,
activations per Korthikanti et al. (``activations.py``) with the chosen recomputation (Fuyou: what does
not fit goes to the SSDs), the CUDA context floor and the allocator margin of ``training.py``. Host DRAM:
the states placed there, the ZeRO-Infinity gradient buffer and activation checkpoints, and pinned staging
buffers (parameter prefetch buffers and optimizer swap buffers, double-buffered), plus an OS/framework
reserve. **Pinned memory is over-allocated**: PyTorch's caching host allocator rounds each pinned block
up to a power of two, so a pinned buffer of ``n`` bytes costs ``2**ceil(log2 n)`` (up to 2x);
MemAscend (2025) reports this pinned-buffer over-allocation as the dominant waste of host memory in
SSD-offloaded fine-tuning, which is why it is modelled per buffer and reported as
``pinned_overallocation_bytes``. CXL: the spilled optimizer states. NVMe: params, states (and Fuyou's
swapped activations).

The **bottleneck** is the resource with the largest busy time in the step: GPU compute, host link,
NVMe, CPU optimizer or CXL.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from .activations import embedding_bytes, layer_activation_bytes, output_layer_bytes
from .errors import InputError
from .memtiers import Machine, describe_machine
from .models import ModelArch, get_model
from .specdb import Database, SystemRef, load_database
from .training import ADAM_BYTES_PER_PARAM, ALLOCATOR_FLOOR_BYTES, ALLOCATOR_MARGIN, estimate_training

SCHEMES = ("zero-offload", "zero-infinity", "fuyou")
GiB = 2.0**30

CPU_STREAM_FRACTION = 0.75  # assumed: STREAM on a 2-socket DDR5 server reaches ~70-80% of channel peak
HOST_RESERVE_BYTES = 8 * GiB  # assumed: OS, Python/PyTorch/DeepSpeed processes, page cache floor
GRAD_BUCKET_PARAMS = 5e8  # DeepSpeed reduce_bucket_size default (elements)
OPT_SUBGROUP_PARAMS = 1e9  # DeepSpeed ZeRO-3 sub_group_size default (elements) for optimizer swapping
FWD_SHARE = 1.0 / 3.0  # forward share of forward + backward compute (backward = 2x forward)
OPT_STATE_BYTES = 12.0  # fp32 master params, Adam m and v
HOST_STATE_BYTES = 16.0  # the same plus the fp32 gradient (ZeRO-Offload's host partition)
PARAM_BYTES = 2.0
GRAD_BYTES = 2.0


def pinned_bytes(n: float) -> float:
    """What PyTorch's caching host allocator reserves for a pinned block of n bytes: the next power of 2."""
    return 0.0 if n <= 0 else float(2 ** math.ceil(math.log2(n)))


class TierUsage(BaseModel):
    """Peak bytes on one tier for one GPU, with its capacity and whether it fits."""

    tier: str
    ids: list[str] = Field(default_factory=list)
    parts_bytes: dict[str, float]
    peak_bytes: float
    capacity_bytes: float
    fits: bool
    short_by_bytes: float = 0.0


class LinkTraffic(BaseModel):
    """Bytes moved per step per GPU on one link or device, and the time it is busy."""

    read_bytes: float = 0.0  # toward the GPU / out of the device (H2D, NVMe read, CPU reads)
    write_bytes: float = 0.0  # away from the GPU / into the device (D2H, NVMe write, CPU writes)
    time_s: float = 0.0


class OffloadResult(BaseModel):
    """One offloaded training step: traffic per link, times, overlap, memory per tier, the bottleneck."""

    scheme: str
    model: str
    system: str
    device: str
    gpus: int
    tp: int
    pp: int
    dp: int
    micro_batch: int
    micro_batches: int
    global_batch: int
    seq_len: int
    precision: str
    recompute: str
    optimizer_device: str
    delayed_update: bool
    params_per_gpu: float  # P_d: the parameters this GPU's optimizer updates
    traffic: dict[str, LinkTraffic]  # host_link, nvme, host_dram (CPU optimizer), cxl
    gpu_time_s: float  # estimate_training's step without its optimizer
    cpu_optimizer_s: float
    exposed_s: dict[str, float]  # what the step waits for beyond the GPU work
    busy_s: dict[str, float]  # per resource: gpu_compute, host_link, nvme, cpu_optimizer, cxl
    serial_s: float  # everything one after the other
    overlap_s: float  # serial_s - step_time_s
    step_time_s: float
    tokens_per_s: float
    model_tflops_per_gpu: float  # model FLOPs / step time / gpus
    hardware_tflops_per_gpu: float  # with recomputation
    memory: dict[str, TierUsage]  # gpu, host, cxl, nvme
    fits: bool
    bottleneck: str
    assumptions: list[str] = Field(default_factory=list)

    def shortfall_message(self) -> str | None:
        """One line naming the tiers that are too small and by how many GiB, or None when it fits."""
        short = [f"{u.tier} short by {u.short_by_bytes / GiB:,.1f} GiB ({u.peak_bytes / GiB:,.1f} GiB needed, "
                 f"{u.capacity_bytes / GiB:,.1f} GiB available)" for u in self.memory.values() if not u.fits]
        return f"{self.scheme}: {'; '.join(short)}" if short else None


def _usage(tier: str, ids, parts: dict[str, float], cap: float) -> TierUsage:
    peak = float(sum(parts.values()))
    fits = peak <= cap * (1 + 1e-12)
    return TierUsage(tier=tier, ids=list(ids), parts_bytes={k: float(v) for k, v in parts.items()},
                     peak_bytes=peak, capacity_bytes=float(cap), fits=fits,
                     short_by_bytes=0.0 if fits else float(peak - cap))


def _rate(*gbps: float) -> float:
    """Bytes per second of a path: its slowest link (GB/s)."""
    return min(gbps) * 1e9


def estimate_offload_training(
    model: str | dict | ModelArch,
    system: str | SystemRef,
    gpus: int | None = None,
    *,
    scheme: str,
    seq_len: int,
    global_batch: int,
    micro_batch: int = 1,
    precision: str = "bf16",
    recompute: str = "full",
    host_memory: str | None = None,
    cxl: str | None = None,
    nvme: str | None = None,
    tp: int = 1,
    pp: int = 1,
    optimizer_device: str = "cpu",
    optimizer_tier: str = "auto",
    delayed_update: bool = False,
    pin_memory: bool = True,
    require_fit: bool = False,
    db: Database | None = None,
    specs: tuple[str, ...] = (),
) -> OffloadResult:
    """Step time, traffic per link, memory per tier and the bottleneck of one offloaded training step.

    ``host_memory``, ``cxl`` and ``nvme`` are the CLI's tier strings (``memtiers.describe_machine``).
    ``require_fit=True`` raises ``InputError`` naming the short tiers instead of returning ``fits=False``.
    """
    if scheme not in SCHEMES:
        raise InputError(f"--offload-scheme: expected one of {', '.join(SCHEMES)} (got '{scheme}')")
    if optimizer_device not in ("cpu", "gpu"):
        raise InputError(f"optimizer device: expected cpu or gpu (got '{optimizer_device}')")
    if optimizer_tier not in ("auto", "host", "cxl"):
        raise InputError(f"optimizer tier: expected auto, host or cxl (got '{optimizer_tier}')")
    db = db or load_database(specs)
    m = get_model(model)
    ref = db.resolve_system(system, gpus) if isinstance(system, str) else system
    n = ref.gpus
    if n % (tp * pp):
        raise InputError(f"--gpus {n}: must be a multiple of tp x pp = {tp * pp}")
    dp = n // (tp * pp)
    if scheme != "zero-offload" and optimizer_tier == "cxl":
        raise InputError(f"{scheme}: optimizer states live on NVMe; a CXL optimizer tier is for zero-offload")
    if scheme in ("zero-infinity", "fuyou") and not nvme:
        raise InputError(f"{scheme}: needs --nvme (params and optimizer states live on NVMe SSDs)")
    if scheme == "fuyou" and n != 1:
        raise InputError(f"fuyou: models one GPU (got --gpus {n}); use zero-infinity for several")
    if optimizer_device == "gpu" and scheme != "zero-infinity":
        raise InputError(f"{scheme}: the optimizer runs on the CPU; --optimizer-device gpu is for zero-infinity")
    if optimizer_tier == "cxl" and not cxl:
        raise InputError("zero-offload: optimizer states on CXL need --cxl")
    mc: Machine = describe_machine(db, ref, host_memory=host_memory, cxl=cxl, nvme=nvme)

    zero = 0 if dp == 1 else (3 if scheme == "zero-infinity" else 2)
    tr = estimate_training(m, ref, n, seq_len=seq_len, global_batch=global_batch, tp=tp, pp=pp, dp=dp,
                           micro_batch=micro_batch, precision=precision, recompute=recompute, zero=zero, db=db)
    bd = tr.time_breakdown_s
    mb_n = tr.micro_batches
    gpu_time = sum(v for k, v in bd.items() if k != "optimizer")
    fwd_total = FWD_SHARE * bd["compute"]
    bwd_total = (1 - FWD_SHARE) * bd["compute"] + bd["recompute"]
    other = gpu_time - bd["compute"] - bd["recompute"]  # TP/PP/DP communication, bubble: not overlapped here

    L = max(1, m.layers // pp)
    P = m.params_total / (tp * pp)
    Pd = P / dp
    embed = m.vocab * m.hidden / tp
    layer_params = (m.params_total - embed * tp * (1 if m.tied_embeddings else 2)) / m.layers / tp
    # the largest block fetched at once: one module's weight (ZeRO-3 and Fuyou fetch per nn.Module), at most
    # a layer, or the embedding
    ffn = max(m.d_ffn, getattr(m, "d_expert", 0) or 0)
    qkv = m.hidden * (m.heads * m.d_head + 2 * m.n_kv_heads * m.d_head) if not m.is_mla else layer_params * tp / 2
    unit = max(min(layer_params, max(m.hidden * ffn, qkv) / tp), embed)
    sp = tp > 1
    act_layer = layer_activation_bytes(m, seq_len, micro_batch, tp, sp, recompute, flash=True)
    inflight = min(pp, mb_n)
    # under recomputation one layer's full activations live on the GPU while its backward runs
    work_set = layer_activation_bytes(m, seq_len, micro_batch, tp, sp, "none", flash=True) if recompute != "none" else 0.0
    acts_gpu = act_layer * L * inflight + output_layer_bytes(m, seq_len, micro_batch, tp) \
        + (embedding_bytes(m, seq_len, micro_batch, pp, tp, sp) if pp > 1 else 0.0)

    host_r, host_w = mc.host.read_gbps * CPU_STREAM_FRACTION, mc.host.write_gbps * CPU_STREAM_FRACTION
    link = mc.gpu_host_gbps
    hbm = ref.accelerator.usable_memory_gb * 1e9
    bw_hbm = ref.accelerator.memory_bandwidth_gbps.value * 1e9
    pin = pinned_bytes if pin_memory else (lambda x: float(x))
    notes = [f"CPU optimizer at {CPU_STREAM_FRACTION:.0%} of the host tier's {mc.host.read_gbps:,.1f} GB/s per GPU "
             "(assumed STREAM share)",
             "pinned host buffers cost the next power of two (PyTorch caching host allocator; MemAscend 2025)",
             f"{HOST_RESERVE_BYTES / GiB:.0f} GiB of host DRAM reserved for the OS and framework (assumed)"]
    notes += tr.assumptions
    traffic: dict[str, LinkTraffic] = {}
    exposed: dict[str, float] = {}
    busy: dict[str, float] = {"gpu_compute": gpu_time}
    cpu_opt = 0.0
    cxl_parts: dict[str, float] = {}
    nvme_parts: dict[str, float] = {}
    host_parts: dict[str, float] = {}

    if scheme == "zero-offload":
        if mc.nvme is not None:
            notes.append("zero-offload: --nvme is not used (use zero-infinity or fuyou to place states on NVMe)")
        states = HOST_STATE_BYTES * Pd
        staging = pin(2 * GRAD_BYTES * min(Pd, GRAD_BUCKET_PARAMS)) + pin(2 * PARAM_BYTES * min(Pd, GRAD_BUCKET_PARAMS))
        host_free = max(0.0, mc.host.capacity_bytes - HOST_RESERVE_BYTES - staging)
        if optimizer_tier == "cxl":
            on_host, on_cxl = 0.0, states
        elif optimizer_tier == "host" or mc.cxl is None:
            on_host, on_cxl = states, 0.0
        else:
            on_host = min(states, host_free)
            on_cxl = states - on_host
        frac_cxl = on_cxl / states if states else 0.0
        host_parts = {"optimizer_states_fp32": on_host, "pinned_staging": staging, "reserve": HOST_RESERVE_BYTES}
        if on_cxl:
            cxl_parts = {"optimizer_states_fp32": on_cxl}
        # CPU Adam: 16 B read (p32, m, v, g32), 18 B written (p32, m, v, p16, grad zero) per param
        rd, wr = 16.0 * Pd, (ADAM_BYTES_PER_PARAM - 16.0) * Pd
        t_host = (1 - frac_cxl) * (rd / (host_r * 1e9) + wr / (host_w * 1e9))
        t_cxl = frac_cxl * (rd / (mc.cxl.read_gbps * 1e9) + wr / (mc.cxl.write_gbps * 1e9)) if on_cxl else 0.0
        cpu_opt = t_host + t_cxl
        traffic["host_dram"] = LinkTraffic(read_bytes=(1 - frac_cxl) * rd, write_bytes=(1 - frac_cxl) * wr,
                                           time_s=t_host)
        if on_cxl:
            traffic["cxl"] = LinkTraffic(read_bytes=frac_cxl * rd, write_bytes=frac_cxl * wr, time_s=t_cxl)
        d2h_mb = GRAD_BYTES * Pd / (link * 1e9)
        h2d = PARAM_BYTES * Pd / (link * 1e9)
        traffic["host_link"] = LinkTraffic(read_bytes=PARAM_BYTES * Pd, write_bytes=GRAD_BYTES * Pd * mb_n,
                                           time_s=d2h_mb * mb_n + h2d)
        exposed["grad_d2h"] = mb_n * max(0.0, d2h_mb - bwd_total / mb_n)
        tail = max(cpu_opt, h2d)
        exposed["optimizer_and_param_h2d"] = max(0.0, tail - gpu_time) if delayed_update else tail
        notes.append("zero-offload: one-step delayed parameter update (DPU) "
                     + ("on: the CPU step overlaps the next step's GPU work" if delayed_update else
                        "off (default): the CPU Adam step and the parameter upload follow the backward"))
        busy.update(host_link=d2h_mb * mb_n + h2d, cpu_optimizer=t_host, cxl=t_cxl)
        gpu_parts = {"params_16bit": PARAM_BYTES * P, "grad_buckets": 2 * GRAD_BYTES * min(P, GRAD_BUCKET_PARAMS),
                     "activations": acts_gpu}
    else:
        nv = mc.nvme
        nv_r, nv_w = nv.read_gbps, nv.write_gbps
        dram = min(mc.host.read_gbps, mc.host.write_gbps) / 2  # each staged byte crosses DRAM twice
        Ld = L  # layers whose params this GPU streams
        p_layer = Pd / Ld  # per layer (embedding folded in on average)
        fwd_l = fwd_total / (mb_n * Ld)
        bwd_l = bwd_total / (mb_n * Ld)

        def path(h2d_b: float, d2h_b: float, nvr_b: float, nvw_b: float, dram_b: float) -> dict[str, float]:
            return {"host_link": max(h2d_b, d2h_b) / (link * 1e9),  # full duplex
                    "nvme": nvr_b / (nv_r * 1e9) + nvw_b / (nv_w * 1e9),  # a drive's reads and writes share it
                    "host_dram": dram_b / (dram * 1e9)}

        def cpu_adam(params: float) -> float:
            return 16.0 * params / (host_r * 1e9) + (ADAM_BYTES_PER_PARAM - 16.0) * params / (host_w * 1e9)

        if scheme == "zero-infinity":
            ckpt = 2 * seq_len * micro_batch * m.hidden / (tp if sp else 1) if recompute == "full" else 0.0
            # forward: params NVMe -> pinned buffer -> GPU; the layer's checkpoint GPU -> host
            io_f = max(path(PARAM_BYTES * p_layer, ckpt, PARAM_BYTES * p_layer, 0.0,
                            2 * PARAM_BYTES * p_layer + ckpt).values())
            # backward: params again and the checkpoint back up; 16-bit grads down into the host buffer
            io_b = max(path(PARAM_BYTES * p_layer + ckpt, GRAD_BYTES * p_layer, PARAM_BYTES * p_layer, 0.0,
                            2 * PARAM_BYTES * p_layer + ckpt + GRAD_BYTES * p_layer).values())
            exposed["param_prefetch_fwd"] = mb_n * Ld * max(0.0, io_f - fwd_l)
            exposed["param_prefetch_bwd"] = mb_n * Ld * max(0.0, io_b - bwd_l)
            if recompute == "full":
                notes.append("zero-infinity: activation checkpoints offloaded to host DRAM (cpu_checkpointing)")
            # optimizer: states 12 B read + 12 B written, new 16-bit params 2 B written, per param, on NVMe
            o_nvme = OPT_STATE_BYTES * Pd / (nv_r * 1e9) + (OPT_STATE_BYTES + PARAM_BYTES) * Pd / (nv_w * 1e9)
            o_up = o_down = 0.0
            if optimizer_device == "cpu":
                cpu_opt = cpu_adam(Pd)
                o_gpu = 0.0
            else:  # states and grads up to the GPU, states and new params back down
                o_up, o_down = (OPT_STATE_BYTES + GRAD_BYTES) * Pd, (OPT_STATE_BYTES + PARAM_BYTES) * Pd
                o_gpu = ADAM_BYTES_PER_PARAM * Pd / bw_hbm
            exposed["optimizer"] = max(o_nvme, cpu_opt, max(o_up, o_down) / (link * 1e9), o_gpu)
            h2d_b = mb_n * (2 * PARAM_BYTES * Pd + ckpt * Ld) + o_up
            d2h_b = mb_n * (GRAD_BYTES * Pd + ckpt * Ld) + o_down
            nvr_b = mb_n * 2 * PARAM_BYTES * Pd + OPT_STATE_BYTES * Pd
            nvw_b = (OPT_STATE_BYTES + PARAM_BYTES) * Pd
            host_parts = {
                "grad_partition_16bit": pin(GRAD_BYTES * Pd),
                "param_prefetch_buffers": 2 * pin(PARAM_BYTES * unit),  # double-buffered parameter staging
                "optimizer_swap_buffers": 2 * pin(HOST_STATE_BYTES * min(Pd, OPT_SUBGROUP_PARAMS)),
                "activation_checkpoints": ckpt * Ld * inflight,
                "reserve": HOST_RESERVE_BYTES}
            gpu_parts = {"param_window_16bit": 3 * PARAM_BYTES * unit,
                         "grad_buckets": 2 * GRAD_BYTES * min(P, GRAD_BUCKET_PARAMS),
                         "activations": acts_gpu - ckpt * Ld * inflight}
            nvme_parts = {"params_16bit": PARAM_BYTES * Pd, "optimizer_states_fp32": OPT_STATE_BYTES * Pd}
        else:  # fuyou
            win = 3 * PARAM_BYTES * unit + 2 * GRAD_BYTES * unit
            avail = hbm * (1 - ALLOCATOR_MARGIN) - ALLOCATOR_FLOOR_BYTES - win - work_set
            swap = max(0.0, acts_gpu - max(0.0, avail))  # activations that go to the SSDs, per micro-batch
            swap_l = swap / Ld
            io_f = max(path(PARAM_BYTES * p_layer, swap_l, PARAM_BYTES * p_layer, swap_l,
                            2 * (PARAM_BYTES * p_layer + swap_l)).values())
            # backward: params and swapped activations in, grads out
            plain = path(PARAM_BYTES * p_layer + swap_l, GRAD_BYTES * p_layer, PARAM_BYTES * p_layer + swap_l, 0.0,
                         2 * (PARAM_BYTES * p_layer + swap_l) + GRAD_BYTES * p_layer)
            # last micro-batch: the CPU Adam consumes each layer's grads, reading and writing its 12 B of
            # states and writing its new 16-bit params on the SSDs
            last = path(PARAM_BYTES * p_layer + swap_l, GRAD_BYTES * p_layer,
                        PARAM_BYTES * p_layer + swap_l + OPT_STATE_BYTES * p_layer,
                        (OPT_STATE_BYTES + PARAM_BYTES) * p_layer,
                        2 * (PARAM_BYTES * p_layer + swap_l + (2 * OPT_STATE_BYTES + PARAM_BYTES) * p_layer)
                        + GRAD_BYTES * p_layer)
            cpu_l = cpu_adam(p_layer)
            cpu_opt = cpu_l * Ld
            exposed["fwd_io"] = mb_n * Ld * max(0.0, io_f - fwd_l)
            exposed["bwd_io"] = (mb_n - 1) * Ld * max(0.0, max(plain.values()) - bwd_l)
            exposed["bwd_io_and_cpu_adam"] = Ld * max(0.0, max(max(last.values()), cpu_l) - bwd_l)
            # a two-stage pipeline over the layers (A: GPU backward and its streams, B: CPU Adam and its state
            # I/O) takes L max(A, B) + min(A, B): the last layer's update starts when the backward ends
            o_nvme_l = OPT_STATE_BYTES * p_layer / (nv_r * 1e9) + (OPT_STATE_BYTES + PARAM_BYTES) * p_layer / (nv_w * 1e9)
            exposed["optimizer_remainder"] = min(max(bwd_l, max(plain.values())), max(cpu_l, o_nvme_l))
            h2d_b = mb_n * (2 * PARAM_BYTES * Pd + swap)
            d2h_b = mb_n * (GRAD_BYTES * Pd + swap)
            nvr_b = mb_n * (2 * PARAM_BYTES * Pd + swap) + OPT_STATE_BYTES * Pd
            nvw_b = mb_n * swap + (OPT_STATE_BYTES + PARAM_BYTES) * Pd
            host_parts = {"param_prefetch_buffers": 2 * pin(PARAM_BYTES * unit),
                          "grad_buffers": 2 * pin(GRAD_BYTES * unit),
                          "optimizer_swap_buffers": 2 * pin(HOST_STATE_BYTES * unit),
                          "activation_swap_buffers": 2 * pin(swap_l) if swap_l else 0.0,
                          "grad_accumulation_16bit": pin(GRAD_BYTES * Pd) if mb_n > 1 else 0.0,
                          "reserve": HOST_RESERVE_BYTES}
            gpu_parts = {"param_window_16bit": 3 * PARAM_BYTES * unit, "grad_buffers": 2 * GRAD_BYTES * unit,
                         "activations": acts_gpu - swap}
            nvme_parts = {"params_16bit": PARAM_BYTES * Pd, "optimizer_states_fp32": OPT_STATE_BYTES * Pd,
                          "swapped_activations": swap * inflight}
            notes.append(f"fuyou: {swap / GiB:,.2f} GiB of activations per micro-batch swapped to the SSDs "
                         "(what does not fit in HBM next to the parameter window)")
        t_link = max(h2d_b, d2h_b) / (link * 1e9)
        t_nvme = nvr_b / (nv_r * 1e9) + nvw_b / (nv_w * 1e9)
        traffic["host_link"] = LinkTraffic(read_bytes=h2d_b, write_bytes=d2h_b, time_s=t_link)
        traffic["nvme"] = LinkTraffic(read_bytes=nvr_b, write_bytes=nvw_b, time_s=t_nvme)
        if cpu_opt:
            traffic["host_dram"] = LinkTraffic(read_bytes=16.0 * Pd, write_bytes=(ADAM_BYTES_PER_PARAM - 16.0) * Pd,
                                               time_s=cpu_opt)
        busy.update(host_link=t_link, nvme=t_nvme, cpu_optimizer=cpu_opt)

    if work_set:
        gpu_parts["recompute_working_set"] = work_set
    gpu_parts["cuda_context"] = ALLOCATOR_FLOOR_BYTES
    gpu_parts["allocator_margin"] = ALLOCATOR_MARGIN * sum(gpu_parts.values())
    memory = {"gpu": _usage("gpu", [ref.accelerator.id], gpu_parts, hbm),
              "host": _usage("host", mc.host.ids, host_parts, mc.host.capacity_bytes)}
    if mc.cxl is not None or cxl_parts:
        memory["cxl"] = _usage("cxl", mc.cxl.ids if mc.cxl else [], cxl_parts, mc.cxl.capacity_bytes if mc.cxl else 0)
    if mc.nvme is not None and scheme != "zero-offload":
        memory["nvme"] = _usage("nvme", mc.nvme.ids, nvme_parts, mc.nvme.capacity_bytes)
    fits = all(u.fits for u in memory.values())

    step = gpu_time + sum(exposed.values())
    serial = gpu_time + sum(v for k, v in busy.items() if k != "gpu_compute")
    tokens = global_batch * seq_len
    hw_flops = tr.model_flops_per_step * (tr.hfu / tr.mfu if tr.mfu else 1.0)
    res = OffloadResult(
        scheme=scheme, model=m.id, system=ref.system.id, device=ref.accelerator.id, gpus=n, tp=tp, pp=pp, dp=dp,
        micro_batch=micro_batch, micro_batches=mb_n, global_batch=global_batch, seq_len=seq_len,
        precision=precision, recompute=recompute, optimizer_device=optimizer_device, delayed_update=delayed_update,
        params_per_gpu=Pd, traffic=traffic, gpu_time_s=gpu_time, cpu_optimizer_s=cpu_opt,
        exposed_s={k: float(v) for k, v in exposed.items()}, busy_s={k: float(v) for k, v in busy.items()},
        serial_s=serial, overlap_s=max(0.0, serial - step), step_time_s=step, tokens_per_s=tokens / step,
        model_tflops_per_gpu=tr.model_flops_per_step / step / n / 1e12,
        hardware_tflops_per_gpu=hw_flops / step / n / 1e12, memory=memory, fits=fits,
        bottleneck=max(busy, key=busy.get), assumptions=notes)
    if other > 0:
        res.assumptions.append(f"{other:.3g} s of TP/PP/DP communication and pipeline bubble kept on the critical path")
    if require_fit and not fits:
        raise InputError(res.shortfall_message())
    return res
