"""Who the current call is for: the caller's tenant (an app's bundle; "" for the daemon itself and the
device owner), set where a call is authenticated and read where it is scheduled (`datamgr.storage`).

A context variable, so no call site passes it along: each gRPC call runs in its own asyncio task, and
tasks copy the context they start in, so work a call spawns is its caller's too.
"""

from __future__ import annotations

from contextvars import ContextVar

DAEMON = ""  # the tenant of the daemon's own work (sync, sweeps) and of admin calls

_TENANT: ContextVar[str] = ContextVar("datamgr_tenant", default=DAEMON)


def current() -> str:
    """The tenant of the running call."""
    return _TENANT.get()


def enter(bundle: str) -> None:
    """The running call (task) is `bundle`'s from here on: called once its token is known."""
    _TENANT.set(bundle)
