"""Predictions against published measurements: cases (SCHEMA.md v1) -> predictions -> errors -> summary.

A case that the model cannot predict yet is reported as ``unsupported: <reason>``; a malformed case as
``invalid`` with its id and field, after the others have run. The error of a case is
``(predicted - measured) / measured``. Nothing here is fitted to the cases.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from .comm import collective_time
from .errors import InputError, format_validation_error
from .engines import engine_from_text
from .inference import estimate_inference
from .roofline import device_rates, gemm_time, memory_time
from .specdb import Database, load_database, read_yaml

KINDS = ("train", "infer", "comm", "gemm", "membw", "link")
METRICS = {
    "train": ("step_time_s", "tokens_per_s_per_gpu", "mfu"),
    "infer": ("output_tokens_per_s", "total_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_ms", "tpot_ms",
              "e2e_latency_s"),
    "comm": ("busbw_gbps", "algbw_gbps", "time_us"),
    "gemm": ("tflops",),
    "membw": ("gbps",),
    "link": ("gbps",),
}


def builtin_cases_path() -> Path:
    return Path(__file__).resolve().parent / "validation" / "cases_public.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainBlock(_Strict):
    seq_len: int | None = None
    global_batch: int | None = None
    micro_batch: int | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    cp: int | None = None
    ep: int | None = None
    vp: int | None = None
    sequence_parallel: bool | None = None
    zero: int | None = None
    precision: Literal["bf16", "fp16", "fp8"] | None = None
    recompute: Literal["none", "selective", "full"] | None = None
    framework: str | None = None


class InferBlock(_Strict):
    isl: float | None = None
    osl: float | None = None
    isl_max: float | None = None
    osl_max: float | None = None
    concurrency: int | None = None
    requests: int | None = None
    tp: int | None = None
    pp: int | None = None
    ep: int | None = None
    dp: int | None = None
    precision: str | None = None
    kv_precision: str | None = None
    scenario: Literal["offline", "server"] | None = None
    rate: float | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    attention_dp: bool | None = None
    prefill_gpus: int | None = None
    decode_gpus: int | None = None
    speculative: str | None = None
    engine: str | None = None


class CommBlock(_Strict):
    collective: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv"]
    bytes: float
    nodes: int | None = None
    algorithm: Literal["ring", "tree", "nvls"] | None = None


class GemmBlock(_Strict):
    m: int
    n: int
    k: int
    dtype: str


class MembwBlock(_Strict):
    op: Literal["copy", "triad", "read"]
    bytes: float | None = None


class LinkBlock(_Strict):
    direction: Literal["h2d", "d2h", "p2p", "p2p_bidirectional", "storage_read", "storage_write"]
    bytes: float | None = None
    link: str


class Measured(_Strict):
    metric: str
    value: float
    percentile: int | None = None


class Case(_Strict):
    id: str
    kind: Literal["train", "infer", "comm", "gemm", "membw", "link"]
    source: str
    tier: Literal["A", "B", "C"] | None = None
    system: str | None = None
    network: str | None = None
    device: str | None = None
    gpus: int | None = None
    model: str | dict | None = None
    train: TrainBlock | None = None
    infer: InferBlock | None = None
    comm: CommBlock | None = None
    gemm: GemmBlock | None = None
    membw: MembwBlock | None = None
    link: LinkBlock | None = None
    measured: Measured
    notes: str | None = None


class CaseResult(BaseModel):
    id: str
    kind: str
    system: str | None
    metric: str
    measured: float | None
    predicted: float | None
    error: float | None
    status: Literal["ok", "unsupported", "invalid"]
    reason: str | None = None
    source: str | None = None


class Unsupported(Exception):
    """The model cannot predict this case yet; the message says why."""


def parse_case(raw: Any, where: str) -> Case:
    """Validate one case mapping; errors name the case id and the field."""
    cid = raw.get("id", "?") if isinstance(raw, dict) else "?"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: case {cid}: expected a mapping")
    try:
        case = Case.model_validate(raw)
    except ValidationError as e:
        raise InputError(format_validation_error(e, f"{where}: case {cid}")) from None
    block = getattr(case, case.kind)
    if block is None:
        raise InputError(f"{where}: case {cid}: {case.kind}: the '{case.kind}' block is required for kind {case.kind}")
    if case.measured.metric not in METRICS[case.kind]:
        raise InputError(f"{where}: case {cid}: measured.metric: '{case.measured.metric}' is not a {case.kind} metric "
                         f"(expected one of {', '.join(METRICS[case.kind])})")
    if case.kind in ("train", "infer", "comm") and not case.system:
        raise InputError(f"{where}: case {cid}: system: required for kind {case.kind}")
    if case.kind in ("gemm", "membw", "link") and not case.device:
        raise InputError(f"{where}: case {cid}: device: required for kind {case.kind}")
    return case


def predict(case: Case, db: Database) -> float:
    """The model's value for the case's metric."""
    fn = {"infer": _infer, "gemm": _gemm, "membw": _membw, "link": _link, "comm": _comm, "train": _train}[case.kind]
    return float(fn(case, db))


def _device(case: Case, db: Database):
    if case.device:
        return db.accelerator(case.device)
    return db.resolve_system(case.system).accelerator


_DTYPE_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "fp4": 0.5}


def _gemm(case: Case, db: Database) -> float:
    """A GEMM microbenchmark's TFLOP/s: the short-run rate (published sweeps report each shape's best of a
    brief loop), not the power-capped steady state a training or serving job sees."""
    g = case.gemm
    acc = _device(case, db)
    rates = device_rates(acc, sustained=False)
    if g.dtype not in rates.peaks:
        raise Unsupported(f"{acc.id} has no {g.dtype} peak in the database")
    b = _DTYPE_BYTES.get(g.dtype, 2)
    t, flops, *_ = gemm_time(rates, g.m, g.n, g.k, g.dtype, b, b, 2.0)
    return float(flops / t / 1e12)


def _membw(case: Case, db: Database) -> float:
    acc = _device(case, db)
    rates = device_rates(acc)
    nbytes = case.membw.bytes or 2**30 * 8
    t, _ = memory_time(rates, nbytes)
    return float(nbytes / t / 1e9)


def _link(case: Case, db: Database) -> float:
    lk = case.link
    kind = db.kind_of(lk.link)
    if kind == "tier":
        tier = db.tier(lk.link)
        return tier.write_gbps.value if lk.direction == "storage_write" else tier.read_gbps.value
    link = db.link(lk.link)
    bw = link.achievable_gbps
    if lk.direction == "p2p_bidirectional":
        bw *= 2
    nbytes = lk.bytes
    if nbytes:
        bw = nbytes / (nbytes / (bw * 1e9) + link.latency_us.value * 1e-6) / 1e9
    return bw


def _comm(case: Case, db: Database) -> float:
    c = case.comm
    ref = db.resolve_system(case.system)
    n = case.gpus or ref.system.gpus_per_node
    per_node = n // c.nodes if c.nodes else None
    res = collective_time(db, ref, c.collective, c.bytes, n, c.algorithm, per_node=per_node)
    metric = case.measured.metric
    if metric == "time_us":
        return float(res.time_s[0] * 1e6)
    return float((res.algbw_gbps if metric == "algbw_gbps" else res.busbw_gbps)[0])


def _train(case: Case, db: Database) -> float:
    from .training import estimate_training

    t = case.train
    if case.model is None:
        raise Unsupported("no model given")
    if t.seq_len is None or t.global_batch is None:
        raise Unsupported("sequence length or global batch not stated in the source")
    ref = db.resolve_system(case.system)
    gpus = case.gpus or ref.gpus
    cp, ep, vp = t.cp or 1, t.ep or 1, t.vp or 1
    tp, pp = t.tp, t.pp
    if tp is None and pp is None and t.dp:
        # model-parallel size known, its split not: TP fills a node (Megatron practice), PP takes the rest
        mp = gpus // (t.dp * cp)
        tp = math.gcd(mp, ref.system.gpus_per_node)
        pp = mp // tp
    tp, pp = tp or 1, pp or 1
    dp = t.dp or gpus // (tp * pp * cp)
    precision = t.precision or "bf16"
    recompute = t.recompute or "none"
    zero = t.zero if t.zero is not None else 1
    flash = _has_flash_attention(t.framework)
    mbs = [t.micro_batch] if t.micro_batch else [1, 2, 4, 8]
    best, err = None, None
    for mb in mbs:
        try:
            r = estimate_training(case.model, case.system, gpus, seq_len=t.seq_len, global_batch=t.global_batch,
                                  tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, micro_batch=mb,
                                  sequence_parallel=t.sequence_parallel, precision=precision, recompute=recompute,
                                  zero=zero, flash_attention=flash, db=db)
        except InputError as e:
            err = e
            continue
        if best is None or (r.fits, -r.step_time_s) > (best.fits, -best.step_time_s):
            best = r
    if best is None:
        raise Unsupported(str(err))
    return getattr(best, case.measured.metric)


def _has_flash_attention(framework: str | None) -> bool:
    """FlashAttention (2022) postdates the 2021 Megatron-LM runs; later frameworks fuse attention."""
    text = (framework or "").lower()
    return not ("2021" in text or "ptd-p" in text)


def _infer(case: Case, db: Database) -> float:
    from .models import get_model

    b = case.infer
    ref = db.resolve_system(case.system)
    acc = ref.accelerator
    if case.model is None:
        raise Unsupported("no model given")
    if b.speculative:
        raise Unsupported(f"speculative decoding ({b.speculative}) is not modelled")
    isl, osl = b.isl, b.osl
    if isl is None or osl is None:
        known = dataset_means(case)
        if known is not None:
            isl = isl if isl is not None else known["isl_mean"]
            osl = osl if osl is not None else known["osl_mean"]
    if osl is None:
        raise Unsupported("mean output length (osl) not stated")
    if isl is None:
        raise Unsupported("mean input length (isl) not stated in the source (only isl_max)")
    gpus = case.gpus or ref.gpus
    precision = b.precision or ("fp8" if "fp8" in {d.value for d in acc.peak_tflops} else "bf16")
    scenario = b.scenario or "offline"
    arch = get_model(case.model)
    tps = [b.tp] if b.tp else [t for t in (1, 2, 4, 8, 16) if gpus % t == 0 and t <= gpus]
    best = None
    for tp in tps:
        pp = b.pp or 1
        width = max(tp, b.ep or 1) if b.attention_dp else tp
        dp = b.dp if (b.dp and b.tp) else gpus // (width * pp)
        if width * pp * dp != gpus:
            dp = max(gpus // (width * pp), 1)
        try:
            res = estimate_inference(
                arch, case.system, isl, osl, gpus=width * pp * dp, tp=tp, pp=pp, ep=b.ep or 1, dp=dp,
                attention_dp=bool(b.attention_dp), precision=precision, kv_precision=b.kv_precision,
                batch=b.concurrency, scenario=scenario, rate=b.rate, slo_ttft_ms=b.slo_ttft_ms,
                slo_tpot_ms=b.slo_tpot_ms, requests=b.requests, prefill_gpus=b.prefill_gpus,
                decode_gpus=b.decode_gpus, engine=engine_from_text(b.engine), breakdown=False, db=db)
        except InputError as e:
            if len(tps) == 1:
                raise Unsupported(str(e)) from None
            continue
        if best is None or res.output_tokens_per_s > best.output_tokens_per_s:
            best = res
    if best is None:
        raise Unsupported("no tensor-parallel degree fits the model on this system")
    metric = case.measured.metric
    return getattr(best, metric)


def dataset_means(case: Case) -> dict | None:
    """Mean lengths of a known benchmark dataset (perfmodel/validation/datasets.yaml) for an MLPerf case."""
    if "mlperf" not in case.source.lower() or not isinstance(case.model, str):
        return None
    import yaml

    table = yaml.safe_load((builtin_cases_path().parent / "datasets.yaml").read_text())
    for row in table:
        if row["model"] == case.model and row["isl_max"] == case.infer.isl_max:
            return row
    return None


def load_cases(paths: list[Path]) -> tuple[list[Case], list[CaseResult]]:
    """Parse case files; malformed cases come back as invalid results (the rest still run)."""
    cases: list[Case] = []
    invalid: list[CaseResult] = []
    seen: set[str] = set()
    for path in paths:
        data = read_yaml(path)
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a YAML list of cases")
        for raw in data:
            try:
                case = parse_case(raw, str(path))
                if case.id in seen:
                    raise InputError(f"{path}: case {case.id}: id: duplicate case id")
                seen.add(case.id)
                cases.append(case)
            except InputError as e:
                cid = raw.get("id", "?") if isinstance(raw, dict) else "?"
                kind = raw.get("kind", "?") if isinstance(raw, dict) else "?"
                invalid.append(CaseResult(id=str(cid), kind=str(kind), system=None, metric="?", measured=None,
                                          predicted=None, error=None, status="invalid", reason=str(e)))
    return cases, invalid


def run_case(case: Case, db: Database) -> CaseResult:
    base = dict(id=case.id, kind=case.kind, system=case.system or case.device, metric=case.measured.metric,
                measured=case.measured.value, source=case.source)
    try:
        pred = predict(case, db)
    except Unsupported as e:
        return CaseResult(**base, predicted=None, error=None, status="unsupported", reason=str(e))
    except InputError as e:
        return CaseResult(**base, predicted=None, error=None, status="unsupported", reason=str(e))
    if not math.isfinite(pred):
        return CaseResult(**base, predicted=None, error=None, status="unsupported", reason="non-finite prediction")
    err = (pred - case.measured.value) / case.measured.value
    return CaseResult(**base, predicted=pred, error=err, status="ok")


def summarise(results: list[CaseResult]) -> dict[str, dict]:
    """Per kind and overall: count, median |error|, share within 10% and 25%, unsupported and invalid counts."""
    out: dict[str, dict] = {}
    kinds = sorted({r.kind for r in results})
    for kind in [*kinds, "all"]:
        rows = [r for r in results if kind == "all" or r.kind == kind]
        ok = [abs(r.error) for r in rows if r.status == "ok"]
        out[kind] = {
            "n": len(ok),
            "cases": len(rows),
            "unsupported": sum(r.status == "unsupported" for r in rows),
            "invalid": sum(r.status == "invalid" for r in rows),
            "median_abs_error": statistics.median(ok) if ok else None,
            "within_10": float(np.mean([e <= 0.10 for e in ok])) if ok else None,
            "within_25": float(np.mean([e <= 0.25 for e in ok])) if ok else None,
        }
    return out


def worst(results: list[CaseResult], n: int = 5) -> list[CaseResult]:
    ok = [r for r in results if r.status == "ok"]
    return sorted(ok, key=lambda r: -abs(r.error))[:n]


def run_validation(paths: list[Path] | None = None, kind: str | None = None, db: Database | None = None,
                   progress=None) -> list[CaseResult]:
    db = db or load_database()
    paths = paths or [builtin_cases_path()]
    cases, invalid = load_cases(paths)
    if kind:
        if kind not in KINDS:
            raise InputError(f"--kind: expected one of {', '.join(KINDS)} (got '{kind}')")
        cases = [c for c in cases if c.kind == kind]
        invalid = [r for r in invalid if r.kind == kind]
    results = []
    for c in cases:
        results.append(run_case(c, db))
        if progress:
            progress()
    return results + invalid
