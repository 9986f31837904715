"""The daemon's OpenAI-compatible HTTP API against llama.cpp's own llama-server, in one run.

Run: .venv/bin/python benchmarks/http_bench.py [--clients 8] [--per-client 2] [--rounds 3]

N client threads stream chat completions (POST /v1/chat/completions, "stream": true, include_usage) through
our daemon's HTTP API (datamgr.ai_http: uvicorn on the daemon's loop, AiService, the engine) and through
llama-server (`-np N -kvu`, the daemon's n_ctx, threads and flash attention: benchmarks/llama_server.py),
with the same client code, prompts and model, greedy, the end-of-generation token ignored, so every
request generates exactly --max-tokens tokens. Each client sends its requests back to back; each
request has a fresh prompt (a system message and a user message of 12, 48 or 200 random words, cycled),
the same for every system in a round. Rounds rotate which system goes first; the table shows medians. The
same daemon over gRPC (AiService.Chat on its Unix socket, other apps: the prefix cache is per app) shows
what the HTTP layer adds.
Aggregate tok/s = generated tokens (from each stream's usage) / (first request sent to last token);
TTFT = request sent to the first content of the stream.

llama-server is not in llama-cpp-python's wheel: `bash benchmarks/build_llama_server.sh` builds it; without
it the benchmark runs ours alone and says so.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import grpc  # noqa: E402
from _machine import cpu_times, machine, proc_jiffies  # noqa: E402
from aicap_bench import WORDS  # noqa: E402
from harness import Daemon  # noqa: E402
from llama_server import LlamaServer, find_binary  # noqa: E402

from aicap.engine.model_runner import default_model_path  # noqa: E402
from aicap.v1 import aicap_pb2 as pb  # noqa: E402
from aicap.v1 import aicap_pb2_grpc as pb_grpc  # noqa: E402

PERMISSION = "ohos.permission.USE_AI"
MODEL = "smollm2-135m"
USER_WORDS = (12, 48, 200)  # user message lengths, cycled over the requests
SYSTEM = "You are a helpful assistant. Answer at length."
HTTP, GRPC, LLAMA = "ours", "ours (gRPC)", "llama-server"


@dataclass
class Run:
    system: str
    start: float = 0.0
    end: float = 0.0
    tokens: int = 0
    cpu_s: float = 0.0  # CPU time the server process used during the run
    ttfts: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ttft: float, tokens: int, prompt_tokens: int, last: float) -> None:
        with self.lock:
            self.ttfts.append(ttft)
            self.tokens += tokens
            self.prompt_tokens.append(prompt_tokens)
            self.end = max(self.end, last)

    @property
    def tok_s(self) -> float:
        return self.tokens / (self.end - self.start)

    @property
    def ttft_p50(self) -> float:
        return statistics.median(self.ttfts)


def open_chat(
    name: str, port: int, token: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, float]:
    """POSTs a streamed greedy chat completion (EOS ignored, usage included) to an OpenAI-compatible
    server on loopback: (connection, response, time sent); RuntimeError unless HTTP 200."""
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"{name}: HTTP {resp.status}: {resp.read()[:300]!r}")
    return conn, resp, t0


def sse_events(resp: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON events of an OpenAI server-sent event stream, up to its `[DONE]`."""
    for line in resp:
        if not line.startswith(b"data: "):
            continue
        if line.startswith(b"data: [DONE]"):
            return
        yield json.loads(line[6:])


def event_contents(event: dict[str, Any]) -> Iterator[str]:
    """The non-empty delta contents of one streamed chat completion event."""
    for choice in event.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            yield content


class Endpoint:
    """An OpenAI-compatible server on loopback: POST /v1/chat/completions, streamed. `pid`: its process."""

    def __init__(self, name: str, port: int, tokens: list[str], pid: int) -> None:
        self.name, self.port, self.tokens, self.pid = name, port, tokens, pid

    def stream(
        self, client: int, messages: list[dict[str, str]], max_tokens: int
    ) -> tuple[float, int, int, float]:
        """(TTFT, completion tokens, prompt tokens, time of the last event) of one streamed chat."""
        conn, resp, t0 = open_chat(self.name, self.port, self.tokens[client], messages, max_tokens)
        ttft = None
        usage: dict[str, Any] = {}
        contents = 0
        for event in sse_events(resp):
            for _ in event_contents(event):
                contents += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            usage = event.get("usage") or usage
        last = time.perf_counter()
        conn.close()
        if ttft is None:
            raise RuntimeError(f"{self.name}: a stream without content")
        return ttft, usage.get("completion_tokens", contents), usage.get("prompt_tokens", 0), last


class GrpcEndpoint:
    """The same daemon's AiService.Chat over gRPC (its Unix socket): what the HTTP layer adds is the
    difference between the two."""

    def __init__(self, daemon: Daemon, tokens: list[str], pid: int) -> None:
        self.name, self.tokens, self.pid = GRPC, tokens, pid
        self._channels = [grpc.insecure_channel(daemon.address) for _ in tokens]

    def stream(
        self, client: int, messages: list[dict[str, str]], max_tokens: int
    ) -> tuple[float, int, int, float]:
        stub = pb_grpc.AiServiceStub(self._channels[client])
        params = pb.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        chat = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
        req = pb.ChatRequest(model=MODEL, messages=chat, params=params)
        t0 = time.perf_counter()
        ttft, tokens, prompt = None, 0, 0
        for chunk in stub.Chat(
            req, metadata=[("authorization", f"Bearer {self.tokens[client]}")], timeout=600
        ):
            if chunk.text and ttft is None:
                ttft = time.perf_counter() - t0
            if chunk.finish_reason:
                tokens, prompt = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
        last = time.perf_counter()
        if ttft is None:
            raise RuntimeError("a gRPC stream without text")
        return ttft, tokens, prompt, last

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def prompts(rng: random.Random, n: int) -> list[list[dict[str, str]]]:
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(USER_WORDS[i % len(USER_WORDS)]))
        out.append([{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{i}: {words}"}])
    return out


def run(endpoint: Any, clients: int, per_client: int, work: list[Any], max_tokens: int) -> Run:
    result = Run(endpoint.name)
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for j in range(per_client):
                ttft, tokens, prompt, last = endpoint.stream(c, work[c * per_client + j], max_tokens)
                result.add(ttft, tokens, prompt, last)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    result.start = time.perf_counter()
    cpu = proc_jiffies(endpoint.pid)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.cpu_s = (proc_jiffies(endpoint.pid) - cpu) / os.sysconf("SC_CLK_TCK")
    if errors:
        raise errors[0]
    return result


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="Inference threads of both servers.")
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--llama-server", default=None, help="The llama-server binary (default: the built one).")
    ap.add_argument("--seed", type=int, default=7)
    return ap.parse_args()


def report(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    """The medians of the rounds, and the ratios."""
    print(
        f"\nN={args.clients} clients x {args.per_client} requests, {args.max_tokens} tokens each, "
        f"medians of {args.rounds} rounds:"
    )
    print("| system | tok/s | TTFT p50 (ms) | server CPU s per 1,000 tokens |")
    print("|---|---|---|---|")
    med = {
        name: (
            statistics.median(x.tok_s for x in runs),
            statistics.median(x.ttft_p50 for x in runs),
            statistics.median(1000 * x.cpu_s / x.tokens for x in runs),
        )
        for name, runs in results.items()
    }
    for name, (tok_s, ttft, cpu) in med.items():
        print(f"| {name} | {tok_s:.1f} | {ttft * 1000:.0f} | {cpu:.1f} |")
    (http_tok, http_ttft, _), (grpc_tok, grpc_ttft, _) = med[HTTP], med[GRPC]
    if LLAMA in med:
        ls_tok, ls_ttft, _ = med[LLAMA]
        verdict = "met" if http_tok / ls_tok >= 0.95 else "NOT met"
        print(f"\nours / llama-server: tok/s {http_tok / ls_tok:.2f} (target >= 0.95: {verdict}), ", end="")
        print(f"TTFT p50 {http_ttft / ls_ttft:.2f} (lower is better)")
        print(
            f"  median of the rounds' own ratios (each round's runs back to back): {paired(results, LLAMA)}"
        )
    print(
        f"ours over HTTP / over gRPC: tok/s {http_tok / grpc_tok:.2f}, TTFT p50 {http_ttft / grpc_ttft:.2f}"
    )
    print(f"  median of the rounds' own ratios: {paired(results, GRPC)}")


def paired(results: dict[str, list[Run]], other: str) -> str:
    """Ours over `other`, round by round (a burst of other load on the machine hits a round's runs
    more alike than it hits the medians): the median of those ratios."""
    pairs = list(zip(results[HTTP], results[other], strict=True))
    tok = statistics.median(a.tok_s / b.tok_s for a, b in pairs)
    ttft = statistics.median(a.ttft_p50 / b.ttft_p50 for a, b in pairs)
    return f"tok/s {tok:.2f}, TTFT p50 {ttft:.2f}"


def rounds(systems: list[Any], args: argparse.Namespace) -> dict[str, list[Run]]:
    rng = random.Random(args.seed)
    warm = prompts(rng, args.clients)
    for s in systems:  # first requests load what loads lazily; not measured
        run(s, args.clients, 1, warm, 8)
    results: dict[str, list[Run]] = {s.name: [] for s in systems}
    steal0, busy0, total0 = cpu_times()
    for r in range(args.rounds):
        work = prompts(rng, args.clients * args.per_client)
        for s in systems[r % len(systems) :] + systems[: r % len(systems)]:  # each goes first in turn
            res = run(s, args.clients, args.per_client, work, args.max_tokens)
            results[s.name].append(res)
            ttft, lengths = res.ttft_p50 * 1000, f"{min(res.prompt_tokens)}-{max(res.prompt_tokens)}"
            print(
                f"round {r + 1} {s.name:>12}: {res.tok_s:6.1f} tok/s, TTFT p50 {ttft:6.0f} ms, "
                f"{res.tokens} tokens, prompts of {lengths} tokens, server CPU {res.cpu_s:.1f} s",
                flush=True,
            )
    steal1, busy1, total1 = cpu_times()
    jiffies = max(total1 - total0, 1)
    print(
        f"\nCPU during the rounds: {100 * (busy1 - busy0) / jiffies:.0f}% busy, "
        f"{100 * (steal1 - steal0) / jiffies:.1f}% stolen"
    )
    return results


def main() -> None:
    args = parse()
    print(f"http_bench: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    binary = find_binary(args.llama_server)
    if binary is None:
        print("llama-server not found (bash benchmarks/build_llama_server.sh): ours alone")
    tmp = Path(tempfile.mkdtemp(prefix="http_bench-"))
    env = {
        "DATAMGR_AI__N_CTX": str(args.n_ctx),
        "DATAMGR_AI__N_THREADS": str(args.threads),
        "DATAMGR_AI__MAX_TOKENS_LIMIT": str(max(1024, args.max_tokens)),
        "DATAMGR_LOG_LEVEL": "WARNING",
    }
    daemon = Daemon(tmp / "data", env=env).start(service="aicap.v1.AiService")
    server = None
    grpc_endpoint = None
    try:
        # apps of their own for each path: the prefix cache is per app, so neither finds the other's prompts
        tokens = [daemon.add_app(f"com.bench.http{c}", PERMISSION) for c in range(args.clients)]
        grpc_tokens = [daemon.add_app(f"com.bench.grpc{c}", PERMISSION) for c in range(args.clients)]
        assert daemon.proc is not None
        pid = daemon.proc.pid
        grpc_endpoint = GrpcEndpoint(daemon, grpc_tokens, pid)
        systems: list[Any] = [Endpoint(HTTP, daemon.endpoint()["http_port"], tokens, pid), grpc_endpoint]
        if binary is not None:
            server = LlamaServer(
                binary, default_model_path(), args.n_ctx, args.clients, args.threads, "on", tmp / "llama.log"
            )
            systems.append(Endpoint(LLAMA, server.port, tokens, server.pid))
        report(rounds(systems, args), args)
    finally:
        if server is not None:
            server.close()
        daemon.stop()
        if grpc_endpoint is not None:
            grpc_endpoint.close()


if __name__ == "__main__":
    main()
