"""The `datamgr` command line: `serve`, `health`, `apps ...`, `share ...`, `ai ...`, `udmf ...`,
`devices ...`, `kv ...`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from datamgr.cli._common import err
from datamgr.cli.ai import ai
from datamgr.cli.apps import apps
from datamgr.cli.devices import devices
from datamgr.cli.kv import kv
from datamgr.cli.share import share
from datamgr.cli.udmf import udmf
from datamgr.errors import DatamgrError


@click.group()
@click.version_option(package_name="datamgr")
def main() -> None:
    """datamgr: the distributed data service daemon and its tools."""


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML settings file.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides data_dir.")
@click.option("--tcp", help="Also listen on TCP, e.g. 127.0.0.1:50051.")
def serve(config_file: Path | None, data_dir: Path | None, tcp: str | None) -> None:
    """Run the DatamgrService daemon until SIGTERM or Ctrl-C."""
    from datamgr.config import load_settings
    from datamgr.daemon import configure_logging
    from datamgr.daemon import serve as run

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if tcp is not None:
        overrides["tcp"] = tcp
    try:
        settings = load_settings(config_file, **overrides)
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[bold red]error[/]: invalid configuration: {exc}", highlight=False)
        sys.exit(2)
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings))
    except DatamgrError as exc:
        err.print(f"[bold red]error[/]: {exc.message}", highlight=False)
        sys.exit(2)


@main.command()
@click.option("--address", help="Daemon address (default: the Unix socket in the data directory).")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--wait", "wait_s", default=0.0, help="Keep trying this many seconds until it is SERVING.")
def health(address: str | None, timeout: float, wait_s: float) -> None:
    """Exit 0 if the daemon answers SERVING to the standard gRPC health check."""
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from datamgr.client._conn import default_address

    deadline = time.monotonic() + wait_s
    target = address or default_address()
    while True:
        try:
            with grpc.insecure_channel(target) as channel:
                resp = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        except grpc.RpcError as exc:
            status = f"unreachable ({exc.code().name})"
        if status == "SERVING" or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    click.echo(f"{target}: {status}")
    sys.exit(0 if status == "SERVING" else 1)


main.add_command(apps)
main.add_command(share)
main.add_command(ai)
main.add_command(udmf)
main.add_command(kv)
main.add_command(devices)
