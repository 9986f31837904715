"""llama.cpp's own `llama-server` as a system of benchmarks/aicap_bench.py: the server people run today
(continuous batching over `-np` slots, here with unified KV, `-kvu`), answering the same token lists over
its HTTP API (POST /completion, streamed, greedy, EOS ignored), one thread per client.

The binary is not part of llama-cpp-python's wheel: `bash benchmarks/build_llama_server.sh` builds it
from the sdist of the installed llama-cpp-python version (the same llama.cpp, ~7 min on 2 cores) into
~/.cache/datamgr/llama-server; `--llama-server PATH` or $LLAMA_SERVER picks another.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEFAULT_BINARY = Path.home() / ".cache" / "datamgr" / "llama-server"


def find_binary(given: str | None) -> Path | None:
    """The llama-server to run: `given`, $LLAMA_SERVER, the built one, one on PATH; None if none."""
    built, on_path = str(DEFAULT_BINARY), shutil.which("llama-server")
    for candidate in (given, os.environ.get("LLAMA_SERVER"), built, on_path):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One llama-server process on loopback with `slots` parallel sequences sharing `n_ctx` cells."""

    def __init__(
        self,
        binary: Path,
        model_path: Path,
        n_ctx: int,
        slots: int,
        n_threads: int,
        flash_attn: str,
        log: Path,
        extra: list[str] | None = None,
    ) -> None:
        self.port = _free_port()
        self.command = [
            str(binary), "-m", str(model_path), "-c", str(n_ctx), "-np", str(slots), "-kvu",
            "-t", str(n_threads), "-tb", str(n_threads), "-fa", flash_attn,
            "--host", "127.0.0.1", "--port", str(self.port), "--no-webui", *(extra or []),
        ]  # fmt: skip
        self._log = log.open("wb")
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_healthy(120.0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}); see {self._log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama-server not healthy after {timeout:.0f} s; see {self._log.name}")

    def complete(self, tokens: list[int], max_tokens: int) -> tuple[float, list[float]]:
        """(start, token times) of one streamed greedy completion of `tokens`."""
        body = {
            "prompt": tokens, "n_predict": max_tokens, "temperature": 0.0, "stream": True,
            "ignore_eos": True, "return_tokens": True, "cache_prompt": True,
        }  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.perf_counter()
        conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"llama-server: HTTP {resp.status}: {resp.read()[:300]!r}")
        times: list[float] = []
        predicted = None
        for line in resp:
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            event: dict[str, Any] = json.loads(line[6:])
            times.extend([now] * len(event.get("tokens") or ()))
            if event.get("stop"):
                predicted = event.get("tokens_predicted")
                break
        conn.close()
        if predicted is not None and predicted > len(times):  # held back, then sent with the last event
            times += [times[-1] if times else time.perf_counter()] * (predicted - len(times))
        return t0, times

    def run_clients(self, clients: int, per_client: int, request: Any) -> None:
        """`clients` threads, each sending its `per_client` requests back to back: request(c, j)."""

        def client(c: int) -> None:
            for j in range(per_client):
                request(c, j)

        with ThreadPoolExecutor(clients) as pool:
            for done in [pool.submit(client, c) for c in range(clients)]:
                done.result()  # a failed client's error, once every client is done

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
