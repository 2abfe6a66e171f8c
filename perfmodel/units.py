"""Parsing sizes and counts the way users type them: ``512MiB``, ``8GiB``, ``1e9``, ``15T`` tokens.

Sizes: SI suffixes (kB, MB, GB, TB = powers of 1000) and binary ones (KiB, MiB, GiB, TiB = powers of
1024), with or without a trailing ``B``; bare numbers are bytes. Counts: ``k``, ``M``, ``B``/``G``, ``T``
as powers of 1000. A range ``A..B`` sweeps powers of two from A to B (nccl-tests style).
"""

from __future__ import annotations

import re

from .errors import InputError

_SIZE = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
         "kib": 2**10, "ki": 2**10, "mib": 2**20, "mi": 2**20, "gib": 2**30, "gi": 2**30, "tib": 2**40, "ti": 2**40}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def _split(text: str, flag: str) -> tuple[float, str]:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m:
        raise InputError(f"{flag}: expected a number with an optional unit, got '{text}'")
    return float(m.group(1)), m.group(2)


def parse_size(text: str | float, flag: str = "--bytes") -> float:
    """Bytes from '512MiB', '8GiB', '1e9', '4kB'."""
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        value, unit = _split(text, flag)
    mult = _SIZE.get(unit.lower())
    if mult is None:
        raise InputError(f"{flag}: unknown size unit '{unit}' in '{text}' (use B, kB, MB, GB, KiB, MiB, GiB, TiB)")
    if value < 0:
        raise InputError(f"{flag}: expected a non-negative size, got '{text}'")
    return value * mult


def parse_count(text: str | float, flag: str) -> float:
    """A count from '15T', '300B', '2.5M', '1e12'."""
    if isinstance(text, (int, float)):
        return float(text)
    value, unit = _split(text, flag)
    mult = _COUNT.get(unit.lower())
    if mult is None:
        raise InputError(f"{flag}: unknown count suffix '{unit}' in '{text}' (use k, M, B, T)")
    return value * mult


def parse_size_range(text: str, flag: str = "--bytes") -> list[float]:
    """'1KiB..8GiB' -> powers of two from 1 KiB to 8 GiB; a single size -> [size]."""
    if ".." not in text:
        return [parse_size(text, flag)]
    lo_t, hi_t = text.split("..", 1)
    lo, hi = parse_size(lo_t, flag), parse_size(hi_t, flag)
    if lo <= 0 or hi < lo:
        raise InputError(f"{flag}: expected a range A..B with 0 < A <= B, got '{text}'")
    out, x = [], lo
    while x <= hi * (1 + 1e-12):
        out.append(x)
        x *= 2
    return out
