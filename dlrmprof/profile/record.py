"""`Record`: the base of the report's typed sections (`dlrmprof.profile.model`).

A record is a frozen dataclass (declared with `json_record`) whose fields are the JSON keys
the code reads, typed; nested records, lists of records and maps of records are declared with
`nested`, `list_of` and `dict_of` (a null element of a list or map stays None).
``from_json(d)`` keeps what it does not know: keys without a field go to ``extra`` and the
order of the keys read goes to ``key_order``, so ``from_json(d).to_json() == d`` with the same
key order (a report rewritten from its model is the same bytes), and a key that was absent
stays absent rather than turning into ``null``.  A record built in code (``key_order=None``)
writes its fields in declaration order, then ``extra``; one changed with
`dataclasses.replace` keeps the key order it was read with.

Required fields (those without a default) must be present; a missing one, or a nested record
that is not an object, is a `UserError` naming the field by its path
(``r.json: field host.caches[0].size_bytes: missing``).  Values are not converted (an int
stays an int, so the bytes do not change); checking their ranges is the job of the section's
validator (`dlrmprof.profile.report.validate_op_row`, `ServingSection.from_json`, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dlrmprof.errors import UserError

_INTERNAL = ("extra", "key_order")


def nested(cls: type, **kw: Any) -> Any:
    """A field holding one record of type `cls` (or None)."""
    return dataclasses.field(metadata={"record": cls, "shape": "one"}, **kw)


def list_of(cls: type, **kw: Any) -> Any:
    """A field holding a list of records of type `cls`."""
    kw.setdefault("default_factory", list)
    return dataclasses.field(metadata={"record": cls, "shape": "list"}, **kw)


def dict_of(cls: type, **kw: Any) -> Any:
    """A field holding a map from a string key to a record of type `cls`."""
    kw.setdefault("default_factory", dict)
    return dataclasses.field(metadata={"record": cls, "shape": "dict"}, **kw)


def _shown(x: Any) -> str:
    g = repr(x)
    return g[:57] + "..." if len(g) > 60 else g


def json_record(cls: type) -> type:
    """Class decorator: `cls` (a `Record` subclass) as a frozen dataclass with the two
    bookkeeping fields after its own, ``extra`` (unknown keys) and ``key_order``."""
    cls.__annotations__ = {**cls.__dict__.get("__annotations__", {}),
                           "extra": "dict", "key_order": "tuple | None"}
    cls.extra = dataclasses.field(default_factory=dict, repr=False)
    cls.key_order = dataclasses.field(default=None, repr=False, compare=False)
    return dataclasses.dataclass(frozen=True)(cls)


class Record:
    """Base of a `json_record` class: one JSON object (see the module docstring)."""

    extra: dict
    key_order: tuple | None

    @classmethod
    def from_json(cls, d: Any, where: str | None = None) -> Any:
        """`d` typed; `where` names it in errors (``"r.json: field ops[3]"``; default: the
        class name)."""
        where = cls.__name__ if where is None else where
        if not isinstance(d, (dict, Mapping)):     # dict first: the cheap check
            raise UserError(f"{where}: expected an object, got {_shown(d)}")
        kw: dict[str, Any] = {}
        spec = _spec(cls)
        for name, f, required in spec.fields:
            if name in d:
                kw[name] = _load(f, d[name], where) if f.metadata else d[name]
            elif required:
                raise UserError(f"{where}.{name}: missing")
        extra = {k: v for k, v in d.items() if k not in spec.by_name}
        return cls(**kw, extra=extra, key_order=tuple(d))

    def is_empty(self) -> bool:
        """True for a record read from an empty object (a section the report does not have)."""
        return self.key_order == () and not self.extra

    def to_json(self) -> dict:
        spec = _spec(type(self))
        order = self.key_order if self.key_order is not None else (*spec.names, *self.extra)
        out: dict[str, Any] = {}
        for k in order:
            f = spec.by_name.get(k)
            if f is None:
                if k in self.extra:
                    out[k] = self.extra[k]
            else:
                v = getattr(self, k)
                out[k] = _dump(f, v) if f.metadata else v
        return out


@dataclasses.dataclass(frozen=True)
class _Spec:
    fields: tuple            # (name, Field, required) of the JSON fields
    names: tuple
    by_name: dict


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    """The JSON fields of a record class (computed once per class)."""
    spec = _SPECS.get(cls)
    if spec is None:
        fs = [f for f in dataclasses.fields(cls) if f.name not in _INTERNAL]
        spec = _Spec(tuple((f.name, f, f.default is dataclasses.MISSING
                            and f.default_factory is dataclasses.MISSING) for f in fs),
                     tuple(f.name for f in fs), {f.name: f for f in fs})
        _SPECS[cls] = spec
    return spec


def _load(f: dataclasses.Field, v: Any, where: str) -> Any:
    cls = f.metadata.get("record")
    if cls is None or v is None:
        return v
    where = f"{where}.{f.name}"
    shape = f.metadata["shape"]
    if shape == "one":
        return cls.from_json(v, where)
    if shape == "list":
        if not isinstance(v, list):
            raise UserError(f"{where}: expected a list, got {_shown(v)}")
        return [None if x is None else cls.from_json(x, f"{where}[{i}]")
                for i, x in enumerate(v)]
    if not isinstance(v, Mapping):
        raise UserError(f"{where}: expected an object, got {_shown(v)}")
    return {k: None if x is None else cls.from_json(x, f"{where}.{k}") for k, x in v.items()}


def _dump(f: dataclasses.Field, v: Any) -> Any:
    if f.metadata.get("record") is None or v is None:
        return v
    shape = f.metadata["shape"]
    if shape == "one":
        return v.to_json()
    if shape == "list":
        return [None if x is None else x.to_json() for x in v]
    return {k: None if x is None else x.to_json() for k, x in v.items()}
