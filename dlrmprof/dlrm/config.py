"""DLRM configurations: small frozen dataclasses, YAML presets and user YAML files.

A config describes the architecture (DLRM: bottom MLP, embedding bags, pairwise
interaction, top MLP) and default table sizes::

    dense features [B, F] --bottom MLP F-...-D--> x [B, D] --+
    table t: bags of indices --embedding bag (sum)--> [B, D] --+--> interaction --> top MLP --> sigmoid
                                                                 [B, D + T(T+1)/2]

The top MLP's *input* size is not part of the YAML: it is computed from the interaction,
``D + T(T+1)/2`` (the dense vector concatenated with the strictly lower triangle of the
(T+1)x(T+1) dot-product matrix), and printed with the config.  The DLRM reference script
prepends it to ``--arch-mlp-top`` silently; here it is stated.

Table rows: the config's ``rows`` are the sizes used when no trace is given (``--data
random``), capped by ``--max-rows``.  With a trace, the trace header is authoritative: the
number of tables must match and each table is built with the trace's row count, which must
not exceed the ``--max-rows`` cap nor the rows a user's YAML file pins (a preset's rows are
reference cardinalities, see `DLRMConfig.with_trace_rows`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from dlrmprof.errors import UserError, input_error

PRESETS = ("kaggle", "terabyte", "tiny")
INTERACTIONS = ("dot",)
LOSSES = ("bce",)
OPTIMIZERS = ("sgd",)


@dataclass(frozen=True)
class TableConfig:
    """One embedding table: `rows` x `dim` float32, pooled by `pooling` (sum or mean)."""

    name: str
    rows: int
    dim: int
    pooling: str = "sum"

    def __post_init__(self) -> None:
        if self.rows <= 0:
            raise UserError(f"table {self.name}: rows must be positive, got {self.rows}")
        if self.dim <= 0:
            raise UserError(f"table {self.name}: dim must be positive, got {self.dim}")
        if self.pooling not in ("sum", "mean"):
            raise UserError(f"table {self.name}: pooling must be sum or mean, got {self.pooling!r}")

    @property
    def nbytes(self) -> int:
        return self.rows * self.dim * 4


@dataclass(frozen=True)
class DLRMConfig:
    """Architecture, loss/optimizer and default batch size of one DLRM.

    `bottom_mlp` lists every layer width including the input (= `dense_features`) and the
    output (= `embedding_dim`); `top_mlp` lists the widths *after* the interaction (its input,
    `top_input`, is computed) and must end in 1 (the click logit).
    """

    name: str
    dense_features: int
    embedding_dim: int
    bottom_mlp: tuple[int, ...]
    top_mlp: tuple[int, ...]
    tables: tuple[TableConfig, ...]
    interaction: str = "dot"
    loss: str = "bce"
    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int = 128
    source: str = ""           # preset name or YAML path it came from
    max_rows: int | None = None  # the --max-rows cap applied to `tables`, if any
    rows_from: str = "config"  # "config" or "trace" (set by with_trace_rows)
    rows_pinned: bool = False  # a user YAML's rows are limits a trace must respect
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self.validate()

    # -- derived sizes -------------------------------------------------------------------
    @property
    def num_tables(self) -> int:
        return len(self.tables)

    @property
    def interaction_size(self) -> int:
        """Output width of the dot interaction: D + T(T+1)/2."""
        t = self.num_tables
        return self.embedding_dim + (t + 1) * t // 2

    @property
    def top_input(self) -> int:
        return self.interaction_size

    @property
    def top_layers(self) -> tuple[int, ...]:
        """Top MLP widths including the computed input."""
        return (self.top_input,) + tuple(self.top_mlp)

    def validate(self) -> None:
        where = self.source or self.name
        if self.dense_features <= 0:
            raise UserError(f"{where}: dense_features must be positive, got {self.dense_features}")
        if self.embedding_dim <= 0:
            raise UserError(f"{where}: embedding_dim must be positive, got {self.embedding_dim}")
        if len(self.bottom_mlp) < 2:
            raise UserError(f"{where}: bottom_mlp needs at least input and output widths, "
                            f"got {list(self.bottom_mlp)}")
        if self.bottom_mlp[0] != self.dense_features:
            raise UserError(f"{where}: bottom_mlp starts at {self.bottom_mlp[0]} but there are "
                            f"{self.dense_features} dense features")
        if self.bottom_mlp[-1] != self.embedding_dim:
            raise UserError(f"{where}: bottom_mlp ends at {self.bottom_mlp[-1]} but the dot "
                            f"interaction needs it to equal embedding_dim {self.embedding_dim}")
        if not self.top_mlp or self.top_mlp[-1] != 1:
            raise UserError(f"{where}: top_mlp must end in 1 (the click logit), got "
                            f"{list(self.top_mlp)}")
        if any(w <= 0 for w in self.bottom_mlp + self.top_mlp):
            raise UserError(f"{where}: MLP widths must be positive")
        if not self.tables:
            raise UserError(f"{where}: at least one table is needed")
        for t in self.tables:
            if t.dim != self.embedding_dim:
                raise UserError(f"{where}: table {t.name} has dim {t.dim}, the model "
                                f"embedding_dim is {self.embedding_dim}")
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise UserError(f"{where}: table names must be unique")
        if self.interaction not in INTERACTIONS:
            raise UserError(f"{where}: unknown interaction {self.interaction!r} "
                            f"(known: {', '.join(INTERACTIONS)})")
        if self.loss not in LOSSES:
            raise UserError(f"{where}: unknown loss {self.loss!r} (known: {', '.join(LOSSES)})")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{where}: unknown optimizer {self.optimizer!r} "
                            f"(known: {', '.join(OPTIMIZERS)})")
        if not self.lr > 0:
            raise UserError(f"{where}: lr must be positive, got {self.lr}")
        if self.batch_size <= 0:
            raise UserError(f"{where}: batch_size must be positive, got {self.batch_size}")

    # -- transformations -----------------------------------------------------------------
    def capped(self, max_rows: int | None) -> "DLRMConfig":
        """Cap every table at `max_rows` rows (the `--max-rows` option)."""
        if max_rows is None:
            return self
        if max_rows <= 0:
            raise UserError(f"--max-rows must be positive, got {max_rows}")
        tables = tuple(dataclasses.replace(t, rows=min(t.rows, max_rows)) for t in self.tables)
        return dataclasses.replace(self, tables=tables, max_rows=max_rows)

    def with_batch_size(self, batch_size: int | None) -> "DLRMConfig":
        if batch_size is None:
            return self
        if batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {batch_size}")
        return dataclasses.replace(self, batch_size=batch_size)

    def with_trace_rows(self, trace_rows: Sequence[int], trace_names: Sequence[str] | None = None,
                        trace_path: str = "trace") -> "DLRMConfig":
        """Size the tables from a trace header.

        The number of tables must match.  Row counts: a preset's rows are reference
        cardinalities (the Criteo counts; a reader that gives missing values their own ID can
        need one more), so a trace may differ from them; but no table may exceed the
        `--max-rows` cap, nor the rows a user's YAML file pins.
        """
        where = self.source or self.name
        if len(trace_rows) != self.num_tables:
            raise UserError(f"{trace_path}: trace has {len(trace_rows)} tables but config "
                            f"{where} has {self.num_tables}")
        tables = []
        for t, rows in zip(self.tables, trace_rows):
            rows = int(rows)
            over_cap = self.max_rows is not None and rows > self.max_rows
            if over_cap or (self.rows_pinned and rows > t.rows):
                cap = f" (--max-rows {self.max_rows})" if self.max_rows is not None else ""
                allowed = t.rows if self.rows_pinned else self.max_rows
                raise UserError(f"{trace_path}: table {t.name}: trace has {rows} rows but config "
                                f"{where}{cap} allows {allowed}")
            tables.append(dataclasses.replace(t, rows=rows))
        notes = self.notes
        if trace_names is not None and list(trace_names) != [t.name for t in self.tables]:
            notes = notes + (f"trace table names: {', '.join(map(str, trace_names))}",)
        return dataclasses.replace(self, tables=tuple(tables), rows_from="trace", notes=notes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for reports (the computed top-MLP input included)."""
        return {
            "name": self.name,
            "source": self.source,
            "dense_features": self.dense_features,
            "embedding_dim": self.embedding_dim,
            "bottom_mlp": list(self.bottom_mlp),
            "top_mlp": list(self.top_mlp),
            "top_input": self.top_input,
            "top_input_note": (f"computed: embedding_dim + T(T+1)/2 = {self.embedding_dim} + "
                               f"{self.num_tables + 1}*{self.num_tables}/2 = {self.top_input}"),
            "interaction": self.interaction,
            "loss": self.loss,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "max_rows": self.max_rows,
            "rows_from": self.rows_from,
            "tables": [{"name": t.name, "rows": t.rows, "dim": t.dim, "pooling": t.pooling}
                       for t in self.tables],
            "embedding_bytes": sum(t.nbytes for t in self.tables),
            "notes": list(self.notes),
        }

    def describe(self) -> str:
        """A few human lines (what `dlrmprof run` prints)."""
        rows = [t.rows for t in self.tables]
        mb = sum(t.nbytes for t in self.tables) / 2**20
        lines = [
            f"config {self.name} ({self.source}): {self.num_tables} tables x dim "
            f"{self.embedding_dim}, rows {min(rows)}..{max(rows)} ({mb:.1f} MiB, rows from "
            f"{self.rows_from}{', capped at %d' % self.max_rows if self.max_rows else ''})",
            f"  bottom MLP {'-'.join(map(str, self.bottom_mlp))}; interaction {self.interaction} "
            f"-> {self.top_input} = {self.embedding_dim} + {self.num_tables + 1}*{self.num_tables}/2"
            f" (computed); top MLP {'-'.join(map(str, self.top_layers))} + sigmoid",
            f"  loss {self.loss}, optimizer {self.optimizer} lr {self.lr}, batch {self.batch_size}",
        ]
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# -- YAML --------------------------------------------------------------------------------
_KEYS = {"name", "dense_features", "embedding_dim", "bottom_mlp", "top_mlp", "interaction",
         "loss", "optimizer", "lr", "batch_size", "tables", "pooling"}
_REQUIRED = ("dense_features", "embedding_dim", "bottom_mlp", "top_mlp", "tables")


def _int(path, key, value, *, positive=True) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise input_error(path, "a positive integer", field=key, got=repr(value))
    return value


def _int_list(path, key, value) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise input_error(path, "a non-empty list of positive integers", field=key,
                          got=repr(value))
    return tuple(_int(path, f"{key}[{i}]", v) for i, v in enumerate(value))


def _str(path, key, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise input_error(path, f"one of {', '.join(choices)}", field=key, got=repr(value))
    return value


def config_from_dict(data: Any, source: str) -> DLRMConfig:
    """Build a config from parsed YAML; every problem names the key (UserError)."""
    if not isinstance(data, dict):
        raise input_error(source, "a mapping of config keys", got=type(data).__name__)
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise input_error(source, f"known keys ({', '.join(sorted(_KEYS))})", field=unknown[0],
                          got="unknown key")
    for key in _REQUIRED:
        if key not in data:
            raise input_error(source, "this key to be present", field=key, got="nothing")
    dim = _int(source, "embedding_dim", data["embedding_dim"])
    pooling = _str(source, "pooling", data.get("pooling", "sum"), ("sum", "mean"))
    raw_tables = data["tables"]
    if not isinstance(raw_tables, list) or not raw_tables:
        raise input_error(source, "a non-empty list of row counts or {name, rows} mappings",
                          field="tables", got=repr(raw_tables)[:60])
    tables = []
    for i, item in enumerate(raw_tables):
        key = f"tables[{i}]"
        if isinstance(item, dict):
            extra = sorted(set(map(str, item)) - {"name", "rows"})
            if extra:
                raise input_error(source, "keys name, rows", field=f"{key}.{extra[0]}",
                                  got="unknown key")
            if "rows" not in item:
                raise input_error(source, "this key to be present", field=f"{key}.rows",
                                  got="nothing")
            rows = _int(source, f"{key}.rows", item["rows"])
            name = item.get("name", f"C{i + 1}")
            if not isinstance(name, str) or not name:
                raise input_error(source, "a table name", field=f"{key}.name", got=repr(name))
        else:
            rows = _int(source, key, item)
            name = f"C{i + 1}"
        tables.append(TableConfig(name=name, rows=rows, dim=dim, pooling=pooling))
    lr = data.get("lr", 0.1)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise input_error(source, "a positive number", field="lr", got=repr(lr))
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise input_error(source, "a string", field="name", got=repr(name))
    return DLRMConfig(
        name=name,
        dense_features=_int(source, "dense_features", data["dense_features"]),
        embedding_dim=dim,
        bottom_mlp=_int_list(source, "bottom_mlp", data["bottom_mlp"]),
        top_mlp=_int_list(source, "top_mlp", data["top_mlp"]),
        tables=tuple(tables),
        interaction=_str(source, "interaction", data.get("interaction", "dot"), INTERACTIONS),
        loss=_str(source, "loss", data.get("loss", "bce"), LOSSES),
        optimizer=_str(source, "optimizer", data.get("optimizer", "sgd"), OPTIMIZERS),
        lr=float(lr),
        batch_size=_int(source, "batch_size", data.get("batch_size", 128)),
        source=source,
        rows_pinned=not source.startswith("preset "),
    )


def _parse_yaml(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise input_error(source, "valid YAML", line=line, got=problem) from None


def load_config(name_or_path: str | os.PathLike, *, max_rows: int | None = None,
                batch_size: int | None = None) -> DLRMConfig:
    """Load a preset by name (`kaggle`, `terabyte`, `tiny`) or a YAML file by path."""
    spec = str(name_or_path)
    if spec in PRESETS:
        text = resources.files("dlrmprof.dlrm").joinpath("presets", f"{spec}.yaml").read_text()
        source = f"preset {spec}"
    else:
        path = Path(spec)
        if path.suffix.lower() not in (".yaml", ".yml") and not path.exists():
            raise UserError(f"unknown config {spec!r}: expected a preset "
                            f"({', '.join(PRESETS)}) or a .yaml file")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{spec}: cannot read config ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise input_error(spec, "a UTF-8 YAML file",
                              got=f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") \
                from None
        source = spec
    cfg = config_from_dict(_parse_yaml(text, source), source)
    return cfg.capped(max_rows).with_batch_size(batch_size)
