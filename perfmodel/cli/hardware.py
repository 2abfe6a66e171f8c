"""`perfmodel hardware list|show|validate`: browse and check the hardware-spec database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel
from rich.table import Table

from ..hardware import KINDS, UNITS, Accelerator, Entry, Link, Source, Spec, System, Tier
from ..specdb import Database, validate_files
from ..errors import InputError
from .common import JsonOpt, SpecsOpt, console, database, fmt_num, print_json

app = typer.Typer(help="Browse and check the hardware-spec database.", no_args_is_help=True)


def key_numbers(entry: Entry, db: Database) -> dict[str, Any]:
    """The few numbers a list shows for an entry, keyed with their units in the name."""
    if isinstance(entry, Accelerator):
        pk = entry.peak_tflops
        return {
            "bf16_tflops": pk["bf16"].value if "bf16" in pk else None,
            "fp8_tflops": pk["fp8"].value if "fp8" in pk else None,
            "memory_gb": entry.memory_gb.value,
            "memory_bandwidth_gbps": entry.memory_bandwidth_gbps.value,
            "tdp_w": entry.tdp_w.value if entry.tdp_w else None,
            "price_per_hour_usd": entry.price_per_hour_usd.value if entry.price_per_hour_usd else None,
        }
    if isinstance(entry, System):
        return {
            "accelerator": entry.accelerator,
            "accelerators_per_node": entry.gpus_per_node,
            "scale_up_link": entry.scale_up.link,
            "scale_up_gbps_per_accelerator": db.scale_up_gbps(entry),
            "scale_out_gbps_per_accelerator": db.scale_out_gbps(entry),
            "host_link": entry.host.link,
        }
    if isinstance(entry, Tier):
        return {
            "tier_type": entry.tier_type.value,
            "capacity_gb": entry.capacity_gb.value,
            "read_gbps": entry.read_gbps.value,
            "write_gbps": entry.write_gbps.value,
            "latency_us": entry.latency_us.value,
        }
    if isinstance(entry, Link):
        return {
            "link_type": entry.link_type.value,
            "scope": entry.scope,
            "bandwidth_gbps": entry.bandwidth_gbps.value,
            "latency_us": entry.latency_us.value,
        }
    return {}


_COLUMNS = {
    "accelerator": [("bf16_tflops", "BF16 TFLOP/s"), ("fp8_tflops", "FP8 TFLOP/s"), ("memory_gb", "Mem GB"),
                    ("memory_bandwidth_gbps", "Mem GB/s"), ("tdp_w", "TDP W"), ("price_per_hour_usd", "$/h")],
    "system": [("accelerator", "Accelerator"), ("accelerators_per_node", "Per node"),
               ("scale_up_link", "Scale-up"), ("scale_up_gbps_per_accelerator", "Up GB/s/acc"),
               ("scale_out_gbps_per_accelerator", "Out GB/s/acc"), ("host_link", "Host link")],
    "tier": [("tier_type", "Type"), ("capacity_gb", "Capacity GB"), ("read_gbps", "Read GB/s"),
             ("write_gbps", "Write GB/s"), ("latency_us", "Latency us")],
    "link": [("link_type", "Type"), ("scope", "Scope"), ("bandwidth_gbps", "GB/s per dir"),
             ("latency_us", "Latency us")],
}


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt_num(float(v))
    return str(v)


@app.command("list")
def list_(
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: accelerator, system, tier or link.")] = None,
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """List every entry with its key numbers (dense TFLOP/s; bandwidths in GB/s per direction).

    Example: perfmodel hardware list --kind accelerator
    """
    if kind is not None and kind not in KINDS:
        raise InputError(f"--kind: expected one of {', '.join(KINDS)} (got '{kind}')")
    db = database(specs)
    kinds = [kind] if kind else list(KINDS)
    if json_out:
        rows = []
        for k in kinds:
            for eid, e in sorted(db.entries[k].items()):
                rows.append({"id": eid, "kind": k, "name": e.name, **key_numbers(e, db)})
        print_json(rows)
        return
    for k in kinds:
        table = Table(title=f"{k}s ({len(db.entries[k])})", title_justify="left")
        table.add_column("id", style="bold", no_wrap=True)
        for _, head in _COLUMNS[k]:
            table.add_column(head, justify="right" if "GB" in head or "TFLOP" in head or head in
                             ("TDP W", "$/h", "Per node", "Latency us") else "left")
        table.add_column("name", overflow="fold")
        for eid, e in sorted(db.entries[k].items()):
            nums = key_numbers(e, db)
            table.add_row(eid, *[_cell(nums[c]) for c, _ in _COLUMNS[k]], e.name)
        console.print(table)


def _source_text(entry: Entry, spec: Spec) -> tuple[str, str | None]:
    if spec.source:
        src: Source = entry.sources[spec.source]
        return src.title, src.url
    return ("derived" if spec.derived else "ASSUMED"), None


def spec_json(entry: Entry, spec: Spec, field: str) -> dict:
    title, url = _source_text(entry, spec)
    unit = UNITS.get(field, ("",))[0]
    out = {"value": spec.value, "unit": unit, "source": title, "url": url}
    if spec.derived:
        out["derived"] = spec.derived
    if spec.assumed:
        out["assumed"] = spec.assumed
    if spec.note:
        out["note"] = spec.note
    return out


def _to_json(obj: Any, entry: Entry, field: str = "") -> Any:
    if isinstance(obj, Spec):
        return spec_json(entry, obj, field)
    if isinstance(obj, BaseModel):
        return {k: _to_json(getattr(obj, k), entry, k) for k in type(obj).model_fields
                if getattr(obj, k) is not None and k != "sources"}
    if isinstance(obj, dict):
        return {(k.value if hasattr(k, "value") else k): _to_json(v, entry, field) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_json(v, entry, field) for v in obj]
    return obj.value if hasattr(obj, "value") else obj


@app.command()
def show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="An accelerator, system, tier or link id.")],
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Show every number of one entry with its unit and source.

    Example: perfmodel hardware show h100-sxm
    """
    db = database(specs)
    entry = db.get(entry_id)
    kind = db.kind_of(entry_id)
    if json_out:
        doc = {"id": entry.id, "kind": kind, "file": str(db.files[entry.id])}
        doc.update({k: v for k, v in _to_json(entry, entry).items() if k not in ("id", "kind")})
        doc["sources"] = {k: s.model_dump(exclude_none=True) for k, s in entry.sources.items()}
        print_json(doc)
        return
    console.print(f"[bold]{entry.id}[/bold]  {entry.name}  ({kind}, {db.files[entry.id]})")
    if entry.description:
        console.print(entry.description)
    plain = {k: getattr(entry, k) for k in type(entry).model_fields
             if k not in ("id", "name", "description", "sources", "kind")}
    facts = [(k, v.value if hasattr(v, "value") else v) for k, v in plain.items()
             if isinstance(v, (str, int, float)) or (hasattr(v, "value") and not isinstance(v, Spec))]
    if facts:
        console.print("  ".join(f"{k}: {v}" for k, v in facts if v is not None))
    table = Table(show_lines=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("source", overflow="fold")
    for path, spec in entry.specs():
        field = next((p for p in reversed(path.split(".")) if p in UNITS), "")
        parts = []
        if spec.source:
            title, url = _source_text(entry, spec)
            parts.append(title + (f" <{url}>" if url else ""))
        if spec.derived:
            parts.append(f"derived: {spec.derived}")
        if spec.assumed:
            parts.append(f"ASSUMED: {spec.assumed}")
        if spec.note:
            parts.append(f"note: {spec.note}")
        src = "; ".join(parts)
        table.add_row(path, fmt_num(spec.value), UNITS.get(field, ("",))[0], src)
    console.print(table)
    if isinstance(entry, System):
        console.print(
            f"scale-up {db.scale_up_gbps(entry):,.0f} GB/s per accelerator per direction; "
            f"scale-out {db.scale_out_gbps(entry):,.1f} GB/s per accelerator per direction; "
            f"host link {db.host_gbps(entry):,.1f} GB/s per direction (derived from the link entries)"
        )


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Spec YAML files to check.")],
    json_out: JsonOpt = False,
    specs: SpecsOpt = None,
) -> None:
    """Check spec files against the schema and the database; exit 2 if any is invalid.

    Example: perfmodel hardware validate my_specs/h100-cloud.yaml
    """
    results = validate_files(files, tuple(specs or ()))
    bad = [(p, e) for p, e in results if e]
    if json_out:
        print_json([{"file": str(p), "ok": e is None, "error": e} for p, e in results])
    else:
        for p, e in results:
            if e is None:
                console.print(f"ok    {p}")
        for _, e in bad:
            typer.echo(f"error: {e}", err=True)
    if bad:
        raise typer.Exit(code=2)
