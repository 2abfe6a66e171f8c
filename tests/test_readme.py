"""The README's promises: its error table is what `perfmodel validate --markdown` prints now, and its two
set-up commands are the ones .ci/run and a new user run."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from conftest import ROOT
from perfmodel.cli import app


def test_readme_error_table_is_current():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- validate-table:start -->\n(.*?)\n<!-- validate-table:end -->", text, re.S)
    assert m, "README lost its validate table markers"
    res = CliRunner().invoke(app, ["validate", "--markdown"])
    assert res.exit_code == 0, res.output
    assert m.group(1).strip() == res.stdout.strip(), "rerun `perfmodel validate --markdown` and paste the table"


def test_readme_commands_match_ci():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks[0].startswith("pip install . && perfmodel estimate infer")
    assert blocks[1] == 'pip install ".[dev]" && python -m pytest -q'
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
