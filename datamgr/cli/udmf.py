"""`datamgr udmf ...`: UDMF's channels, drag and uniform types from the command line.

Commands act as an app (its token from --token or DATAMGR_TOKEN). `drag` plays every part of a drag:
the source app sets the data, the system (the device owner's admin token, read from the data
directory) grants the drop target, and with --to-token the target reads it. `drop` plays the drop
side of a drag started elsewhere, on this device or (a CROSS_DEVICE drag) on a paired one.
"""

from __future__ import annotations

import contextlib
import mmap
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from datamgr.cli._common import err, out, print_json
from datamgr.cli._udmf_common import (
    address_option,
    json_option,
    token_option,
    udmf_client,
)
from datamgr.cli._udmf_show import ProgressBar, data_json, print_data, size
from datamgr.cli._udmf_types import types
from datamgr.connection import admin_token

if TYPE_CHECKING:
    from udmf import UdmfClient, UnifiedData

_INTENTIONS = {"data-hub": "DataHub", "system-share": "SystemShare", "picker": "Picker", "menu": "Menu"}
_SHARE = {"in-app": "IN_APP", "cross-app": "CROSS_APP", "cross-device": "CROSS_DEVICE"}
_WRITE_OPTIONS = [
    click.option(
        "--intention",
        type=click.Choice(list(_INTENTIONS)),
        default="data-hub",
        show_default=True,
        help="The channel.",
    ),
    click.option("--tag", default="", help="properties.tag"),
    click.option(
        "--share",
        type=click.Choice(list(_SHARE)),
        default="cross-app",
        show_default=True,
        help="Who may read.",
    ),
    click.option("--own-process", is_flag=True, help="DATA_HUB: hidden from every app but this one."),
]


def write_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_WRITE_OPTIONS):
        fn = option(fn)
    return fn


@click.group()
def udmf() -> None:
    """UDMF: typed data shared between apps (channels, drag, uniform types)."""


# ---- the data to write ----


def _strip_tags(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", html)).strip()


def text_data(text: str, html: bool = False) -> UnifiedData:
    """One record: the text (with `html`: the HTML, then its plain text)."""
    from udmf import HTML, PlainText, UnifiedData, UnifiedRecord

    if not html:
        return UnifiedData(UnifiedRecord(PlainText(text)))
    plain = _strip_tags(text)
    record = UnifiedRecord(HTML(text, plain))
    record.add_entry(PlainText(plain))
    return UnifiedData(record)


def _text_value(type_id: str, path: Path) -> Any:
    """The value of a text file whose type the daemon wants as text or an object, else None (bytes).

    Plain text (and its subtypes, like .log) is a string; HTML an HTML object with its plain text.
    """
    from udmf import UtdRegistry
    from udmf.errors import InvalidArgument

    try:
        ancestors = UtdRegistry().ancestors(type_id)
    except InvalidArgument:  # a custom or flexible type: bytes are fine
        return None
    if not ancestors & {"general.plain-text", "general.html"}:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path.name} is not UTF-8, but a {type_id} is text") from None
    if "general.html" in ancestors:
        return {"htmlContent": text, "plainContent": _strip_tags(text)}
    return text


@contextlib.contextmanager
def file_data(client: UdmfClient, path: Path) -> Iterator[UnifiedData]:
    """One record: the file under its extension's type and a File entry with its file:// URI. Bytes
    are memory-mapped, so they stream without being read whole; text files are sent as text."""
    from udmf import File, UnifiedData, UnifiedRecord

    path = path.expanduser().resolve()
    type_id = "general.octet-stream"
    if path.suffix:
        type_id = client.query_types(filename_extension=path.suffix)[0].type_id
    text = _text_value(type_id, path)
    if text is not None:
        record = UnifiedRecord(type_id, text)
        record.add_entry(File(path.as_uri()))
        yield UnifiedData(record)
        return
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else None
        view = memoryview(mapped if mapped is not None else b"")
        record = UnifiedRecord(type_id, view)
        record.add_entry(File(path.as_uri()))
        try:
            yield UnifiedData(record)
        finally:
            del record
            view.release()
            if mapped is not None:
                with contextlib.suppress(BufferError):  # a view still held elsewhere: the GC closes it
                    mapped.close()


def _insert(client: UdmfClient, data: UnifiedData, opts: dict[str, Any]) -> str:
    from udmf import Intention, ShareOptions, Visibility

    data.properties.tag = opts["tag"]
    data.properties.share_options = ShareOptions[_SHARE[opts["share"]]]
    visibility = Visibility.OWN_PROCESS if opts["own_process"] else Visibility.ALL
    return client.insert_data(data, Intention(_INTENTIONS[opts["intention"]]), visibility)


# ---- channels ----


@udmf.command("put-text")
@click.argument("text")
@click.option("--html", is_flag=True, help="TEXT is HTML: write it and its plain text.")
@write_options
@token_option
@address_option
def put_text(text: str, html: bool, token: str | None, address: str | None, **opts: Any) -> None:
    """Write TEXT (- reads stdin) into a channel; prints its key."""
    if text == "-":
        text = sys.stdin.read()
    with udmf_client(address, token) as client:
        click.echo(_insert(client, text_data(text, html), opts))


@udmf.command("put-file")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@write_options
@token_option
@address_option
def put_file(path: Path, token: str | None, address: str | None, **opts: Any) -> None:
    """Write the file at PATH (typed by its extension) into a channel; prints its key."""
    with udmf_client(address, token) as client, file_data(client, path) as data:
        click.echo(_insert(client, data, opts))


@udmf.command("list")
@click.option(
    "--intention",
    type=click.Choice(list(_INTENTIONS)),
    default="data-hub",
    show_default=True,
    help="The channel.",
)
@json_option
@token_option
@address_option
def list_(intention: str, as_json: bool, token: str | None, address: str | None) -> None:
    """The data in a channel this app may see (DATA_HUB)."""
    from udmf import Intention

    with udmf_client(address, token) as client:
        found = client.query_data(intention=Intention(_INTENTIONS[intention]))
    if as_json:
        print_json([data_json(d) for d in found])
        return
    table = Table("key", "writer", "types", "size", "tag")
    for column in table.columns:
        column.overflow = "fold"  # a key cut short is no key
    for d in found:
        r = d.runtime
        table.add_row(
            r.key if r else "?",
            r.writer if r else "?",
            ", ".join(d.get_types()),
            size(r.summary.total_size) if r else "?",
            d.properties.tag,
        )
    out.print(table)


def read_and_print(client: UdmfClient, key: str, out_dir: Path | None, as_json: bool) -> UnifiedData:
    """get_data with a progress bar, then the data printed (or as JSON)."""
    bar = ProgressBar(f"reading {key}")
    try:
        data = client.get_data(key, progress=bar, out_dir=out_dir)
    finally:
        bar.close()
    if as_json:
        print_json(data_json(data))
    else:
        print_data(data, out_dir)
    return data


@udmf.command()
@click.argument("key")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Save blobs here.")
@json_option
@token_option
@address_option
def get(key: str, out_dir: Path | None, as_json: bool, token: str | None, address: str | None) -> None:
    """Read the data under KEY: text is printed, blobs and bytes go to --out DIR."""
    with udmf_client(address, token) as client:
        read_and_print(client, key, out_dir, as_json)


@udmf.command()
@click.argument("key")
@json_option
@token_option
@address_option
def summary(key: str, as_json: bool, token: str | None, address: str | None) -> None:
    """The types and sizes of the data under KEY, without the data."""
    with udmf_client(address, token) as client:
        summ, props, intention, writer = client.get_summary(key)
    channel = intention.value if intention else "?"
    if as_json:
        print_json(
            {"summary": summ.summary, "total_size": summ.total_size, "intention": channel, "writer": writer}
            | {"tag": props.tag, "timestamp": props.timestamp.isoformat()}
        )
        return
    table = Table("type", "size", title=f"{key}\n{writer} · {channel}")
    for type_id, n in summ.summary.items():
        table.add_row(type_id, size(n))
    table.add_row("[bold]total[/]", f"[bold]{size(summ.total_size)}[/]")
    out.print(table)


@udmf.command()
@click.argument("key", required=False)
@click.option(
    "--intention", type=click.Choice(list(_INTENTIONS)), help="All of this app's data in the channel."
)
@token_option
@address_option
def delete(key: str | None, intention: str | None, token: str | None, address: str | None) -> None:
    """Delete this app's data under KEY, or in a channel (--intention); prints the keys deleted."""
    from udmf import Intention

    if (key is None) == (intention is None):
        raise click.UsageError("give KEY or --intention")
    with udmf_client(address, token) as client:
        gone = client.delete_data(key, Intention(_INTENTIONS[intention]) if intention else None)
    for d in gone:
        click.echo(d.runtime.key if d.runtime else "?")
    err.print(f"[dim]deleted {len(gone)}[/]", highlight=False)


# ---- drag ----


@udmf.command()
@click.argument("text", required=False)
@click.option(
    "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Drag a file."
)
@click.option("--from-token", required=True, help="The drag source app's token.")
@click.option(
    "--share",
    type=click.Choice(list(_SHARE)),
    default="cross-app",
    show_default=True,
    help="cross-device: the drag may be dropped on a paired device (datamgr udmf drop KEY there).",
)
@click.option("--to", "to_bundle", help="The drop target's bundle on this device (granted at once).")
@click.option("--to-token", help="The drop target's token: read the data as the target right away.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="With --to-token.")
@address_option
def drag(
    text: str | None,
    path: Path | None,
    from_token: str,
    share: str,
    to_bundle: str | None,
    to_token: str | None,
    out_dir: Path | None,
    address: str | None,
) -> None:
    """Drag TEXT (or --file) from one app to another: the source sets the drag data, the system (the
    admin token) grants --to, and the key is printed; the target may read it once. Without --to the
    drag waits for a drop (`datamgr udmf drop KEY`, here or, with --share cross-device, on a paired
    device)."""
    from udmf import ShareOptions

    if (text is None) == (path is None):
        raise click.UsageError("give TEXT or --file PATH")
    if to_token is not None and to_bundle is None:
        raise click.UsageError("--to-token reads as the drop target: name it with --to")
    with udmf_client(address, from_token) as source, contextlib.ExitStack() as stack:
        data = stack.enter_context(file_data(source, path)) if path is not None else text_data(text or "")
        data.properties.share_options = ShareOptions[_SHARE[share]]
        key = source.set_drag_data(data)
    click.echo(key)
    if to_bundle is None:
        return
    with udmf_client(address, admin_token()) as system:
        system.grant_access(key, to_bundle)
    err.print(f"[dim]granted {to_bundle}: it may read the data once[/]", highlight=False)
    if to_token is not None:
        _read_once(address, to_token, key, out_dir)


@udmf.command()
@click.argument("key")
@click.option("--to", "to_bundle", required=True, help="The drop target's bundle (an app on this device).")
@click.option("--to-token", required=True, help="The drop target's token: it reads the data, once.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a drag from a paired device to arrive here.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Save blobs here.")
@address_option
def drop(
    key: str, to_bundle: str, to_token: str, wait_s: float, out_dir: Path | None, address: str | None
) -> None:
    """Drop the drag KEY on --to: the system (the admin token) grants it and it reads the data once.
    KEY may be a CROSS_DEVICE drag started on a paired device: that device hands the data over, and it
    is gone there and everywhere else."""
    from udmf.errors import NotFound

    deadline = time.monotonic() + wait_s
    with udmf_client(address, admin_token()) as system:
        while True:
            try:
                system.grant_access(key, to_bundle)
                break
            except NotFound:  # not synced here yet
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
    err.print(f"[dim]granted {to_bundle}[/]", highlight=False)
    _read_once(address, to_token, key, out_dir)


def _read_once(address: str | None, token: str, key: str, out_dir: Path | None) -> None:
    """The target reads the drag data, then shows that a second read is refused."""
    from udmf.errors import UdmfError

    with udmf_client(address, token) as target:
        data = read_and_print(target, key, out_dir, as_json=False)
        if data.runtime is not None and data.runtime.device:
            err.print(f"[dim]dropped from device {data.runtime.device}[/]", highlight=False)
        try:
            target.get_data(key)
        except UdmfError as exc:
            err.print(f"[dim]a second read is refused: {exc.code}: {exc.message}[/]", highlight=False)
        else:
            raise click.ClickException("the drag data could be read twice")


udmf.add_command(types)
