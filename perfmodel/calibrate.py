"""Fitting a few named efficiency parameters of one system to a user's own measurements.

``perfmodel calibrate MEASUREMENTS.yaml --system S -o OVERLAY.yaml`` fits, by bounded least squares on
log errors (``scipy.optimize.least_squares``), only the parameters the measurements inform:

* ``gemm_peak_fraction`` per dtype (from ``gemm`` cases), bounds 0.05-1;
* ``memory_bandwidth_fraction`` (``membw`` cases), bounds 0.05-1;
* ``kernel_floor_us`` (small ``gemm``/``membw`` cases), bounds 0.1-100 us;
* the scale-up link's ``achievable_fraction`` (``comm`` and ``link`` cases), bounds 0.05-1.

It reports the error before and after, and a k-fold cross-validated error (each fold predicted by
parameters fitted without it) so over-fitting shows. The overlay is a multi-document spec file of
``extends:`` entries that ``--specs`` loads on top of the database.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

from .errors import InputError
from .specdb import Database, load_database
from .validate import Case, Unsupported, load_cases, predict


@dataclass(frozen=True)
class Param:
    name: str  # e.g. "gemm_peak_fraction.bf16", "memory_bandwidth_fraction", "kernel_floor_us", "link"
    lower: float
    upper: float
    start: float


@dataclass
class Calibration:
    system: str
    device: str
    link: str
    params: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    cross_validated: dict[str, float]
    n_cases: int
    folds: int


def _stats(errors: list[float]) -> dict[str, float]:
    a = [abs(e) for e in errors]
    return {"median_abs_error": statistics.median(a) if a else float("nan"),
            "within_10": float(np.mean([x <= 0.1 for x in a])) if a else float("nan")}


def _with_params(db: Database, device: str, link: str, values: dict[str, float]) -> Database:
    """A copy of the database whose device and link carry the given efficiency values."""
    acc = db.accelerator(device)
    eff = acc.efficiency
    frac = dict(eff.gemm_peak_fraction)
    upd: dict = {}
    from .hardware import Dtype, Spec

    for name, v in values.items():
        spec = Spec(value=v, derived="calibrated")
        if name.startswith("gemm_peak_fraction."):
            frac[Dtype(name.split(".", 1)[1])] = spec
        elif name in ("memory_bandwidth_fraction", "kernel_floor_us"):
            upd[name] = spec
    new_eff = eff.model_copy(update={"gemm_peak_fraction": frac, **upd})
    new_acc = acc.model_copy(update={"efficiency": new_eff})
    out = Database(entries={k: dict(v) for k, v in db.entries.items()}, files=dict(db.files), raw=dict(db.raw))
    out.entries["accelerator"][device] = new_acc
    if "link" in values:
        lk = db.link(link)
        out.entries["link"][link] = lk.model_copy(
            update={"achievable_fraction": Spec(value=values["link"], derived="calibrated")})
    return out


def _params_for(cases: list[Case], current: dict[str, float]) -> list[Param]:
    params: list[Param] = []
    dtypes = sorted({c.gemm.dtype for c in cases if c.kind == "gemm"})
    for dt in dtypes:
        params.append(Param(f"gemm_peak_fraction.{dt}", 0.05, 1.0, current.get(f"gemm_peak_fraction.{dt}", 0.7)))
    if any(c.kind == "membw" for c in cases):
        params.append(Param("memory_bandwidth_fraction", 0.05, 1.0, current.get("memory_bandwidth_fraction", 0.8)))
    small = [c for c in cases if (c.kind == "gemm" and c.gemm.m * c.gemm.n * c.gemm.k <= 512**3)
             or (c.kind == "membw" and c.membw.bytes and c.membw.bytes <= 64 * 2**20)]
    if small:
        params.append(Param("kernel_floor_us", 0.1, 100.0, current.get("kernel_floor_us", 4.0)))
    if any(c.kind in ("comm", "link") for c in cases):
        params.append(Param("link", 0.05, 1.0, current.get("link", 0.8)))
    return params


def _current(db: Database, device: str, link: str) -> dict[str, float]:
    from .roofline import device_rates

    r = device_rates(db.accelerator(device))
    out = {f"gemm_peak_fraction.{k}": v for k, v in r.gemm_fraction.items() if k != "_default"}
    out["memory_bandwidth_fraction"] = r.mem_fraction
    out["kernel_floor_us"] = r.floor_s * 1e6
    out["link"] = db.link(link).efficiency
    return out


def _errors(cases: list[Case], db: Database) -> list[float]:
    out = []
    for c in cases:
        try:
            out.append((predict(c, db) - c.measured.value) / c.measured.value)
        except (Unsupported, InputError):
            continue
    return out


def _fit(cases: list[Case], db: Database, device: str, link: str, params: list[Param]) -> dict[str, float]:
    if not params:
        return {}
    x0 = np.array([min(max(p.start, p.lower * 1.01), p.upper * 0.99) for p in params])

    def resid(x):
        d = _with_params(db, device, link, {p.name: float(v) for p, v in zip(params, x)})
        res = []
        for c in cases:
            try:
                res.append(np.log(max(predict(c, d), 1e-30) / c.measured.value))
            except (Unsupported, InputError):
                res.append(0.0)
        return np.array(res)

    sol = least_squares(resid, x0, bounds=([p.lower for p in params], [p.upper for p in params]), x_scale="jac")
    return {p.name: float(v) for p, v in zip(params, sol.x)}


def calibrate(measurements: list[Path], system: str, folds: int = 5, db: Database | None = None) -> Calibration:
    """Fit the efficiency parameters of ``system``'s accelerator and scale-up link to the measurements."""
    db = db or load_database()
    ref = db.resolve_system(system)
    device, link = ref.accelerator.id, ref.system.scale_up.link
    cases, invalid = load_cases(measurements)
    if invalid:
        raise InputError(invalid[0].reason)
    usable = [c for c in cases if c.kind in ("gemm", "membw", "link", "comm")]
    for c in usable:
        if c.kind in ("gemm", "membw", "link") and c.device != device:
            raise InputError(f"case {c.id}: device: {c.device} is not {system}'s accelerator ({device})")
    if len(usable) < 2:
        raise InputError(f"{measurements[0]}: need at least two gemm, membw, link or comm measurements to fit")
    current = _current(db, device, link)
    params = _params_for(usable, current)
    before = _errors(usable, db)
    fitted = _fit(usable, db, device, link, params)
    after = _errors(usable, _with_params(db, device, link, fitted))
    k = max(2, min(folds, len(usable)))
    cv: list[float] = []
    idx = np.arange(len(usable))
    for f in range(k):
        test = [usable[i] for i in idx[f::k]]
        train = [usable[i] for i in idx if i % k != f]
        fp = _fit(train, db, device, link, _params_for(train, current))
        cv += _errors(test, _with_params(db, device, link, fp))
    return Calibration(system=ref.system.id, device=device, link=link, params=fitted, before=_stats(before),
                       after=_stats(after), cross_validated=_stats(cv), n_cases=len(usable), folds=k)


def overlay_documents(cal: Calibration, source_files: list[Path]) -> list[dict]:
    """The overlay as spec-file mappings (``extends:`` entries), each number with its provenance."""
    today = _dt.date.today().isoformat()
    src = {"calibration": {"title": f"perfmodel calibrate on {', '.join(str(p) for p in source_files)}, {today}",
                           "note": f"{cal.n_cases} measurements; cross-validated median |error| "
                                   f"{cal.cross_validated['median_abs_error']:.1%}"}}
    derived = f"bounded least squares on log errors over {cal.n_cases} measurements"
    eff: dict = {}
    for name, v in cal.params.items():
        spec = {"value": round(v, 4), "source": "calibration", "derived": derived}
        if name.startswith("gemm_peak_fraction."):
            eff.setdefault("gemm_peak_fraction", {})[name.split(".", 1)[1]] = spec
        elif name != "link":
            eff[name] = spec
    docs = []
    if eff:
        docs.append({"extends": cal.device, "sources": src, "efficiency": eff})
    if "link" in cal.params:
        docs.append({"extends": cal.link, "sources": src,
                     "achievable_fraction": {"value": round(cal.params["link"], 4), "source": "calibration",
                                             "derived": derived}})
    return docs


def write_overlay(cal: Calibration, out: Path, inputs: list[Path], force: bool = False) -> None:
    """Write the overlay; never over an input, and over an existing file only with ``force``."""
    out_r = out.resolve()
    if any(out_r == p.resolve() for p in inputs):
        raise InputError(f"-o {out}: is one of the measurement files; choose another name")
    if out.exists() and not force:
        raise InputError(f"-o {out}: file exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise InputError(f"-o {out}: folder {out.parent} does not exist")
    out.write_text(yaml.safe_dump_all(overlay_documents(cal, inputs), sort_keys=False))
