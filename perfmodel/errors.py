"""Errors meant for people: one line, naming the file or flag, the field and what was expected.

The CLI turns :class:`InputError` into that line on stderr and exit code 2; anything else is a bug
(exit 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(Exception):
    """Bad input from the user: a spec file, an id, a flag, a plan. Always one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UnknownIdError(InputError, KeyError):
    """An id that is not in the database or catalog; the message suggests the closest ids."""

    def __init__(self, what: str, wanted: str, known: Iterable[str]):
        self.wanted = wanted
        self.suggestions = close_matches(wanted, known)
        super().__init__(f"unknown {what} '{wanted}'{_hint(self.suggestions)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


def close_matches(wanted: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Closest known ids to a misspelt one (difflib ratio, plus prefix/substring hits)."""
    known = sorted(set(known))
    hits = difflib.get_close_matches(wanted.lower(), known, n=n, cutoff=0.6)
    if len(hits) < n:
        w = wanted.lower()
        for k in known:
            if k not in hits and (k.startswith(w) or w in k):
                hits.append(k)
            if len(hits) >= n:
                break
    return hits[:n]


def did_you_mean(wanted: str, known: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` naming the known values closest to a misspelt one, or ``""`` when none is
    close: the tail of an error line."""
    return _hint(close_matches(wanted, known))


def _hint(near: list[str]) -> str:
    return f"; did you mean {', '.join(near)}?" if near else ""


def format_validation_error(err, where: str, skip: Iterable[str] = ()) -> str:
    """One line from a pydantic ValidationError: `where: field.path: message (got X)`.

    ``skip`` drops location parts pydantic adds that the user never wrote (union tags).
    """
    first = err.errors()[0]
    skip = set(skip)
    loc_parts = [str(p) for p in first.get("loc", ()) if p != "__root__"]
    if loc_parts and loc_parts[0] in skip:
        loc_parts = loc_parts[1:]
    loc = ".".join(loc_parts) or "(top level)"
    msg = first.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        msg = "unknown field (check the spelling against the schema)"
    elif kind == "missing":
        msg = "required field is missing"
    got = first.get("input")
    got_txt = ""
    if kind not in ("missing", "extra_forbidden") and not isinstance(got, (dict, list)):
        got_txt = f" (got {got!r})"
    more = len(err.errors()) - 1
    tail = f" [+{more} more error{'s' if more > 1 else ''}]" if more > 0 else ""
    if not loc_parts:  # a whole-entry check; its message starts with the field path itself
        return f"{where}: {msg}{got_txt}{tail}"
    return f"{where}: {loc}: {msg}{got_txt}{tail}"
