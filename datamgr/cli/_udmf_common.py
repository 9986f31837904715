"""What the `datamgr udmf` commands share: token and address options, the client, udmf's errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from datamgr.cli._common import err, handle_errors

if TYPE_CHECKING:
    from udmf import UdmfClient

token_option = click.option("--token", envvar="DATAMGR_TOKEN", help="The app's token (or DATAMGR_TOKEN).")
address_option = click.option(
    "--address", help="Daemon address (default: DATAMGR_ADDRESS or the Unix socket in the data directory)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def handle_udmf_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """As `handle_errors`, for udmf's error tree too: `error: CODE: message`, exit 1."""

    @functools.wraps(fn)
    @handle_errors
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from udmf.errors import UdmfError  # on first use: `datamgr --help` need not load udmf

        try:
            return fn(*args, **kwargs)
        except UdmfError as exc:
            err.print(f"[bold red]error[/]: {exc.code}: {exc.message}", highlight=False)
            sys.exit(1)

    return wrapper


def admin_token() -> str:
    from datamgr.apps import read_admin_token
    from datamgr.config import load_settings

    return read_admin_token(load_settings().admin_token_path)


def udmf_client(address: str | None, token: str | None) -> UdmfClient:
    """A client with the app token (the admin token only where the daemon takes it, e.g. grants)."""
    from udmf import UdmfClient
    from udmf.errors import Unauthenticated

    if not token:
        raise Unauthenticated("no app token: pass --token or set DATAMGR_TOKEN")
    return UdmfClient.connect(address, token)
