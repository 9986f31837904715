"""The AdminService servicer: the device owner registers apps and grants permissions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from datamgr.apps import App, AppRegistry
from datamgr.caller import Identify
from datamgr.quota import Quotas
from datamgr.storage import Database
from datamgr.v1 import admin_pb2 as pb
from datamgr.v1 import admin_pb2_grpc as pb_grpc

log = logging.getLogger("datamgr.apps")


def app_message(app: App) -> pb.App:
    return pb.App(bundle=app.bundle, permissions=sorted(app.permissions), created_at=app.created_at)


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(
        self,
        db: Database,
        apps: AppRegistry,
        identify: Identify,
        on_remove: Callable[[str], None],
        quotas: Quotas | None = None,
    ) -> None:
        self._db = db
        self._quotas = quotas
        self._apps = apps
        self._identify = identify
        self._on_remove = on_remove

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AdminServiceServicer_to_server(self, server)

    async def AddApp(self, request: pb.AddAppRequest, context: Any) -> pb.AddAppResponse:
        self._identify.owner(context)
        app, token = await self._db.write(self._apps.add, request.bundle)
        log.info("app %s registered", app.bundle)
        return pb.AddAppResponse(app=app_message(app), token=token)

    async def RemoveApp(self, request: pb.RemoveAppRequest, context: Any) -> pb.RemoveAppResponse:
        self._identify.owner(context)
        self._apps.get(request.bundle)

        def remove() -> None:
            self._on_remove(request.bundle)
            self._apps.remove(request.bundle)

        await self._db.write(remove)
        log.info("app %s removed with its tables and published data", request.bundle)
        return pb.RemoveAppResponse()

    async def ListApps(self, request: pb.ListAppsRequest, context: Any) -> pb.ListAppsResponse:
        self._identify.owner(context)
        apps = self._apps.all()
        messages = [app_message(a) for a in apps]
        if self._quotas is not None:
            quotas = self._quotas
            await self._db.write(quotas.measure, self._db.engine, [a.bundle for a in apps])
            for message in messages:
                used = {k: n or 0 for k, n in quotas.usage(message.bundle).items()}
                message.usage.CopyFrom(
                    pb.StorageUsage(
                        datashare_bytes=used["datashare"],
                        kv_bytes=used["kv"],
                        udmf_bytes=used["udmf"],
                        total_bytes=sum(used.values()),
                        quota_bytes=quotas.limits.app_quota_bytes,
                    )
                )
        return pb.ListAppsResponse(apps=messages)

    async def GrantPermissions(
        self, request: pb.GrantPermissionsRequest, context: Any
    ) -> pb.GrantPermissionsResponse:
        self._identify.owner(context)
        app = await self._db.write(self._apps.grant, request.bundle, list(request.permissions))
        log.info("granted %s to %s", ", ".join(request.permissions), app.bundle)
        return pb.GrantPermissionsResponse(app=app_message(app))

    async def RevokePermissions(
        self, request: pb.RevokePermissionsRequest, context: Any
    ) -> pb.RevokePermissionsResponse:
        self._identify.owner(context)
        app = await self._db.write(self._apps.revoke, request.bundle, list(request.permissions))
        log.info("revoked %s from %s", ", ".join(request.permissions), app.bundle)
        return pb.RevokePermissionsResponse(app=app_message(app))
