"""Figures (matplotlib, Agg backend): a device roofline with operators as points, busbw against size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_target(path: str) -> Path:
    p = Path(path)
    if p.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--plot {path}: expected a .png, .svg or .pdf file name")
    if not p.parent.exists():
        raise InputError(f"--plot {path}: folder {p.parent} does not exist")
    return p


def roofline_plot(result, rates, path: str) -> None:
    """Attainable TFLOP/s against arithmetic intensity, with each operator of the estimate as a point."""
    p = _check_target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    peak = rates.achievable_tflops("bf16")
    bw = rates.achievable_gbps / 1e3  # TB/s
    x = np.logspace(-1, 4, 200)
    ax.loglog(x, np.minimum(peak, x * bw), "k-", lw=1.5, label=f"{rates.id} achievable roofline (bf16)")
    if "fp8" in rates.peaks and result.precision in ("fp8", "int8"):
        ax.loglog(x, np.minimum(rates.achievable_tflops("fp8"), x * bw), "k--", lw=1, label="fp8 roof")
    colours = {"prefill": "tab:blue", "decode": "tab:orange"}
    for phase, colour in colours.items():
        pts = [r for r in result.breakdown if r.phase == phase and r.flops > 0 and r.bytes > 0 and r.time_us > 0]
        if not pts:
            continue
        xi = [r.intensity for r in pts]
        yi = [r.flops / (r.time_us * 1e-6) / 1e12 for r in pts]
        ax.scatter(xi, yi, s=18, c=colour, alpha=0.7, label=f"{phase} operators")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attained TFLOP/s")
    ax.set_title(f"{result.model} on {result.device}: operators on the roofline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(p)
    plt.close(fig)


def busbw_plot(res, title: str, path: str) -> None:
    p = _check_target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogx(res.nbytes, res.busbw_gbps, "o-", ms=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(p)
    plt.close(fig)


def validation_plot(cases, path: str) -> None:
    """Predicted against measured on log-log axes, one colour per kind."""
    p = _check_target(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    kinds = sorted({c["kind"] for c in cases if c["status"] == "ok"})
    lo, hi = np.inf, 0.0
    for kind in kinds:
        pts = [(c["measured"], c["predicted"]) for c in cases if c["status"] == "ok" and c["kind"] == kind
               and c["measured"] > 0 and c["predicted"] > 0]
        if not pts:
            continue
        m, q = zip(*pts)
        ax.scatter(m, q, s=16, label=f"{kind} ({len(pts)})", alpha=0.75)
        lo, hi = min(lo, min(m), min(q)), max(hi, max(m), max(q))
    if hi > 0:
        line = np.array([lo / 1.5, hi * 1.5])
        ax.plot(line, line, "k-", lw=1)
        ax.plot(line, line * 1.25, "k:", lw=0.8)
        ax.plot(line, line / 1.25, "k:", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured")
    ax.set_ylabel("predicted")
    ax.set_title("perfmodel validate: predicted vs measured (dotted: ±25%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(p)
    plt.close(fig)
