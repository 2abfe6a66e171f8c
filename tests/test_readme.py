"""The README's promises: its error table is what `perfmodel validate --markdown` prints now, and its two
set-up commands are the ones .ci/run and a new user run."""

from __future__ import annotations

import re

import pytest

from typer.testing import CliRunner

from conftest import ROOT
from perfmodel.cli import app


@pytest.mark.parametrize("marker,case_set", [("validate-table", "public"), ("validate-measured", "measured")])
def test_readme_error_tables_are_current(marker, case_set):
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", text, re.S)
    assert m, f"README lost its {marker} markers"
    assert f"perfmodel validate --set {case_set} --markdown" in text
    res = CliRunner().invoke(app, ["validate", "--set", case_set, "--markdown"])
    assert res.exit_code == 0, res.output
    assert m.group(1).strip() == res.stdout.strip(), f"rerun `perfmodel validate --set {case_set} --markdown`"


def test_readme_commands_match_ci():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks[0].startswith("pip install . && perfmodel estimate infer")
    assert blocks[1] == 'pip install ".[dev]" && python -m pytest -q'
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
