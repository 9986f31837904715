"""`datamgr apps ...`: the device owner registers apps and grants permissions."""

from __future__ import annotations

import time

import click
from rich.table import Table

from datamgr.cli._common import out, print_json

address_option = click.option(
    "--address", help="Daemon address (default: the Unix socket in the data directory)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _client(address: str | None):
    from datamgr.client.admin import AdminClient

    return AdminClient(address)


def _app_dict(app) -> dict:
    u = app.usage
    usage = {
        "datashare_bytes": u.datashare_bytes,
        "kv_bytes": u.kv_bytes,
        "udmf_bytes": u.udmf_bytes,
        "total_bytes": u.total_bytes,
        "quota_bytes": u.quota_bytes,
    }
    return {
        "bundle": app.bundle,
        "permissions": list(app.permissions),
        "created_at": app.created_at,
        "usage": usage,
    }


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _usage(app) -> str:
    """What the app stores against its quota, and of which kind: `1.2 MiB / 256.0 MiB (kv 1.2 MiB)`."""
    u = app.usage
    counts = (("datashare", u.datashare_bytes), ("kv", u.kv_bytes), ("udmf", u.udmf_bytes))
    kinds = [(k, n) for k, n in counts if n]
    detail = f"\n({', '.join(f'{k} {_size(n)}' for k, n in kinds)})" if kinds else ""
    return f"{_size(u.total_bytes)} / {_size(u.quota_bytes)}{detail}"


@click.group()
def apps() -> None:
    """Register apps, issue tokens, grant and revoke permissions (needs the admin token)."""


@apps.command("add")
@click.argument("bundle")
@address_option
@json_option
def add(bundle: str, address: str | None, as_json: bool) -> None:
    """Register BUNDLE and print its token (shown only this once)."""
    with _client(address) as client:
        app, token = client.add_app(bundle)
    if as_json:
        print_json({"bundle": app.bundle, "token": token})
        return
    out.print(f"registered [bold]{app.bundle}[/]; its token is shown only once:", highlight=False)
    click.echo(f"token: {token}")


@apps.command("remove")
@click.argument("bundle")
@address_option
def remove(bundle: str, address: str | None) -> None:
    """Remove BUNDLE, its token, permissions and the tables it provides."""
    with _client(address) as client:
        client.remove_app(bundle)
    out.print(f"removed {bundle}", highlight=False)


@apps.command("list")
@address_option
@json_option
def list_(address: str | None, as_json: bool) -> None:
    """List registered apps, their permissions and what they store (against storage.app_quota_bytes)."""
    with _client(address) as client:
        items = client.list_apps()
    if as_json:
        print_json([_app_dict(a) for a in items])
        return
    table = Table("bundle", "permissions", "registered", "storage / quota")
    for a in items:
        table.add_row(
            a.bundle,
            "\n".join(a.permissions) or "-",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(a.created_at)),
            _usage(a),
        )
    out.print(table)


@apps.command("grant")
@click.argument("bundle")
@click.argument("permissions", nargs=-1, required=True)
@address_option
def grant(bundle: str, permissions: tuple[str, ...], address: str | None) -> None:
    """Grant PERMISSIONS to BUNDLE."""
    with _client(address) as client:
        app = client.grant(bundle, list(permissions))
    out.print(f"{app.bundle}: {', '.join(app.permissions)}", highlight=False)


@apps.command("revoke")
@click.argument("bundle")
@click.argument("permissions", nargs=-1, required=True)
@address_option
def revoke(bundle: str, permissions: tuple[str, ...], address: str | None) -> None:
    """Revoke PERMISSIONS from BUNDLE."""
    with _client(address) as client:
        app = client.revoke(bundle, list(permissions))
    out.print(f"{app.bundle}: {', '.join(app.permissions) or '(no permissions)'}", highlight=False)
