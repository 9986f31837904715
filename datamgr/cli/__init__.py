"""The `datamgr` command line: `serve`, `health`, `apps ...`, `share ...`, `ai ...`, `udmf ...`,
`devices ...`, `kv ...`."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from datamgr.errors import DatamgrError

# The tools' subcommands, imported when used: `serve` starts probing mDNS without waiting for them.
_SUBCOMMANDS = {
    "ai": "datamgr.cli.ai",
    "apps": "datamgr.cli.apps",
    "devices": "datamgr.cli.devices",
    "kv": "datamgr.cli.kv",
    "share": "datamgr.cli.share",
    "udmf": "datamgr.cli.udmf",
}


class _LazyGroup(click.Group):
    """A group that imports a subcommand's module (`_SUBCOMMANDS`, the command named like its module's
    last part) the first time the subcommand is looked up, and prints the errors of all of them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SUBCOMMANDS and cmd_name not in self.commands:
            self.add_command(getattr(importlib.import_module(_SUBCOMMANDS[cmd_name]), cmd_name))
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """The one error handler of every command: an error any SDK raises (udmf's and aicap's are
        DatamgrErrors too), or a missing file, is printed as `error: CODE: message` (exit 1) without
        a traceback."""
        try:
            return super().invoke(ctx)
        except (DatamgrError, FileNotFoundError) as exc:
            from datamgr.cli._common import print_error

            print_error(exc)
            sys.exit(1)


def _tls_fingerprint(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`--tls-fingerprint` reaches every client of the command as DATAMGR_TLS_FINGERPRINT."""
    if not value:
        return
    from datamgr.connection import FINGERPRINT_ENV, normalize_fingerprint

    try:
        os.environ[FINGERPRINT_ENV] = "sha256:" + normalize_fingerprint(value)
    except DatamgrError as exc:
        raise click.BadParameter(exc.message) from None


@click.group(cls=_LazyGroup)
@click.version_option(package_name="datamgr")
@click.option(
    "--tls-fingerprint",
    callback=_tls_fingerprint,
    expose_value=False,
    is_eager=True,
    help="For an --address on TCP: the daemon's certificate fingerprint (sha256:...), as its owner sees "
    "it with `datamgr devices identity`. Default: DATAMGR_TLS_FINGERPRINT.",
)
def main() -> None:
    """datamgr: the distributed data service daemon and its tools."""


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML settings file.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides data_dir.")
@click.option("--tcp", help="Also listen on TCP, e.g. 127.0.0.1:50051.")
def serve(config_file: Path | None, data_dir: Path | None, tcp: str | None) -> None:
    """Run the DatamgrService daemon until SIGTERM or Ctrl-C."""
    from datamgr.config import load_settings
    from datamgr.launch import configure_logging
    from datamgr.launch import serve as run  # probes mDNS while the daemon imports

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if tcp is not None:
        overrides["tcp"] = tcp
    try:
        settings = load_settings(config_file, **overrides)
    except (FileNotFoundError, ValueError) as exc:
        from datamgr.cli._common import err

        err.print(f"[bold red]error[/]: invalid configuration: {exc}", highlight=False)
        sys.exit(2)
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings))
    except DatamgrError as exc:
        from datamgr.cli._common import err

        err.print(f"[bold red]error[/]: {exc.message}", highlight=False)
        sys.exit(2)


# `datamgr health --service NAME`: short names of the daemon's services (tests pin them to daemon.SERVICES).
HEALTH_SERVICES = {
    "admin": "datamgr.v1.AdminService",
    "datashare": "datamgr.v1.DataShareService",
    "udmf": "udmf.v1.UdmfService",
    "kv": "datamgr.v1.KvStoreService",
    "devices": "datamgr.v1.DeviceService",
    "pairing": "datamgr.v1.PairingService",
    "ai": "aicap.v1.AiService",
}


@main.command()
@click.option("--address", help="Daemon address (default: the Unix socket in the data directory).")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--wait", "wait_s", default=0.0, help="Keep trying this many seconds until it is SERVING.")
@click.option(
    "--service",
    default="",
    help=f"One service's health instead of the daemon's: {', '.join(HEALTH_SERVICES)} or a full name "
    "(ai is SERVING once its default model is loaded).",
)
def health(address: str | None, timeout: float, wait_s: float, service: str) -> None:
    """Exit 0 if the daemon (or --service) answers SERVING to the standard gRPC health check."""
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from datamgr.connection import default_address, open_channel

    deadline = time.monotonic() + wait_s
    target = address or default_address()
    name = HEALTH_SERVICES.get(service, service)
    while True:
        try:
            with open_channel(target) as channel:  # TLS to a TCP address: --tls-fingerprint
                resp = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=name), timeout=timeout
                )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        except DatamgrError as exc:  # no fingerprint for a remote address, another certificate, no TLS
            status = f"{exc.code}: {exc.message}"
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                status = f"{name} is not served by this daemon (NOT_FOUND)"  # e.g. ai with the AI service off
            else:
                status = f"unreachable ({exc.code().name})"
        if status == "SERVING" or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    click.echo(f"{target}{' ' + name if name else ''}: {status}")
    sys.exit(0 if status == "SERVING" else 1)
