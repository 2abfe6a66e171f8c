"""`perfmodel calibrate`: fit a system's efficiency parameters to your measurements, write an overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..calibrate import calibrate as run_calibration
from ..calibrate import write_overlay
from .common import JsonOpt, SpecsOpt, console, database, print_json


def calibrate(
    measurements: Annotated[list[Path], typer.Argument(metavar="MEASUREMENTS.yaml...",
                                                       help="Cases (SCHEMA.md): gemm, membw, link, comm.")],
    system: Annotated[str, typer.Option("--system", help="System id or 'N x DEVICE' the measurements come from.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Overlay YAML to write (load it with --specs).")],
    folds: Annotated[int, typer.Option("--folds", help="k for k-fold cross-validation.")] = 5,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Fit GEMM/memory fractions, the kernel floor and link efficiency by least squares; write an overlay.

    Example: perfmodel calibrate my_h100_runs.yaml --system dgx-h100 -o h100-calibrated.yaml
    """
    db = database(specs)
    cal = run_calibration(measurements, system, folds, db)
    write_overlay(cal, output, measurements, force)
    doc = {"system": cal.system, "device": cal.device, "link": cal.link, "parameters": cal.params,
           "before": cal.before, "after": cal.after, "cross_validated": cal.cross_validated,
           "cases": cal.n_cases, "folds": cal.folds, "overlay": str(output)}
    if json_out:
        print_json(doc)
        return
    t = Table(title=f"calibrated {cal.device} / {cal.link} from {cal.n_cases} measurements", title_justify="left")
    t.add_column("parameter")
    t.add_column("value", justify="right")
    for k, v in cal.params.items():
        t.add_row(k, f"{v:.4g}")
    console.print(t)
    e = Table(title="median |error| (share within 10%)", title_justify="left")
    for col in ("before", "after (fit on all)", f"{cal.folds}-fold cross-validated"):
        e.add_column(col, justify="right")
    e.add_row(*[f"{d['median_abs_error']:.1%} ({d['within_10']:.0%})" for d in (cal.before, cal.after,
                                                                                 cal.cross_validated)])
    console.print(e)
    console.print(f"overlay written to {output}; use it with --specs {output}")
