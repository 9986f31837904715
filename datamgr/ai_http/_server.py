"""The HTTP API's server: uvicorn on the daemon's own event loop (a task, no thread or process of its
own), on a socket the daemon binds itself (port 0 picks one), HTTPS with the device certificate when
`http.tls` is on. The daemon keeps its signals: uvicorn's handlers are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from datamgr.ai_http._app import Api
from datamgr.config import HttpSettings

log = logging.getLogger("datamgr.ai_http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM and SIGINT are the daemon's (datamgr.daemon.run)


def _bind(listen: str) -> socket.socket:
    """A socket bound to HOST:PORT ([v6]:PORT), not listening yet; OSError if the address is taken."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class HttpApi:
    """The OpenAI-compatible HTTP API of `ai` (an AiService), authenticated by `identify`."""

    def __init__(
        self,
        settings: HttpSettings,
        ai: Any,
        identify: Callable[[Any], Any],
        tls: tuple[Path, Path] | None,
        grace_s: float,
    ) -> None:
        """`tls`: the device's certificate and key files, for HTTPS (None: plain HTTP)."""
        self.api = Api(ai, identify, settings.max_body_bytes, settings.max_connections)
        self._settings, self._tls = settings, tls
        self._config = uvicorn.Config(
            self.api.app,
            interface="asgi3",  # a bound method: uvicorn's guess would take it for ASGI2
            lifespan="off",
            log_config=None,  # the daemon's logging
            log_level="warning",
            access_log=False,
            http="httptools",
            ws="none",
            proxy_headers=False,
            server_header=False,
            # A backstop only: `Api` answers a request beyond max_connections with OpenAI's error
            # object. uvicorn's plain-text 503 is for one when more than twice as many connections are
            # open (idle ones too; its count includes the request's own, hence the + 1).
            limit_concurrency=2 * settings.max_connections + 1,
            timeout_graceful_shutdown=max(round(grace_s), 1),
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self._server = _Server(self._config)
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    async def start(self) -> int:
        """Listens and serves; returns the port. OSError when the address cannot be bound."""
        self._sock = _bind(self._settings.listen)
        self.port = self._sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():  # it failed to start (its error is raised here)
                self._task.result()
                raise OSError(f"the HTTP API on {self._settings.listen} did not start")
            await asyncio.sleep(0.01)
        return self.port

    @property
    def url(self) -> str:
        host = self._settings.listen.rpartition(":")[0]
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    def stopping(self) -> None:
        """New requests get 503 from now on (the daemon is shutting down)."""
        self.api.stopping()

    async def close(self) -> None:
        """Stops listening, closes idle connections and waits for open requests (at most the grace)."""
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
        self._task = None
