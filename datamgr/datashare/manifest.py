"""The provider manifest: what an app shares through DataShare, validated with pydantic.

A manifest names stores and their tables (typed columns, a primary key), the permissions consumers
need, an allow-list of consumer apps, whether silent access is on, and (optionally) the permissions of
the provider's extension (its live handler). Permissions are inherited table → store → manifest.

A table may be `"distributed": true`: it syncs with the paired devices where the same app registered
the same manifest (`datamgr.datashare.distributed`), under a security label `"security_level"` 1-4
(S1-S4, default 2). Its primary key must name the same row on every device, so it cannot be an
integer (the daemon numbers integer keys 1, 2, 3... on each device by itself): the app gives a text
(a UUID, say), blob, real or boolean key on every insert.

A text column may be indexed, `"index": {"vector": true, "fulltext": true}`: its rows can then be
retrieved by meaning and by words (`DataShareService.Retrieve`). Only text columns may be.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from datamgr.bundles import BUNDLE_RE
from datamgr.datashare.uri import NAME_RE
from datamgr.errors import InvalidArgument

ColumnType = Literal["integer", "real", "text", "blob", "boolean"]
# OpenHarmony's special permission values in silent mode: anyone may access / nobody else may.
NO_PERMISSION = "noPermission"
REJECT = "reject"

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "real": (int, float),
    "text": (str,),
    "blob": (bytes,),
    "boolean": (bool,),
}


def _name(value: str, what: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: letters, digits and _ only, 1-64 characters")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Access(_Model):
    read_permission: str | None = Field(
        None, max_length=256, description="Permission consumers need to read."
    )
    write_permission: str | None = Field(
        None, max_length=256, description="Permission consumers need to write."
    )
    allow_list: list[str] | None = Field(
        None, max_length=256, description="Only these consumer bundles, in addition to permissions."
    )


class IndexSpec(_Model):
    """The indexes of a text column (`datamgr.datashare.indexer`): vectors of its text, embedded in the
    background, and a full-text index kept in step with every write."""

    vector: bool = Field(False, description="Embed the text for vector (semantic) retrieval.")
    fulltext: bool = Field(False, description="Index the words for full-text retrieval.")


class ColumnSpec(_Model):
    name: str
    type: ColumnType
    nullable: bool = True
    default: bool | int | float | str | None = None
    index: IndexSpec | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _name(v, "column name")

    @model_validator(mode="after")
    def _check_default(self) -> ColumnSpec:
        if self.default is not None and not value_fits(self.type, self.default):
            raise ValueError(f"default {self.default!r} of column {self.name!r} is not a {self.type}")
        problem = _default_problem(self.type, self.default)
        if problem:
            raise ValueError(f"default of column {self.name!r} {problem}")
        if self.indexed and self.type != "text":
            raise ValueError(
                f"column {self.name!r} is {self.type}: only text columns may be indexed (vector, fulltext)"
            )
        return self

    @property
    def vector(self) -> bool:
        return self.index is not None and self.index.vector

    @property
    def fulltext(self) -> bool:
        return self.index is not None and self.index.fulltext

    @property
    def indexed(self) -> bool:
        return self.vector or self.fulltext


def _default_problem(column_type: str, value: object) -> str | None:
    """Why a default of the right type still cannot be stored as it is given, if it cannot."""
    if column_type == "integer" and isinstance(value, int) and not -(1 << 63) <= value < 1 << 63:
        return f"{value} is out of the 64-bit integer range"
    if column_type == "real" and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            return f"{value!r} is not a finite number"
    return None


DEFAULT_SECURITY_LEVEL = 2  # S2, the label of a distributed table that declares none


class TableSpec(_Access):
    _by_name: dict[str, ColumnSpec] = PrivateAttr(default_factory=dict)
    name: str
    primary_key: str
    columns: list[ColumnSpec] = Field(min_length=1, max_length=1000)
    distributed: bool = Field(False, description="Whether the table syncs with paired devices.")
    security_level: int | None = Field(
        None, ge=1, le=4, description="The data label S1-S4 of a distributed table (default S2)."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _name(v, "table name")

    @model_validator(mode="after")
    def _check_columns(self) -> TableSpec:
        names = [c.name.lower() for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r} declares a column twice")
        if self.primary_key.lower() not in names:
            raise ValueError(f"primary key {self.primary_key!r} is not a column of table {self.name!r}")
        if self.security_level is not None and not self.distributed:
            raise ValueError(f"table {self.name!r} sets security_level but is not distributed")
        pk = next(c for c in self.columns if c.name.lower() == self.primary_key.lower())
        if self.distributed and pk.type == "integer":
            raise ValueError(
                f"table {self.name!r} is distributed, so its primary key must name the same row on every "
                f"device; {pk.name!r} is an integer, which each device numbers 1, 2, 3... by itself "
                "(auto-increment) and two devices would give different rows the same id: declare a "
                "text primary key the app gives on each insert (a UUID, say)"
            )
        return self

    @property
    def label(self) -> int:
        """The security label of a distributed table (S1-S4)."""
        return self.security_level or DEFAULT_SECURITY_LEVEL

    def column(self, name: str) -> ColumnSpec:
        return self._by_name[name]

    @property
    def vector_columns(self) -> tuple[str, ...]:
        """The columns with a vector index, in declaration order."""
        return tuple(c.name for c in self.columns if c.vector)

    @property
    def fulltext_columns(self) -> tuple[str, ...]:
        """The columns with a full-text index, in declaration order."""
        return tuple(c.name for c in self.columns if c.fulltext)

    def model_post_init(self, context: Any, /) -> None:
        self._by_name = {c.name: c for c in self.columns}


class StoreSpec(_Access):
    name: str
    tables: list[TableSpec] = Field(min_length=1, max_length=256)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _name(v, "store name")

    @model_validator(mode="after")
    def _check_tables(self) -> StoreSpec:
        names = [t.name.lower() for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"store {self.name!r} declares a table twice")
        return self


class ExtensionSpec(_Model):
    """Permissions of the provider's live handler; unset means open, as in OpenHarmony."""

    read_permission: str | None = Field(None, max_length=256)
    write_permission: str | None = Field(None, max_length=256)


class Manifest(_Access):
    bundle: str
    silent_access: bool = Field(
        True, description="Whether consumers may reach the tables without the provider."
    )
    stores: list[StoreSpec] = Field(default_factory=list, max_length=64)
    extension: ExtensionSpec | None = None
    published_read_permission: str | None = Field(
        None,
        max_length=256,
        description="Permission to read this app's published data (unset: provider only).",
    )

    @field_validator("bundle")
    @classmethod
    def _check_bundle(cls, v: str) -> str:
        if not (len(v) <= 128 and BUNDLE_RE.fullmatch(v)):
            raise ValueError(f"invalid bundle name {v!r}")
        return v

    @model_validator(mode="after")
    def _check_stores(self) -> Manifest:
        names = [s.name.lower() for s in self.stores]
        if len(set(names)) != len(names):
            raise ValueError("a store is declared twice")
        return self

    def table(self, store: str, table: str) -> tuple[StoreSpec, TableSpec] | None:
        for s in self.stores:
            if s.name == store:
                for t in s.tables:
                    if t.name == table:
                        return s, t
        return None


def effective_access(manifest: Manifest, store: StoreSpec, table: TableSpec) -> _Access:
    """Table settings override the store's, which override the manifest's."""

    def pick(attr: str) -> Any:
        for level in (table, store, manifest):
            value = getattr(level, attr)
            if value is not None:
                return value
        return None

    return _Access(
        read_permission=pick("read_permission"),
        write_permission=pick("write_permission"),
        allow_list=pick("allow_list"),
    )


def value_fits(column_type: str, value: object) -> bool:
    """Whether a Python value may be stored in a column of this type (bool is not an integer)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return column_type == "boolean"
    return isinstance(value, _PYTHON_TYPES[column_type])


def _no_constant(name: str) -> Any:
    raise InvalidArgument(f"manifest is not valid JSON: {name} is not a JSON number")


def _check_strings(value: Any, where: str) -> None:
    """InvalidArgument for a NUL character or a lone surrogate in any string (no database stores them)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(f"invalid manifest: {where} holds a NUL character (U+0000)")
        try:
            value.encode()
        except UnicodeEncodeError:
            message = f"invalid manifest: {where} is not valid Unicode (a lone surrogate)"
            raise InvalidArgument(message) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, f"{where}: a key")
            _check_strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}.{i}")


def parse_manifest(text: str) -> Manifest:
    """Parses and validates manifest JSON; raises InvalidArgument listing every problem."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
        _check_strings(data, "manifest")
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument("invalid manifest: it nests too deeply") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidArgument(f"invalid manifest: {problems}") from None
