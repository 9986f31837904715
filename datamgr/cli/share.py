"""`datamgr share ...`: DataShare from the command line, as an app (token from --token or DATAMGR_TOKEN).

Predicates are JSON: a list of calls on DataSharePredicates, e.g.
`--where '[["equal_to", "name", "Ada"], ["or"], ["greater_than", "age", 30]]'`.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from datamgr.cli._common import (
    SYNC_MODES,
    err,
    out,
    print_json,
    show_sync_results,
    sync_options,
)
from datamgr.datashare.predicates import DataSharePredicates
from datamgr.errors import InvalidArgument

_PREDICATE_CALLS = {
    "equal_to",
    "not_equal_to",
    "greater_than",
    "less_than",
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "and",
    "or",
    "begin_wrap",
    "end_wrap",
    "like",
    "unlike",
    "glob",
    "contains",
    "begins_with",
    "ends_with",
    "is_null",
    "is_not_null",
    "in",
    "not_in",
    "between",
    "not_between",
    "order_by_asc",
    "order_by_desc",
    "limit",
    "distinct",
    "group_by",
}


def parse_where(text: str | None) -> DataSharePredicates | None:
    """Builds predicates from the JSON list of calls."""
    if not text:
        return None
    try:
        calls = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--where is not JSON: {exc}") from None
    if not isinstance(calls, list) or not all(
        isinstance(c, list) and c and isinstance(c[0], str) for c in calls
    ):
        raise InvalidArgument('--where must be a list of calls, e.g. [["equal_to", "name", "Ada"]]')
    preds = DataSharePredicates()
    for name, *args in calls:
        if name not in _PREDICATE_CALLS:
            raise InvalidArgument(f"unknown predicate {name!r}; known: {', '.join(sorted(_PREDICATE_CALLS))}")
        method = name + "_" if name in ("and", "or", "in") else name
        getattr(preds, method)(*args)
    return preds


def parse_values(text: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"values are not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidArgument('values must be a JSON object, e.g. {"name": "Ada"}')
    return values


token_option = click.option(
    "--token", envvar="DATAMGR_TOKEN", required=True, help="The app's token (or DATAMGR_TOKEN)."
)
address_option = click.option(
    "--address", help="Daemon address (default: the Unix socket in the data directory)."
)
where_option = click.option("--where", help="Predicates as JSON (see `datamgr share --help`).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _helper(address: str | None, token: str):
    from datamgr.client.datashare import DataShareHelper

    return DataShareHelper.connect(address, token)


@click.group()
def share() -> None:
    """DataShare as an app: provide tables, insert, query, update, delete, subscribe, publish data.

    Predicates (--where) are a JSON list of DataSharePredicates calls, for example
    '[["equal_to","name","Ada"],["or"],["greater_than","age",30],["order_by_desc","age"],["limit",10,0]]'.
    """


@share.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@token_option
@address_option
def provide(manifest: str, token: str, address: str | None) -> None:
    """Register (or migrate) the tables declared in MANIFEST (JSON)."""
    with _helper(address, token) as helper:
        resp = helper.register_provider(Path(manifest))
    for uri in resp.uris:
        out.print(f"hosting {uri}", highlight=False)
    for col in resp.added_columns:
        out.print(f"added column {col}", highlight=False)


@share.command()
@click.argument("uri")
@click.argument("values")
@token_option
@address_option
def insert(uri: str, values: str, token: str, address: str | None) -> None:
    """Insert one row (VALUES as a JSON object); prints the row id."""
    with _helper(address, token) as helper:
        click.echo(helper.insert(uri, parse_values(values)))


@share.command("batch-insert")
@click.argument("uri")
@click.argument("rows_file", type=click.File())
@token_option
@address_option
def batch_insert(uri: str, rows_file: Any, token: str, address: str | None) -> None:
    """Insert the rows in ROWS_FILE (a JSON list of objects, - for stdin) in one transaction."""
    rows = json.load(rows_file)
    if not isinstance(rows, list):
        raise InvalidArgument("the rows file must hold a JSON list of objects")
    with _helper(address, token) as helper:
        click.echo(helper.batch_insert(uri, rows))


@share.command()
@click.argument("uri")
@click.argument("values")
@where_option
@token_option
@address_option
def update(uri: str, values: str, where: str | None, token: str, address: str | None) -> None:
    """Update the rows matching --where (all rows without it); prints the count."""
    with _helper(address, token) as helper:
        click.echo(helper.update(uri, parse_where(where), parse_values(values)))


@share.command()
@click.argument("uri")
@where_option
@token_option
@address_option
def delete(uri: str, where: str | None, token: str, address: str | None) -> None:
    """Delete the rows matching --where (all rows without it); prints the count."""
    with _helper(address, token) as helper:
        click.echo(helper.delete(uri, parse_where(where)))


@share.command()
@click.argument("uri")
@where_option
@click.option("--columns", help="Comma-separated columns (default: all).")
@json_option
@token_option
@address_option
def query(
    uri: str, where: str | None, columns: str | None, as_json: bool, token: str, address: str | None
) -> None:
    """Query rows; prints a table, or JSON lines with --json."""
    cols = [c.strip() for c in columns.split(",")] if columns else None
    with _helper(address, token) as helper, helper.query(uri, parse_where(where), cols) as rs:
        if as_json:
            print_json(list(rs.rows()))
            return
        table = Table(*rs.column_names)
        count = 0
        for row in rs.rows():
            table.add_row(
                *("NULL" if v is None else repr(v) if isinstance(v, bytes) else str(v) for v in row.values())
            )
            count += 1
        out.print(table)
        out.print(f"{count} row{'s' if count != 1 else ''}", highlight=False)


@share.command()
@click.argument("uri")
@click.argument("query_text", metavar="QUERY")
@click.option("-k", "k", type=int, default=0, help="Rows to return (default 10).")
@where_option
@click.option(
    "--mode",
    type=click.Choice(["auto", "vector", "fulltext", "hybrid"]),
    default="auto",
    show_default=True,
    help="auto: hybrid where the column has both indexes, else the one it has.",
)
@click.option("--column", default="", help="The indexed column to search (default: every indexed one).")
@click.option("--columns", help="Comma-separated columns to print (default: all).")
@json_option
@token_option
@address_option
def retrieve(
    uri: str,
    query_text: str,
    k: int,
    where: str | None,
    mode: str,
    column: str,
    columns: str | None,
    as_json: bool,
    token: str,
    address: str | None,
) -> None:
    """The rows of an indexed table best matching QUERY, best first, with their scores."""
    cols = [c.strip() for c in columns.split(",")] if columns else None
    with _helper(address, token) as helper:
        result = helper.retrieve(uri, query_text, k, parse_where(where), mode, column, cols)
    if as_json:
        rows = [
            {"row_id": r.row_id, "score": r.score, "column": r.column, "values": r.values} for r in result
        ]
        print_json({"rows": rows, "pending": result.pending})
        return
    names = list(result.rows[0].values) if result.rows else (cols or [])
    table = Table("score", "column", *names)
    for r in result:
        cells = (
            "NULL" if v is None else repr(v) if isinstance(v, bytes) else str(v) for v in r.values.values()
        )
        table.add_row(f"{r.score:.4f}", r.column, *cells)
    out.print(table)
    pending = f", {result.pending} not indexed yet" if result.pending else ""
    out.print(f"{len(result)} row{'s' if len(result) != 1 else ''}{pending}", highlight=False)


@share.command()
@click.argument("uri")
@click.option("--count", type=int, default=0, help="Exit after this many changes (0: run until Ctrl-C).")
@token_option
@address_option
def subscribe(uri: str, count: int, token: str, address: str | None) -> None:
    """Print committed changes of URI as JSON lines, in commit order."""
    with _helper(address, token) as helper, helper.subscribe(uri) as sub:
        click.echo(f"subscribed to {uri}", err=True)
        for seen, change in enumerate(sub, start=1):
            click.echo(
                json.dumps(
                    {"type": change.type, "uri": change.uri, "values": change.values}
                    | ({"device_id": change.device_id} if change.device_id else {}),
                    default=str,
                ),
                nl=True,
            )
            if count and seen >= count:
                break


@share.command()
@click.argument("uri")
@sync_options
@json_option
@token_option
@address_option
def sync(
    uri: str, devices: tuple[str, ...], mode: str, as_json: bool, token: str, address: str | None
) -> None:
    """Sync the distributed table URI with paired devices now; exits 1 unless every device is OK."""
    from datamgr.client.kv import SyncMode

    with _helper(address, token) as helper:
        results = helper.sync(uri, list(devices), SyncMode[SYNC_MODES[mode]])
    show_sync_results(results, as_json)


def _item_json(item: Any) -> dict[str, Any]:
    data = {"$base64": base64.b64encode(item.data).decode()} if isinstance(item.data, bytes) else item.data
    return {"key": item.key, "subscriber_id": item.subscriber_id, "data": data}


@share.command()
@click.argument("bundle")
@click.argument("key")
@click.argument("data")
@click.option("--subscriber-id", default="", help="The subscriber id the item is meant for (default: empty).")
@click.option("--version", type=int, default=0, show_default=True, help="A newer stored version wins.")
@click.option("--blob", is_flag=True, help="DATA is base64; publish the decoded bytes instead of text.")
@token_option
@address_option
def publish(
    *,
    bundle: str,
    key: str,
    data: str,
    subscriber_id: str,
    version: int,
    blob: bool,
    token: str,
    address: str | None,
) -> None:
    """Publish one item of BUNDLE (the app itself) under KEY, a datashareproxy://BUNDLE/PATH uri."""
    from datamgr.client import PublishedItem

    value: str | bytes = data
    if blob:
        try:
            value = base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise InvalidArgument(f"--blob needs DATA in base64: {exc}") from None
    with _helper(address, token) as helper:
        (result,) = helper.publish([PublishedItem(key, value, subscriber_id)], bundle, version)
    if not result.ok:
        err.print(f"[bold red]error[/]: {result.result}: {result.message}", highlight=False)
        sys.exit(1)
    out.print(f"published {key}", highlight=False)


@share.command()
@click.argument("bundle")
@json_option
@token_option
@address_option
def published(bundle: str, as_json: bool, token: str, address: str | None) -> None:
    """List the data BUNDLE has published (bytes shown as base64 in JSON)."""
    with _helper(address, token) as helper:
        items = helper.get_published_data(bundle)
    if as_json:
        print_json([_item_json(i) for i in items])
        return
    table = Table("key", "subscriber id", "type", "data")
    for item in items:
        is_text = isinstance(item.data, str)
        shown = item.data if is_text else repr(item.data)
        table.add_row(item.key, item.subscriber_id, "text" if is_text else "blob", shown)
    out.print(table)
    out.print(f"{len(items)} item{'s' if len(items) != 1 else ''}", highlight=False)


@share.command("subscribe-published")
@click.argument("uris", nargs=-1, required=True)
@click.option("--subscriber-id", default="", help="Receive the items published for this subscriber id.")
@click.option("--count", type=int, default=0, help="Exit after this many changes (0: run until Ctrl-C).")
@token_option
@address_option
def subscribe_published(
    *, uris: tuple[str, ...], subscriber_id: str, count: int, token: str, address: str | None
) -> None:
    """Print published data of URIS (one publisher) as JSON lines: what is stored first, then each publish."""
    with _helper(address, token) as helper, helper.subscribe_published_data(list(uris), subscriber_id) as sub:
        click.echo(f"subscribed to {', '.join(uris)}", err=True)
        for seen, change in enumerate(sub, start=1):
            click.echo(json.dumps({"bundle": change.bundle, "data": [_item_json(i) for i in change.data]}))
            if count and seen >= count:
                break
