"""What the `datamgr` subcommands share: consoles, the one way errors are printed, JSON output."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from datamgr.errors import DatamgrError

out = Console()
err = Console(stderr=True, soft_wrap=True)


def print_error(exc: DatamgrError | OSError) -> None:
    """`error: CODE: message` on stderr for an error of any SDK (udmf's and aicap's are DatamgrErrors
    too), `error: <what the OS said>` for a file. Commands do not catch errors themselves: the `datamgr`
    group prints what they raise with this and exits 1 (`datamgr.cli._LazyGroup.invoke`)."""
    text = f"{exc.code}: {exc.message}" if isinstance(exc, DatamgrError) else str(exc)
    err.print(f"[bold red]error[/]: {text}", highlight=False)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    raise TypeError(type(value).__name__)


SYNC_MODES = {"push-pull": "PUSH_PULL", "push": "PUSH_ONLY", "pull": "PULL_ONLY"}


def sync_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--device (repeatable) and --mode, the options of every `sync` command."""
    fn = click.option("--mode", type=click.Choice(list(SYNC_MODES)), default="push-pull", show_default=True)(
        fn
    )
    return click.option(
        "--device", "devices", multiple=True, help="A paired device's id (repeat; default: all)."
    )(fn)


def show_sync_results(results: dict[str, Any], as_json: bool) -> None:
    """Prints one sync result per device (a table, or JSON); exits 1 unless every device is OK."""
    from rich.table import Table

    if as_json:
        print_json(
            {d: {"code": r.code, "message": r.message, "pushed": r.pushed, "pulled": r.pulled}
             for d, r in results.items()}
        )  # fmt: skip
    else:
        table = Table("device", "status", "pushed", "pulled", "message")
        for device, r in results.items():
            table.add_row(device, r.code, str(r.pushed), str(r.pulled), r.message)
        out.print(table)
    if not all(r.ok for r in results.values()):
        raise SystemExit(1)
