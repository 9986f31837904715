"""`datamgr kv ...`: the app's KV stores from the command line (token from --token or DATAMGR_TOKEN).

Queries (--where) are JSON: a list of calls on Query, e.g.
`--where '[["equal_to", "$.done", false], ["or"], ["greater_than", "$.priority", 2], ["limit", 10, 0]]'`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import click
from rich.table import Table

from datamgr.cli._common import SYNC_MODES, out, print_json, show_sync_results, sync_options
from datamgr.errors import InvalidArgument
from datamgr.kv.query import Query

_QUERY_CALLS = {
    "equal_to",
    "not_equal_to",
    "greater_than",
    "less_than",
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "is_null",
    "is_not_null",
    "in_number",
    "in_string",
    "not_in_number",
    "not_in_string",
    "like",
    "unlike",
    "and",
    "or",
    "begin_group",
    "end_group",
    "order_by_asc",
    "order_by_desc",
    "limit",
    "prefix_key",
    "device_id",
}
_TYPES = ("string", "int", "double", "bool", "bytes")
_KINDS = {"device": "DEVICE_COLLABORATION", "single": "SINGLE_VERSION"}


def parse_query(text: str | None, prefix: str | None) -> Query | str:
    """The query from the JSON list of calls (with --prefix as its prefix_key), or just the prefix."""
    if not text:
        return prefix or ""
    try:
        calls = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--where is not JSON: {exc}") from None
    if not isinstance(calls, list) or not all(
        isinstance(c, list) and c and isinstance(c[0], str) for c in calls
    ):
        raise InvalidArgument('--where must be a list of calls, e.g. [["equal_to", "$.name", "Ada"]]')
    query = Query()
    if prefix:
        query.prefix_key(prefix)
    for name, *args in calls:
        if name not in _QUERY_CALLS:
            raise InvalidArgument(f"unknown query call {name!r}; known: {', '.join(sorted(_QUERY_CALLS))}")
        try:
            getattr(query, name + "_" if name in ("and", "or") else name)(*args)
        except TypeError as exc:
            raise InvalidArgument(f"{name}: {exc}") from None
    return query


def parse_value(text: str, type_: str) -> Any:
    """VALUE of the given --type: string as is, int, double, bool (true/false), bytes as base64."""
    try:
        if type_ == "int":
            return int(text)
        if type_ == "double":
            return float(text)
        if type_ == "bytes":
            return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidArgument(f"{text!r} is not a {type_}: {exc}") from None
    if type_ == "bool":
        if text.lower() not in ("true", "false"):
            raise InvalidArgument(f"{text!r} is not a bool: use true or false")
        return text.lower() == "true"
    return text


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "double", bytes: "bytes", str: "string"}.get(type(value), "unknown")


def _shown(value: Any) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


def _json_entry(key: str, value: Any) -> dict[str, Any]:
    shown = base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return {"key": key, "type": _type_name(value), "value": shown}


token_option = click.option(
    "--token", envvar="DATAMGR_TOKEN", required=True, help="The app's token (or DATAMGR_TOKEN)."
)
address_option = click.option(
    "--address", help="Daemon address (default: the Unix socket in the data directory)."
)
device_option = click.option("--device", default="", help="Read this device's data (DEVICE_COLLABORATION).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _client(address: str | None, token: str) -> Any:
    from datamgr.client.kv import KvStoreClient

    return KvStoreClient.connect(address, token)


def _open(client: Any, store: str) -> Any:
    return client.get_kv_store(store, kind=None, create_if_missing=False)


@click.group()
def kv() -> None:
    """The app's KV stores: create, put, get, delete, list entries (with queries), watch changes.

    Queries (--where) are a JSON list of Query calls on the fields of JSON-object values, e.g.
    '[["equal_to","$.done",false],["or"],["greater_than","$.priority",2],["order_by_desc","$.priority"]]'.
    """


@kv.command()
@json_option
@token_option
@address_option
def stores(as_json: bool, token: str, address: str | None) -> None:
    """List the app's stores."""
    with _client(address, token) as client:
        infos = client.list_kv_stores()
    if as_json:
        print_json(
            [{"name": i.name, "kind": i.kind.name, "security_level": i.security_level.name} for i in infos]
        )
        return
    table = Table("store", "kind", "security level")
    for info in infos:
        table.add_row(info.name, info.kind.name, info.security_level.name)
    out.print(table)


@kv.command()
@click.argument("store")
@click.option("--kind", type=click.Choice(sorted(_KINDS)), default="device", show_default=True)
@click.option("--level", type=click.Choice(["S1", "S2", "S3", "S4"]), required=True, help="Security label.")
@token_option
@address_option
def create(store: str, kind: str, level: str, token: str, address: str | None) -> None:
    """Create STORE (or open it, if it exists with these options)."""
    from datamgr.client.kv import KvStoreType, SecurityLevel

    with _client(address, token) as client:
        s = client.get_kv_store(store, kind=KvStoreType[_KINDS[kind]], security_level=SecurityLevel[level])
    out.print(f"store {s.name}: {s.info.kind.name} {s.info.security_level.name}", highlight=False)


@kv.command()
@click.argument("store")
@sync_options
@json_option
@token_option
@address_option
def sync(
    store: str, devices: tuple[str, ...], mode: str, as_json: bool, token: str, address: str | None
) -> None:
    """Sync STORE with paired devices now; exits 1 unless every device is OK."""
    from datamgr.client.kv import SyncMode

    with _client(address, token) as client:
        results = _open(client, store).sync(list(devices), SyncMode[SYNC_MODES[mode]])
    show_sync_results(results, as_json)


@kv.command()
@click.argument("store")
@token_option
@address_option
def drop(store: str, token: str, address: str | None) -> None:
    """Delete STORE and all its data."""
    with _client(address, token) as client:
        client.delete_kv_store(store)
    out.print(f"deleted store {store}", highlight=False)


@kv.command()
@click.argument("store")
@click.argument("key")
@click.argument("value")
@click.option("--type", "type_", type=click.Choice(_TYPES), default="string", show_default=True)
@token_option
@address_option
def put(store: str, key: str, value: str, type_: str, token: str, address: str | None) -> None:
    """Put VALUE under KEY (bytes given as base64)."""
    with _client(address, token) as client:
        _open(client, store).put(key, parse_value(value, type_))


@kv.command()
@click.argument("store")
@click.argument("key")
@device_option
@json_option
@token_option
@address_option
def get(store: str, key: str, device: str, as_json: bool, token: str, address: str | None) -> None:
    """Print KEY's value (bytes as base64); exit 1 with NOT_FOUND if it has none."""
    with _client(address, token) as client:
        value = _open(client, store).get(key, device_id=device)
    if as_json:
        print_json(_json_entry(key, value))
    else:
        click.echo(_shown(value))


@kv.command()
@click.argument("store")
@click.argument("keys", nargs=-1, required=True)
@token_option
@address_option
def delete(store: str, keys: tuple[str, ...], token: str, address: str | None) -> None:
    """Delete KEYS (all at once)."""
    with _client(address, token) as client:
        _open(client, store).delete_batch(list(keys))


@kv.command()
@click.argument("store")
@click.option("--prefix", help="Only keys starting with this.")
@click.option("--where", help="A query as JSON (see `datamgr kv --help`).")
@device_option
@json_option
@token_option
@address_option
def entries(
    *,
    store: str,
    prefix: str | None,
    where: str | None,
    device: str,
    as_json: bool,
    token: str,
    address: str | None,
) -> None:
    """List the entries (in key order unless the query orders them)."""
    with _client(address, token) as client:
        found = _open(client, store).get_entries(parse_query(where, prefix), device_id=device)
    if as_json:
        print_json([_json_entry(e.key, e.value) for e in found])
        return
    table = Table("key", "type", "value")
    for e in found:
        table.add_row(e.key, _type_name(e.value), _shown(e.value))
    out.print(table)
    out.print(f"{len(found)} entr{'ies' if len(found) != 1 else 'y'}", highlight=False)


@kv.command()
@click.argument("store")
@click.option(
    "--type", "type_", type=click.Choice(["local", "remote", "all"]), default="all", show_default=True
)
@click.option("--count", type=int, default=0, help="Exit after this many notifications (0: until Ctrl-C).")
@token_option
@address_option
def watch(store: str, type_: str, count: int, token: str, address: str | None) -> None:
    """Print committed writes of STORE as JSON lines (one per notification)."""
    from datamgr.client.kv import SubscribeType

    with (
        _client(address, token) as client,
        _open(client, store).on_data_change(SubscribeType[type_.upper()]) as sub,
    ):
        click.echo(f"watching {store} ({type_})", err=True)
        for seen, note in enumerate(sub, start=1):
            line = {
                "device_id": note.device_id,
                "insert": [_json_entry(e.key, e.value) for e in note.insert_entries],
                "update": [_json_entry(e.key, e.value) for e in note.update_entries],
                "delete": [_json_entry(e.key, e.value) for e in note.delete_entries],
            }
            click.echo(json.dumps(line))
            if count and seen >= count:
                break
