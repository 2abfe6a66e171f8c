"""The `perfmodel` command line: a thin typer/rich layer over the library."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import __version__
from . import estimate, hardware, models, plan
from .calibrate import calibrate
from .validate import validate
from .common import Group

app = typer.Typer(
    cls=Group,
    help="perfmodel: analytical performance model for LLM training and serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(hardware.app, name="hardware")
app.add_typer(models.app, name="models")
app.add_typer(estimate.app, name="estimate")
app.add_typer(plan.app, name="plan")
app.command("validate")(validate)
app.command("calibrate")(calibrate)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perfmodel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """perfmodel: predict LLM training and serving performance from hardware specs and first principles."""


def main() -> None:
    app()
