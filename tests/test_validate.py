"""The validation machinery on small synthetic cases: parsing, error arithmetic, unsupported, malformed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from perfmodel.cli import app
from perfmodel.roofline import device_rates, gemm_time
from perfmodel.validate import run_validation, summarise, summarise_by_device

GEMM = """\
- id: G1
  kind: gemm
  source: synthetic
  device: h100-sxm
  gemm: {m: 8192, n: 8192, k: 8192, dtype: bf16}
  measured: {metric: tflops, value: 700.0}
- id: G2
  kind: gemm
  source: synthetic
  device: h100-sxm
  gemm: {m: 8192, n: 8192, k: 8192, dtype: bf16}
  measured: {metric: tflops, value: 900.0}
- id: U1
  kind: infer
  source: synthetic
  system: dgx-h100
  gpus: 8
  model: llama-2-70b
  infer: {isl: null, osl: 300}
  measured: {metric: output_tokens_per_s, value: 1000}
"""


def _predicted_gemm(db) -> float:
    rates = device_rates(db.accelerator("h100-sxm"), sustained=False)  # a microbenchmark: short-run rate
    t, flops, *_ = gemm_time(rates, 8192, 8192, 8192, "bf16", 2, 2, 2)
    return float(flops / t / 1e12)


def test_error_arithmetic_and_unsupported(tmp_path, db):
    f = tmp_path / "cases.yaml"
    f.write_text(GEMM)
    res = {r.id: r for r in run_validation([f], db=db)}
    pred = _predicted_gemm(db)
    assert res["G1"].predicted == pytest.approx(pred)
    assert res["G1"].error == pytest.approx((pred - 700) / 700)
    assert res["G2"].error == pytest.approx((pred - 900) / 900)
    assert res["U1"].status == "unsupported" and "isl" in res["U1"].reason
    s = summarise(list(res.values()))
    assert s["gemm"]["n"] == 2 and s["all"]["unsupported"] == 1
    errs = sorted(abs(res[i].error) for i in ("G1", "G2"))
    assert s["gemm"]["median_abs_error"] == pytest.approx(sum(errs) / 2)
    assert s["gemm"]["within_25"] == pytest.approx(sum(e <= 0.25 for e in errs) / 2)


def test_per_device_summary_by_hand(tmp_path, db):
    """G1/G2 on the H100 and a third GEMM on the H200 (measured 800): the H100 row holds the two H100 errors
    (median = their mean, signed median likewise), the H200 row its one; the unsupported case is in neither.
    The CLI prints the same rows as Markdown and JSON."""
    h200 = GEMM.replace("id: G1", "id: G3").split("- id: G2")[0].replace("h100-sxm", "h200-sxm").replace("700.0", "800.0")
    f = tmp_path / "cases.yaml"
    f.write_text(GEMM + h200)
    res = {r.id: r for r in run_validation([f], db=db)}
    assert res["G3"].device == "h200-sxm" and res["G1"].device == "h100-sxm"
    rows = {row["device"]: row for row in summarise_by_device(list(res.values()))}
    assert set(rows) == {"h100-sxm", "h200-sxm"} and rows["h100-sxm"]["n"] == 2
    e1, e2 = res["G1"].error, res["G2"].error
    assert rows["h100-sxm"]["median_lean"] == pytest.approx((e1 + e2) / 2)  # TFLOP/s: the lean is the error
    assert rows["h100-sxm"]["median_abs_error"] == pytest.approx((abs(e1) + abs(e2)) / 2)
    assert rows["h200-sxm"]["median_lean"] == pytest.approx(res["G3"].error)
    md = CliRunner().invoke(app, ["validate", str(f), "--by", "device", "--markdown"])
    assert md.exit_code == 0, md.output
    line = next(x for x in md.stdout.splitlines() if "h200-sxm" in x)
    assert f"{res['G3'].error * 100:+.1f}%" in line
    doc = json.loads(CliRunner().invoke(app, ["validate", str(f), "--json"]).stdout)
    assert {r["device"] for r in doc["by_device"]} == {"h100-sxm", "h200-sxm"}
    bad = CliRunner().invoke(app, ["validate", str(f), "--by", "gpu"])
    assert bad.exit_code == 2 and "--by" in bad.stderr
    typo = CliRunner().invoke(app, ["validate", "--set", "gird"])
    assert typo.exit_code == 2 and "did you mean grid?" in typo.stderr and typo.stderr.strip().count("\n") == 0


def test_lean_counts_a_time_as_the_rate_it_implies():
    """A step predicted at 10 s against 12.5 s measured is optimistic: error -20%, lean +25% (12.5 / 10 - 1);
    a throughput predicted 25% high leans +25% too."""
    from perfmodel.validate import CaseResult, lean

    kw = dict(id="X", kind="train", system="dgx-h100", status="ok")
    slow = CaseResult(**kw, metric="step_time_s", measured=12.5, predicted=10.0, error=-0.2)
    fast = CaseResult(**kw, metric="tokens_per_s_per_gpu", measured=1000.0, predicted=1250.0, error=0.25)
    assert lean(slow) == pytest.approx(0.25) and lean(fast) == pytest.approx(0.25)


def test_malformed_case_exits_2_after_others_run(tmp_path):
    bad = GEMM + """\
- id: BAD1
  kind: gemm
  source: synthetic
  device: h100-sxm
  gemm: {m: 8, n: 8, dtype: bf16}
  measured: {metric: tflops, value: 1.0}
- id: BAD2
  kind: gemm
  source: synthetic
  device: h100-sxm
  gemm: {m: 8, n: 8, k: 8, dtype: bf16}
  measured: {metric: gbps, value: 1.0}
"""
    f = tmp_path / "cases.yaml"
    f.write_text(bad)
    res = CliRunner().invoke(app, ["validate", str(f), "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    status = {c["id"]: c["status"] for c in doc["cases"]}
    assert status["G1"] == "ok" and status["U1"] == "unsupported"
    assert status["BAD1"] == "invalid" and status["BAD2"] == "invalid"
    assert "case BAD1" in res.stderr and "gemm.k" in res.stderr
    assert "case BAD2" in res.stderr and "measured.metric" in res.stderr
    for key in ("id", "kind", "metric", "measured", "predicted", "error", "status", "reason"):
        assert key in doc["cases"][0]
    assert set(doc["summary"]["all"]) >= {"n", "median_abs_error", "within_10", "within_25"}


def test_large_errors_exit_0(tmp_path):
    f = tmp_path / "cases.yaml"
    f.write_text(GEMM.replace("value: 700.0", "value: 1.0"))
    res = CliRunner().invoke(app, ["validate", str(f)])
    assert res.exit_code == 0, res.output
    assert "worst cases: G1" in res.stdout


def test_shipped_cases_all_parse_and_are_predicted(db):
    res = run_validation(db=db)
    assert not [r.id for r in res if r.status == "invalid"]
    assert [(r.id, r.reason) for r in res if r.status != "ok"] == []


def test_korthikanti_530b_data_parallel_rows_cost_the_gradient_all_reduce(db):
    """T027 is T024 (530B, TP8 x PP35, 280 micro-batches of 1) weak-scaled to 8-way data parallelism: the
    paper's iteration grows from 37.83 s to 39.15 s (MFU 56.0% -> 54.2%) from the unoverlapped gradient
    all-reduce. The model must also slow down, by less than the whole step's 10%."""
    res = {r.id: r for r in run_validation(db=db) if r.id in ("T024", "T027")}
    mfu_280 = 0.560 * 37.83 / res["T024"].predicted  # the paper's MFU rescaled by the predicted step
    assert 0.90 * mfu_280 < res["T027"].predicted < mfu_280


def test_dataset_means_fill_mlperf_lengths(tmp_path, db):
    case = """\
- id: X1
  kind: infer
  source: "MLPerf Inference v5.1 closed, synthetic copy"
  system: hgx-h200
  gpus: 8
  model: llama-2-70b
  infer: {isl: null, osl: null, isl_max: 1024, osl_max: 1024, tp: 1, dp: 8, precision: fp8, scenario: offline}
  measured: {metric: output_tokens_per_s, value: 30000}
"""
    f = tmp_path / "c.yaml"
    f.write_text(case)
    (r,) = run_validation([f], db=db)
    assert r.status == "ok"
    from perfmodel.inference import estimate_inference

    from perfmodel.validate import _dataset_table

    (row,) = [x for x in _dataset_table() if x["model"] == "llama-2-70b"]
    kw = dict(gpus=8, tp=1, dp=8, precision="fp8", db=db, isl_std=171.50, osl_std=231.82, isl_osl_corr=-0.169,
              osl_quantiles=row["osl_quantiles"])
    steady = estimate_inference("llama-2-70b", "hgx-h200", 222.33, 294.45, **kw)
    # LoadGen's Offline query: max(min_query_count 24,576, 1.1 x 600 s x expected samples/s) samples
    n = max(24576, math.ceil(1.1 * 600 * steady.output_tokens_per_s / 294.45))
    direct = estimate_inference("llama-2-70b", "hgx-h200", 222.33, 294.45, requests=n, **kw)
    assert r.predicted == pytest.approx(direct.output_tokens_per_s)
    assert r.predicted < steady.output_tokens_per_s  # the run ends with its longest answers in a small batch
    fixed = estimate_inference("llama-2-70b", "hgx-h200", 222.33, 294.45, gpus=8, tp=1, dp=8, precision="fp8", db=db)
    assert steady.output_tokens_per_s < fixed.output_tokens_per_s  # long outputs hold the batch: more context
    f.write_text(case.replace("MLPerf Inference", "Some blog"))
    (r,) = run_validation([f], db=db)
    assert r.status == "unsupported" and "length" in r.reason


def test_dataset_spread_keeps_the_output_shape():
    """A run whose mean output (300) differs from the reference (294.45) keeps the dataset's coefficient of
    variation: 231.82 x 300 / 294.45 = 236.19."""
    from perfmodel.validate import dataset_spread

    row = {"osl_mean": 294.45, "isl_std": 171.5, "osl_std": 231.82, "isl_osl_corr": -0.169}
    out = dataset_spread(row, 300.0)
    assert out["osl_std"] == pytest.approx(236.19, abs=0.01)
    assert out["isl_std"] == 171.5 and out["isl_osl_corr"] == -0.169
    assert dataset_spread({"osl_mean": None, "isl_std": 10.0}, 300.0) == {"isl_std": 10.0}


def test_dataset_spread_truncates_at_the_generation_limit():
    """Reference outputs of 100, 100, 100 and 1,700 tokens (mean 500) in a run capped at 1,000 with mean 400:
    cut to 100, 100, 100, 1,000 (mean 325), scaled by 400 / 325 to 123.1, 123.1, 123.1, 1,230.8, cut again
    to 1,000. Their coefficient of variation (std / mean) replaces the reference's in proportion."""
    from perfmodel.validate import dataset_spread

    q = [100.0, 100.0, 100.0, 1700.0]
    row = {"osl_mean": 500.0, "osl_std": 693.0, "osl_quantiles": q}
    out = dataset_spread(row, 400.0, osl_max=1000.0)
    s = 400.0 / 325.0
    assert out["osl_quantiles"] == pytest.approx((100 * s, 100 * s, 100 * s, 1000.0))
    cut = np.array(out["osl_quantiles"])
    cv_ratio = (cut.std() / cut.mean()) / (np.std(q) / np.mean(q))
    assert out["osl_std"] == pytest.approx(693.0 / 500.0 * cv_ratio * 400.0)
    assert dataset_spread(row, 400.0, osl_max=2000.0)["osl_quantiles"] == tuple(q)  # under the limit: unchanged


def test_mlperf_offline_sample_count_follows_loadgen():
    """LoadGen: max(min_query_count, 1.1 x 600 s x expected QPS); 50 samples/s -> 33,000 > 24,576."""
    from perfmodel.mlperf import mlperf_offline_samples

    row = {"offline_min_query_count": 24576}
    assert mlperf_offline_samples(row, 50.0) == 33000
    assert mlperf_offline_samples(row, 10.0) == 24576
    assert mlperf_offline_samples({"model": "x"}, 50.0) is None


def test_validate_plot(tmp_path):
    out = tmp_path / "v.png"
    res = CliRunner().invoke(app, ["validate", "--kind", "gemm", "--plot", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 5000


TRAIN = """\
- id: T1
  kind: train
  source: synthetic
  system: dgx-h100
  gpus: 64
  model: llama-3.1-70b
  train: {seq_len: 4096, global_batch: 64, micro_batch: 1, tp: 8, pp: 4, dp: 2, vp: VP, precision: bf16,
          framework: FRAMEWORK}
  measured: {metric: step_time_s, value: 10.0}
"""


@pytest.mark.parametrize("framework, vp, same_as_vp", [
    ("Megatron-LM, interleaved 1F1B", "null", 2),  # interleaved, chunk count omitted: the fewest, 2
    ("Megatron-LM, interleaved 1F1B", "4", 4),  # a stated count wins
    ("Megatron-LM 1F1B", "null", 1),  # not interleaved
])
def test_interleaved_schedule_without_a_chunk_count_takes_two(tmp_path, db, framework, vp, same_as_vp):
    from perfmodel.training import estimate_training

    f = tmp_path / "t.yaml"
    f.write_text(TRAIN.replace("FRAMEWORK", f'"{framework}"').replace("VP", vp))
    (res,) = run_validation([f], db=db)
    direct = estimate_training("llama-3.1-70b", "dgx-h100", 64, seq_len=4096, global_batch=64, tp=8, pp=4, dp=2,
                               vp=same_as_vp, micro_batch=1, precision="bf16", db=db)
    assert res.predicted == pytest.approx(direct.step_time_s)


def test_mlperf_server_reports_tokens_over_the_run_and_its_drain():
    """LoadGen Server: tokens / time until the last sample is done. 600 s of arrivals and a 60 s drain report
    600 / 660 of the steady rate."""
    from perfmodel.mlperf import mlperf_server_completed_share

    assert mlperf_server_completed_share(60.0) == pytest.approx(600 / 660)
    assert mlperf_server_completed_share(0.0) == 1.0


def test_grid_cases_are_the_generator_output():
    """cases_grid.yaml is exactly what benchmarks/cases/trtllm_017_grid.py writes (no hand edits), holds no row
    the public set already has, and its ids do not collide with the other shipped sets."""
    import runpy

    import yaml

    from conftest import ROOT
    from perfmodel.validate import builtin_case_sets

    gen = runpy.run_path(str(ROOT / "benchmarks" / "cases" / "trtllm_017_grid.py"))
    public = ROOT / "perfmodel" / "validation" / "cases_public.yaml"
    expected = gen["cases"](gen["public_keys"](public))
    shipped = yaml.safe_load((ROOT / "perfmodel" / "validation" / "cases_grid.yaml").read_text())
    assert shipped == expected and len(shipped) == 293
    assert len(gen["public_keys"](public)) == 35
    ids = [c["id"] for paths in builtin_case_sets()["all"] for c in yaml.safe_load(paths.read_text())]
    assert len(ids) == len(set(ids))


BORROW = """\
- id: D1
  kind: train
  source: "Some Paper (arXiv:2205.05198), Table 3"
  system: dgx-h100
  gpus: 32
  model: llama-3.1-70b
  train: {seq_len: 4096, global_batch: 48, micro_batch: 1, tp: 8, pp: 4, dp: 1, vp: 5, precision: bf16,
          recompute: selective}
  measured: {metric: step_time_s, value: 10.0}
- id: D2
  kind: train
  source: "Another paper, Table 9"
  system: dgx-h100
  gpus: 32
  model: llama-3.1-70b
  train: {seq_len: 4096, global_batch: 64, micro_batch: 2, tp: 8, pp: 4, dp: 1, precision: bf16,
          recompute: selective}
  measured: {metric: step_time_s, value: 10.0}
- id: B1
  kind: train
  source: "Some Paper (arXiv:2205.05198), section 6"
  system: dgx-h100
  gpus: 128
  model: llama-3.1-70b
  train: {seq_len: 4096, global_batch: null, tp: 8, pp: 4, dp: 4, precision: bf16, recompute: full}
  measured: {metric: mfu, value: 0.4}
- id: B2
  kind: train
  source: "Some Paper (arXiv:2205.05198), section 6"
  system: dgx-h100
  gpus: 64
  model: llama-3.1-70b
  train: {seq_len: 4096, global_batch: null, tp: 8, pp: 8, dp: 1, precision: bf16}
  measured: {metric: mfu, value: 0.4}
"""


def test_unstated_batch_borrows_the_same_papers_configuration(tmp_path, db):
    """B1 leaves its batch out; D1 (same paper, model, system, TP, PP) runs 48 per replica with micro-batch 1
    and 5 chunks, so B1 is predicted as 4 x 48 = 192 with those, and says so. D2 matches too but cites
    another paper. B2's PP has no donor: it stays unpredicted."""
    from perfmodel.training import estimate_training

    f = tmp_path / "t.yaml"
    f.write_text(BORROW)
    res = {r.id: r for r in run_validation([f], db=db)}
    direct = estimate_training("llama-3.1-70b", "dgx-h100", 128, seq_len=4096, global_batch=192, tp=8, pp=4, dp=4,
                               vp=5, micro_batch=1, precision="bf16", recompute="full", db=db)
    assert res["B1"].status == "ok" and res["B1"].predicted == pytest.approx(direct.mfu)
    assert res["B1"].reason == ("global batch not stated: 48 per replica x DP 4 = 192 (micro_batch 1, vp 5), "
                                "as case D1 runs the same model, TP and PP")
    assert res["D1"].reason is None
    assert res["B2"].status == "unsupported" and "global batch" in res["B2"].reason
    out = CliRunner().invoke(app, ["validate", str(f)])
    assert out.exit_code == 0 and "B1*" in out.stdout and "* B1: global batch not stated" in out.stdout


def test_online_cases_are_the_generator_output():
    """cases_online.yaml is exactly what benchmarks/cases/trtllm_014_online.py writes: the finite-rate rows the
    server kept up with (reported req/s within 1 of the offered rate), a TTFT and an ITL case each, run as the
    server scenario at that rate; the rows that fell behind (70B at 16 req/s finishing 12) are not there."""
    import runpy

    import yaml

    from conftest import ROOT

    gen = runpy.run_path(str(ROOT / "benchmarks" / "cases" / "trtllm_014_online.py"))
    shipped = yaml.safe_load((ROOT / "perfmodel" / "validation" / "cases_online.yaml").read_text())
    assert shipped == gen["cases"]() and len(shipped) == 88
    assert gen["kept_up"](8, 7) and gen["kept_up"](32, 31) and not gen["kept_up"](16, 12)
    first = {(c["measured"]["metric"], c["measured"]["value"]) for c in shipped[:2]}
    assert first == {("ttft_ms", 62), ("tpot_ms", 21)}  # 70B, H100, TP 4, 467/256 at 2 req/s
    assert all(c["infer"]["scenario"] == "server" and c["infer"]["rate"] for c in shipped)
    assert not any(c["infer"]["rate"] == 16 and c["model"] == "llama-3.1-70b" and c["infer"]["osl"] == 256
                   for c in shipped)


def test_a_server_runs_request_count_does_not_turn_it_into_a_burst(tmp_path, db):
    """`requests` in a server case is the run's size; the steady-state prediction is the same without it."""
    base = """\
- id: S1
  kind: infer
  source: synthetic
  system: 1 x h100-sxm
  gpus: 1
  model: llama-3.1-8b
  infer: {isl: 467, osl: 256, tp: 1, precision: bf16, scenario: server, rate: 4.0, REQ engine: TensorRT-LLM}
  measured: {metric: tpot_ms, value: 9}
"""
    f1, f2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    f1.write_text(base.replace("REQ", "requests: 500,"))
    f2.write_text(base.replace("REQ", ""))
    (a,), (b,) = run_validation([f1], db=db), run_validation([f2], db=db)
    assert a.status == "ok" and a.predicted == pytest.approx(b.predicted)
