"""The shipped database: every IDS.md id, every number sourced, user overrides, `N x DEVICE`."""

from __future__ import annotations

import pytest

from conftest import IDS, ids_from_shared
from perfmodel.errors import InputError, UnknownIdError
from perfmodel.hardware import Accelerator, System
from perfmodel.specdb import load_database

HW_KINDS = ("accelerator", "system", "tier", "link")


@pytest.mark.parametrize("kind", HW_KINDS)
def test_every_ids_md_id_is_present(db, kind):
    missing = [i for i in IDS[kind] if i not in db.entries[kind]]
    assert not missing, f"{kind}s missing from hardware_specs: {missing}"


def test_ids_md_copy_matches_shared():
    shared = ids_from_shared()
    if shared is None:
        pytest.skip("../shared/validation/IDS.md is not beside this checkout")
    for kind, ids in shared.items():
        assert sorted(ids) == sorted(IDS[kind]), f"tests' copy of IDS.md is stale for {kind}s"


def test_every_number_has_a_resolvable_source(db):
    for kind in HW_KINDS:
        for eid, entry in db.entries[kind].items():
            for path, spec in entry.specs():
                assert spec.source or spec.derived or spec.assumed, f"{eid}.{path}"
                if spec.source:
                    src = entry.sources[spec.source]
                    assert src.title.strip(), f"{eid}.{path}: empty source title"


def test_assumptions_are_marked_not_hidden(db):
    """A number no source gives is an explicit `assumed`, never a `derived` note that says 'assumed'."""
    for kind in HW_KINDS:
        for eid, entry in db.entries[kind].items():
            for path, spec in entry.specs():
                text = (spec.derived or "").lower()
                assert not text.startswith(("assumed", "placeholder", "guess")), f"{eid}.{path}"


def test_dense_peaks_are_sane(db):
    for eid, acc in db.accelerators.items():
        assert isinstance(acc, Accelerator)
        pk = {d.value: s.value for d, s in acc.peak_tflops.items()}
        if "bf16" in pk and "fp8" in pk:
            assert pk["fp8"] >= pk["bf16"], eid
        if "fp32" in pk and "bf16" in pk:
            assert pk["bf16"] >= pk["fp32"], eid
        if "fp4" in pk and "fp8" in pk:
            assert pk["fp4"] >= pk["fp8"], eid


def test_h100_sxm_numbers(db):
    h = db.accelerator("h100-sxm")
    assert h.peak("bf16") == pytest.approx(989.4)
    assert h.peak("fp8") == pytest.approx(1978.9)
    assert h.memory_bandwidth_gbps.value == 3350
    assert h.compute_units.value == 132


def test_system_references_resolve(db):
    for sid, sysm in db.systems.items():
        assert isinstance(sysm, System)
        for _, kind, ref in sysm.referenced_ids():
            assert ref in db.entries[kind], f"{sid} -> {ref}"
        assert db.scale_up_gbps(sysm) > 0


def test_dgx_h100_aggregate_bandwidths(db):
    s = db.system("dgx-h100")
    assert db.scale_up_gbps(s) == pytest.approx(450)  # 18 NVLink4 links x 25 GB/s per direction
    assert db.scale_out_gbps(s) == pytest.approx(50)  # one 400 Gb/s NIC per GPU


def test_every_accelerator_has_a_default_system(db):
    for aid, acc in db.accelerators.items():
        if aid == "mi250x":  # Frontier and its users count GCDs: `N x mi250x-gcd`
            with pytest.raises(InputError, match="mi250x-gcd"):
                db.resolve_system("2 x mi250x")
            continue
        ref = db.resolve_system(f"2 x {aid}")
        assert ref.accelerator.id == aid and ref.gpus == 2


def test_n_x_device(db):
    ref = db.resolve_system("16 x h100-sxm")
    assert ref.system.id == "dgx-h100" and ref.gpus == 16 and ref.nodes == 2
    with pytest.raises(UnknownIdError, match="h100-sxm"):
        db.resolve_system("8 x h100-smx")
    with pytest.raises(InputError, match="--gpus"):
        db.resolve_system("8 x h100-sxm", gpus=4)


def test_unknown_id_suggests_closest(db):
    with pytest.raises(UnknownIdError) as ei:
        db.get("h100-sxn")
    assert "h100-sxm" in ei.value.suggestions
    with pytest.raises(UnknownIdError) as ei:
        db.system("dgx-h10")
    assert "dgx-h100" in str(ei.value)


def test_user_override_is_recorded(tmp_path, db, monkeypatch):
    text = db.files["h100-sxm"].read_text().replace("value: 4.916", "value: 2.0")
    d = tmp_path / "mine"
    d.mkdir()
    (d / "h100.yaml").write_text(text)
    mine = load_database((str(d),))
    assert mine.accelerator("h100-sxm").price_per_hour_usd.value == 2.0
    assert [o.id for o in mine.overrides] == ["h100-sxm"]
    assert db.accelerator("h100-sxm").price_per_hour_usd.value == pytest.approx(4.916)
    monkeypatch.setenv("PERFMODEL_SPECS", str(d))
    assert load_database().accelerator("h100-sxm").price_per_hour_usd.value == 2.0


def test_user_override_cannot_change_kind(tmp_path, db):
    text = db.files["nvlink4"].read_text().replace("id: nvlink4", "id: h100-sxm")
    d = tmp_path / "mine"
    d.mkdir()
    (d / "x.yaml").write_text(text)
    with pytest.raises(InputError, match="cannot override it with a link"):
        load_database((str(d),))


def test_specs_dir_that_does_not_exist():
    with pytest.raises(InputError, match="not a directory"):
        load_database(("/nonexistent/specs/dir",))
