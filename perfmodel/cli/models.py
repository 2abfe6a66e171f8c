"""`perfmodel models list|show`: the model catalog and Hugging Face config.json files."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..models import catalog, get_model
from .common import JsonOpt, console, fmt_num, fmt_params, print_json

app = typer.Typer(help="The model catalog (and Hugging Face config.json files).", no_args_is_help=True)


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List catalog models with their computed total and active parameters.

    Example: perfmodel models list --json
    """
    cat = catalog()
    if json_out:
        print_json([{"id": m.id, "name": m.name, "family": m.family, "params_total": m.params_total,
                     "params_active": m.params_active} for m in cat.values()])
        return
    table = Table(title=f"models ({len(cat)})", title_justify="left")
    for col in ("id", "family", "layers", "hidden", "heads/kv", "experts", "total", "active"):
        table.add_column(col, justify="left" if col in ("id", "family") else "right", no_wrap=True)
    for m in cat.values():
        moe = f"{m.experts} (top {m.top_k}{f' +{m.shared_experts}' if m.shared_experts else ''})" if m.is_moe else "-"
        table.add_row(m.id, m.family, str(m.layers), str(m.hidden), f"{m.heads}/{m.n_kv_heads}", moe,
                      fmt_params(m.params_total), fmt_params(m.params_active))
    console.print(table)


@app.command()
def show(
    model: Annotated[str, typer.Argument(metavar="ID|PATH", help="A catalog id or a path to config.json.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one architecture and its parameter counts, computed from the shape.

    Example: perfmodel models show deepseek-v3
    """
    m = get_model(model)
    if json_out:
        print_json(m.summary())
        return
    console.print(f"[bold]{m.id}[/bold]  {m.name or ''}")
    if m.source:
        console.print(f"architecture from: {m.source}")
    console.print(f"parameters: total {fmt_params(m.params_total)} ({m.params_total:,}), "
                  f"active per token {fmt_params(m.params_active)} ({m.params_active:,})")
    if m.published:
        p = m.published
        act = f", active {fmt_params(p.params_active)}" if p.params_active else ""
        console.print(f"published: total {fmt_params(p.params_total)}{act} ({p.source})")
    table = Table(title="where the parameters are", title_justify="left")
    table.add_column("component")
    table.add_column("per layer", justify="right")
    table.add_column("layers", justify="right")
    table.add_column("total", justify="right")
    table.add_row("attention" + (" (MLA)" if m.is_mla else ""), f"{m.attention_params():,}", str(m.layers),
                  fmt_params(m.attention_params() * m.layers))
    if m.dense_mlp_layers:
        table.add_row(f"dense MLP ({m.activation}, {m.d_ffn})", f"{m.mlp_params(m.d_ffn):,}",
                      str(m.dense_mlp_layers), fmt_params(m.mlp_params(m.d_ffn) * m.dense_mlp_layers))
    if m.moe_layers:
        table.add_row(f"MoE ({m.experts} x {m.d_expert}, top {m.top_k}, {m.shared_experts} shared)",
                      f"{m.moe_params(False):,}", str(m.moe_layers), fmt_params(m.moe_params(False) * m.moe_layers))
    table.add_row("embedding", "", "", fmt_params(m.embedding_params()))
    table.add_row("LM head" + (" (tied)" if m.tied_embeddings else ""), "", "", fmt_params(m.lm_head_params()))
    console.print(table)
    arch = m.summary()
    skip = {"id", "name", "source", "params_total", "params_active", "published"}
    console.print("  ".join(f"{k}={fmt_num(v) if isinstance(v, float) else v}" for k, v in arch.items()
                            if k not in skip))
