"""The run report: one JSON file per run, schema-versioned, loaded through step-by-step upgraders.

A `Report` is a frozen dataclass of plain JSON values (dicts, lists, numbers, strings): the
file, and what the run layer assembles.  Readers type it with
`dlrmprof.profile.model.ReportModel.of(report)` (a dataclass per section, the same bytes
back from ``to_json()``) and read attributes, not string keys.  It is
written atomically with `save(path)` and read back with `Report.load(path)`, which validates it,
upgrades an older `schema_version` one step at a time, and refuses a newer one.  Any problem with
a file (not JSON, truncated, not a dlrmprof report, newer than this tool, a malformed field) is a
`UserError`: one line naming the file (and the field), exit code 2 at the CLI.

Sections (every one optional except `host` and `ops`; an absent section is an empty dict)
------------------------------------------------------------------------------------------
``host``        host fingerprint, `dlrmprof.profile.host.collect()` (contains ``host_id``).
``ceilings``    `dlrmprof.profile.ceilings.probe()` / `load_or_probe()`: stream, random-access,
                gemm (and cuda) roofs, each with ``source: "measured"``.
``config``      the run's options (preset, batch size, device, backend, mode, threads, ...).
                `compare` refuses reports whose configs differ (apart from the keys that are
                expected to vary between hosts, see `dlrmprof.profile.compare`).
``trace``       trace summary: path, digest, num_samples, per-table locality
                (``tables: [{name, rows, accesses, distinct, ...}]``).
``ops``         list of op rows (below).
``end_to_end``  e.g. ``{"samples_per_s": x, "time": {time stats}, "source": "measured"}``.
``noise``       contamination: ``{"flagged": n, "dropped": n, "retaken": n, "spread": {...}}``.
``roofline``    ``{"rows": roofline.verdicts(ops, ceilings, cache), "roofs": {...}}``.
``cache``       ``{"counters": counters.availability() or counters.measure(fn),
                "simulation": {op name: cachesim.simulate_op(...)} (or cachesim.simulate_trace),
                "mrc": {table: {"sizes_bytes": [...], "hit_rates": [...]}} (trace's own MRC),
                "sweep": sweep.run_sweep(...) (optional)}``.
``simd``        `dlrmprof.profile.simd.run_simd()` result (levels, ops, held, statement).
``training``    loss curve etc. when ``mode == "train"``.
``serving``     `dlrmprof serve-bench`: `dlrmprof.profile.serving.ServingSection.to_json()`
                (latency vs offered load, latency-bounded throughput, co-location
                interference); validated through `ServingSection.from_json` when present.

An ``ops`` row (a dict; `op_row()` builds one and `validate_op_row()` checks one)
---------------------------------------------------------------------------------
``name``      str: ``"emb.C1"`` (one table), ``"emb.all"`` (all tables, one call),
              ``"bottom_mlp"``, ``"bottom_mlp.0"`` (one layer), ``"interaction"``,
              ``"top_mlp"``, ``"loss"``, ``"backward"``, ``"optimizer"``, ``"alltoall"``,
              ``"data"``.  Names are unique within (name, phase).
``kind``      str or None: the cost-model op (``"embedding_bag"``, ``"embedding_bag_sgd"``,
              ``"linear"``, ``"mlp"``, ``"interaction"``, ``"interaction_backward"``, ``"loss"``,
              ``"other"``).  Roofline uses it to pick the roof: embedding kinds are
              random-access (gathers), the rest streaming.
``phase``     one of ``PHASES``: ``"forward"``, ``"backward"``, ``"optimizer"``, ``"data"``,
              ``"comm"``, ``"step"`` (a whole iteration).
``device``    ``"cpu"`` or ``"cuda"`` / ``"cuda:0"``.
``backend``   ``"numba"``, ``"torch"``, ``"reference"``, ``"numba-cuda"``.
``time``      time statistics in **seconds** per call, `time_stats(samples)`:
              ``{"median", "p10", "p90", "mean", "n", "samples": [...]}`` (raw samples kept,
              after dropping contaminated ones; ``"flagged"``: how many were flagged).
``bytes``     int or None: bytes the op must move (each input read once, output written
              once), from ``kernels.cost(...).bytes``.
``flops``     int or None: floating-point operations, from ``kernels.cost(...).flops``.
``shape``     dict (optional): e.g. ``{"B": 2048, "D": 16, "rows": 10131227, "nnz": 2048,
              "row_bytes": 64}``; ``rows``/``row_bytes`` let roofline size the working set.
``sources``   where each figure came from: ``{"time": "measured", "bytes": "counted",
              "flops": "counted"}``; values are from ``SOURCES`` (``"measured"``,
              ``"counted"`` = cost model, ``"simulated"`` = cache simulation).
Extra keys are allowed and kept.

Schema history (SCHEMA_VERSION)
-------------------------------
1  first format: host, ceilings, config, trace, ops (rows as above), end_to_end, noise,
   roofline, cache, simd, training; sections as plain dicts.
2  adds ``serving`` (typed: `dlrmprof.profile.serving.ServingSection`); a version-1 file
   upgrades with an empty ``serving``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dlrmprof import __version__
from dlrmprof.errors import UserError
from dlrmprof.fsutil import atomic_path

SCHEMA = "dlrmprof-report"
SCHEMA_VERSION = 2  # history in the module docstring

SOURCES = ("measured", "counted", "simulated")
PHASES = ("forward", "backward", "optimizer", "data", "comm", "step")
SECTIONS = ("host", "ceilings", "config", "trace", "ops", "end_to_end", "noise", "roofline",
            "cache", "simd", "training", "serving")
_DICT_SECTIONS = tuple(s for s in SECTIONS if s != "ops")

# Upgraders: _UPGRADERS[v] turns a version-v dict into a version-(v+1) dict (pure functions on
# plain dicts).  Add one here whenever SCHEMA_VERSION grows, and a golden file of the old
# version under tests/data/reports/.
def _v1_to_v2(data: dict) -> dict:
    data = dict(data)
    data.setdefault("serving", {})
    return data


_UPGRADERS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}


def time_stats(samples: Iterable[float], *, flagged: int = 0) -> dict:
    """Median, p10, p90, mean and n of per-call times in seconds; raw samples kept."""
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("time_stats needs at least one sample")
    s = sorted(xs)
    return {"median": _quantile(s, 0.5), "p10": _quantile(s, 0.1), "p90": _quantile(s, 0.9),
            "mean": sum(s) / len(s), "n": len(s), "samples": xs, "flagged": int(flagged)}


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    n = len(sorted_xs)
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def op_row(name: str, *, phase: str, device: str, backend: str, samples: Iterable[float],
           bytes: int | None = None, flops: int | None = None, kind: str | None = None,
           shape: Mapping[str, Any] | None = None, flagged: int = 0,
           sources: Mapping[str, str] | None = None, **extra: Any) -> dict:
    """Build one validated ``ops`` row (see the module docstring)."""
    src = {"time": "measured"}
    if bytes is not None:
        src["bytes"] = "counted"
    if flops is not None:
        src["flops"] = "counted"
    src.update(sources or {})
    row = {"name": name, "kind": kind, "phase": phase, "device": device, "backend": backend,
           "time": time_stats(samples, flagged=flagged),
           "bytes": None if bytes is None else int(bytes),
           "flops": None if flops is None else int(flops),
           "shape": dict(shape or {}), "sources": src}
    row.update(extra)
    validate_op_row(row, where="op_row")
    return row


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _bad(where: str, field: str, expected: str, got: Any) -> UserError:
    g = repr(got)
    if len(g) > 60:
        g = g[:57] + "..."
    return UserError(f"{where}: field {field}: expected {expected}, got {g}")


def validate_op_row(row: Any, *, where: str = "<report>", index: int | None = None) -> None:
    """Raise UserError (one line, naming the field) if `row` is not a valid ops row."""
    f = "ops" if index is None else f"ops[{index}]"
    if not isinstance(row, dict):
        raise _bad(where, f, "an object", row)
    for key in ("name", "phase", "device", "backend"):
        if not isinstance(row.get(key), str) or not row.get(key):
            raise _bad(where, f"{f}.{key}", "a non-empty string", row.get(key))
    if row["phase"] not in PHASES:
        raise _bad(where, f"{f}.phase", "one of " + "/".join(PHASES), row["phase"])
    if row.get("kind") is not None and not isinstance(row["kind"], str):
        raise _bad(where, f"{f}.kind", "a string or null", row["kind"])
    t = row.get("time")
    if not isinstance(t, dict):
        raise _bad(where, f"{f}.time", "an object of time statistics", t)
    for key in ("median", "p10", "p90", "mean"):
        if not _is_num(t.get(key)) or t[key] < 0:
            raise _bad(where, f"{f}.time.{key}", "a non-negative number of seconds", t.get(key))
    if not isinstance(t.get("n"), int) or isinstance(t.get("n"), bool) or t["n"] < 1:
        raise _bad(where, f"{f}.time.n", "a positive integer", t.get("n"))
    samples = t.get("samples")
    if not isinstance(samples, list) or not all(_is_num(x) for x in samples):
        raise _bad(where, f"{f}.time.samples", "a list of numbers", samples)
    for key in ("bytes", "flops"):
        v = row.get(key)
        if v is not None and (not _is_num(v) or v < 0):
            raise _bad(where, f"{f}.{key}", "a non-negative number or null", v)
    if "shape" in row and not isinstance(row["shape"], dict):
        raise _bad(where, f"{f}.shape", "an object", row["shape"])
    src = row.get("sources")
    if not isinstance(src, dict):
        raise _bad(where, f"{f}.sources", "an object mapping figure -> source", src)
    for k, v in src.items():
        if v not in SOURCES:
            raise _bad(where, f"{f}.sources.{k}", "one of " + "/".join(SOURCES), v)


@dataclasses.dataclass(frozen=True)
class Report:
    """One run's results.  Build with `Report.new(...)`; change with `.replace(...)`."""

    host: dict
    ops: tuple = ()
    ceilings: dict = dataclasses.field(default_factory=dict)
    config: dict = dataclasses.field(default_factory=dict)
    trace: dict = dataclasses.field(default_factory=dict)
    end_to_end: dict = dataclasses.field(default_factory=dict)
    noise: dict = dataclasses.field(default_factory=dict)
    roofline: dict = dataclasses.field(default_factory=dict)
    cache: dict = dataclasses.field(default_factory=dict)
    simd: dict = dataclasses.field(default_factory=dict)
    training: dict = dataclasses.field(default_factory=dict)
    serving: dict = dataclasses.field(default_factory=dict)
    created: str = ""
    tool_version: str = __version__
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION
    #: version the file had on disk before upgrading (== schema_version for new reports)
    loaded_from_version: int | None = dataclasses.field(default=None, compare=False)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def new(cls, host: Mapping, ops: Iterable[Mapping] = (), **sections: Any) -> "Report":
        """A new report stamped with the current time (UTC, ISO 8601) and tool version."""
        unknown = set(sections) - set(_DICT_SECTIONS)
        if unknown:
            raise TypeError(f"unknown report sections: {sorted(unknown)}")
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        rep = cls(host=dict(host), ops=tuple(dict(r) for r in ops), created=created,
                  **{k: dict(v) for k, v in sections.items()})
        rep.validate()
        return rep

    def replace(self, **changes: Any) -> "Report":
        if "ops" in changes:
            changes["ops"] = tuple(dict(r) for r in changes["ops"])
        rep = dataclasses.replace(self, **changes)
        rep.validate()
        return rep

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"schema": self.schema, "schema_version": self.schema_version,
             "tool_version": self.tool_version, "created": self.created}
        for name in SECTIONS:
            v = getattr(self, name)
            d[name] = list(v) if name == "ops" else v
        return d

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=1, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "<report>") -> "Report":
        """Validate and upgrade a parsed report (UserError naming `where` on any problem)."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: not a dlrmprof report (expected a JSON object, "
                            f"got {type(data).__name__})")
        if data.get("schema") != SCHEMA:
            raise UserError(f"{where}: not a dlrmprof report (schema is "
                            f"{data.get('schema')!r}, expected {SCHEMA!r})")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _bad(where, "schema_version", "a positive integer", version)
        if version > SCHEMA_VERSION:
            raise UserError(f"{where}: report schema_version {version} is newer than this "
                            f"dlrmprof {__version__} understands ({SCHEMA_VERSION}); "
                            f"upgrade dlrmprof to read it")
        original = version
        data = dict(data)
        while version < SCHEMA_VERSION:
            data = _UPGRADERS[version](data)
            version += 1
            data["schema_version"] = version
        kwargs: dict[str, Any] = {}
        for name in _DICT_SECTIONS:
            v = data.get(name, {})
            if v is None:
                v = {}
            if not isinstance(v, dict):
                raise _bad(where, name, "an object", v)
            kwargs[name] = v
        if "ops" not in data:
            raise _bad(where, "ops", "a list of op rows (every report has one)", None)
        ops = data["ops"]
        if not isinstance(ops, list):
            raise _bad(where, "ops", "a list of op rows", ops)
        for k in ("tool_version", "created"):
            if not isinstance(data.get(k, ""), str):
                raise _bad(where, k, "a string", data.get(k))
        rep = cls(ops=tuple(ops), tool_version=data.get("tool_version", ""),
                  created=data.get("created", ""), schema_version=version,
                  loaded_from_version=original, **kwargs)
        rep.validate(where=where)
        return rep

    def validate(self, *, where: str = "<report>") -> None:
        if not isinstance(self.host, dict) or not self.host:
            raise _bad(where, "host", "a non-empty host fingerprint object", self.host)
        if not isinstance(self.host.get("host_id"), str):
            raise _bad(where, "host.host_id", "a string", self.host.get("host_id"))
        seen = set()
        for i, row in enumerate(self.ops):
            validate_op_row(row, where=where, index=i)
            key = (row["name"], row["phase"])
            if key in seen:
                raise _bad(where, f"ops[{i}]", "a unique (name, phase)", list(key))
            seen.add(key)
        if self.serving:
            from dlrmprof.profile.serving import ServingSection

            ServingSection.from_json(self.serving, f"{where}: serving")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file beside `path`, then rename)."""
        text = self.to_json()  # serialise first: a failure leaves nothing behind
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(text + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Report":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path}: no such report file") from None
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if not raw.strip():
            raise UserError(f"{path}: empty file, expected a dlrmprof report (JSON)")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a dlrmprof report (not UTF-8 text)") from None
        except json.JSONDecodeError as exc:
            # the parser ran off the end (or into an unclosed string): the file was cut short
            end = len(raw.decode("utf-8", "replace").rstrip())
            what = ("truncated JSON" if exc.pos >= end - 1 or exc.msg.startswith("Unterminated")
                    else "corrupt JSON")
            raise UserError(f"{path}:{exc.lineno}: {what}: {exc.msg} (column {exc.colno})") \
                from None
        return cls.from_dict(data, where=str(path))

    # -- helpers ------------------------------------------------------------------------------
    @property
    def host_id(self) -> str:
        return self.host["host_id"]

    def op(self, name: str, phase: str = "forward") -> dict | None:
        for row in self.ops:
            if row["name"] == name and row["phase"] == phase:
                return row
        return None

    def default_path(self, root: str | os.PathLike = "reports") -> Path:
        """``reports/<host_id>/<timestamp>-<config>-<device>-<backend>.json``."""
        stamp = re.sub(r"[^0-9T]", "", (self.created or "")[:19]) or "undated"
        cfg = self.config
        parts = [stamp, str(cfg.get("preset") or cfg.get("name") or "config"),
                 str(cfg.get("device") or "cpu"), str(cfg.get("backend") or "default")]
        name = "-".join(re.sub(r"[^A-Za-z0-9_.+]", "_", p) for p in parts) + ".json"
        return Path(root) / self.host_id / name


def _jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, tuples to lists, NaN/inf refused."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"report value of type {type(x).__name__} is not JSON-serialisable")
