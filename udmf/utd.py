"""Uniform Type Descriptors (UTD): OpenHarmony's type system for shared data, as pure logic.

Types form a DAG with two roots. `general.entity` says what a thing physically is (a file, a directory,
a symlink); `general.object` says what it means (text, an image, a document). The two are orthogonal: a
JPEG is `general.jpeg` ⊂ `general.image` ⊂ `general.media` ⊂ `general.object` and is *not* under
`general.file`, because an image may as well be a file, a pixel map in memory or bytes on the pasteboard.
A type may have several parents (a `.docx` is a composite object and an Office Open XML ZIP).

`UtdRegistry` holds the preset table (`utd_presets.json`) plus the custom types apps register. Every
type's ancestor closure is precomputed, so relations are set look-ups. A lookup that matches no type
returns a flexible type id (see `udmf._flexible`), which `get_type_descriptor` decodes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from udmf import _declarations, _flexible
from udmf._declarations import Declaration
from udmf.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)

FILE = "general.file"
OBJECT = "general.object"


@dataclass(frozen=True, slots=True)
class TypeDescriptor:
    """One type: its declaration, and relations answered by the registry it came from."""

    type_id: str
    belonging_to_types: tuple[str, ...]
    description: str
    reference_url: str
    icon_file: str
    filename_extensions: tuple[str, ...]
    mime_types: tuple[str, ...]
    _registry: UtdRegistry = field(repr=False, compare=False, kw_only=True)

    def belongs_to(self, type_id: str) -> bool:
        """Whether this type is `type_id` or a descendant of it. Unknown `type_id`: InvalidArgument."""
        if type_id == self.type_id:
            return True
        self._registry.ancestors(type_id)
        return type_id in self._registry._closure_of(self)

    def is_lower_level_type(self, type_id: str) -> bool:
        """Whether this type is a strict descendant of `type_id`."""
        return type_id != self.type_id and self.belongs_to(type_id)

    def is_higher_level_type(self, type_id: str) -> bool:
        """Whether this type is a strict ancestor of `type_id`."""
        return type_id != self.type_id and self.type_id in self._registry.ancestors(type_id)

    def equals(self, other: TypeDescriptor) -> bool:
        """Same type id (OpenHarmony's `equals`); `==` also compares the declared fields."""
        return self.type_id == other.type_id


@dataclass(frozen=True, slots=True)
class _State:
    """Everything a lookup reads; replaced whole on (un)registration, so readers need no lock."""

    descriptors: Mapping[str, TypeDescriptor]  # presets first, then custom types in registration order
    closure: Mapping[str, frozenset[str]]  # type id -> itself and all its ancestors
    custom: Mapping[str, Declaration]
    by_extension: Mapping[str, tuple[str, ...]]  # lower-cased extension -> type ids, in table order
    by_mime: Mapping[str, tuple[str, ...]]  # lower-cased MIME type -> type ids, in table order
    mime_rows: tuple[tuple[str, tuple[str, ...]], ...]  # (type id, lower-cased MIME types), table order


class UtdRegistry:
    """The preset types plus custom ones; `custom_declarations` is what to persist and pass back in."""

    def __init__(self, custom_declarations: Iterable[Mapping[str, object]] = ()) -> None:
        presets, closure = _presets()
        self._preset_ids = frozenset(d.type_id for d in presets)
        self._lock = threading.Lock()
        descriptors = {d.type_id: self._descriptor(d) for d in presets}
        self._state = _build_state(descriptors, closure, {})
        batch = [_declarations.parse_persisted(raw) for raw in custom_declarations]
        if batch:
            self._install(batch)

    # -- look-ups -------------------------------------------------------------------------------

    def type_ids(self) -> list[str]:
        """Every registered type id: presets in table order, then custom types."""
        return list(self._state.descriptors)

    def get_type_descriptor(self, type_id: str) -> TypeDescriptor | None:
        """The descriptor of a registered type or of a flexible type id; None if neither."""
        found = self._state.descriptors.get(type_id)
        if found is not None:
            return found
        fields = _flexible.decode(type_id)
        if fields is None:
            return None
        parent = fields.belongs_to or (FILE if fields.filename_extension else OBJECT)
        return TypeDescriptor(
            type_id=type_id,
            belonging_to_types=(parent,),
            description="",
            reference_url="",
            icon_file="",
            filename_extensions=(fields.filename_extension,) if fields.filename_extension else (),
            mime_types=(fields.mime_type,) if fields.mime_type else (),
            _registry=self,
        )

    def ancestors(self, type_id: str) -> frozenset[str]:
        """`type_id` and every type it belongs to. Neither registered nor flexible: InvalidArgument."""
        closure = self._state.closure.get(type_id)
        if closure is not None:
            return closure
        descriptor = self.get_type_descriptor(type_id)
        if descriptor is None:
            raise InvalidArgument(f"unknown type id {type_id!r}")
        return self._closure_of(descriptor)

    def get_uniform_data_type_by_filename_extension(
        self, filename_extension: str, belongs_to: str | None = None
    ) -> str:
        """The first type declaring the extension (and belonging to `belongs_to`), else a flexible id."""
        return self.get_uniform_data_types_by_filename_extension(filename_extension, belongs_to)[0]

    def get_uniform_data_types_by_filename_extension(
        self, filename_extension: str, belongs_to: str | None = None
    ) -> list[str]:
        """Every type declaring the extension, in table order; `[flexible id]` if none."""
        ext = _normalise_extension(filename_extension)
        state = self._state
        self._check_belongs_to(state, belongs_to)
        found = _belonging(state, state.by_extension.get(ext, ()), belongs_to)
        return found or [_flexible.encode(_flexible.FlexibleFields(belongs_to, None, ext))]

    def get_uniform_data_type_by_mime_type(self, mime_type: str, belongs_to: str | None = None) -> str:
        """The first type declaring the MIME type, else a flexible id. `image/*` gives `general.image`."""
        return self.get_uniform_data_types_by_mime_type(mime_type, belongs_to)[0]

    def get_uniform_data_types_by_mime_type(self, mime_type: str, belongs_to: str | None = None) -> list[str]:
        """Every type declaring the MIME type; for `x/*`, those declaring it then all with an `x/` type.

        Parameters (`; charset=...`) are ignored. `[flexible id]` if nothing matches.
        """
        mime = _normalise_mime(mime_type)
        state = self._state
        self._check_belongs_to(state, belongs_to)
        candidates = list(state.by_mime.get(mime, ()))
        if mime.endswith("*"):
            prefix = mime[:-1]
            exact = set(candidates)
            candidates += [
                type_id
                for type_id, mimes in state.mime_rows
                if type_id not in exact and any(m.startswith(prefix) for m in mimes)
            ]
        found = _belonging(state, candidates, belongs_to)
        return found or [_flexible.encode(_flexible.FlexibleFields(belongs_to, mime, None))]

    # -- custom types ---------------------------------------------------------------------------

    def register_types(self, declarations: Sequence[Mapping[str, object]], owner_bundle: str) -> None:
        """Add up to 50 types owned by `owner_bundle`, all or none (see `udmf._declarations`)."""
        owner = _declarations.check_owner_bundle(owner_bundle)
        if not declarations:
            raise InvalidArgument("no type declarations to register")
        if len(declarations) > _declarations.MAX_DECLARATIONS_PER_BATCH:
            raise InvalidArgument(
                f"{len(declarations)} declarations in one batch; at most "
                f"{_declarations.MAX_DECLARATIONS_PER_BATCH}"
            )
        self._install([_declarations.parse(raw, owner) for raw in declarations])

    def unregister_types(self, type_ids: Iterable[str], owner_bundle: str) -> None:
        """Remove custom types of `owner_bundle`, all or none; refused while another type is under one."""
        owner = _declarations.check_owner_bundle(owner_bundle)
        leaving = list(dict.fromkeys(type_ids))
        if not leaving:
            raise InvalidArgument("no type ids to unregister")
        with self._lock:
            state = self._state
            for type_id in leaving:
                if type_id in self._preset_ids:
                    raise PermissionDenied(f"{type_id} is a preset type")
                declaration = state.custom.get(type_id)
                if declaration is None:
                    raise NotFound(f"no custom type {type_id!r}")
                if declaration.owner_bundle != owner:
                    raise PermissionDenied(f"{type_id} is owned by {declaration.owner_bundle}, not {owner}")
            gone = set(leaving)
            for type_id, declaration in state.custom.items():
                blocking = gone.intersection(declaration.belonging_to_types)
                if type_id not in gone and blocking:
                    raise FailedPrecondition(f"{type_id} still belongs to {sorted(blocking)}")
            self._state = _build_state(
                {k: v for k, v in state.descriptors.items() if k not in gone},
                {k: v for k, v in state.closure.items() if k not in gone},
                {k: v for k, v in state.custom.items() if k not in gone},
            )

    def custom_declarations(self) -> list[dict[str, object]]:
        """The custom types as plain dicts (with `owner_bundle`), in registration order."""
        return [declaration.to_dict() for declaration in self._state.custom.values()]

    # -- internals ------------------------------------------------------------------------------

    def _install(self, batch: list[Declaration]) -> None:
        with self._lock:
            state = self._state
            seen: set[str] = set()
            for declaration in batch:
                type_id = declaration.type_id
                if type_id in seen:
                    raise InvalidArgument(f"{type_id} is declared twice in one batch")
                seen.add(type_id)
                if type_id in self._preset_ids:
                    raise AlreadyExists(f"{type_id} is a preset type")
                if type_id in state.descriptors:
                    raise AlreadyExists(f"{type_id} is already registered")
            total = len(state.custom) + len(batch)
            if total > _declarations.MAX_CUSTOM_TYPES:
                raise ResourceExhausted(
                    f"{total} custom types; at most {_declarations.MAX_CUSTOM_TYPES} may be registered"
                )
            added = _extend_closure(state.closure, {d.type_id: d.belonging_to_types for d in batch})
            self._state = _build_state(
                {**state.descriptors, **{d.type_id: self._descriptor(d) for d in batch}},
                {**state.closure, **added},
                {**state.custom, **{d.type_id: d for d in batch}},
            )

    def _descriptor(self, declaration: Declaration) -> TypeDescriptor:
        return TypeDescriptor(
            type_id=declaration.type_id,
            belonging_to_types=declaration.belonging_to_types,
            description=declaration.description,
            reference_url=declaration.reference_url,
            icon_file=declaration.icon_file,
            filename_extensions=declaration.filename_extensions,
            mime_types=declaration.mime_types,
            _registry=self,
        )

    def _closure_of(self, descriptor: TypeDescriptor) -> frozenset[str]:
        """The precomputed closure, or (flexible or since unregistered) one built from its parents."""
        closure = self._state.closure
        found = closure.get(descriptor.type_id)
        if found is not None:
            return found
        result = {descriptor.type_id}
        for parent in descriptor.belonging_to_types:
            result |= closure.get(parent, {parent})
        return frozenset(result)

    @staticmethod
    def _check_belongs_to(state: _State, belongs_to: str | None) -> None:
        if belongs_to is not None and belongs_to not in state.descriptors:
            raise InvalidArgument(f"belongs_to {belongs_to!r} is not a registered type")


def _belonging(state: _State, type_ids: Iterable[str], belongs_to: str | None) -> list[str]:
    return [t for t in type_ids if belongs_to is None or belongs_to in state.closure[t]]


def _normalise_extension(filename_extension: str) -> str:
    if not filename_extension.startswith(".") or len(filename_extension) < 2:
        raise InvalidArgument(f"filename extension {filename_extension!r} must start with '.'")
    ext = filename_extension.lower()
    if len(ext) > _flexible.MAX_VALUE_LENGTH:
        raise InvalidArgument(f"filename extension longer than {_flexible.MAX_VALUE_LENGTH} characters")
    return ext


def _normalise_mime(mime_type: str) -> str:
    mime = mime_type.split(";", 1)[0].strip().lower()
    if not mime:
        raise InvalidArgument(f"MIME type {mime_type!r} is empty")
    if len(mime) > _flexible.MAX_VALUE_LENGTH:
        raise InvalidArgument(f"MIME type longer than {_flexible.MAX_VALUE_LENGTH} characters")
    return mime


def _build_state(
    descriptors: Mapping[str, TypeDescriptor],
    closure: Mapping[str, frozenset[str]],
    custom: Mapping[str, Declaration],
) -> _State:
    by_extension: dict[str, list[str]] = {}
    by_mime: dict[str, list[str]] = {}
    mime_rows = []
    for type_id, descriptor in descriptors.items():
        for ext in dict.fromkeys(e.lower() for e in descriptor.filename_extensions):
            by_extension.setdefault(ext, []).append(type_id)
        mimes = tuple(dict.fromkeys(m.lower() for m in descriptor.mime_types))
        for mime in mimes:
            by_mime.setdefault(mime, []).append(type_id)
        if mimes:
            mime_rows.append((type_id, mimes))
    return _State(
        descriptors=descriptors,
        closure=closure,
        custom=custom,
        by_extension={k: tuple(v) for k, v in by_extension.items()},
        by_mime={k: tuple(v) for k, v in by_mime.items()},
        mime_rows=tuple(mime_rows),
    )


def _extend_closure(
    closure: Mapping[str, frozenset[str]], parents: Mapping[str, Sequence[str]]
) -> dict[str, frozenset[str]]:
    """Closures of the new types in `parents`, whose parents are known (in `closure`) or new.

    Known closures never change: no known type can have a new type as a parent. A cycle among the new
    types is an InvalidArgument.
    """
    added: dict[str, frozenset[str]] = {}
    on_path: list[str] = []

    def visit(type_id: str) -> frozenset[str]:
        known = closure.get(type_id) or added.get(type_id)
        if known is not None:
            return known
        if type_id in on_path:
            cycle = [*on_path[on_path.index(type_id) :], type_id]
            raise InvalidArgument(f"type cycle: {' -> '.join(cycle)}")
        for parent in parents[type_id]:
            if parent not in closure and parent not in parents:
                raise InvalidArgument(f"{type_id}: unknown parent type {parent!r}")
        on_path.append(type_id)
        result = frozenset({type_id}).union(*(visit(p) for p in parents[type_id]))
        on_path.pop()
        added[type_id] = result
        return result

    for type_id in parents:
        visit(type_id)
    return added


@cache
def _presets() -> tuple[tuple[Declaration, ...], dict[str, frozenset[str]]]:
    """The preset table and its closure, read once per process."""
    text = resources.files("udmf").joinpath("utd_presets.json").read_text(encoding="utf-8")
    presets = tuple(
        Declaration(
            type_id=row["id"],
            belonging_to_types=tuple(row["parents"]),
            description=row.get("desc", ""),
            reference_url=row.get("url", ""),
            icon_file="",
            filename_extensions=tuple(row.get("ext", ())),
            mime_types=tuple(row.get("mime", ())),
            owner_bundle="",
        )
        for row in json.loads(text)["types"]
    )
    return presets, _extend_closure({}, {d.type_id: d.belonging_to_types for d in presets})
