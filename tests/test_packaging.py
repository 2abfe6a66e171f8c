"""A non-editable wheel ships the spec database and the model catalog inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (whl,) = out.glob("perfmodel-*.whl")
    return whl


def test_wheel_contains_specs_and_catalog(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    specs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "hardware_specs").rglob("*.yaml"))
    assert specs, "no spec files in the checkout"
    missing = [s for s in specs if f"perfmodel/{s}" not in names]
    assert not missing, f"spec files not in the wheel: {missing[:5]}"
    assert "perfmodel/catalog/models.yaml" in names
    for case_set in ("cases_public", "cases_measured", "cases_grid", "datasets"):
        assert f"perfmodel/validation/{case_set}.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_loads_database(wheel, tmp_path):
    """Unpack the wheel alone (no checkout on the path) and load every spec from inside the package."""
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import perfmodel, pathlib; from perfmodel.specdb import load_database, builtin_specs_dir; "
        "d = builtin_specs_dir(); assert 'site' in str(d), d; db = load_database(); "
        "print(len(db.all_ids()))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout) >= 60
