"""`datamgr udmf types ...`: look up uniform types, register and unregister an app's own."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from datamgr.cli._common import out, print_json
from datamgr.cli._udmf_common import (
    address_option,
    json_option,
    token_option,
    udmf_client,
)

if TYPE_CHECKING:
    from udmf import TypeInfo

# OpenHarmony's utd.json5 spelling of a declaration's keys, accepted by `types register`
_OH_KEYS = {
    "TypeId": "type_id",
    "BelongingToTypes": "belonging_to_types",
    "FilenameExtensions": "filename_extensions",
    "MIMETypes": "mime_types",
    "Description": "description",
    "ReferenceURL": "reference_url",
    "IconFile": "icon_file",
}


def _types_table(found: list[TypeInfo]) -> Table:
    table = Table("type", "belongs to", "extensions", "MIME types", "description", "owner")
    for t in found:
        table.add_row(
            t.type_id,
            ", ".join(t.belonging_to_types),
            " ".join(t.filename_extensions),
            " ".join(t.mime_types),
            t.description,
            t.owner_bundle,
        )
    return table


@click.group(invoke_without_command=True)
@click.option("--ext", help="By filename extension, e.g. .jpg")
@click.option("--mime", help="By MIME type, e.g. image/png")
@click.option("--id", "type_id", help="By type id, e.g. general.jpeg")
@click.option("--belongs-to", help="Only types belonging to this one (with --ext or --mime).")
@click.option("--all", "all_", is_flag=True, help="Every match, not the first.")
@json_option
@token_option
@address_option
@click.pass_context
def types(
    ctx: click.Context,
    ext: str | None,
    mime: str | None,
    type_id: str | None,
    belongs_to: str | None,
    all_: bool,
    as_json: bool,
    token: str | None,
    address: str | None,
) -> None:
    """Look up uniform types (--ext, --mime or --id); `types register` / `types unregister` change
    this app's own."""
    if ctx.invoked_subcommand is not None:
        return
    if sum(x is not None for x in (ext, mime, type_id)) != 1:
        raise click.UsageError("give one of --ext, --mime, --id")
    with udmf_client(address, token) as client:
        found = client.query_types(type_id, ext, mime, belongs_to, all_)
    if as_json:
        print_json([{f: getattr(t, f) for f in t.__dataclass_fields__} for t in found])
    else:
        out.print(_types_table(found))


def _declarations(raw: Any) -> list[dict[str, Any]]:
    """A list of declarations, or {"types": [...]}, or OpenHarmony's utd.json (its key spelling too)."""
    if isinstance(raw, dict):
        raw = raw.get("types", raw.get("UniformDataTypeDeclarations"))
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise click.UsageError('the file holds a list of type declarations (or {"types": [...]})')
    return [{_OH_KEYS.get(k, k): v for k, v in d.items()} for d in raw]


@types.command("register")
@click.argument("file", type=click.File(encoding="utf-8"))
@token_option
@address_option
def types_register(file: Any, token: str | None, address: str | None) -> None:
    """Register this app's own types from a JSON FILE (ids prefixed with its bundle)."""
    try:
        declarations = _declarations(json.load(file))
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"{file.name} is not JSON: {exc}") from None
    with udmf_client(address, token) as client:
        client.register_types(declarations)
    for d in declarations:
        click.echo(f"registered {d.get('type_id')}")


@types.command("unregister")
@click.argument("type_ids", nargs=-1, required=True)
@token_option
@address_option
def types_unregister(type_ids: tuple[str, ...], token: str | None, address: str | None) -> None:
    """Remove this app's types TYPE_IDS."""
    with udmf_client(address, token) as client:
        client.unregister_types(type_ids)
    for type_id in type_ids:
        click.echo(f"unregistered {type_id}")
