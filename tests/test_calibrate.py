"""Calibration round trip: measurements the model generates with known parameters (plus noise) give
those parameters back; the overlay loads with --specs; nothing the user gave is overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from perfmodel.calibrate import _with_params, calibrate
from perfmodel.cli import app
from perfmodel.specdb import load_database
from perfmodel.validate import parse_case, predict

TRUTH = {"gemm_peak_fraction.bf16": 0.62, "gemm_peak_fraction.fp8": 0.55, "memory_bandwidth_fraction": 0.72,
         "kernel_floor_us": 7.0, "link": 0.70}


def _synthetic(db, noise: float, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    truth_db = _with_params(db, "h100-sxm", "nvlink4", TRUTH)
    raw = []
    shapes = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192),
              (16384, 8192, 4096), (2048, 14336, 4096)]
    for i, (m, n, k) in enumerate(shapes):
        for dt in ("bf16", "fp8"):
            raw.append({"id": f"G{i}{dt}", "kind": "gemm", "source": "synthetic", "device": "h100-sxm",
                        "gemm": {"m": m, "n": n, "k": k, "dtype": dt}, "measured": {"metric": "tflops", "value": 1}})
    for i, b in enumerate([2**16, 2**20, 2**24, 2**28, 2**32]):
        raw.append({"id": f"B{i}", "kind": "membw", "source": "synthetic", "device": "h100-sxm",
                    "membw": {"op": "copy", "bytes": b}, "measured": {"metric": "gbps", "value": 1}})
    for i, b in enumerate([2**20, 2**24, 2**28, 2**32]):
        raw.append({"id": f"C{i}", "kind": "comm", "source": "synthetic", "system": "dgx-h100", "gpus": 8,
                    "comm": {"collective": "all_reduce", "bytes": b, "nodes": 1, "algorithm": "ring"},
                    "measured": {"metric": "busbw_gbps", "value": 1}})
    for r in raw:
        case = parse_case(r, "synthetic")
        r["measured"]["value"] = float(predict(case, truth_db) * (1 + noise * rng.standard_normal()))
    return raw


def test_round_trip_recovers_parameters(tmp_path, db):
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump(_synthetic(db, noise=0.02)))
    cal = calibrate([f], "dgx-h100", folds=4, db=db)
    for name, true in TRUTH.items():
        assert cal.params[name] == pytest.approx(true, rel=0.06), name
    assert cal.after["median_abs_error"] < 0.03 < cal.before["median_abs_error"]
    assert cal.cross_validated["median_abs_error"] < 0.05


def test_cli_writes_overlay_that_specs_loads(tmp_path, db):
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump(_synthetic(db, noise=0.0)))
    out = tmp_path / "overlay.yaml"
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", str(f), "--system", "dgx-h100", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["parameters"]["memory_bandwidth_fraction"] == pytest.approx(0.72, rel=0.02)
    tuned = load_database((str(out),))
    assert tuned.accelerator("h100-sxm").efficiency.memory_bandwidth_fraction.value == pytest.approx(0.72, rel=0.02)
    assert tuned.link("nvlink4").achievable_fraction.value == pytest.approx(0.70, rel=0.02)
    assert {o.id for o in tuned.overrides} == {"h100-sxm", "nvlink4"}
    before = out.read_text()
    res = runner.invoke(app, ["calibrate", str(f), "--system", "dgx-h100", "-o", str(out)])
    assert res.exit_code == 2 and "--force" in res.stderr and out.read_text() == before
    res = runner.invoke(app, ["calibrate", str(f), "--system", "dgx-h100", "-o", str(f), "--force"])
    assert res.exit_code == 2 and "measurement files" in res.stderr
    assert yaml.safe_load(f.read_text())[0]["id"] == "G0bf16"  # the input is untouched
    res = runner.invoke(app, ["calibrate", str(f), "--system", "dgx-h100", "-o", str(out), "--force"])
    assert res.exit_code == 0


def test_calibrate_rejects_other_devices_and_too_few_cases(tmp_path, db):
    raw = _synthetic(db, 0.0)[:2]
    raw[0]["device"] = "a100-sxm-80gb"
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["calibrate", str(f), "--system", "dgx-h100", "-o", str(tmp_path / "o.yaml")])
    assert res.exit_code == 2 and "a100-sxm-80gb" in res.stderr
    f.write_text(yaml.safe_dump(_synthetic(db, 0.0)[:1]))
    res = CliRunner().invoke(app, ["calibrate", str(f), "--system", "dgx-h100", "-o", str(tmp_path / "o.yaml")])
    assert res.exit_code == 2 and "at least two" in res.stderr
