"""`datamgr devices audit`: the audit log of cross-device reads (admin token).

Each UDMF read a paired device made of this device's data (served) and each read an app here made of
a paired device's data (fetched): when, which device, the app said to read (a paired device's claim,
which nothing verifies), the key, the bytes and the outcome.
"""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from datamgr.cli._common import out, print_json

_DIRECTIONS = {1: "served", 2: "fetched"}


def read_dict(r: Any) -> dict[str, Any]:
    return {
        "time": r.time,
        "direction": _DIRECTIONS.get(r.direction, "?"),
        "device_id": r.device_id,
        "bundle": r.bundle,
        "key": r.key,
        "bytes": r.bytes,
        "outcome": r.outcome,
    }


@click.command("audit")
@click.option("--device", "device_id", default="", help="Only the reads of this paired device.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Newest N.")
@click.option(
    "--address", help="Daemon address (default: DATAMGR_ADDRESS or the Unix socket in the data directory)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit(device_id: str, limit: int, address: str | None, as_json: bool) -> None:
    """List the cross-device reads, newest first: served to paired devices and fetched from them."""
    from datamgr.client.pairing import PairingClient

    with PairingClient(address) as client:
        reads = client.peer_reads(device_id, limit)
    if as_json:
        print_json([read_dict(r) for r in reads])
        return
    table = Table("time", "direction", "device", "app (as said)", "key", "bytes", "outcome")
    for r in reads:
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time)),
            _DIRECTIONS.get(r.direction, "?"),
            r.device_id,
            Text(r.bundle),  # as a paired device sent it: never markup
            Text(r.key),
            str(r.bytes),
            r.outcome,
        )
    out.print(table)
