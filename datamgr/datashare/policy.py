"""Who may read or write a provider's data: OpenHarmony's two permission models, as pure functions.

Silent access (the daemon hosts the tables): an unset permission means provider-only; `noPermission`
opens it to every app, `reject` closes it to every other app; an allow-list applies in addition.
Extension mode (the provider's live handler answers): an unset permission means open.
The provider itself always reaches its own data.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from datamgr.datashare.manifest import NO_PERMISSION, REJECT
from datamgr.errors import PermissionDenied

Op = Literal["read", "write"]


def check_silent(
    caller: str,
    granted: Collection[str],
    provider: str,
    permission: str | None,
    allow_list: Collection[str] | None,
    op: Op,
    what: str,
) -> None:
    """Raises PermissionDenied unless `caller` may `op` the silent-access data `what`."""
    if caller == provider:
        return
    if permission is None:
        raise PermissionDenied(
            f"{what} is provider-only: {provider} sets no {op} permission, so only {provider} may {op} it"
        )
    if permission == REJECT:
        raise PermissionDenied(f"{provider} rejects {op} access to {what} by other apps")
    if permission != NO_PERMISSION and permission not in granted:
        raise PermissionDenied(f"{caller} lacks permission {permission} needed to {op} {what}")
    if allow_list is not None and caller not in allow_list:
        raise PermissionDenied(f"{caller} is not in {provider}'s allow-list for {what}")


def check_extension(
    caller: str, granted: Collection[str], provider: str, permission: str | None, op: Op, what: str
) -> None:
    """Raises PermissionDenied unless `caller` may `op` through the provider's extension."""
    if caller == provider or permission is None or permission == NO_PERMISSION:
        return
    if permission == REJECT or permission not in granted:
        raise PermissionDenied(f"{caller} lacks permission {permission} needed to {op} {what}")
