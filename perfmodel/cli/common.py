"""What every command shares: the error boundary, --json/--specs options, and output helpers.

Bad input (:class:`~perfmodel.errors.InputError`) becomes one line on stderr and exit code 2; an
unexpected exception is a bug: one line and exit 1 (set ``PERFMODEL_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ..errors import InputError
from ..specdb import Database, load_database

def _width() -> int | None:
    """Terminal width on a TTY; wide (COLUMNS or 160) when piped, so tables and goldens are stable."""
    if sys.stdout.isatty():
        return None
    try:
        return max(int(os.environ.get("COLUMNS", "160")), 100)
    except ValueError:
        return 160


console = Console(highlight=False, soft_wrap=False, width=_width())
err_console = Console(stderr=True, highlight=False)


class Group(TyperGroup):
    """Root group: turns InputError (anywhere below) into one line + exit 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=2) from None
        except BrokenPipeError:
            # the reader went away (``perfmodel ... | head``): stop quietly, as Unix tools do
            try:  # later flushes (at exit) must not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass
            raise typer.Exit(code=1) from None
        except Exception as e:
            if _framework_exception(e) or os.environ.get("PERFMODEL_DEBUG"):
                raise
            typer.echo(f"internal error: {type(e).__name__}: {e} (PERFMODEL_DEBUG=1 shows the traceback)",
                       err=True)
            raise typer.Exit(code=1) from None


def _framework_exception(e: Exception) -> bool:
    """Exit/Abort/usage errors that typer (or the click it may vendor) handles itself."""
    if isinstance(e, (typer.Exit, typer.Abort)):
        return True
    return type(e).__module__.split(".")[0] in ("click", "typer")


ModelOpt = Annotated[str, typer.Option("--model", help="Catalog id or path to a Hugging Face config.json.")]
SystemOpt = Annotated[str, typer.Option("--system", help="System id or 'N x DEVICE' (e.g. 8 x h100-sxm).")]
HostMemoryOpt = Annotated[Optional[str], typer.Option("--host-memory", help="Host DRAM tier TIER[:SIZE].")]
CxlOpt = Annotated[Optional[str], typer.Option("--cxl", help="CXL cards TIER[:SIZE][,...].")]
NvmeOpt = Annotated[Optional[str], typer.Option("--nvme", help="NVMe drives TIER[:SIZE][,...].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")]
SpecsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--specs", help="Extra spec files or folders (also PERFMODEL_SPECS); same id overrides.",
                 metavar="DIR"),
]


def database(specs: list[str] | None) -> Database:
    """The database with the user's spec folders; says on stderr which built-in entries they replace."""
    db = load_database(tuple(specs or ()))
    for o in db.overrides:
        typer.echo(f"note: {o.id} from {o.user_file} overrides the entry in {o.replaced_file}", err=True)
    return db


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def print_assumptions(assumptions: list[str]) -> None:
    """The assumptions an estimate had to make, dimmed under its tables."""
    for a in assumptions:
        console.print(f"[dim]assumption: {a}[/dim]")


def summary_table() -> Table:
    """The headline table of an estimate: bold label, right-aligned value, unit or remark."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_column()
    return t


def _json_default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "value"):
        return o.value
    return str(o)


def fmt_num(x: float | None, digits: int = 4) -> str:
    """Compact human number: 989.4, 3,350, 0.6, 1.2e+04 avoided for ordinary magnitudes."""
    if x is None:
        return "-"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.{digits}g}"


def fmt_params(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.3g}T"
    if n >= 1e9:
        return f"{n / 1e9:.4g}B"
    return f"{n / 1e6:.4g}M"
