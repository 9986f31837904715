"""What the `datamgr udmf` commands share: token and address options, the client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from udmf import UdmfClient

token_option = click.option("--token", envvar="DATAMGR_TOKEN", help="The app's token (or DATAMGR_TOKEN).")
address_option = click.option(
    "--address", help="Daemon address (default: DATAMGR_ADDRESS or the Unix socket in the data directory)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def udmf_client(address: str | None, token: str | None) -> UdmfClient:
    """A client with the app token (the admin token only where the daemon takes it, e.g. grants)."""
    from udmf import UdmfClient
    from udmf.errors import Unauthenticated

    if not token:
        raise Unauthenticated("no app token: pass --token or set DATAMGR_TOKEN")
    return UdmfClient.connect(address, token)
