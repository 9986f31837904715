"""Apps, their tokens and permissions, and the device owner's admin credential.

An app is its bundle name; it authenticates with a random token issued once by the device owner.
Only the token's SHA-256 is stored (tokens carry 256 random bits, so a fast hash is enough).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from datamgr.bundles import SYSTEM_BUNDLE_PREFIX, check_bundle
from datamgr.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated

log = logging.getLogger("datamgr.apps")
DISTRIBUTED_DATASYNC = "ohos.permission.DISTRIBUTED_DATASYNC"  # what OpenHarmony's sync() asks of an app

metadata = sa.MetaData()
apps_table = sa.Table(
    "dm_apps",
    metadata,
    sa.Column("bundle", sa.String(128), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
permissions_table = sa.Table(
    "dm_app_permissions",
    metadata,
    sa.Column(
        "bundle", sa.String(128), sa.ForeignKey("dm_apps.bundle", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("permission", sa.String(256), primary_key=True),
)

_PERMISSION_MAX = 256


@dataclass(frozen=True, slots=True)
class App:
    """A caller of the daemon: a registered app, or the device owner (`datamgr.caller.OWNER`)."""

    bundle: str
    permissions: frozenset[str]
    created_at: float
    is_admin: bool = False


@functools.lru_cache(maxsize=1024)
def hash_token(token: str) -> str:
    """A token's sha256 (what the registry keeps). Cached: a streaming call checks its caller again
    for every chunk it sends."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_permission_name(name: str) -> str:
    if not name or len(name) > _PERMISSION_MAX or any(c.isspace() for c in name):
        raise InvalidArgument(f"invalid permission name {name!r}: 1-{_PERMISSION_MAX} characters, no spaces")
    return name


class AppRegistry:
    """The registered apps, kept in the database and mirrored in memory for fast authentication.

    Methods without `async` run on the database writer thread (they commit); `authenticate` and
    `current` are dictionary lookups safe to call from the event loop. An app's `App` object stays the
    same until its permissions change, so a stream can tell "unchanged" by identity. Listeners
    (`on_revoke`) hear of every revoke and removal, on the writer thread, after the change is visible.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        metadata.create_all(engine)
        self._by_hash: dict[str, App] = {}
        self._hash_of: dict[str, str] = {}
        self._by_bundle: dict[str, App] = {}
        self._listeners: list[Callable[[str], object]] = []
        self._reload()

    def _reload(self) -> None:
        with self._engine.connect() as conn:
            perms: dict[str, set[str]] = {}
            for bundle, perm in conn.execute(
                sa.select(permissions_table.c.bundle, permissions_table.c.permission)
            ):
                perms.setdefault(bundle, set()).add(perm)
            by_hash, hash_of, by_bundle = {}, {}, {}
            for bundle, token_hash, created in conn.execute(sa.select(apps_table)):
                app = App(bundle, frozenset(perms.get(bundle, ())), created)
                if self._by_hash.get(token_hash) == app:
                    app = self._by_hash[token_hash]  # unchanged: the same object
                by_hash[token_hash] = by_bundle[bundle] = app
                hash_of[bundle] = token_hash
        self._by_hash, self._hash_of, self._by_bundle = by_hash, hash_of, by_bundle

    def authenticate(self, token: str) -> App:
        app = self._by_hash.get(hash_token(token))
        if app is None:
            raise Unauthenticated("unknown app token: ask the device owner for one (datamgr apps add BUNDLE)")
        return app

    def get(self, bundle: str) -> App:
        token_hash = self._hash_of.get(bundle)
        if token_hash is None:
            raise NotFound(f"no app {bundle!r} is registered")
        return self._by_hash[token_hash]

    def current(self, bundle: str) -> App | None:
        """The app as registered now, None once it was removed (one dict lookup: streams call it per
        event to see whether what they deliver is still allowed)."""
        return self._by_bundle.get(bundle)

    def guard(self, app: App, check: Callable[[App], object] | None = None) -> Callable[[], None]:
        """What a stream of `app` calls before each delivery: Unauthenticated once the app is removed,
        else `check(app as it is now)` again (raising PermissionDenied) whenever its permissions changed
        since the last call; while they have not, one dict lookup."""
        last = app

        def allowed() -> None:
            nonlocal last
            now = self._by_bundle.get(app.bundle)
            if now is last:
                return
            if now is None:
                raise Unauthenticated(f"app {app.bundle} was removed by the device owner")
            if check is not None:
                check(now)
            last = now

        return allowed

    def on_revoke(self, listener: Callable[[str], object]) -> None:
        """Calls `listener(bundle)` after each revoke from, or removal of, an app (on the writer
        thread): open streams of that app re-check what they may still deliver."""
        self._listeners.append(listener)

    def _revoked(self, bundle: str) -> None:
        for listener in self._listeners:
            try:
                listener(bundle)
            except Exception:
                log.exception("a revocation listener failed for %s", bundle)

    def exists(self, bundle: str) -> bool:
        return bundle in self._hash_of

    def all(self) -> list[App]:
        return sorted(self._by_hash.values(), key=lambda a: a.bundle)

    def add(self, bundle: str) -> tuple[App, str]:
        check_bundle(bundle)
        if bundle.startswith(SYSTEM_BUNDLE_PREFIX):
            raise InvalidArgument(f"bundle names under {SYSTEM_BUNDLE_PREFIX} belong to the daemon itself")
        if bundle in self._hash_of:
            raise AlreadyExists(f"app {bundle} is already registered; remove it first to issue a new token")
        token = "dmapp_" + secrets.token_urlsafe(32)
        with self._engine.begin() as conn:
            conn.execute(
                sa.insert(apps_table).values(
                    bundle=bundle, token_hash=hash_token(token), created_at=time.time()
                )
            )
        self._reload()
        return self.get(bundle), token

    def remove(self, bundle: str) -> None:
        self.get(bundle)
        with self._engine.begin() as conn:
            conn.execute(sa.delete(permissions_table).where(permissions_table.c.bundle == bundle))
            conn.execute(sa.delete(apps_table).where(apps_table.c.bundle == bundle))
        self._reload()
        self._revoked(bundle)

    def grant(self, bundle: str, permissions: list[str]) -> App:
        app = self.get(bundle)
        new = [_check_permission_name(p) for p in dict.fromkeys(permissions) if p not in app.permissions]
        if new:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(permissions_table), [{"bundle": bundle, "permission": p} for p in new])
            self._reload()
        return self.get(bundle)

    def revoke(self, bundle: str, permissions: list[str]) -> App:
        self.get(bundle)
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(permissions_table).where(
                    permissions_table.c.bundle == bundle, permissions_table.c.permission.in_(permissions)
                )
            )
        self._reload()
        self._revoked(bundle)
        return self.get(bundle)


class AdminCredential:
    """The device owner's token: created at first start in a file only the daemon's user can read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            token = "dmadm_" + secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
        os.chmod(path, 0o600)
        self._hash = hash_token(path.read_text().strip())

    def check(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(hash_token(token), self._hash):
            raise Unauthenticated(f"admin operations need the admin token from {self.path}")
