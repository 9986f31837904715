"""`datamgr devices pair | trusted | set-level | unpair | ping | identity`: trust between devices (admin
token).

Pairing needs both owners: on device B, `datamgr devices pair --show-code` opens a pairing window
and shows a 6-digit code and B's pairing address; on device A, `datamgr devices pair ADDRESS --code
CODE`. Each owner confirms the other device's security level (`--level`, or asked on a terminal once
paired; default SL1): a device is not believed about its own. `register(group)` adds the commands to
the `devices` group.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.table import Table

from datamgr.cli._common import err, out, print_json

address_option = click.option(
    "--address", help="Daemon address (default: DATAMGR_ADDRESS or the Unix socket in the data directory)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
level_option = click.option(
    "--level",
    type=click.IntRange(1, 5),
    help="The security level (1-5: SL1-SL5) you confirm for the other device: which data labels it "
    "receives. Default: asked on a terminal once paired, else SL1. What it asserts is not used.",
)


LEVELS = {0: "?", 1: "SL1", 2: "SL2", 3: "SL3", 4: "SL4", 5: "SL5"}  # a device's security level, shown


def _level(security_level: int) -> str:
    return LEVELS.get(security_level, "?")


def _client(address: str | None) -> Any:
    from datamgr.client.pairing import PairingClient

    return PairingClient(address)


def _fingerprint(fp: str) -> str:
    from datamgr.device.identity import format_fingerprint

    return format_fingerprint(fp)


def trusted_dict(d: Any) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "name": d.name,
        "fingerprint": d.fingerprint,
        "security_level": _level(d.security_level),
        "asserted_level": _level(d.asserted_level),
        "address": d.address,
        "paired_at": d.paired_at,
    }


@click.command("pair")
@click.argument("peer", metavar="[ADDRESS:PORT]", required=False)
@click.option("--code", help="The 6-digit code the other device shows.")
@click.option(
    "--show-code",
    is_flag=True,
    help="Open a pairing window here, show its code and wait (the command blocks) until the other device "
    "pairs, the window expires or Ctrl-C closes it; the window is open only while it runs.",
)
@level_option
@address_option
@json_option
def pair(
    peer: str | None,
    code: str | None,
    show_code: bool,
    level: int | None,
    address: str | None,
    as_json: bool,
) -> None:
    """Pair with another device: `--show-code` on one, `ADDRESS:PORT --code CODE` on the other.
    `--show-code` keeps running until the pairing is done (or the window closes): run the other side
    from another terminal or device meanwhile."""
    if show_code == bool(peer):
        raise click.UsageError("give either --show-code, or ADDRESS:PORT with --code")
    if show_code:
        _show_code(address, level, as_json)
        return
    if not code:
        raise click.UsageError("--code is required: the code `datamgr devices pair --show-code` shows there")
    with _client(address) as client:
        device = client.pair(peer, code, level or 0)
        if as_json:
            print_json(trusted_dict(device))
            return
        _print_paired(client, device, level)


def _print_paired(client: Any, d: Any, level: int | None) -> None:
    """The device just paired, and its level: asked for on a terminal unless --level gave it."""
    out.print(f"paired with [bold]{d.name}[/] ({d.device_id})", highlight=False)
    click.echo(f"its certificate: {_fingerprint(d.fingerprint)}")
    says = f"it asserts {_level(d.asserted_level)}"
    if level is None and sys.stdin.isatty():
        asked = click.prompt(
            f"{says}; the security level you confirm for it (1-5)",
            type=click.IntRange(1, 5),
            default=d.security_level,
        )
        if asked != d.security_level:
            d = client.set_level(d.device_id, asked)
    click.echo(
        f"security level: {_level(d.security_level)} ({says}); change it with "
        f"`datamgr devices set-level {d.device_id} LEVEL`"
    )


def _show_code(address: str | None, level: int | None, as_json: bool) -> None:
    with _client(address) as client:
        events = client.open_window(level or 0)
        try:
            for event in events:
                kind = event.WhichOneof("event")
                if kind == "opened":
                    _print_opened(event.opened, as_json)
                elif kind == "paired":
                    if as_json:
                        print_json({"paired": trusted_dict(event.paired)})
                    else:
                        _print_paired(client, event.paired, level)
                    return
                elif kind == "closed":
                    reason = {1: "expired", 2: "too many wrong codes", 3: "cancelled"}.get(
                        event.closed.reason, "?"
                    )
                    if as_json:
                        print_json({"closed": reason})
                    else:
                        err.print(f"the pairing window closed: {reason}; nothing was paired", highlight=False)
                    sys.exit(1)
        except KeyboardInterrupt:
            err.print("pairing window closed", highlight=False)
            sys.exit(1)
        finally:
            events.close()


def _print_opened(o: Any, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "code": o.code,
                "expires_in_s": o.expires_in_s,
                "pairing_address": o.pairing_address,
                "device_id": o.device_id,
                "fingerprint": o.fingerprint,
            }
        )
        sys.stdout.flush()
        return
    out.print(f"pairing code: [bold]{o.code}[/]  (valid {o.expires_in_s:.0f} s, {o.attempts} attempts)")
    click.echo(f"on the other device run:  datamgr devices pair {o.pairing_address} --code {o.code}")
    err.print("[dim]waiting for the other device (Ctrl-C closes the window)...[/]", highlight=False)
    click.echo(f"this device: {o.device_id}, certificate {_fingerprint(o.fingerprint)}")
    click.echo("waiting... (Ctrl-C closes the window)")
    sys.stdout.flush()


@click.command("trusted")
@address_option
@json_option
def trusted(address: str | None, as_json: bool) -> None:
    """List the devices this device is paired with."""
    with _client(address) as client:
        items = client.trusted()
    if as_json:
        print_json([trusted_dict(d) for d in items])
        return
    table = Table("device", "name", "level", "asserted", "address", "certificate", "paired")
    for d in items:
        table.add_row(
            d.device_id,
            d.name,
            _level(d.security_level),
            _level(d.asserted_level),
            d.address or "-",
            _fingerprint(d.fingerprint)[:19] + " ...",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(d.paired_at)),
        )
    out.print(table)


@click.command("set-level")
@click.argument("device_id")
@click.argument("level", type=click.IntRange(1, 5))
@address_option
@json_option
def set_level(device_id: str, level: int, address: str | None, as_json: bool) -> None:
    """Confirm security LEVEL (1-5: SL1-SL5) for paired device DEVICE_ID: which data labels it
    receives (SL1: S1, SL2: up to S2, SL3: up to S3, SL4 and SL5: up to S4)."""
    with _client(address) as client:
        d = client.set_level(device_id, level)
    if as_json:
        print_json(trusted_dict(d))
        return
    click.echo(
        f"{d.name} ({d.device_id}) is {_level(d.security_level)} (it asserts {_level(d.asserted_level)})"
    )


@click.command("unpair")
@click.argument("device_id")
@address_option
def unpair(device_id: str, address: str | None) -> None:
    """Stop trusting DEVICE_ID (at once), and tell it if it can be reached."""
    with _client(address) as client:
        resp = client.unpair(device_id)
    out.print(f"unpaired {resp.device.name} ({resp.device.device_id})", highlight=False)
    if not resp.notified:
        err.print(f"it was not told ({resp.detail}); it can no longer reach this device", highlight=False)


@click.command("ping")
@click.argument("device_id")
@click.option(
    "--peer-address", default="", help="Its peer server HOST:PORT (default: where it was last seen)."
)
@address_option
@json_option
def ping(device_id: str, peer_address: str, address: str | None, as_json: bool) -> None:
    """Hello to a trusted device over mutual TLS."""
    with _client(address) as client:
        info, rtt = client.ping(device_id, peer_address)
    if as_json:
        print_json({"device_id": info.device_id, "name": info.name, "round_trip_ms": rtt})
        return
    click.echo(f"{info.name} ({info.device_id}): {rtt:.1f} ms")


@click.command("identity")
@address_option
@json_option
def identity(address: str | None, as_json: bool) -> None:
    """This device's id, certificate fingerprint and peer ports. The certificate is also the one the
    TCP listener (`tcp`) serves: apps there pass `--tls-fingerprint sha256:...` (tls_fingerprint=)."""
    with _client(address) as client:
        me = client.identity()
    if as_json:
        print_json(
            {
                "device_id": me.device_id,
                "fingerprint": me.fingerprint,
                "name": me.name,
                "security_level": _level(me.security_level),
                "peer_port": me.peer_port,
                "pairing_port": me.pairing_port,
                "tls_fingerprint": f"sha256:{me.fingerprint}",
            }
        )
        return
    click.echo(f"device:      {me.device_id} ({me.name}, {_level(me.security_level)})")
    click.echo(f"certificate: {_fingerprint(me.fingerprint)}")
    click.echo(f"peer port:   {me.peer_port} (mutual TLS), pairing port {me.pairing_port}")
    click.echo(f"TCP clients: --tls-fingerprint sha256:{me.fingerprint}")


def register(group: click.Group) -> None:
    """Adds the trust commands to `group` (the `devices` group)."""
    for command in (pair, trusted, set_level, unpair, ping, identity):
        group.add_command(command)
