"""The UTD registry as the service keeps it: persisted custom types, changed all or nothing.

A registration is checked on a trial copy of the registry first, then persisted, then applied to the
live registry (which can no longer fail: one change at a time, under a lock); so a failed call changes
neither the database nor the registry, and the registry never holds a type the database does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from udmf import _parts
from udmf.errors import InvalidArgument, NotFound, PermissionDenied
from udmf.store import UdmfStore
from udmf.utd import UtdRegistry
from udmf.v1 import udmf_pb2 as pb

RunDb = Callable[..., Awaitable[Any]]


class TypeCatalog:
    def __init__(self, store: UdmfStore, write: RunDb) -> None:
        self._store = store
        self._write = write
        self.registry = UtdRegistry(custom_declarations=store.load_types())
        self._lock = asyncio.Lock()

    def query(self, request: pb.QueryTypesRequest) -> list[pb.TypeDescriptor]:
        reg = self.registry
        given = [f for f in ("type_id", "filename_extension", "mime_type") if getattr(request, f)]
        if len(given) != 1:
            raise InvalidArgument("QueryTypes takes exactly one of type_id, filename_extension, mime_type")
        belongs_to = request.belongs_to or None
        if request.type_id:
            found = reg.get_type_descriptor(request.type_id)
            if found is None:
                raise NotFound(f"no type {request.type_id!r}")
            ids = [found.type_id]
        elif request.filename_extension:
            ids = reg.get_uniform_data_types_by_filename_extension(request.filename_extension, belongs_to)
        else:
            ids = reg.get_uniform_data_types_by_mime_type(request.mime_type, belongs_to)
        owners = {str(d["type_id"]): str(d["owner_bundle"]) for d in reg.custom_declarations()}
        descriptors = [reg.get_type_descriptor(i) for i in (ids if request.all else ids[:1])]
        return [_parts.descriptor(d, owners) for d in descriptors if d is not None]

    async def register(self, types: Sequence[pb.TypeDescriptor], bundle: str) -> None:
        for t in types:
            if t.owner_bundle and t.owner_bundle != bundle:
                raise PermissionDenied(
                    f"{t.type_id}: an app registers types of its own bundle ({bundle}) only"
                )
        declarations = [_parts.declaration(t) for t in types]
        async with self._lock:
            trial = UtdRegistry(self.registry.custom_declarations())
            trial.register_types(declarations, bundle)  # every check, before anything is kept
            new = {str(d["type_id"]) for d in declarations}
            kept = [d for d in trial.custom_declarations() if d["type_id"] in new]
            await self._write(self._store.add_types, kept)
            self.registry.register_types(declarations, bundle)

    async def unregister(self, type_ids: Sequence[str], bundle: str) -> None:
        type_ids = list(type_ids)
        async with self._lock:
            UtdRegistry(self.registry.custom_declarations()).unregister_types(type_ids, bundle)
            await self._write(self._store.remove_types, type_ids)
            self.registry.unregister_types(type_ids, bundle)
