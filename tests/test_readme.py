"""The README's promises: its error table is what `perfmodel validate --markdown` prints now, and its two
set-up commands are the ones .ci/run and a new user run."""

from __future__ import annotations

import re

import pytest

from typer.testing import CliRunner

from conftest import ROOT
from perfmodel.cli import app


@pytest.mark.parametrize("marker,args", [("validate-table", ["--set", "public"]), ("validate-measured", ["--set", "measured"]),
                                         ("validate-by-device", ["--set", "public", "--by", "device"]),
                                         ("validate-grid", ["--set", "grid"]),
                                         ("validate-grid-by-device", ["--set", "grid", "--by", "device"]),
                                         ("validate-online", ["--set", "online"]),
                                         ("validate-online-by-device", ["--set", "online", "--by", "device"])])
def test_readme_error_tables_are_current(marker, args):
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", text, re.S)
    assert m, f"README lost its {marker} markers"
    command = "perfmodel validate " + " ".join(args) + " --markdown"
    assert command in text
    res = CliRunner().invoke(app, ["validate", *args, "--markdown"])
    assert res.exit_code == 0, res.output
    assert m.group(1).strip() == res.stdout.strip(), f"rerun `{command}`"


def test_readme_commands_match_ci():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks[0].startswith("pip install . && perfmodel estimate infer")
    assert blocks[1] == 'pip install ".[dev]" && python -m pytest -q'
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
