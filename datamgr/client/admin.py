"""AdminClient: the device owner's operations (apps, tokens, permissions)."""

from __future__ import annotations

from pathlib import Path

from datamgr.connection import (
    admin_token,
    call,
    metadata,
    open_channel,
)
from datamgr.v1 import admin_pb2 as pb
from datamgr.v1 import admin_pb2_grpc as pb_grpc


class AdminClient:
    """Blocking admin client; reads the admin token from the daemon's data directory by default."""

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        token_path: Path | None = None,
        tls_fingerprint: str | None = None,
    ) -> None:
        self._channel = open_channel(address, tls_fingerprint)
        self._stub = pb_grpc.AdminServiceStub(self._channel)
        self._md = metadata(admin_token(token, token_path))

    def add_app(self, bundle: str) -> tuple[pb.App, str]:
        resp = call(self._stub.AddApp, pb.AddAppRequest(bundle=bundle), metadata=self._md)
        return resp.app, resp.token

    def remove_app(self, bundle: str) -> None:
        call(self._stub.RemoveApp, pb.RemoveAppRequest(bundle=bundle), metadata=self._md)

    def list_apps(self) -> list[pb.App]:
        return list(call(self._stub.ListApps, pb.ListAppsRequest(), metadata=self._md).apps)

    def grant(self, bundle: str, permissions: list[str]) -> pb.App:
        req = pb.GrantPermissionsRequest(bundle=bundle, permissions=permissions)
        return call(self._stub.GrantPermissions, req, metadata=self._md).app

    def revoke(self, bundle: str, permissions: list[str]) -> pb.App:
        req = pb.RevokePermissionsRequest(bundle=bundle, permissions=permissions)
        return call(self._stub.RevokePermissions, req, metadata=self._md).app

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
