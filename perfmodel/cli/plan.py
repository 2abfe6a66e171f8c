"""`perfmodel plan train|serve`: the best layouts for a model on a system, ranked, with the reasons."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import InputError
from .common import (
    CxlOpt, HostMemoryOpt, JsonOpt, ModelOpt, NvmeOpt, SpecsOpt, SystemOpt, console, database, print_json,
)

app = typer.Typer(help="Search parallel layouts for training and serving.", no_args_is_help=True)


def parse_gpus(text: str) -> list[int]:
    """'512', '256..1024' (powers of two) or '64,96,128'."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split("..", 1))
            if lo < 1 or hi < lo:
                raise ValueError
            out, n = [], lo
            while n <= hi:
                out.append(n)
                n *= 2
            return out
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"--gpus: expected N, N..M or N,M,... with positive integers (got '{text}')") from None


def _spinner(label: str, quiet: bool):
    return Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), console=console, transient=True,
                    disable=quiet or not console.is_terminal)


@app.command("train")
def train(
    model: ModelOpt,
    system: Annotated[str, typer.Option("--system", help="System id or 'N x DEVICE'; a heterogeneous cluster as "
                                                      "'SYSTEM:GPUS,SYSTEM:GPUS'.")],
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sample.")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="Samples per optimizer step.")],
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU count, a range N..M (powers of two) or a list.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="bf16, fp16 or fp8.")] = "bf16",
    objective: Annotated[str, typer.Option("--objective", help="time, cost (per token) or energy (per token).")] = "time",
    top: Annotated[int, typer.Option("--top", help="How many plans to show.")] = 5,
    allow_cross_node_tp: Annotated[bool, typer.Option("--allow-cross-node-tp", help="Let TP span nodes.")] = False,
    ep_overlap: Annotated[bool, typer.Option("--ep-overlap", help="Expert-parallel all-to-alls overlap another micro-batch's compute (DualPipe).")] = False,
    tp_overlap: Annotated[bool, typer.Option("--tp-overlap", help="TP/SP collectives pipelined with the layer's GEMMs (MegaScale).")] = False,
    offload_scheme: Annotated[Optional[str], typer.Option("--offload-scheme", help="zero-offload, zero-infinity or fuyou.")] = None,
    host_memory: HostMemoryOpt = None,
    cxl: CxlOpt = None,
    nvme: NvmeOpt = None,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Rank TP x PP x DP x CP x EP x VP x micro-batch x recompute x ZeRO layouts; ILP stage partition.

    Example: perfmodel plan train --model llama-3.1-70b --system dgx-h100 --gpus 64 --seq-len 8192 --global-batch 128 --precision fp8
    """
    from ..solvers.plan_train import plan_training

    db = database(specs)
    if ":" in system:
        _train_hetero(model, system, seq_len, global_batch, precision, top, json_out, db)
        return
    if gpus is None:
        raise InputError("--gpus: required (or give pools as --system SYSTEM:GPUS,SYSTEM:GPUS)")
    if offload_scheme:
        _train_offload_plans(model, system, parse_gpus(gpus), seq_len, global_batch, offload_scheme, host_memory, cxl,
                             nvme, precision, top, json_out, db)
        return
    with _spinner("searching training layouts", json_out):
        res = plan_training(model, system, parse_gpus(gpus), seq_len, global_batch, precision, objective, top,
                            allow_cross_node_tp, db, ep_overlap=ep_overlap, tp_overlap=tp_overlap)
    if json_out:
        print_json({
            "model": res.model, "system": res.system, "objective": res.objective, "evaluated": res.evaluated,
            "feasible": res.feasible, "why": res.why,
            "partition": None if res.partition is None else {
                "layers_per_stage": res.partition.layers_per_stage, "max_stage_time_s": res.partition.max_stage_time,
                "even_max_stage_time_s": res.partition.even_max_stage_time, "status": res.partition.status},
            "plans": [{**p.model_dump(mode="json"), "score": s} for p, s in zip(res.plans, res.scores)],
        })
        return
    console.print(f"[bold]{res.model}[/bold] on {res.system}: {res.evaluated:,} layouts evaluated, {res.feasible:,} fit "
                  f"in memory; ranked by {res.objective}")
    t = Table(title=f"top {len(res.plans)} training plans", title_justify="left")
    for col in ("#", "gpus", "tp", "pp", "dp", "cp", "ep", "vp", "mb", "recompute", "zero", "step s", "tok/s/GPU",
                "MFU", "mem GiB", "bubble s", "comm s"):
        t.add_column(col, justify="right" if col not in ("recompute",) else "left")
    for i, p in enumerate(res.plans, 1):
        b = p.time_breakdown_s
        comm = b["tp_comm"] + b["cp_comm"] + b["ep_comm"] + b["pp_comm"] + b["dp_comm_exposed"] + b["zero3_comm_exposed"]
        t.add_row(str(i), str(p.gpus), str(p.tp), str(p.pp), str(p.dp), str(p.cp), str(p.ep), str(p.vp),
                  str(p.micro_batch), p.recompute, str(p.zero), f"{p.step_time_s:,.3f}",
                  f"{p.tokens_per_s_per_gpu:,.0f}", f"{p.mfu:.1%}", f"{sum(p.memory_per_gpu_bytes.values()) / 2**30:,.1f}",
                  f"{b['bubble']:,.3f}", f"{comm:,.3f}")
    console.print(t)
    if res.partition is not None:
        part = res.partition
        console.print(f"stage partition (ILP, {part.solver}, {part.status}, {part.solve_time_s:.2f} s): "
                      f"{part.layers_per_stage}; slowest stage {part.max_stage_time * 1e3:.1f} ms per micro-batch "
                      f"vs {part.even_max_stage_time * 1e3:.1f} ms with the even split")
    for line in res.why:
        console.print(f"why #1: {line}")


def _train_offload_plans(model, system, counts, seq_len, global_batch, scheme, host_memory, cxl, nvme, precision, top,
                         json_out, db) -> None:
    from ..solvers.plan_train import plan_training_offload

    if len(counts) != 1:
        raise InputError("--gpus: an offload plan takes one GPU count")
    with _spinner(f"searching {scheme} layouts", json_out):
        plans = plan_training_offload(model, system, counts[0], seq_len, global_batch, scheme, host_memory, cxl,
                                      nvme, precision, top, db)
    if json_out:
        print_json({"offload_scheme": scheme, "plans": [p.model_dump(mode="json") for p in plans]})
        return
    t = Table(title=f"top {len(plans)} {scheme} plans", title_justify="left")
    for col in ("#", "tp", "dp", "mb", "recompute", "step s", "tokens/s", "model TFLOP/s/GPU", "bottleneck"):
        t.add_column(col, justify="left" if col in ("recompute", "bottleneck") else "right")
    for i, p in enumerate(plans, 1):
        t.add_row(str(i), str(p.tp), str(p.dp), str(p.micro_batch), p.recompute, f"{p.step_time_s:,.2f}",
                  f"{p.tokens_per_s:,.0f}", f"{p.model_tflops_per_gpu:,.1f}", p.bottleneck)
    console.print(t)


def _train_hetero(model, system, seq_len, global_batch, precision, top, json_out, db) -> None:
    from ..solvers.plan_train import plan_training_hetero

    pools = []
    for part in system.split(","):
        sys_id, _, n = part.rpartition(":")
        if not sys_id or not n.strip().isdigit() or int(n) < 1:
            raise InputError(f"--system: expected SYSTEM:GPUS pools separated by commas (got '{part}')")
        pools.append((sys_id.strip(), int(n)))
    with _spinner("searching heterogeneous layouts", json_out):
        plans = plan_training_hetero(model, pools, seq_len, global_batch, precision, top, db)
    if json_out:
        print_json({"heterogeneous": True, "plans": [{"layout": p.layout, "groups": p.groups,
                                                      "step_time_s": p.step_time_s, "tokens_per_s": p.tokens_per_s}
                                                     for p in plans]})
        return
    t = Table(title="heterogeneous plans: one layout, a DP group per pool, the batch split to finish together",
              title_justify="left")
    for col in ("#", "tp", "pp", "cp", "vp", "mb", "recompute", "zero", "pools (dp x micro-batches)", "step s", "tok/s"):
        t.add_column(col, justify="left" if col in ("recompute", "pools (dp x micro-batches)") else "right")
    for i, p in enumerate(plans, 1):
        lay = p.layout
        pools_txt = "; ".join(f"{g['system']} {g['gpus']}: {g['dp']} x {g['micro_batches']} ({g['step_s']:.2f} s)"
                              for g in p.groups)
        t.add_row(str(i), str(lay["tp"]), str(lay["pp"]), str(lay["cp"]), str(lay["vp"]), str(lay["mb"]),
                  lay["recompute"], str(lay["zero"]), pools_txt, f"{p.step_time_s:,.3f}", f"{p.tokens_per_s:,.0f}")
    console.print(t)


@app.command("serve")
def serve(
    model: ModelOpt,
    system: SystemOpt,
    isl: Annotated[float, typer.Option("--isl", help="Mean input tokens.")],
    osl: Annotated[float, typer.Option("--osl", help="Mean output tokens.")],
    slo_ttft_ms: Annotated[float, typer.Option("--slo-ttft-ms", help="p99 TTFT SLO.")],
    slo_tpot_ms: Annotated[float, typer.Option("--slo-tpot-ms", help="TPOT SLO.")],
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPU budget: maximise goodput per GPU.")] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="Target requests/s: minimise GPUs.")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="Fix the precision (default: try bf16 and fp8).")] = None,
    allow_disaggregated: Annotated[bool, typer.Option("--allow-disaggregated", help="Also try prefill/decode pools.")] = False,
    top: Annotated[int, typer.Option("--top", help="How many plans to show.")] = 5,
    isl_std: Annotated[float, typer.Option("--isl-std", help="Standard deviation of input tokens across requests.")] = 0.0,
    osl_std: Annotated[float, typer.Option("--osl-std", help="Standard deviation of output tokens across requests.")] = 0.0,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Rank serving layouts (TP, PP, EP, replicas, batch cap, disaggregation) by goodput within the SLOs.

    Example: perfmodel plan serve --model llama-3.1-70b --system dgx-h100 --gpus 8 --isl 1000 --osl 500 --slo-ttft-ms 1000 --slo-tpot-ms 50
    """
    from ..solvers.plan_serve import plan_serving

    db = database(specs)
    with _spinner("searching serving layouts", json_out):
        res = plan_serving(model, system, isl, osl, slo_ttft_ms, slo_tpot_ms, gpus, rate, precision,
                           allow_disaggregated, top, db, isl_std=isl_std, osl_std=osl_std)
    if json_out:
        print_json({"model": res.model, "system": res.system, "evaluated": res.evaluated,
                    "plans": [p.as_dict() for p in res.plans]})
        return
    console.print(f"[bold]{res.model}[/bold] on {res.system}: {res.evaluated} layouts evaluated; "
                  f"SLOs TTFT p99 <= {slo_ttft_ms:g} ms, TPOT <= {slo_tpot_ms:g} ms")
    t = Table(title=f"top {len(res.plans)} serving plans", title_justify="left")
    for col in ("#", "layout", "precision", "gpus", "max batch", "req/s", "req/s/GPU", "TTFT ms", "TPOT ms", "out tok/s"):
        t.add_column(col, justify="left" if col in ("layout", "precision") else "right")
    for i, p in enumerate(res.plans, 1):
        t.add_row(str(i), p.layout, p.precision, str(p.gpus), str(p.max_batch), f"{p.rate:,.3g}",
                  f"{p.rate / p.gpus:,.3g}", f"{p.ttft_ms:,.0f}", f"{p.tpot_ms:,.1f}", f"{p.output_tokens_per_s:,.0f}")
    console.print(t)


def _pairs(items: list[str] | None, flag: str, cast) -> dict:
    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = cast(val)
        except ValueError:
            raise InputError(f"{flag}: expected DEVICE=VALUE (got '{item}')") from None
    return out


@app.command("gpu-mix")
def gpu_mix(
    model: ModelOpt,
    devices: Annotated[str, typer.Option("--devices", help="Candidate accelerator ids, comma-separated.")],
    rate: Annotated[float, typer.Option("--rate", help="Overall request rate (requests/s).")],
    slo_tpot_ms: Annotated[float, typer.Option("--slo-tpot-ms", help="TPOT SLO.")],
    slo_ttft_ms: Annotated[Optional[float], typer.Option("--slo-ttft-ms", help="p99 TTFT SLO (optional).")] = None,
    workload: Annotated[Optional[str], typer.Option("--workload", help="CSV trace with input/output token columns.")] = None,
    isl: Annotated[Optional[float], typer.Option("--isl", help="Synthetic workload: mean input tokens.")] = None,
    osl: Annotated[Optional[float], typer.Option("--osl", help="Synthetic workload: mean output tokens.")] = None,
    cv: Annotated[float, typer.Option("--cv", help="Synthetic workload: coefficient of variation (log-normal).")] = 0.0,
    price: Annotated[Optional[list[str]], typer.Option("--price", help="Override a price: DEVICE=USD_PER_HOUR.")] = None,
    max_count: Annotated[Optional[list[str]], typer.Option("--max", help="Availability limit: DEVICE=INSTANCES.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Serving precision.")] = "bf16",
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """The cheapest mix of GPU types serving a request-size histogram within the SLOs (ILP, Mélange-style).

    Example: perfmodel plan gpu-mix --model llama-3.1-8b --devices h100-sxm,a100-sxm-80gb,a10g --isl 1000 --osl 300 --cv 1 --rate 50 --slo-tpot-ms 60
    """
    from pathlib import Path

    from ..solvers.gpu_mix import plan_gpu_mix, read_trace, synthetic_workload

    db = database(specs)
    if workload and (isl or osl):
        raise InputError("--workload and --isl/--osl: give a trace or a synthetic distribution, not both")
    if workload:
        buckets = read_trace(Path(workload))
    elif isl and osl:
        buckets = synthetic_workload(isl, osl, cv)
    else:
        raise InputError("--workload FILE or --isl/--osl: the workload is required")
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    for d in ids:
        db.accelerator(d)
    with _spinner("solving the GPU mix", json_out):
        res = plan_gpu_mix(model, ids, buckets, rate, slo_tpot_ms, slo_ttft_ms, _pairs(price, "--price", float),
                           _pairs(max_count, "--max", int), precision, db)
    if json_out:
        print_json({"instances": res.instances, "gpus": res.gpus, "cost_per_hour": res.cost_per_hour,
                    "best_single_device": res.best_single_device,
                    "best_single_device_cost_per_hour": res.best_single_device_cost_per_hour,
                    "saving": res.saving, "single_device_costs": res.single_device_costs,
                    "assignment": res.assignment, "status": res.status, "solve_time_s": res.solve_time_s})
        return
    t = Table(title=f"cheapest mix for {rate:g} requests/s ({len(buckets)} size buckets)", title_justify="left")
    for col in ("device", "instances", "GPUs per instance", "GPUs", "alone would cost $/h"):
        t.add_column(col, justify="left" if col == "device" else "right")
    for d in ids:
        alone = res.single_device_costs[d]
        t.add_row(d, str(res.instances[d]), str(res.instance_gpus[d] or "-"), str(res.gpus[d]),
                  "cannot serve it" if alone is None else f"{alone:,.2f}")
    console.print(t)
    line = f"cost {res.cost_per_hour:,.2f} $/h ({res.status}, {res.solve_time_s:.2f} s)"
    if res.best_single_device:
        line += (f"; best single device {res.best_single_device} at {res.best_single_device_cost_per_hour:,.2f} $/h, "
                 f"saving {res.saving:.1%}")
    console.print(line)
    by_dev: dict[str, float] = {}
    for a in res.assignment:
        for d, f in a["devices"].items():
            by_dev[d] = by_dev.get(d, 0.0) + f * a["share"]
    console.print("share of requests: " + ", ".join(f"{d} {v:.0%}" for d, v in by_dev.items()))


@app.command("experts")
def experts(
    model: Annotated[str, typer.Option("--model", help="An MoE catalog id or config.json.")],
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs the experts are spread over (EP degree).")],
    gpus_per_node: Annotated[Optional[int], typer.Option("--gpus-per-node", help="Default: the system's node size.")] = None,
    routing: Annotated[Optional[str], typer.Option("--routing", help="Routing statistics, JSON or NPZ (see README).")] = None,
    synthetic: Annotated[Optional[float], typer.Option("--synthetic", help="Generate routing with this Zipf skew.")] = None,
    affinity: Annotated[float, typer.Option("--affinity", help="Synthetic: share of tokens that follow a preferred next expert.")] = 0.5,
    tokens: Annotated[int, typer.Option("--tokens", help="Synthetic: tokens per batch.")] = 8192,
    system: Annotated[str, typer.Option("--system", help="System for the layer-time prediction.")] = "dgx-h100",
    capacity: Annotated[Optional[int], typer.Option("--capacity", help="Experts per GPU (default: ceil(E/G)).")] = None,
    cross_node_weight: Annotated[float, typer.Option("--cross-node-weight", help="Weight of a cross-node token.")] = 4.0,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Seconds for the solver.")] = 60.0,
    seed: Annotated[int, typer.Option("--seed", help="Synthetic routing seed.")] = 0,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Place MoE experts on GPUs: balance the busiest GPU and cut cross-GPU/cross-node traffic (ILP).

    Example: perfmodel plan experts --model deepseek-v3 --gpus 64 --synthetic 1.0 --time-limit 30
    """
    from pathlib import Path

    from ..models import get_model
    from ..solvers.experts import load_routing, place_experts, synthetic_routing

    db = database(specs)
    m = get_model(model)
    if not m.is_moe:
        raise InputError(f"--model {m.id}: has no routed experts")
    if (routing is None) == (synthetic is None):
        raise InputError("--routing FILE or --synthetic SKEW: give exactly one")
    if routing is not None:
        r = load_routing(Path(routing), m.moe_layers, m.experts)
    else:
        if synthetic < 0 or not 0 <= affinity <= 1 or tokens < 1:
            raise InputError("--synthetic/--affinity/--tokens: expected skew >= 0, affinity in [0, 1], tokens >= 1")
        r = synthetic_routing(m.moe_layers, m.experts, m.top_k, tokens, synthetic, affinity, seed)
    with _spinner("placing experts", json_out):
        p = place_experts(m, r, gpus=gpus, gpus_per_node=gpus_per_node, system=system, capacity=capacity,
                          cross_node_weight=cross_node_weight, time_limit=time_limit, db=db)
    if json_out:
        print_json(p.to_dict())
        return
    rr, gr = p.baselines["round_robin"], p.baselines["greedy"]
    t = Table(title=f"{m.id}: {m.experts} experts x {m.moe_layers} MoE layers on {p.gpus} GPUs "
                    f"({p.gpus_per_node} per node, {p.capacity} experts per GPU)", title_justify="left")
    for col in ("placement", "objective (tokens)", "vs placed"):
        t.add_column(col, justify="left" if col == "placement" else "right")
    t.add_row("perfmodel (ILP + local search)", f"{p.objective:,.0f}", "-")
    t.add_row("greedy", f"{gr:,.0f}", f"{p.objective / gr - 1:+.1%}")
    t.add_row("round robin", f"{rr:,.0f}", f"{p.objective / rr - 1:+.1%}")
    console.print(t)
    console.print(f"load {p.load_term:,.0f} + traffic {p.traffic_term:,.0f} tokens; lower bound {p.lower_bound:,.0f} "
                  f"(gap {p.gap:.1%}); solved in {p.solve_time_s:.1f} s ({p.method}, {p.solver}; {p.status})")
    console.print(f"predicted MoE layer time on {system}: {p.layer_time_before_s * 1e3:.3f} ms round robin -> "
                  f"{p.layer_time_after_s * 1e3:.3f} ms placed")
    for note in p.notes:
        console.print(f"[dim]note: {note}[/dim]")


@app.command("tiers")
def tiers(
    model: ModelOpt,
    system: SystemOpt,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs of the job (sets how a node's tiers are shared).")] = None,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Training: tokens per sample.")] = None,
    global_batch: Annotated[Optional[int], typer.Option("--global-batch", help="Training: samples per step.")] = None,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Training: samples per micro-batch.")] = 1,
    recompute: Annotated[str, typer.Option("--recompute", help="Training: none, selective or full.")] = "full",
    zero: Annotated[int, typer.Option("--zero", help="Training: ZeRO stage.")] = 1,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Training: where Adam runs, cpu or gpu.")] = "cpu",
    isl: Annotated[Optional[float], typer.Option("--isl", help="Serving: input tokens.")] = None,
    osl: Annotated[Optional[float], typer.Option("--osl", help="Serving: output tokens.")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Serving: concurrent sequences.")] = 1,
    tp: Annotated[int, typer.Option("--tp", help="Tensor parallel.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline parallel.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="Precision.")] = "bf16",
    offload: Annotated[Optional[str], typer.Option("--offload", help="Groups kept off the GPU, comma-separated.")] = None,
    host_memory: HostMemoryOpt = None,
    cxl: CxlOpt = None,
    nvme: NvmeOpt = None,
    pim: Annotated[Optional[str], typer.Option("--pim", help="PIM tier TIER[:SIZE].")] = None,
    integral: Annotated[bool, typer.Option("--integral", help="Whole groups per tier (ILP) instead of splits (LP).")] = False,
    serial: Annotated[bool, typer.Option("--serial", help="No overlap: a phase takes the sum of its loads.")] = False,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Place tensor groups in HBM, host DRAM, CXL, NVMe (and PIM) to minimise step time (LP/ILP).

    Example: perfmodel plan tiers --model llama-2-13b --system "1 x h100-sxm" --seq-len 32768 --global-batch 1 --offload gradients,optimizer_state,activations --host-memory host-ddr5:128GB --cxl cxl-aic-x16:256GB
    """
    from ..memtiers import describe_machine
    from ..solvers.tiers import plan_machine_tiers, serving_groups, training_groups, tiers_report

    db = database(specs)
    training = seq_len is not None or global_batch is not None
    serving = isl is not None or osl is not None
    if training == serving:
        raise InputError("plan tiers: give training flags (--seq-len, --global-batch) or serving flags (--isl, --osl)")
    ref = db.resolve_system(system, gpus)
    machine = describe_machine(db, ref, host_memory=host_memory, cxl=cxl, nvme=nvme, pim=pim)
    groups = tuple(g.strip() for g in offload.split(",")) if offload else ()
    if training:
        if seq_len is None or global_batch is None:
            raise InputError("--seq-len and --global-batch: both are needed for a training placement")
        wl = training_groups(model, ref, seq_len=seq_len, global_batch=global_batch, micro_batch=micro_batch,
                             precision=precision, recompute=recompute, tp=tp, pp=pp, zero=zero, optimizer=optimizer,
                             offload=groups, db=db)
    else:
        if isl is None or osl is None:
            raise InputError("--isl and --osl: both are needed for a serving placement")
        wl = serving_groups(model, ref, isl=isl, osl=osl, batch=batch, precision=precision, tp=tp, pp=pp, db=db)
    with _spinner("solving the tier placement", json_out):
        plan = plan_machine_tiers(machine, wl, integral=integral, serial=serial)
    if json_out:
        print_json(plan.to_dict())
        return
    for line in tiers_report(plan):
        console.print(line)
