"""`perfmodel estimate infer|comm`: one prediction, with the why behind it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..comm import collective_time
from ..errors import InputError
from ..inference import InferenceResult, estimate_inference
from ..roofline import device_rates
from ..training import TrainingResult, estimate_training
from ..units import parse_count, parse_size_range
from .common import (
    CxlOpt, HostMemoryOpt, JsonOpt, ModelOpt, NvmeOpt, SpecsOpt, SystemOpt, console, database, fmt_num,
    print_assumptions, print_json, summary_table,
)

app = typer.Typer(help="Predict serving, training or collective performance.", no_args_is_help=True)

PlotOpt = Annotated[Optional[str], typer.Option("--plot", help="Write a figure (PNG or SVG) to this file.",
                                                metavar="FILE")]


@app.command("infer")
def infer(
    model: ModelOpt,
    system: SystemOpt,
    isl: Annotated[float, typer.Option("--isl", help="Input tokens per request (mean).")],
    osl: Annotated[float, typer.Option("--osl", help="Output tokens per request (mean).")],
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel degree per instance.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel degree per instance.")] = 1,
    ep: Annotated[int, typer.Option("--ep", help="Expert-parallel degree (MoE).")] = 1,
    dp: Annotated[Optional[int], typer.Option("--dp", help="Independent replicas (default: fill --gpus).")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="Total GPUs (= tp x pp x dp).")] = None,
    attention_dp: Annotated[bool, typer.Option("--attention-dp", help="Attention data-parallel, experts EP.")] = False,
    precision: Annotated[str, typer.Option("--precision", help="bf16, fp16, fp8, int8, int4, fp4, nvfp4, mxfp4.")] = "bf16",
    kv_precision: Annotated[Optional[str], typer.Option("--kv-precision", help="KV-cache precision.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Fixed concurrent sequences per instance.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Alias of --batch.")] = None,
    scenario: Annotated[str, typer.Option("--scenario", help="offline (max load) or server (arrivals).")] = "offline",
    rate: Annotated[Optional[float], typer.Option("--rate", help="Server scenario: requests/s (Poisson).")] = None,
    requests: Annotated[Optional[int], typer.Option(
        "--requests", help="Offline: a burst of N requests issued at once, run to the last token (means over requests).")] = None,
    slo_ttft_ms: Annotated[Optional[float], typer.Option("--slo-ttft-ms", help="p99 TTFT SLO.")] = None,
    slo_tpot_ms: Annotated[Optional[float], typer.Option("--slo-tpot-ms", help="TPOT SLO.")] = None,
    prefill_gpus: Annotated[Optional[int], typer.Option("--prefill-gpus", help="Disaggregated: prefill GPUs.")] = None,
    decode_gpus: Annotated[Optional[int], typer.Option("--decode-gpus", help="Disaggregated: decode GPUs.")] = None,
    engine: Annotated[Optional[str], typer.Option("--engine", help="default, trtllm, trtllm-bench (limits sized per workload), vllm or sglang; settings after a colon in the engine's flag names: vllm:max_num_seqs=512,max_num_batched_tokens=1024; host_overhead_ms=N sets the host's time per iteration (TensorRT-LLM engines carry a measured 0.9 ms; 0 turns it off).")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option("--chunk-tokens", help="Prefill tokens per step (chunked prefill).")] = None,
    isl_std: Annotated[float, typer.Option("--isl-std", help="Standard deviation of input tokens across requests.")] = 0.0,
    osl_std: Annotated[float, typer.Option("--osl-std", help="Standard deviation of output tokens across requests: long outputs stay in the batch longer, so decode steps see more context; short ones widen the server's p99 TPOT (gamma-shaped).")] = 0.0,
    isl_osl_corr: Annotated[float, typer.Option("--isl-osl-corr", help="Correlation of a request's input and output lengths.")] = 0.0,
    offload: Annotated[Optional[str], typer.Option("--offload", help="weights, kv, experts (comma-separated): stream from tiers.")] = None,
    offload_tier: Annotated[Optional[str], typer.Option("--offload-tier", help="Pin offloaded data to host, cxl or nvme.")] = None,
    host_memory: HostMemoryOpt = None,
    cxl: CxlOpt = None,
    nvme: NvmeOpt = None,
    pim: Annotated[Optional[str], typer.Option("--pim", help="Decode attention in memory: hbm-pim, aim-gddr6 or logic-pim.")] = None,
    eager: Annotated[bool, typer.Option("--eager", help="Offload: add per-kernel CPU launch cost (no CUDA graphs).")] = False,
    show_breakdown: Annotated[bool, typer.Option("--breakdown", help="Per-operator table.")] = False,
    plot: PlotOpt = None,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Predict serving latency, throughput, memory, cost and energy.

    Example: perfmodel estimate infer --model llama-3.1-70b --system "8 x h100-sxm" --tp 8 --precision fp8 --isl 1000 --osl 1000
    """
    if batch is not None and concurrency is not None and batch != concurrency:
        raise InputError("--batch and --concurrency: give one of them")
    db = database(specs)
    if pim or offload:
        given = {"--isl-std": isl_std, "--osl-std": osl_std, "--isl-osl-corr": isl_osl_corr, "--pp": pp != 1,
                 "--ep": ep != 1, "--dp": dp, "--gpus": gpus, "--attention-dp": attention_dp,
                 "--scenario": scenario != "offline", "--rate": rate, "--requests": requests,
                 "--slo-ttft-ms": slo_ttft_ms, "--slo-tpot-ms": slo_tpot_ms, "--prefill-gpus": prefill_gpus,
                 "--decode-gpus": decode_gpus, "--chunk-tokens": chunk_tokens, "--breakdown": show_breakdown,
                 "--plot": plot}
        if pim:
            given |= {"--tp": tp != 1, "--engine": engine, "--eager": eager, "--offload-tier": offload_tier,
                      "--host-memory": host_memory, "--cxl": cxl, "--nvme": nvme}
        unused = [flag for flag, v in given.items() if v]
        if unused:
            what = "--pim (one GPU's decode step, fixed --batch)" if pim else \
                "--offload (one tensor-parallel instance, fixed --batch, offline)"
            raise InputError(f"{', '.join(unused)}: not modelled with {what}; drop {'them' if len(unused) > 1 else 'it'}")
    if pim:
        _infer_pim(model, system, isl, osl, pim, batch or concurrency or 1, precision, kv_precision, offload, json_out, db)
        return
    if offload:
        _infer_offload(model, system, isl, osl, offload, offload_tier, batch or concurrency or 1, precision,
                       kv_precision, host_memory, cxl, nvme, tp, eager, engine, json_out, db)
        return
    if host_memory or cxl or nvme or offload_tier or eager:
        raise InputError("--host-memory/--cxl/--nvme/--offload-tier/--eager: describe an --offload run")
    res = estimate_inference(
        model, system, isl, osl, gpus=gpus, tp=tp, pp=pp, ep=ep, dp=dp, attention_dp=attention_dp,
        precision=precision, kv_precision=kv_precision, batch=batch or concurrency, scenario=scenario, rate=rate,
        slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, prefill_gpus=prefill_gpus, decode_gpus=decode_gpus,
        engine=engine, chunk_tokens=chunk_tokens, requests=requests, isl_std=isl_std, osl_std=osl_std,
        isl_osl_corr=isl_osl_corr, db=db)
    if plot:
        from ..plots import roofline_plot

        roofline_plot(res, device_rates(db.accelerator(res.device)), plot)
    if json_out:
        print_json(res.model_dump(mode="json"))
        return
    _print_infer(res, show_breakdown)
    if plot:
        console.print(f"roofline plot written to {plot}")


def _infer_offload(model, system, isl, osl, offload, tier, batch, precision, kv_precision, host_memory, cxl, nvme, tp,
                   eager, engine, json_out, db) -> None:
    from ..offload_infer import estimate_offload_inference

    what = {w.strip() for w in offload.split(",") if w.strip()}
    r = estimate_offload_inference(model, system, isl, osl, offload=what, batch=batch, precision=precision,
                                   kv_precision=kv_precision, host_memory=host_memory, cxl=cxl, nvme=nvme, tp=tp,
                                   tier=tier, eager=eager, engine=engine, db=db)
    if json_out:
        print_json(r.model_dump(mode="json"))
        return
    console.print(f"[bold]{r.model}[/bold] on {r.device} ({r.system}), batch {r.batch}, offload {', '.join(r.offload)}: "
                  f"TTFT {r.ttft_ms:,.1f} ms, TPOT {r.tpot_ms:,.1f} ms, {r.output_tokens_per_s:,.0f} output tok/s; "
                  f"bottleneck: {r.bottleneck}")
    t = Table(title="where the data sits (GiB per GPU)", title_justify="left")
    t.add_column("item")
    t.add_column("placement")
    for item, where in r.placement.items():
        t.add_row(item, ", ".join(f"{k} {v / 2**30:,.1f}" for k, v in where.items()))
    console.print(t)
    pt = Table(title="per phase", title_justify="left")
    host = r.decode.host_ms > 0
    cols = ("phase", "GPU ms", "transfer ms", "CPU launch ms") + (("host ms",) if host else ()) + ("step ms", "bound")
    for col in cols:
        pt.add_column(col, justify="left" if col in ("phase", "bound") else "right")
    for name, ph in (("prefill", r.prefill), ("decode", r.decode)):
        pt.add_row(name, f"{ph.gpu_ms:,.2f}", f"{ph.transfer.time_ms:,.2f}", f"{ph.cpu_launch_ms:,.2f}",
                   *((f"{ph.host_ms:,.2f}",) if host else ()), f"{ph.step_ms:,.2f}", ph.bound)
    console.print(pt)
    if r.kv_overflow_context:
        console.print(f"the KV cache overflows HBM beyond {r.kv_overflow_context:,.0f} tokens per sequence")
    print_assumptions(r.assumptions)


def _infer_pim(model, system, isl, osl, pim, batch, precision, kv_precision, offload, json_out, db) -> None:
    from ..pim import estimate_pim_attention

    r = estimate_pim_attention(model, system, pim.split(":")[0].strip(), isl, osl, batch, precision, kv_precision,
                               db=db, experts="experts" in (offload or ""))
    if json_out:
        print_json(r.model_dump(mode="json"))
        return
    console.print(f"[bold]{r.model}[/bold] on {r.device} with {r.pim.name if hasattr(r.pim, 'name') else pim}, batch "
                  f"{r.batch}, context {r.context:,.0f}: attention {r.attention_flop_per_byte:.1f} FLOP/B "
                  f"(GQA group {r.gqa_group:g}), PIM {r.pim_attention_bound}-bound")
    t = summary_table()
    t.add_row("GPU alone", f"{r.gpu_step_ms:,.2f}", f"ms per decode step (GEMMs {r.gpu_gemm_ms:,.2f} + attention "
              f"{r.gpu_attention_ms:,.2f})")
    t.add_row("PIM attention", f"{r.pim_attention_ms:,.2f}", "ms")
    t.add_row("blocked / interleaved", f"{r.blocked_step_ms:,.2f} / {r.interleaved_step_ms:,.2f}",
              f"ms ({r.schedule} chosen)")
    t.add_row("speedup", f"{r.speedup:,.2f}x", f"{r.tokens_per_s_gpu:,.0f} -> {r.tokens_per_s_pim:,.0f} tok/s")
    console.print(t)
    print_assumptions(r.assumptions)


def _print_infer(r: InferenceResult, show_breakdown: bool) -> None:
    console.print(f"[bold]{r.model}[/bold] on {r.gpus} x {r.device} ({r.system}), tp={r.tp} pp={r.pp} ep={r.ep} "
                  f"dp={r.dp}{' attention-dp' if r.attention_dp else ''}, {r.precision} weights, {r.kv_precision} KV, "
                  f"{r.scenario}, engine {r.engine}")
    t = summary_table()
    rows = [
        ("TTFT", f"{r.ttft_ms:,.1f}", "ms"),
        ("TPOT", f"{r.tpot_ms:,.2f}", "ms"),
        ("request latency", f"{r.e2e_latency_s:,.2f}", "s"),
        ("output tokens/s", f"{r.output_tokens_per_s:,.0f}", f"({r.output_tokens_per_s_per_gpu:,.0f} per GPU)"),
        ("total tokens/s", f"{r.total_tokens_per_s:,.0f}", f"({r.total_tokens_per_s_per_gpu:,.0f} per GPU)"),
        ("batch", f"{r.batch:,}", f"sequences per instance (up to {r.max_batch_fits:,} fit)"),
        ("prefill step", f"{r.prefill_step_ms:,.2f}", f"ms, {r.bound['prefill']}-bound"),
        ("decode step", f"{r.decode_step_ms:,.2f}", f"ms, {r.bound['decode']}-bound"),
    ]
    if r.burst_makespan_s is not None:
        rows.append(("burst", f"{r.burst_makespan_s:,.2f}", f"s for {r.requests:,} requests issued at once "
                     "(TTFT, TPOT and latency are means over them)"))
    if r.rate is not None:
        rows.append(("request rate", f"{r.rate:,.3g}", "requests/s"))
    if r.tpot_p99_ms is not None:
        rows.append(("p99 TTFT / TPOT", f"{r.ttft_p99_ms:,.1f} / {r.tpot_p99_ms:,.2f}", "ms"))
    if r.slo_attainment is not None:
        rows.append(("SLO attainment", f"{r.slo_attainment:.1%}", "of requests (M/G/1 TTFT tail, Poisson TPOT tail)"))
    if r.max_rate_within_slo is not None:
        rows.append(("max rate within SLO", f"{r.max_rate_within_slo:,.3g}", "requests/s"))
    if r.drain_s is not None:
        rows.append(("drain", f"{r.drain_s:,.1f}", "s for the requests in flight to finish once arrivals stop"))
    if r.kv_transfer_ms is not None:
        rows.append(("KV transfer", f"{r.kv_transfer_ms:,.2f}", "ms per request"))
    if r.cost_per_million_output_tokens_usd is not None:
        rows.append(("cost", f"{r.cost_per_million_output_tokens_usd:,.3f}", "USD per million output tokens"))
    if r.energy_per_output_token_j is not None:
        rows.append(("energy", f"{r.energy_per_output_token_j:,.3f}", f"J per output token ({r.power_per_gpu_w:,.0f} W per GPU)"))
    for row in rows:
        t.add_row(*row)
    console.print(t)
    mem = Table(title="memory per GPU", title_justify="left")
    for k in r.memory_per_gpu_bytes:
        mem.add_column(k, justify="right")
    mem.add_row(*[f"{v / 2**30:,.1f} GiB" for v in r.memory_per_gpu_bytes.values()])
    console.print(mem)
    if show_breakdown:
        bt = Table(title="per-operator breakdown (times summed over layers)", title_justify="left")
        for col in ("phase", "operator", "kind", "count", "GFLOP", "MB", "FLOP/B", "time us", "share", "bound"):
            bt.add_column(col, justify="left" if col in ("phase", "operator", "kind", "bound") else "right")
        for phase in ("prefill", "decode"):
            rows_p = [x for x in r.breakdown if x.phase == phase]
            tot = sum(x.time_us * x.count for x in rows_p) or 1.0
            agg: dict[tuple, list] = {}
            for x in rows_p:
                key = (x.name, x.kind, x.bound)
                a = agg.setdefault(key, [0.0, 0.0, 0.0, 0.0])
                a[0] += x.count
                a[1] += x.flops * x.count
                a[2] += x.bytes * x.count
                a[3] += x.time_us * x.count
            for (name, kind, bound), (cnt, fl, by, tus) in agg.items():
                bt.add_row(phase, name, kind, fmt_num(cnt), f"{fl / 1e9:,.2f}", f"{by / 1e6:,.2f}",
                           f"{fl / by:,.1f}" if by else "-", f"{tus:,.1f}", f"{tus / tot:.1%}", bound)
        console.print(bt)
    print_assumptions(r.assumptions)


@app.command("train")
def train(
    model: ModelOpt,
    system: SystemOpt,
    gpus: Annotated[int, typer.Option("--gpus", help="Total GPUs (= tp x pp x dp x cp).")],
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sample.")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="Samples per optimizer step.")],
    tp: Annotated[int, typer.Option("--tp", help="Tensor parallel.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline parallel.")] = 1,
    dp: Annotated[Optional[int], typer.Option("--dp", help="Data parallel (default: the rest).")] = None,
    cp: Annotated[int, typer.Option("--cp", help="Context parallel.")] = 1,
    ep: Annotated[int, typer.Option("--ep", help="Expert parallel (MoE).")] = 1,
    vp: Annotated[int, typer.Option("--vp", help="Virtual pipeline stages per rank (interleaving).")] = 1,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Samples per micro-batch.")] = 1,
    sequence_parallel: Annotated[Optional[bool], typer.Option("--sequence-parallel/--no-sequence-parallel",
                                                              help="Megatron SP (default: on when tp > 1).")] = None,
    precision: Annotated[str, typer.Option("--precision", help="bf16, fp16 or fp8.")] = "bf16",
    recompute: Annotated[str, typer.Option("--recompute", help="none, selective or full.")] = "none",
    zero: Annotated[int, typer.Option("--zero", help="0-3 (1 = distributed optimizer).")] = 1,
    ep_overlap: Annotated[bool, typer.Option("--ep-overlap", help="Expert-parallel all-to-alls overlap another micro-batch's compute (DeepSeek DualPipe, Megatron-Core overlapped 1F1B).")] = False,
    tp_overlap: Annotated[bool, typer.Option("--tp-overlap", help="TP/SP collectives pipelined with the layer's GEMMs (MegaScale, Transformer Engine userbuffers).")] = False,
    tokens: Annotated[Optional[str], typer.Option("--tokens", help="Training tokens, e.g. 15T: time, GPU-hours, cost.")] = None,
    offload: Annotated[Optional[str], typer.Option("--offload", help="optimizer, params, activations (comma-separated): offload what.")] = None,
    offload_scheme: Annotated[Optional[str], typer.Option("--offload-scheme", help="zero-offload, zero-infinity or fuyou.")] = None,
    host_memory: HostMemoryOpt = None,
    cxl: CxlOpt = None,
    nvme: NvmeOpt = None,
    show_breakdown: Annotated[bool, typer.Option("--breakdown", help="Step-time and memory tables.")] = False,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Predict step time, MFU/HFU, tokens/s and memory per GPU for a parallel training plan.

    Example: perfmodel estimate train --model llama-3.1-70b --system dgx-h100 --gpus 64 --tp 4 --pp 4 --seq-len 8192 --global-batch 128 --precision fp8
    """
    db = database(specs)
    if offload or offload_scheme:
        _train_offload(model, system, gpus, seq_len, global_batch, micro_batch, precision, recompute, tp, pp, offload,
                       offload_scheme, host_memory, cxl, nvme, json_out, db)
        return
    if host_memory or cxl or nvme:
        raise InputError("--host-memory/--cxl/--nvme: describe tiers for an --offload or --offload-scheme run")
    res = estimate_training(model, system, gpus, seq_len=seq_len, global_batch=global_batch, tp=tp, pp=pp, dp=dp,
                            cp=cp, ep=ep, vp=vp, micro_batch=micro_batch, sequence_parallel=sequence_parallel,
                            precision=precision, recompute=recompute, zero=zero, ep_overlap=ep_overlap, tp_overlap=tp_overlap,
                            tokens=parse_count(tokens, "--tokens") if tokens else None, db=db)
    if json_out:
        print_json(res.model_dump(mode="json"))
        return
    _print_train(res, show_breakdown)


def offload_scheme_for(offload: str | None, scheme: str | None, gpus: int) -> str:
    """--offload what -> the scheme that offloads it (an explicit --offload-scheme wins)."""
    if scheme:
        return scheme
    what = {w.strip() for w in (offload or "").split(",") if w.strip()}
    unknown = what - {"optimizer", "params", "activations"}
    if unknown:
        raise InputError(f"--offload: expected optimizer, params or activations (got {', '.join(sorted(unknown))})")
    if "activations" in what:
        return "fuyou"
    if "params" in what:
        return "zero-infinity"
    return "zero-offload"


def _train_offload(model, system, gpus, seq_len, global_batch, micro_batch, precision, recompute, tp, pp, offload,
                   scheme, host_memory, cxl, nvme, json_out, db) -> None:
    from ..offload_train import estimate_offload_training

    name = offload_scheme_for(offload, scheme, gpus)
    r = estimate_offload_training(model, system, gpus, scheme=name, seq_len=seq_len, global_batch=global_batch,
                                  micro_batch=micro_batch, precision=precision, recompute=recompute,
                                  host_memory=host_memory, cxl=cxl, nvme=nvme, tp=tp, pp=pp, db=db)
    if json_out:
        print_json(r.model_dump(mode="json"))
    else:
        console.print(f"[bold]{r.model}[/bold] on {r.gpus} x {r.device} ({r.system}), {r.scheme}: step "
                      f"{r.step_time_s:,.2f} s, {r.tokens_per_s:,.0f} tokens/s, {r.model_tflops_per_gpu:,.1f} model "
                      f"TFLOP/s per GPU; bottleneck: {r.bottleneck}")
        t = Table(title="where the time goes (per step)", title_justify="left")
        for col in ("resource", "busy s", "exposed s"):
            t.add_column(col, justify="left" if col == "resource" else "right")
        for k, v in r.busy_s.items():
            t.add_row(k, f"{v:,.2f}", f"{r.exposed_s.get(k, 0.0):,.2f}")
        console.print(t)
        lt = Table(title="traffic per step", title_justify="left")
        for col in ("link", "read GB", "write GB", "time s"):
            lt.add_column(col, justify="left" if col == "link" else "right")
        for k, v in r.traffic.items():
            lt.add_row(k, f"{v.read_bytes / 1e9:,.1f}", f"{v.write_bytes / 1e9:,.1f}", f"{v.time_s:,.2f}")
        console.print(lt)
        mt = Table(title="memory per tier", title_justify="left")
        for col in ("tier", "needed GiB", "capacity GiB", "fits"):
            mt.add_column(col, justify="left" if col == "tier" else "right")
        for k, u in r.memory.items():
            mt.add_row(k, f"{u.peak_bytes / 2**30:,.1f}", f"{u.capacity_bytes / 2**30:,.1f}",
                       "yes" if u.fits else f"no, short by {u.short_by_bytes / 2**30:,.1f}")
        console.print(mt)
        print_assumptions(r.assumptions)
    short = r.shortfall_message()
    if short:
        raise InputError(f"does not fit: {short}")


def _print_train(r: TrainingResult, show_breakdown: bool) -> None:
    console.print(f"[bold]{r.model}[/bold] on {r.gpus} x {r.device} ({r.system}): tp={r.tp} pp={r.pp} dp={r.dp} "
                  f"cp={r.cp} ep={r.ep} vp={r.vp}{' sp' if r.sequence_parallel else ''}, micro-batch {r.micro_batch} x "
                  f"{r.micro_batches}, {r.precision}, recompute {r.recompute}, ZeRO-{r.zero}")
    t = summary_table()
    t.add_row("step time", f"{r.step_time_s:,.3f}", "s")
    t.add_row("throughput", f"{r.tokens_per_s:,.0f}", f"tokens/s ({r.tokens_per_s_per_gpu:,.0f} per GPU)")
    t.add_row("MFU / HFU", f"{r.mfu:.1%} / {r.hfu:.1%}", f"of the dense {r.precision} peak")
    used = sum(r.memory_per_gpu_bytes.values())
    fit = "fits" if r.fits else f"DOES NOT FIT: {(used - r.memory_capacity_bytes) / 2**30:,.1f} GiB over"
    t.add_row("memory per GPU", f"{used / 2**30:,.1f} GiB", f"of {r.memory_capacity_bytes / 2**30:,.1f} GiB ({fit})")
    if r.train_time_days is not None:
        t.add_row("to train", f"{r.train_time_days:,.1f}", f"days, {r.gpu_hours:,.0f} GPU-hours"
                  + (f", ${r.cost_usd:,.0f}" if r.cost_usd else ""))
    console.print(t)
    if show_breakdown:
        bt = Table(title="step time", title_justify="left")
        bt.add_column("part")
        bt.add_column("s", justify="right")
        bt.add_column("share", justify="right")
        for k, v in r.time_breakdown_s.items():
            bt.add_row(k, f"{v:,.3f}", f"{v / r.step_time_s:.1%}")
        console.print(bt)
        mt = Table(title="memory per GPU (most loaded stage)", title_justify="left")
        mt.add_column("part")
        mt.add_column("GiB", justify="right")
        for k, v in r.memory_per_gpu_bytes.items():
            mt.add_row(k, f"{v / 2**30:,.2f}")
        console.print(mt)
        console.print(f"layers per stage: {r.stage_layers}")
    print_assumptions(r.assumptions)


@app.command("comm")
def comm(
    collective: Annotated[str, typer.Option("--collective", help="all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, send_recv.")],
    nbytes: Annotated[str, typer.Option("--bytes", help="Buffer size (nccl-tests convention), or a range 1KiB..8GiB.")],
    gpus: Annotated[int, typer.Option("--gpus", help="Ranks in the collective.")],
    system: SystemOpt,
    algorithm: Annotated[Optional[str], typer.Option("--algorithm", help="ring, tree or nvls (default: fastest).")] = None,
    plot: PlotOpt = None,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Time, algbw and busbw of one collective (nccl-tests conventions), over a size sweep.

    Example: perfmodel estimate comm --collective all_reduce --bytes 1KiB..8GiB --gpus 16 --system dgx-h100
    """
    db = database(specs)
    sizes = parse_size_range(nbytes)
    ref = db.resolve_system(system)
    res = collective_time(db, ref, collective, sizes, gpus, algorithm)
    rows = [{"bytes": int(s), "time_us": float(t * 1e6), "algbw_gbps": float(a), "busbw_gbps": float(b),
             "algorithm": alg} for s, t, a, b, alg in zip(res.nbytes, res.time_s, res.algbw_gbps, res.busbw_gbps,
                                                          res.algorithm)]
    if plot:
        from ..plots import busbw_plot

        busbw_plot(res, f"{collective} on {gpus} x {ref.accelerator.id} ({ref.system.id})", plot)
    if json_out:
        print_json(rows if len(rows) > 1 else rows[0])
        return
    t = Table(title=f"{collective} over {gpus} ranks of {ref.system.id}", title_justify="left")
    for col in ("size", "time us", "algbw GB/s", "busbw GB/s", "algorithm"):
        t.add_column(col, justify="right" if col != "algorithm" else "left")
    for r in rows:
        t.add_row(_size(r["bytes"]), f"{r['time_us']:,.2f}", f"{r['algbw_gbps']:,.2f}", f"{r['busbw_gbps']:,.2f}",
                  r["algorithm"])
    console.print(t)
    if plot:
        console.print(f"busbw plot written to {plot}")


def _size(n: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n:g} B"
