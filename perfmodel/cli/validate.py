"""`perfmodel validate [FILE...]`: predictions against published measurements, with the error table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress
from rich.table import Table

from ..errors import InputError, did_you_mean
from ..validate import builtin_case_sets, load_cases, run_validation, summarise, summarise_by_device, worst
from .common import JsonOpt, SpecsOpt, console, database, fmt_num, print_json


def validate(
    files: Annotated[Optional[list[Path]], typer.Argument(metavar="[FILE...]",
                                                          help="Case files (SCHEMA.md v1); default: the shipped cases (see --set).")] = None,
    case_set: Annotated[str, typer.Option("--set", help="Shipped cases to run when no FILE is given: public "
                                          "(published measurements), measured (perfmodel's own H100/H200 runs), "
                                          "grid (the rest of TensorRT-LLM 0.17's throughput table), online (TTFT and ITL at "
                                          "finite request rates, TensorRT-LLM 0.14 + Triton) or all.")] = "all",
    kind: Annotated[Optional[str], typer.Option("--kind", help="Only this kind: train, infer, comm, gemm, membw, link.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Predicted vs measured, log-log (PNG/SVG).", metavar="FILE")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print only the summary as a Markdown table.")] = False,
    by: Annotated[str, typer.Option("--by", help="Summarise per kind, or per kind and accelerator (device), with "
                                    "the median lean: positive when the model is optimistic (more throughput, "
                                    "less time than measured).")] = "kind",
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Compare predictions with published measurements; exit 2 only if a case is malformed.

    Example: perfmodel validate --kind infer --plot errors.png
    """
    if by not in ("kind", "device"):
        raise InputError(f"--by: expected kind or device (got '{by}'){did_you_mean(by, ('kind', 'device'))}")
    db = database(specs)
    sets = builtin_case_sets()
    if case_set not in sets:
        raise InputError(f"--set: expected {', '.join(sets)} (got '{case_set}'){did_you_mean(case_set, sets)}")
    paths = list(files) if files else sets[case_set]
    n_cases = len(load_cases(paths)[0])
    show_bar = not json_out and not markdown and console.is_terminal
    with Progress(console=console, transient=True, disable=not show_bar) as bar:
        task = bar.add_task("predicting cases", total=n_cases)
        results = run_validation(paths, kind, db, progress=lambda: bar.advance(task))
    summary = summarise(results)
    by_device = summarise_by_device(results)
    rows = [r.model_dump() for r in results]
    if plot:
        from ..plots import validation_plot

        validation_plot(rows, plot)
    if markdown:
        typer.echo(device_markdown(by_device) if by == "device" else summary_markdown(summary))
    elif json_out:
        print_json({"cases": [{k: r[k] for k in ("id", "kind", "system", "device", "metric", "measured", "predicted",
                                                 "error", "status", "reason")} for r in rows],
                    "summary": summary, "by_device": by_device, "worst": [w.id for w in worst(results)]})
    else:
        _print(results, summary, by_device if by == "device" else None)
        if plot:
            console.print(f"plot written to {plot}")
    invalid = [r for r in results if r.status == "invalid"]
    for r in invalid:
        typer.echo(f"error: {r.reason}", err=True)
    if invalid:
        raise typer.Exit(code=2)


def _print(results, summary, by_device=None) -> None:
    t = Table(title="cases", title_justify="left")
    for col in ("id", "kind", "system", "metric", "measured", "predicted", "error %"):
        t.add_column(col, justify="right" if col in ("measured", "predicted", "error %") else "left", no_wrap=True)
    notes = []
    for r in results:
        if r.status == "ok":
            mark = ""
            if r.reason:
                notes.append(f"{r.id}: {r.reason}")
                mark = "*"
            t.add_row(r.id + mark, r.kind, r.system or "-", r.metric, fmt_num(r.measured), fmt_num(r.predicted),
                      f"{r.error * 100:+.1f}")
        else:
            t.add_row(r.id, r.kind, r.system or "-", r.metric, fmt_num(r.measured) if r.measured else "-", "-",
                      f"{r.status}: {r.reason}"[:90])
    console.print(t)
    for n in notes:
        console.print(f"* {n}", soft_wrap=True)
    console.print(summary_table(summary))
    if by_device is not None:
        console.print(device_table(by_device))
    w = worst(results)
    if w:
        console.print("worst cases: " + ", ".join(f"{r.id} ({r.error * 100:+.0f}%)" for r in w))


def summary_table(summary: dict) -> Table:
    s = Table(title="summary", title_justify="left")
    for col in ("kind", "predicted", "cases", "unsupported", "invalid", "median |error|", "within 10%", "within 25%"):
        s.add_column(col, justify="left" if col == "kind" else "right")
    for k, v in summary.items():
        pct = lambda x: "-" if x is None else f"{x:.0%}"
        s.add_row(k, str(v["n"]), str(v["cases"]), str(v["unsupported"]), str(v["invalid"]),
                  "-" if v["median_abs_error"] is None else f"{v['median_abs_error']:.1%}", pct(v["within_10"]),
                  pct(v["within_25"]))
    return s


def _device_cells(row: dict) -> list[str]:
    return [row["kind"], row["device"], str(row["n"]), f"{row['median_abs_error'] * 100:.1f}%",
            f"{row['median_lean'] * 100:+.1f}%", f"{row['within_10'] * 100:.0f}%", f"{row['within_25'] * 100:.0f}%"]


_DEVICE_COLUMNS = ("kind", "device", "predicted", "median abs error", "median lean", "within 10%", "within 25%")


def device_table(rows: list[dict]) -> Table:
    t = Table(title="per device (lean > 0: the model expects more work per second than was measured)",
              title_justify="left")
    for col in _DEVICE_COLUMNS:
        t.add_column(col, justify="left" if col in ("kind", "device") else "right")
    for row in rows:
        t.add_row(*_device_cells(row))
    return t


def device_markdown(rows: list[dict]) -> str:
    """The per-device summary as a Markdown table (``--by device --markdown``)."""
    lines = ["| " + " | ".join(_DEVICE_COLUMNS) + " |", "| --- | --- | " + " | ".join(["---:"] * 5) + " |"]
    lines += ["| " + " | ".join(_device_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary: dict) -> str:
    """The summary as the Markdown table the README carries."""
    lines = ["| kind | predicted | cases | unsupported | median abs error | within 10% | within 25% |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    pct = lambda x, d=0: "-" if x is None else f"{x * 100:.{d}f}%"
    for k, v in summary.items():
        lines.append(f"| {k} | {v['n']} | {v['cases']} | {v['unsupported'] + v['invalid']} | "
                     f"{pct(v['median_abs_error'], 1)} | {pct(v['within_10'])} | {pct(v['within_25'])} |")
    return "\n".join(lines)
