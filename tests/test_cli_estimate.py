"""`perfmodel estimate infer|comm` through CliRunner: JSON keys from CLI.md, tables, plots, bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from perfmodel.cli import app

runner = CliRunner()
INFER = ["estimate", "infer", "--model", "llama-3.1-8b", "--system", "1 x h100-sxm", "--isl", "1000", "--osl", "500",
         "--precision", "fp8"]


def test_infer_json_keys():
    res = runner.invoke(app, [*INFER, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in ("ttft_ms", "tpot_ms", "e2e_latency_s", "output_tokens_per_s", "total_tokens_per_s", "batch",
                "memory_per_gpu_bytes", "bound"):
        assert key in doc
    assert set(doc["bound"]) == {"prefill", "decode"}
    assert {"weights", "kv_cache", "activations"} <= set(doc["memory_per_gpu_bytes"])
    assert doc["total_tokens_per_s"] == pytest.approx(doc["output_tokens_per_s"] * 1500 / 500)


def test_infer_table_breakdown_and_plot(tmp_path):
    png = tmp_path / "roof.png"
    res = runner.invoke(app, [*INFER, "--breakdown", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    for text in ("TTFT", "TPOT", "output tokens/s", "per-operator breakdown", "attention", "mlp_up", "memory per GPU"):
        assert text in res.stdout
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--tp", "3", "--gpus", "3"], "--tp 3"),
        (["--precision", "fp7"], "--precision"),
        (["--scenario", "online"], "--scenario"),
        (["--batch", "-4"], "--batch"),
        (["--osl-std", "1e9"], "--osl-std"),
    ],
)
def test_infer_bad_input_one_line_exit_2(extra, needle):
    res = runner.invoke(app, [*INFER, *extra])
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.output


def test_infer_does_not_fit():
    res = runner.invoke(app, ["estimate", "infer", "--model", "llama-3.1-405b", "--system", "1 x l4", "--isl", "10",
                              "--osl", "10"])
    assert res.exit_code == 2 and "short by" in res.stderr


def test_comm_sweep_json():
    res = runner.invoke(app, ["estimate", "comm", "--collective", "all_reduce", "--bytes", "1KiB..1MiB", "--gpus", "8",
                              "--system", "dgx-h100", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 11 and rows[0]["bytes"] == 1024 and rows[-1]["bytes"] == 1 << 20
    for r in rows:
        assert {"time_us", "algbw_gbps", "busbw_gbps", "algorithm"} <= set(r)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * 1.75)


def test_comm_plot_and_errors(tmp_path):
    png = tmp_path / "bw.png"
    res = runner.invoke(app, ["estimate", "comm", "--collective", "all_gather", "--bytes", "1MiB..1GiB", "--gpus",
                              "16", "--system", "dgx-h100", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 5000
    res = runner.invoke(app, ["estimate", "comm", "--collective", "all_reduce", "--bytes", "12XB", "--gpus", "8",
                              "--system", "dgx-h100"])
    assert res.exit_code == 2 and "--bytes" in res.stderr and "unit" in res.stderr
    res = runner.invoke(app, ["estimate", "comm", "--collective", "all_reduce", "--bytes", "1MiB", "--gpus", "8",
                              "--system", "dgx-h10"])
    assert res.exit_code == 2 and "dgx-h100" in res.stderr


def test_infer_burst_json_and_table():
    """--requests N: a burst run to the last token; throughput = N x osl / makespan, and the table says so."""
    res = runner.invoke(app, [*INFER, "--requests", "64", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["requests"] == 64 and doc["burst_makespan_s"] > 0
    assert doc["output_tokens_per_s"] == pytest.approx(64 * 500 / doc["burst_makespan_s"])
    assert doc["e2e_latency_s"] <= doc["burst_makespan_s"] + 1e-9
    table = runner.invoke(app, [*INFER, "--requests", "64"])
    assert table.exit_code == 0 and "issued at once" in table.stdout
    clash = runner.invoke(app, [*INFER, "--requests", "64", "--scenario", "server", "--rate", "1"])
    assert clash.exit_code == 2 and "--requests" in clash.output


def test_server_json_has_p99_latencies():
    res = runner.invoke(app, [*INFER, "--scenario", "server", "--rate", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ttft_p99_ms"] >= doc["ttft_ms"] and doc["tpot_p99_ms"] >= doc["tpot_ms"]
