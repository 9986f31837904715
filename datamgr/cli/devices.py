"""`datamgr devices ...`: the devices discovered on the local network.

Calls take an app token holding ohos.permission.DISTRIBUTED_DATASYNC (--token or DATAMGR_TOKEN), or
else the device owner's admin token from the data directory.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from datamgr.cli._common import out, print_json
from datamgr.cli.audit import audit
from datamgr.cli.pairing import LEVELS as _LEVELS
from datamgr.cli.pairing import register as register_pairing

address_option = click.option(
    "--address", help="Daemon address (default: DATAMGR_ADDRESS or the Unix socket in the data directory)."
)
token_option = click.option(
    "--token", envvar="DATAMGR_TOKEN", help="An app token (default: the admin token of the data directory)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

_EVENTS = {1: "online", 2: "offline", 3: "updated"}


def _client(address: str | None, token: str | None):
    from datamgr.client.devices import DeviceClient

    return DeviceClient(address, token)


def device_dict(d: Any) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "name": d.name,
        "security_level": _LEVELS.get(d.security_level, "?"),
        "fingerprint": d.fingerprint,
        "capabilities": list(d.capabilities),
        "addresses": list(d.addresses),
        "port": d.port,
        "protocol_version": d.protocol_version,
        "online": d.online,
        "last_seen": d.last_seen,
    }


@click.group()
def devices() -> None:
    """Devices found on the local network (mDNS) and this device."""


register_pairing(devices)  # pair, trusted, set-level, unpair, ping, identity
devices.add_command(audit)


@devices.command("list")
@click.option("--online", "online_only", is_flag=True, help="Only the devices online now.")
@address_option
@token_option
@json_option
def list_(online_only: bool, address: str | None, token: str | None, as_json: bool) -> None:
    """List the devices discovered, online or not."""
    with _client(address, token) as client:
        items = client.list_devices(online_only)
    if as_json:
        print_json([device_dict(d) for d in items])
        return
    table = Table("device", "name", "level", "state", "address", "capabilities", "last seen")
    for d in items:
        where = ", ".join(f"{a}:{d.port}" if d.port else a for a in d.addresses) or "-"
        table.add_row(
            d.device_id,
            d.name or "-",
            _LEVELS.get(d.security_level, "?"),
            "online" if d.online else "offline",
            where,
            ", ".join(d.capabilities) or "-",
            time.strftime("%H:%M:%S", time.localtime(d.last_seen)),
        )
    out.print(table)


@devices.command("watch")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@address_option
@token_option
@json_option
def watch(
    count: int | None, timeout: float | None, address: str | None, token: str | None, as_json: bool
) -> None:
    """Print the devices known now, then each device going online, offline or changing (with --json:
    one JSON object a line, {"event": "known" | "online" | "offline" | "updated", "device": {...}})."""
    seen = 0
    with _client(address, token) as client:
        try:
            for message in client.watch(timeout):
                if message.HasField("snapshot"):
                    for d in message.snapshot.devices:
                        _print("known", d, as_json)
                    continue
                _print(_EVENTS.get(message.event.type, "?"), message.event.device, as_json)
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


def _print(kind: str, d: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"event": kind, "device": device_dict(d)}))
        return
    where = ", ".join(d.addresses) or "-"
    out.print(
        f"{time.strftime('%H:%M:%S')} [bold]{kind:8}[/] {d.device_id} ({d.name or '-'}) "
        f"{_LEVELS.get(d.security_level, '?')} at {where} port {d.port}",
        highlight=False,
    )
