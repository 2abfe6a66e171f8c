"""Spec files: every schema rule gives one line naming the file, the field and what was expected."""

from __future__ import annotations

import textwrap

import pytest

from perfmodel.errors import InputError
from perfmodel.specdb import Database, parse_entry, read_yaml, validate_files

GOOD_LINK = """\
id: test-link
kind: link
name: A test link
link_type: pcie
scope: host
sources:
  spec: {title: "A spec sheet", url: "https://example.org/spec"}
bandwidth_gbps: {value: 63, source: spec}
latency_us: {value: 1.0, source: spec}
"""

GOOD_ACC = """\
id: test-gpu
kind: accelerator
name: Test GPU
vendor: test
sources:
  ds: {title: "Test datasheet"}
peak_tflops:
  bf16: {value: 100, source: ds}
  fp8: {value: 200, source: ds}
sparse_tflops:
  bf16: {value: 200, source: ds}
memory_type: HBM3
memory_gb: {value: 80, source: ds}
memory_bandwidth_gbps: {value: 3000, source: ds}
tdp_w: {value: 500, source: ds}
"""


def _err(path) -> str:
    with pytest.raises(InputError) as ei:
        parse_entry(read_yaml(path), path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_good_files_parse(write):
    link, _ = parse_entry(read_yaml(write("l.yaml", GOOD_LINK)), "l.yaml")
    assert link.bandwidth_gbps.value == 63
    acc, _ = parse_entry(read_yaml(write("a.yaml", GOOD_ACC)), "a.yaml")
    assert acc.peak("bf16") == 100
    assert acc.peak("fp16") == 100  # fp16 and bf16 share the tensor peak when only one is given
    assert acc.peak("int8") == 200


@pytest.mark.parametrize(
    "old,new,field,expected",
    [
        ("bandwidth_gbps: {value: 63", "bandwidth_gbps: {value: -63", "bandwidth_gbps.value", "positive"),
        ("bandwidth_gbps: {value: 63", "bandwidth_gbps: {value: 0", "bandwidth_gbps.value", "positive"),
        ("bandwidth_gbps: {value: 63", "bandwidth_gbps: {value: 63000000000", "bandwidth_gbps.value", "bytes or bits"),
        ("latency_us: {value: 1.0, source: spec}", "latency_us: {value: 1.0}", "latency_us", "source"),
        ("latency_us: {value: 1.0, source: spec}", "latency_us: {value: 1.0, source: nope}", "latency_us.source",
         "not a key of 'sources'"),
        ("scope: host", "scope: hostt", "scope", "'scale_up'"),
        ("scope: host\n", "scope: host\nspeed: 3\n", "speed", "unknown field"),
        ("bandwidth_gbps: {value: 63, source: spec}\n", "", "bandwidth_gbps", "required field is missing"),
        ("bandwidth_gbps: {value: 63", "bandwidth_gbps: {value: fast", "bandwidth_gbps.value", "number"),
    ],
)
def test_link_errors_name_the_field(write, old, new, field, expected):
    assert old in GOOD_LINK
    msg = _err(write("bad.yaml", GOOD_LINK.replace(old, new)))
    assert field in msg, msg
    assert expected in msg, msg


def test_sparse_below_dense_is_rejected(write):
    msg = _err(write("a.yaml", GOOD_ACC.replace("bf16: {value: 200, source: ds}", "bf16: {value: 50, source: ds}")))
    assert "sparse_tflops.bf16" in msg and "below dense" in msg


def test_fraction_given_in_percent_is_rejected(write):
    text = GOOD_ACC + "efficiency:\n  gemm_peak_fraction: {value: 80, source: ds}\n"
    msg = _err(write("a.yaml", text))
    assert "efficiency.gemm_peak_fraction.value" in msg and "percent" in msg


def test_memory_in_bytes_is_caught(write):
    msg = _err(write("a.yaml", GOOD_ACC.replace("memory_gb: {value: 80", "memory_gb: {value: 80000000000")))
    assert "memory_gb.value" in msg and "GB" in msg


def test_visible_memory_above_capacity_is_rejected(write):
    msg = _err(write("a.yaml", GOOD_ACC + "memory_visible_gb: {value: 81, source: ds}\n"))
    assert "memory_visible_gb" in msg and "cannot see more" in msg


def test_visible_memory_is_what_frameworks_allocate_from(write, db):
    from perfmodel.specdb import load_database

    path = write("a.yaml", GOOD_ACC + "memory_visible_gb: {value: 79, source: ds}\n")
    acc = load_database((str(path),)).accelerator("test-gpu")
    assert acc.usable_memory_gb == 79 and acc.memory_gb.value == 80
    assert db.accelerator("mi300x").usable_memory_gb == db.accelerator("mi300x").memory_gb.value  # not measured


def test_unknown_dtype(write):
    msg = _err(write("a.yaml", GOOD_ACC.replace("  fp8: {value: 200", "  fp9: {value: 200")))
    assert "peak_tflops" in msg and "fp9" in msg


def test_bad_kind_and_not_a_mapping(write):
    msg = _err(write("k.yaml", GOOD_LINK.replace("kind: link", "kind: gizmo")))
    assert "kind" in msg and "accelerator, tier, link, system" in msg
    msg = _err(write("l.yaml", "- just\n- a list\n"))
    assert "expected a mapping" in msg


def test_yaml_syntax_error_names_the_line(write):
    p = write("s.yaml", "id: x\nkind: link\nname: [unclosed\nscope: host\n")
    with pytest.raises(InputError) as ei:
        read_yaml(p)
    assert str(p) in str(ei.value) and "line" in str(ei.value)


def test_count_must_be_whole(write, db):
    text = (db.files["dgx-h100"]).read_text().replace("accelerators_per_node: {value: 8", "accelerators_per_node: {value: 7.5")
    p = write("dgx-h100.yaml", text)
    (res,) = validate_files([p])
    assert res[1] is not None and "accelerators_per_node.value" in res[1] and "whole" in res[1]


def test_system_with_unknown_accelerator_suggests(write, db):
    text = db.files["dgx-h100"].read_text().replace("accelerator: h100-sxm", "accelerator: h100-smx")
    p = write("sys.yaml", text.replace("id: dgx-h100", "id: my-dgx"))
    (res,) = validate_files([p])
    assert res[1] is not None
    assert "accelerator" in res[1] and "h100-smx" in res[1] and "h100-sxm" in res[1]


def test_duplicate_builtin_id_is_an_error(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    for name in ("a.yaml", "b.yaml"):
        (d / name).write_text(GOOD_LINK)
    db = Database()
    with pytest.raises(InputError, match="already defined"):
        db.load_dir(d, user=False)


def test_every_number_in_a_file_is_walked(write):
    acc, _ = parse_entry(read_yaml(write("a.yaml", GOOD_ACC)), "a.yaml")
    paths = {p for p, _ in acc.specs()}
    assert {"peak_tflops.bf16", "peak_tflops.fp8", "sparse_tflops.bf16", "memory_gb", "memory_bandwidth_gbps",
            "tdp_w"} == paths


def test_extends_overlay_merges_onto_base(write):
    base, raw = parse_entry(read_yaml(write("a.yaml", GOOD_ACC)), "a.yaml")
    over = textwrap.dedent("""\
        extends: test-gpu
        sources:
          quote: {title: "My cloud quote"}
        price_per_hour_usd: {value: 2.5, source: quote}
        """)
    entry, _ = parse_entry(read_yaml(write("o.yaml", over)), "o.yaml", {"test-gpu": raw})
    assert entry.id == "test-gpu"
    assert entry.price_per_hour_usd.value == 2.5
    assert entry.memory_gb.value == 80 and "ds" in entry.sources


def test_extends_unknown_base(write):
    with pytest.raises(InputError, match="test-gpu"):
        parse_entry(read_yaml(write("o.yaml", "extends: test-gpx\n")), "o.yaml", {"test-gpu": {}})


@pytest.mark.parametrize("block,field", [
    ("sustained_gemm_ratio:\n    bf16: {value: 86, source: ds}", "efficiency.sustained_gemm_ratio.bf16.value"),
    ("attention_peak_fraction:\n    forward: {value: 58, source: ds}", "efficiency.attention_peak_fraction.forward.value"),
    ("grouped_gemm_ratio:\n    fp8: {value: 82, source: ds}", "efficiency.grouped_gemm_ratio.fp8.value"),
])
def test_measured_efficiency_fractions_in_percent_are_rejected(write, block, field):
    msg = _err(write("a.yaml", GOOD_ACC + "efficiency:\n  " + block + "\n"))
    assert field in msg and "percent" in msg


def test_attention_pass_must_be_forward_or_backward(write):
    msg = _err(write("a.yaml", GOOD_ACC + "efficiency:\n  attention_peak_fraction:\n    sideways: {value: 0.5, source: ds}\n"))
    assert "attention_peak_fraction" in msg and "sideways" in msg
