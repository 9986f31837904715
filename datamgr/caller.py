"""Who makes a call: the one place where an RPC's bearer token becomes its caller.

`Identify` is built by the composition root from the app registry and the admin credential and handed
to every app-facing servicer (the gate asks its `lookup` before a request is read). It answers with
the registered `App` for an app's token and `OWNER` for the device owner's; a call without a token, or
with one the daemon does not know, is UNAUTHENTICATED. What a caller may do (`is_admin`,
`permissions`) is each servicer's own question. udmf and aicap receive it as a plain callable of a
protocol they declare themselves.
"""

from __future__ import annotations

from typing import Any

from datamgr import tenant
from datamgr.apps import AdminCredential, App, AppRegistry
from datamgr.errors import Unauthenticated

NO_TOKEN = (
    "no token: send metadata 'authorization: Bearer <token>' (an app token from the device owner, "
    "or the admin token for admin calls)"
)
UNKNOWN_TOKEN = (
    "unknown token: neither an app's token nor the admin token (the device owner issues app tokens: "
    "datamgr apps add BUNDLE)"
)
UNKNOWN_APP = "unknown app token: ask the device owner for one (datamgr apps add BUNDLE)"
OWNER = App(tenant.DAEMON, frozenset(), 0.0, is_admin=True)  # the device owner, by the admin token


def token_in(metadata: Any) -> str | None:
    """The bearer token in a call's metadata ('authorization: Bearer <token>'), None without one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return None


class Identify:
    """`identify(context)`: the caller of a call, as the module docstring says."""

    def __init__(self, apps: AppRegistry, admin: AdminCredential) -> None:
        self._apps = apps
        self._admin = admin

    def lookup(self, token: str) -> App | None:
        """The token's app (the rest of the call is then its tenant), `OWNER`, or None if unknown."""
        try:
            app = self._apps.authenticate(token)
        except Unauthenticated:
            try:
                self._admin.check(token)
            except Unauthenticated:
                return None
            return OWNER
        tenant.enter(app.bundle)  # the rest of the call is this app's (its turn on the database threads)
        return app

    def owner(self, context: Any) -> None:
        """Unauthenticated unless the call carries the device owner's (admin) token."""
        if not self(context).is_admin:
            raise Unauthenticated(f"admin operations need the admin token from {self._admin.path}")

    def __call__(self, context: Any) -> App:
        token = token_in(context.invocation_metadata())
        if token is None:
            raise Unauthenticated(NO_TOKEN)
        caller = self.lookup(token)
        if caller is None:
            raise Unauthenticated(UNKNOWN_TOKEN)
        return caller


def app_of(caller: App) -> App:
    """The calling app, for the services only apps call (DataShare, KV): the owner's token is no
    app's, so it is UNAUTHENTICATED there as an unknown one."""
    if caller.is_admin:
        raise Unauthenticated(UNKNOWN_APP)
    return caller
