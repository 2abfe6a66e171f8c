"""Loading the hardware-spec database: the files shipped with perfmodel, then the user's own.

Built-in specs live in ``hardware_specs/`` (inside the wheel as ``perfmodel/hardware_specs``). A user adds
directories with ``--specs DIR`` or ``PERFMODEL_SPECS`` (``os.pathsep``-separated); a user entry whose id
already exists replaces it, and the override is recorded so the CLI can say so. A user file may also say
``extends: ID`` to change a few fields of an existing entry (a calibration overlay, a different price):
its mapping is merged over the base entry's, key by key.

A system may be written as ``N x DEVICE``: the accelerator's ``default_system`` with N accelerators.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from .errors import InputError, UnknownIdError, format_validation_error
from .hardware import KINDS, Accelerator, AnyEntry, Entry, Link, System, Tier

ENV_VAR = "PERFMODEL_SPECS"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: ~10x faster
_ADAPTER = TypeAdapter(AnyEntry)


def builtin_specs_dir() -> Path:
    """The shipped database: inside the installed package, else the checkout's top-level folder."""
    here = Path(__file__).resolve().parent
    for cand in (here / "hardware_specs", here.parent / "hardware_specs"):
        if cand.is_dir():
            return cand
    raise RuntimeError(f"perfmodel's hardware_specs folder is missing (looked in {here} and {here.parent})")


def _spec_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def read_yaml(path: Path, all_documents: bool = False) -> object:
    """Parse a YAML file, turning syntax errors into one line with the file and line number.

    ``all_documents`` returns the list of ``---``-separated documents (user overlays may hold several).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read file ({e.strerror or e})") from None
    try:
        if all_documents:
            return [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{path}: {where}invalid YAML: {problem}") from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_entry(raw: object, path: Path | str, bases: dict[str, dict] | None = None) -> tuple[Entry, dict]:
    """Validate one file's mapping as a spec entry. Returns the entry and the (merged) raw mapping."""
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping with 'id' and 'kind' at the top level")
    raw = dict(raw)
    base_id = raw.pop("extends", None)
    if base_id is not None:
        bases = bases or {}
        if base_id not in bases:
            raise UnknownIdError(f"entry in {path}: extends:", str(base_id), bases)
        merged = _deep_merge(bases[base_id], raw)
        if "id" not in raw:
            merged["id"] = base_id
        raw = merged
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{path}: kind: expected one of {', '.join(KINDS)} (got {kind!r})")
    try:
        entry = _ADAPTER.validate_python(raw)
    except ValidationError as e:
        raise InputError(format_validation_error(e, str(path), skip=KINDS)) from None
    return entry, raw


@dataclass(frozen=True)
class SystemRef:
    """A system as a run uses it: the node type and how many accelerators the run spans."""

    system: System
    accelerator: Accelerator
    gpus: int

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.system.gpus_per_node)


@dataclass
class Override:
    id: str
    user_file: Path
    replaced_file: Path


@dataclass
class Database:
    """Every spec entry by kind and id, with the file each came from and the user overrides."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    files: dict[str, Path] = field(default_factory=dict)
    raw: dict[str, dict] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    memo: dict = field(default_factory=dict, repr=False)  # derived values (comm groups), per database

    @property
    def accelerators(self) -> dict[str, Accelerator]:
        return self.entries["accelerator"]  # type: ignore[return-value]

    @property
    def systems(self) -> dict[str, System]:
        return self.entries["system"]  # type: ignore[return-value]

    @property
    def tiers(self) -> dict[str, Tier]:
        return self.entries["tier"]  # type: ignore[return-value]

    @property
    def links(self) -> dict[str, Link]:
        return self.entries["link"]  # type: ignore[return-value]

    def all_ids(self) -> list[str]:
        return sorted(i for d in self.entries.values() for i in d)

    def kind_of(self, entry_id: str) -> str | None:
        for k, d in self.entries.items():
            if entry_id in d:
                return k
        return None

    def get(self, entry_id: str, kind: str | None = None) -> Entry:
        """An entry by id (optionally of one kind); an unknown id suggests the closest ones."""
        pool = self.entries[kind] if kind else {i: e for d in self.entries.values() for i, e in d.items()}
        if entry_id in pool:
            return pool[entry_id]
        raise UnknownIdError(kind or "hardware id", entry_id, pool)

    def accelerator(self, entry_id: str) -> Accelerator:
        return self.get(entry_id, "accelerator")  # type: ignore[return-value]

    def system(self, entry_id: str) -> System:
        return self.get(entry_id, "system")  # type: ignore[return-value]

    def link(self, entry_id: str) -> Link:
        return self.get(entry_id, "link")  # type: ignore[return-value]

    def tier(self, entry_id: str) -> Tier:
        return self.get(entry_id, "tier")  # type: ignore[return-value]

    def resolve_system(self, text: str, gpus: int | None = None) -> SystemRef:
        """A system id, or ``N x DEVICE`` (the device's default platform with N accelerators)."""
        m = re.fullmatch(r"\s*(\d+)\s*[x×*]\s*([A-Za-z0-9.\-]+)\s*", text)
        if m:
            n, dev_id = int(m.group(1)), m.group(2).lower()
            if n < 1:
                raise InputError(f"--system '{text}': expected at least one accelerator")
            dev = self.accelerator(dev_id)
            if not dev.default_system:
                hint = f"; write '{n} x {dev.counted_as}'" if dev.counted_as else ""
                raise InputError(f"--system '{text}': accelerator {dev_id} has no default platform{hint}")
            sysm = self.system(dev.default_system)
            if gpus is not None and gpus != n:
                raise InputError(f"--system '{text}' names {n} accelerators but --gpus is {gpus}")
            return SystemRef(sysm, dev, n)
        sysm = self.system(text.strip())
        n = gpus if gpus is not None else sysm.gpus_per_node
        if n < 1:
            raise InputError(f"--gpus: expected a positive count, got {n}")
        return SystemRef(sysm, self.accelerator(sysm.accelerator), n)

    def scale_up_gbps(self, sysm: System) -> float:
        """Scale-up bandwidth per accelerator, per direction: links x per-link GB/s."""
        return sysm.scale_up.links_per_accelerator.value * self.link(sysm.scale_up.link).bandwidth_gbps.value

    def scale_out_gbps(self, sysm: System) -> float:
        """Scale-out (NIC) bandwidth per accelerator, per direction; 0 for a system without NICs."""
        if sysm.scale_out is None:
            return 0.0
        per_node = sysm.scale_out.nics_per_node.value * self.link(sysm.scale_out.link).bandwidth_gbps.value
        return per_node / sysm.gpus_per_node

    def host_gbps(self, sysm: System) -> float:
        """Host link bandwidth per accelerator, per direction."""
        n = sysm.host.links_per_accelerator.value if sysm.host.links_per_accelerator else 1.0
        return n * self.link(sysm.host.link).bandwidth_gbps.value

    # -- building -------------------------------------------------------------------------------
    def _add(self, entry: Entry, raw: dict, path: Path, user: bool) -> None:
        kind = entry.kind  # type: ignore[attr-defined]
        prev_kind = self.kind_of(entry.id)
        if prev_kind is not None:
            if not user:
                raise InputError(f"{path}: id: '{entry.id}' is already defined in {self.files[entry.id]}")
            if prev_kind != kind:
                raise InputError(
                    f"{path}: id: '{entry.id}' is a {prev_kind} in {self.files[entry.id]}, "
                    f"cannot override it with a {kind}"
                )
            self.overrides.append(Override(entry.id, path, self.files[entry.id]))
            del self.entries[prev_kind][entry.id]
        self.entries[kind][entry.id] = entry
        self.files[entry.id] = path
        self.raw[entry.id] = raw

    def load_dir(self, directory: Path, user: bool) -> None:
        if not directory.is_dir():
            raise InputError(f"--specs {directory}: not a directory")
        for path in _spec_files(directory):
            self.load_file(path, user)

    def load_file(self, path: Path, user: bool) -> list[Entry]:
        docs = read_yaml(path, all_documents=True)
        if not docs:
            raise InputError(f"{path}: empty file; expected a mapping with 'id' and 'kind'")
        out = []
        for raw in docs:
            entry, merged = parse_entry(raw, path, self.raw)
            self._add(entry, merged, path, user)
            out.append(entry)
        return out

    def check_references(self) -> None:
        """Cross-file checks: every id a file names exists, with the right kind."""
        for sid, sysm in self.systems.items():
            for fld, kind, ref in sysm.referenced_ids():
                self._check_ref(sid, fld, kind, ref)
            if sysm.scale_up.domain_size.value < sysm.gpus_per_node and sysm.scale_up.topology.value != "none":
                raise InputError(
                    f"{self.files[sid]}: scale_up.domain_size: expected at least accelerators_per_node "
                    f"({sysm.gpus_per_node}) accelerators in the scale-up domain"
                )
        for aid, acc in self.accelerators.items():
            if acc.default_system:
                self._check_ref(aid, "default_system", "system", acc.default_system)
                sysm = self.systems[acc.default_system]
                if sysm.accelerator != aid:
                    raise InputError(
                        f"{self.files[aid]}: default_system: system '{sysm.id}' holds {sysm.accelerator}, not {aid}"
                    )
            if acc.counted_as:
                self._check_ref(aid, "counted_as", "accelerator", acc.counted_as)
        for tid, tier in self.tiers.items():
            if tier.link:
                self._check_ref(tid, "link", "link", tier.link)

    def _check_ref(self, owner: str, fld: str, kind: str, ref: str) -> None:
        if ref in self.entries[kind]:
            return
        err = UnknownIdError(kind, ref, self.entries[kind])
        raise InputError(f"{self.files[owner]}: {fld}: {err}")


def user_spec_dirs(cli_dirs: tuple[str, ...] | list[str] = ()) -> tuple[Path, ...]:
    """Directories from ``PERFMODEL_SPECS`` followed by ``--specs`` (later ones win)."""
    env = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return tuple(Path(p).expanduser() for p in [*env, *cli_dirs])


@functools.lru_cache(maxsize=8)
def _load(dirs: tuple[Path, ...], stamp: tuple) -> Database:
    db = Database()
    db.load_dir(builtin_specs_dir(), user=False)
    for d in dirs:
        if d.is_file():
            db.load_file(d, user=True)
        else:
            db.load_dir(d, user=True)
    db.check_references()
    return db


def load_database(spec_dirs: tuple[str, ...] | list[str] = ()) -> Database:
    """The built-in database plus the user's spec directories (``--specs`` and ``PERFMODEL_SPECS``)."""
    dirs = user_spec_dirs(spec_dirs)
    stamp = tuple(
        (str(p), p.stat().st_mtime_ns) for d in dirs if d.exists() for p in ([d] if d.is_file() else _spec_files(d))
    )
    return _load(dirs, stamp)


def validate_files(paths: list[Path], spec_dirs: tuple[str, ...] = ()) -> list[tuple[Path, str | None]]:
    """Check spec files on their own and against the database; (file, error line or None) each."""
    base = load_database(spec_dirs)
    results: list[tuple[Path, str | None]] = []
    for path in paths:
        try:
            if path.is_dir():
                raise InputError(f"{path}: is a directory; pass the YAML files inside it")
            trial = Database(
                entries={k: dict(v) for k, v in base.entries.items()},
                files=dict(base.files),
                raw=dict(base.raw),
            )
            trial.load_file(path, user=True)
            trial.check_references()
            results.append((path, None))
        except InputError as e:
            results.append((path, str(e)))
    return results
