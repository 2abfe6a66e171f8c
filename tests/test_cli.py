"""The command line through typer's CliRunner: tables for people, --json for machines, exit 2 on bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import DATA, IDS
from perfmodel import __version__
from perfmodel.cli import app

runner = CliRunner()


def run(*args: str, code: int = 0):
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    return res


def run_json(*args: str):
    return json.loads(run(*args, "--json").stdout)


def test_version():
    assert run("--version").stdout.strip() == f"perfmodel {__version__}"


def test_help_everywhere():
    for cmd in ([], ["hardware"], ["hardware", "list"], ["hardware", "show"], ["hardware", "validate"],
                ["models"], ["models", "list"], ["models", "show"]):
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.stdout


def test_hardware_list_shows_every_id():
    out = run("hardware", "list").stdout
    for kind in ("accelerator", "system", "tier", "link"):
        for i in IDS[kind]:
            assert i in out, i
    assert "989.4" in out and "3,350" in out  # H100 SXM dense BF16 and HBM GB/s


def test_hardware_list_json():
    rows = run_json("hardware", "list")
    by_id = {r["id"]: r for r in rows}
    assert set(IDS["accelerator"]) <= set(by_id)
    assert by_id["h100-sxm"]["kind"] == "accelerator"
    assert by_id["h100-sxm"]["bf16_tflops"] == pytest.approx(989.4)
    assert by_id["dgx-h100"]["scale_up_gbps_per_accelerator"] == pytest.approx(450)
    assert {r["kind"] for r in run_json("hardware", "list", "--kind", "link")} == {"link"}


def test_hardware_list_bad_kind():
    res = run("hardware", "list", "--kind", "gpu", code=2)
    assert "--kind" in res.stderr and "accelerator" in res.stderr


def test_hardware_show_prints_sources():
    out = run("hardware", "show", "h100-sxm").stdout
    assert "989.4" in out and "TFLOP/s" in out
    assert "H100 Tensor Core GPU Architecture" in out
    assert "peak_tflops.bf16" in out and "memory_bandwidth_gbps" in out


def test_hardware_show_json_shape():
    doc = run_json("hardware", "show", "h100-sxm")
    assert doc["id"] == "h100-sxm" and doc["kind"] == "accelerator"
    bf16 = doc["peak_tflops"]["bf16"]
    assert bf16["value"] == pytest.approx(989.4) and bf16["unit"] == "TFLOP/s" and "H100" in bf16["source"]
    assert doc["memory_gb"]["unit"] == "GB"


def test_hardware_show_system_derived_bandwidth():
    out = run("hardware", "show", "dgx-h100").stdout
    assert "scale-up 450 GB/s per accelerator" in out


def test_unknown_id_exit_2_with_suggestion():
    res = run("hardware", "show", "h100-smx", code=2)
    assert res.stderr.strip().count("\n") == 0
    assert "unknown" in res.stderr and "h100-sxm" in res.stderr
    assert "Traceback" not in res.output


def test_hardware_validate_good_and_broken(tmp_path, db):
    good = db.files["nvlink4"]
    run("hardware", "validate", str(good))
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("bandwidth_gbps: {value: 25", "bandwidth_gbps: {value: -25"))
    res = run("hardware", "validate", str(good), str(bad), code=2)
    assert f"ok    {good}" in res.stdout
    assert str(bad) in res.stderr and "bandwidth_gbps.value" in res.stderr and "positive" in res.stderr
    assert bad.read_text().count("-25") == 1  # the user's file is untouched


def test_hardware_validate_json(tmp_path, db):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nkind: link\n")
    res = runner.invoke(app, ["hardware", "validate", str(bad), "--json"])
    assert res.exit_code == 2
    (row,) = json.loads(res.stdout)
    assert row["ok"] is False and "link_type" in row["error"] or "name" in row["error"]


def test_specs_override_is_announced(tmp_path, db):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "h100.yaml").write_text(db.files["h100-sxm"].read_text().replace("value: 4.916", "value: 2.0"))
    res = run("hardware", "show", "h100-sxm", "--json", "--specs", str(d))
    assert json.loads(res.stdout)["price_per_hour_usd"]["value"] == 2.0
    assert "overrides" in res.stderr and "h100-sxm" in res.stderr


def test_models_list():
    out = run("models", "list").stdout
    for m in IDS["model"]:
        assert m in out
    rows = run_json("models", "list")
    ds = next(r for r in rows if r["id"] == "deepseek-v3")
    assert ds["params_total"] == pytest.approx(671e9, rel=0.01)
    assert ds["params_active"] == pytest.approx(37e9, rel=0.02)


def test_models_show_deepseek():
    out = run("models", "show", "deepseek-v3").stdout
    assert "671B" in out and "37.55B" in out and "MLA" in out
    doc = run_json("models", "show", "deepseek-v3")
    assert doc["id"] == "deepseek-v3" and doc["experts"] == 256 and doc["kv_lora_rank"] == 512
    assert doc["params_total"] == 671_026_404_352


def test_models_show_hf_config_path():
    doc = run_json("models", "show", str(DATA / "hf_configs" / "gpt2.json"))
    assert doc["params_total"] == 124_439_808


def test_models_show_errors():
    res = run("models", "show", "deepseek-v4", code=2)
    assert "deepseek-v3" in res.stderr
    res = run("models", "show", str(DATA / "hf_configs" / "unsupported-t5.json"), code=2)
    assert "model_type" in res.stderr and "t5" in res.stderr


def test_plan_serve_asks_for_a_budget_or_a_rate():
    args = ["plan", "serve", "--model", "llama-3.1-8b", "--system", "dgx-h100", "--isl", "1000", "--osl", "300",
            "--slo-ttft-ms", "2000", "--slo-tpot-ms", "50"]
    neither = CliRunner().invoke(app, args)
    assert neither.exit_code == 2 and "expected one of them" in neither.output
    both = CliRunner().invoke(app, args + ["--gpus", "8", "--rate", "10"])
    assert both.exit_code == 2 and "not both" in both.output


def test_output_into_a_closed_pipe_ends_quietly():
    """``perfmodel ... | head -1``: when the reader has gone, a write inside a command raises BrokenPipeError;
    the CLI stops with exit 1 and no 'internal error' line, as Unix tools do."""
    import typer

    from perfmodel.cli.common import Group

    demo = typer.Typer(cls=Group)

    @demo.command()
    def write() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    @demo.command()
    def other() -> None:
        pass

    res = CliRunner().invoke(demo, ["write"])
    assert res.exit_code == 1 and "internal error" not in res.output
