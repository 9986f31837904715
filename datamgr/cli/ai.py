"""`datamgr ai ...`: the on-device LLM (aicap) from the command line.

Completions and chats need an app token holding ohos.permission.USE_AI (--token or DATAMGR_TOKEN);
models, stats, tokenize and detokenize also take the device owner's admin token, which is read from
the data directory when no app token is given, as `datamgr apps` does; adding and removing models
needs it.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from datamgr.cli._common import err, out, print_error, print_json
from datamgr.connection import admin_token
from datamgr.errors import DatamgrError, Unauthenticated

if TYPE_CHECKING:
    from aicap import AiClient, Completion, CompletionChunk, Sampling

token_option = click.option("--token", envvar="DATAMGR_TOKEN", help="The app's token (or DATAMGR_TOKEN).")
address_option = click.option(
    "--address", help="Daemon address (default: DATAMGR_ADDRESS or the Unix socket in the data directory)."
)
model_option = click.option("--model", help="Model name (default: the daemon's default model).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

_SAMPLING_OPTIONS = [
    click.option(
        "--max-tokens", type=click.IntRange(min=0), help="Tokens to generate at most (daemon: 256)."
    ),
    click.option("--temperature", type=click.FloatRange(min=0), help="0 samples greedily (daemon: 0.8)."),
    click.option("--top-k", type=click.IntRange(min=0), help="0 keeps every token (daemon: 40)."),
    click.option("--top-p", type=click.FloatRange(0, 1), help="Nucleus sampling (daemon: 0.95)."),
    click.option("--min-p", type=click.FloatRange(0, 1), help="Minimum probability (daemon: 0.05)."),
    click.option("--repeat-penalty", type=click.FloatRange(min=0), help="1 is off (the daemon's default)."),
    click.option("--repeat-last-n", type=click.IntRange(min=0), help="Tokens the penalty looks back (64)."),
    click.option(
        "--seed", type=click.IntRange(0, 2**64 - 1), help="Same seed, same output (default: random)."
    ),
    click.option("--stop", multiple=True, help="Stop before this string (repeatable)."),
    click.option("--n", "n", type=click.IntRange(min=1), help="Parallel samples of the prompt."),
    click.option("--logprobs", is_flag=True, help="Show the log-probability of each token."),
    click.option("--ignore-eos", is_flag=True, help="Keep generating past the end token until --max-tokens."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Deadline in seconds."),
    click.option(
        "--placement",
        type=click.Choice(["local", "auto", "split"]),
        help="Where it runs: here, the device (this or a paired one) with the earliest expected first "
        "token, or split: prefill on the soonest paired device, decode here (default: the owner's "
        "choice, ai.offload).",
    ),
    click.option("--device", help="Run on this paired device (its id; needs ai.offload here)."),
    click.option(
        "--json-schema",
        "json_schema",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Answer JSON that validates against the JSON Schema in FILE (structured output).",
    ),
    click.option("--json-object", is_flag=True, help="Answer a JSON object (any; structured output)."),
    click.option(
        "--grammar",
        "grammar_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Answer text that matches the GBNF grammar in FILE (llama.cpp's format).",
    ),
]
_SAMPLING_KEYS = (
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "stop",
    "n",
    "logprobs",
    "ignore_eos",
)


def sampling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_SAMPLING_OPTIONS):
        fn = option(fn)
    return fn


def _sampling(options: dict[str, Any]) -> Sampling:
    """The SDK's sampling keywords for the options given (unset ones are left to the daemon). A given
    0 is sent: `--temperature 0` is greedy, `--seed 0` a seed (0 == False, so no `in (None, False)`)."""
    given = {k: v for k in _SAMPLING_KEYS if (v := options.get(k)) is not None and v is not False and v != ()}
    if "stop" in given:
        given["stop"] = list(given["stop"])
    return given  # type: ignore[return-value]


def _client(address: str | None, token: str | None, admin_ok: bool = False) -> AiClient:
    """A client with the app token, else (for calls that take it) the admin token of the data directory."""
    from aicap.client import AiClient

    if not token and admin_ok:
        try:
            token = admin_token()
        except DatamgrError:
            raise Unauthenticated(
                "no token: pass --token or set DATAMGR_TOKEN (the device owner's admin token is used "
                "when it can be read)"
            ) from None
    if not token:
        raise Unauthenticated("no app token: pass --token or set DATAMGR_TOKEN")
    return AiClient.connect(address, token)


def interruptible(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C ends a generation (the call is cancelled as the stream is left) and exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)

    return wrapper


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


@click.group()
def ai() -> None:
    """The on-device LLM: models, completions, chat, tokens and engine statistics."""


# ---- generation ----


def _completion_json(completion: Completion) -> dict[str, Any]:
    return {"samples": [dataclasses.asdict(s) for s in completion.samples]}


def _print_stream(chunks: Iterable[CompletionChunk], n: int) -> tuple[Completion, list[CompletionChunk]]:
    """Writes the text as it comes (one sample), or each sample as it finishes (n > 1)."""
    from aicap import assemble

    seen: list[CompletionChunk] = []
    done = 0
    for chunk in chunks:
        seen.append(chunk)
        if n <= 1:
            click.echo(chunk.text, nl=False)
            sys.stdout.flush()
        elif chunk.finish_reason is not None:
            sample = assemble(c for c in seen if c.index == chunk.index).samples[0]
            if done:
                click.echo()
            click.echo(f"--- sample {chunk.index} ---")
            click.echo(sample.text)
            done += 1
    completion = assemble(seen)
    if n <= 1 and completion.samples and not completion.text.endswith("\n"):
        click.echo()
    return completion, seen


def _print_summary(completion: Completion, chunks: list[CompletionChunk] | None) -> None:
    from aicap.grounding import locator

    for s in completion.samples:
        u = s.usage
        tokens = f", {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens" if u else ""
        cached = f" ({u.cached_tokens} cached)" if u and u.cached_tokens else ""
        where = f", on device {u.device}" if u and u.device else ""
        moved = f" (moved {u.migrations}x)" if u and u.migrations else ""
        label = f"sample {s.index}: " if len(completion.samples) > 1 else ""
        err.print(
            f"[dim]{label}finish {s.finish_reason or '?'}{tokens}{cached}{where}{moved}[/]", highlight=False
        )
        for n, c in enumerate(s.citations, 1):
            where = locator(c.uri, c.row_id, c.key)
            err.print(f"[dim]  [{n}] {c.uri} {where} (score {c.score:.3f})[/]", highlight=False)
    if chunks is not None:
        table = Table("sample", "token", "text", "logprob")
        for chunk in sorted(chunks, key=lambda c: c.index):  # stable: each sample's tokens in order
            for i, (token, logprob) in enumerate(zip(chunk.token_ids, chunk.logprobs, strict=False)):
                table.add_row(
                    str(chunk.index), str(token), repr(chunk.text) if i == 0 else "", f"{logprob:.4f}"
                )
        err.print(table)


def _structured(options: dict[str, Any], sampling: Sampling) -> None:
    """--json-schema, --json-object and --grammar as the SDK's response_format and grammar."""
    schema_file, grammar_file = options.get("json_schema"), options.get("grammar_file")
    if sum(bool(x) for x in (schema_file, options.get("json_object"), grammar_file)) > 1:
        raise click.UsageError("--json-schema, --json-object and --grammar: one at most")
    if schema_file is not None:
        text = schema_file.read_text(encoding="utf-8")
        sampling["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema_file.stem or "schema", "schema": text, "strict": True},
        }
    elif options.get("json_object"):
        sampling["response_format"] = {"type": "json_object"}
    elif grammar_file is not None:
        sampling["grammar"] = grammar_file.read_text(encoding="utf-8")


def _run(stream_fn: Callable[..., Any], what: Any, options: dict[str, Any], as_json: bool) -> Completion:
    """Runs one completion or chat call and prints it; returns the whole completion."""
    sampling = _sampling(options)
    _structured(options, sampling)
    if options.get("device") and options.get("placement"):
        raise click.UsageError("--device and --placement: one or the other")
    placement = options.get("device") or options.get("placement")
    timeout = options.get("timeout")
    with stream_fn(what, options.get("model"), timeout=timeout, placement=placement, **sampling) as stream:
        if as_json:
            completion: Completion = stream.completion()
            print_json(_completion_json(completion))
            return completion
        completion, chunks = _print_stream(stream, sampling.get("n") or 1)
    _print_summary(completion, chunks if sampling.get("logprobs") else None)
    return completion


@ai.command()
@click.argument("prompt")
@model_option
@sampling_options
@json_option
@token_option
@address_option
@interruptible
def complete(prompt: str, as_json: bool, token: str | None, address: str | None, **options: Any) -> None:
    """Complete PROMPT, streaming the text to stdout as it is generated (- reads it from stdin)."""
    if prompt == "-":
        prompt = sys.stdin.read()
    with _client(address, token) as client:
        _run(client.stream_complete, prompt, options, as_json)


@ai.command()
@click.argument("message", required=False)
@click.option("--system", help="A system message first.")
@click.option("--pinned", help="This app's pinned context (datamgr ai pin) as the system message.")
@click.option(
    "--context",
    "sources",
    multiple=True,
    metavar="SOURCE",
    help="Ground the answer in data this app may read (repeatable): an indexed DataShare table "
    "(datashare:///BUNDLE/STORE/TABLE), one of its KV stores (kv:STORE or kv:STORE/KEY_PREFIX: entries "
    "ranked by the words they share with the question), or UDMF data (udmf://...: every record; drag "
    "data is consumed). What was used is cited.",
)
@click.option(
    "--rows", type=click.IntRange(0), default=0, help="Rows or KV entries used per --context (0: 4)."
)
@model_option
@sampling_options
@json_option
@token_option
@address_option
@interruptible
def chat(
    message: str | None,
    system: str | None,
    pinned: str | None,
    sources: tuple[str, ...],
    rows: int,
    as_json: bool,
    token: str | None,
    address: str | None,
    **options: Any,
) -> None:
    """Answer MESSAGE with the model's chat template; without MESSAGE, read it from stdin, or talk
    interactively on a terminal (the history is kept; Ctrl-D ends)."""
    history: list[tuple[str, str]] = [("system", system)] if system else []
    with _client(address, token) as client:
        from aicap import Context

        context = [Context(uri) if uri.startswith("udmf:") else Context(uri, k=rows) for uri in sources]
        stream_chat = functools.partial(client.stream_chat, pinned_context=pinned, context=context)
        if message is None and not _stdin_is_tty():
            message = sys.stdin.read()
        if message is not None:
            _run(stream_chat, [*history, ("user", message)], options, as_json)
            return
        err.print("[dim]chat with the model; Ctrl-D ends, Ctrl-C stops an answer[/]", highlight=False)
        while True:
            try:
                line = input("> ")
            except EOFError:
                click.echo()
                return
            if not line.strip():
                continue
            try:
                answer = _run(stream_chat, [*history, ("user", line)], options, as_json)
            except KeyboardInterrupt:
                err.print("[dim](stopped; not kept in the history)[/]", highlight=False)
                continue
            except DatamgrError as exc:  # any turn may fail: the talk goes on
                print_error(exc)
                continue
            history += [("user", line), ("assistant", answer.text)]


@ai.command()
@click.argument("messages", nargs=-1)
@click.option("--instructions", default="", help="The system message of every turn.")
@click.option("--keep", is_flag=True, help="Leave the session open and print its id (else it is closed).")
@click.option("--id", "session_id", help="Go on with an open session of this app (its id).")
@model_option
@sampling_options
@json_option
@token_option
@address_option
@interruptible
def session(
    messages: tuple[str, ...],
    instructions: str,
    keep: bool,
    session_id: str | None,
    as_json: bool,
    token: str | None,
    address: str | None,
    **options: Any,
) -> None:
    """A conversation the daemon keeps, each turn reusing the earlier turns' KV: every MESSAGE is one
    turn, in order; without MESSAGE, talk on a terminal (Ctrl-D ends). Unless --keep, the session is
    closed at the end."""
    with _client(address, token) as client:
        if session_id:
            s = client.session(session_id)
        else:
            s = client.create_session(instructions, options.get("model"))

        def stream(turn: str, model: str | None, **kw: Any) -> Any:
            kw.pop("placement", None)  # a session runs here, where its KV is kept
            return s.stream(turn, **kw)

        try:
            for message in messages:
                _run(stream, message, options, as_json)
            if not messages:
                _talk(stream, options, as_json)
        finally:
            if keep or session_id:
                err.print(f"[dim]session {s.id} stays open (--id {s.id})[/]", highlight=False)
            else:
                s.close()


def _talk(stream: Callable[..., Any], options: dict[str, Any], as_json: bool) -> None:
    err.print("[dim]a session with the model; Ctrl-D ends, Ctrl-C stops an answer[/]", highlight=False)
    while True:
        try:
            line = input("> ")
        except EOFError:
            click.echo()
            return
        if not line.strip():
            continue
        try:
            _run(stream, line, options, as_json)
        except KeyboardInterrupt:
            err.print("[dim](stopped; not kept in the transcript)[/]", highlight=False)
        except DatamgrError as exc:  # any turn may fail: the talk goes on
            print_error(exc)


@ai.command()
@click.argument("name")
@click.argument("text")
@model_option
@token_option
@address_option
def pin(name: str, text: str, model: str | None, token: str | None, address: str | None) -> None:
    """Pin TEXT (- reads stdin) as this app's system message NAME, kept cached: chat --pinned NAME."""
    if text == "-":
        text = sys.stdin.read()
    with _client(address, token) as client:
        p = client.pin_context(name, text, model)
    out.print(f"pinned {p.name} ({p.tokens} tokens of model {p.model})", highlight=False)


@ai.command()
@click.argument("name")
@token_option
@address_option
def unpin(name: str, token: str | None, address: str | None) -> None:
    """Release this app's pinned context NAME."""
    with _client(address, token) as client:
        client.unpin_context(name)


# ---- embeddings ----


@ai.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--model", help="Embedding model (default: the daemon's, all-minilm-l6-v2).")
@click.option("--show", type=click.IntRange(min=0), default=4, show_default=True, help="Values per text.")
@json_option
@token_option
@address_option
def embed(
    texts: tuple[str, ...],
    model: str | None,
    show: int,
    as_json: bool,
    token: str | None,
    address: str | None,
) -> None:
    """Print the vectors of TEXTS (unit length; their dot products are cosine similarities)."""
    with _client(address, token) as client:
        vectors = client.embed(list(texts), model=model or "")
    if as_json:
        print_json({"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()})
        return
    for text, row in zip(texts, vectors, strict=True):
        head = ", ".join(f"{v:+.4f}" for v in row[:show])
        more = ", ..." if len(row) > show else ""
        click.echo(f"{len(row)} dims  [{head}{more}]  {text[:60]!r}")
    if len(texts) > 1:
        sims = vectors @ vectors.T
        click.echo("cosine similarity to the first: " + ", ".join(f"{s:.3f}" for s in sims[0, 1:]))


# ---- tokens ----


@ai.command()
@click.argument("text")
@click.option("--special/--no-special", default=True, show_default=True, help="Add BOS (and the like).")
@model_option
@json_option
@token_option
@address_option
def tokenize(
    text: str, special: bool, model: str | None, as_json: bool, token: str | None, address: str | None
) -> None:
    """Print the token ids of TEXT."""
    with _client(address, token, admin_ok=True) as client:
        tokens = client.tokenize(text, add_special=special, model=model)
    if as_json:
        print_json(tokens)
    else:
        click.echo(" ".join(map(str, tokens)))


@ai.command()
@click.argument("ids", nargs=-1, required=True, type=click.IntRange(min=0))
@model_option
@token_option
@address_option
def detokenize(ids: tuple[int, ...], model: str | None, token: str | None, address: str | None) -> None:
    """Print the text of token IDS."""
    with _client(address, token, admin_ok=True) as client:
        click.echo(client.detokenize(list(ids), model=model))


# ---- models ----


@ai.group(invoke_without_command=True)
@json_option
@token_option
@address_option
@click.pass_context
def models(ctx: click.Context, as_json: bool, token: str | None, address: str | None) -> None:
    """List the daemon's models; `models add` and `models remove` change them (admin token)."""
    if ctx.invoked_subcommand is not None:
        return
    with _client(address, token, admin_ok=True) as client:
        items = client.models()
    if as_json:
        print_json([dataclasses.asdict(m) for m in items])
        return
    table = Table("name", "kind", "path", "n_ctx", "default", "loaded", "chat template")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True  # the path gives way on a narrow terminal
    table.columns[2].overflow = "fold"
    for m in items:
        template = f"{len(m.chat_template)} chars" if m.chat_template else "-"
        kind = f"embed, {m.embedding_dim}" if m.kind == "embed" else m.kind
        default = "yes" if m.is_default else ""
        loaded = "yes" if m.loaded else "no"
        path = m.path if m.weights_path in ("", m.path) else f"{m.path} (loaded as {m.weights_path})"
        table.add_row(m.name, kind, path, str(m.n_ctx), default, loaded, template)
    out.print(table)


@models.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--n-ctx", type=click.IntRange(min=0), default=0, help="Context size (0: the daemon's default)."
)
@click.option(
    "--chat-template",
    "template_file",
    type=click.File(encoding="utf-8"),
    help="A Jinja chat template file overriding the GGUF's own.",
)
@address_option
@json_option
def models_add(
    name: str, path: Path, n_ctx: int, template_file: Any, address: str | None, as_json: bool
) -> None:
    """Register the GGUF model at PATH as NAME and load it."""
    template = template_file.read() if template_file is not None else ""
    with _client(address, admin_token()) as client:
        m = client.add_model(name, str(path.expanduser().resolve()), n_ctx=n_ctx, chat_template=template)
    if as_json:
        print_json(dataclasses.asdict(m))
        return
    out.print(f"added model [bold]{m.name}[/] ({m.path}, n_ctx {m.n_ctx})", highlight=False)


@models.command("remove")
@click.argument("name")
@address_option
def models_remove(name: str, address: str | None) -> None:
    """Unload and unregister the model NAME."""
    with _client(address, admin_token()) as client:
        client.remove_model(name)
    out.print(f"removed model {name}", highlight=False)


@ai.command()
@click.option("--resume", is_flag=True, help="Run paired devices' generations again.")
@address_option
def drain(resume: bool, address: str | None) -> None:
    """Hand paired devices' generations running here back to them (their streams go on elsewhere) and
    run no new ones until --resume (as the device owner). SIGTERM drains first too."""
    with _client(address, admin_token()) as client:
        moved = client.drain(resume)
    if resume:
        out.print("serving paired devices' generations again", highlight=False)
    else:
        out.print(f"draining: {moved} generation(s) handed back to their devices", highlight=False)


# ---- statistics ----


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@ai.command()
@model_option
@json_option
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text exposition.")
@token_option
@address_option
def stats(model: str | None, as_json: bool, prometheus: bool, token: str | None, address: str | None) -> None:
    """Engine statistics: KV cache, prefix cache, preemptions, queues, latencies."""
    if as_json and prometheus:
        raise click.UsageError("--json and --prometheus exclude each other")
    with _client(address, token, admin_ok=True) as client:
        result = client.stats(model)
    if prometheus:
        click.echo(result.prometheus, nl=False)
        return
    if as_json:
        print_json([dataclasses.asdict(e) | {"prefix_hit_rate": e.prefix_hit_rate} for e in result.engines])
        return
    table = Table("", *(e.model for e in result.engines))

    def row(label: str, fmt: Callable[[Any], str]) -> None:
        table.add_row(label, *(fmt(e) for e in result.engines))

    row("KV blocks used / total", lambda e: f"{e.kv_blocks_used} / {e.kv_blocks_total} ({e.kv_usage:.1%})")
    row("KV block size (tokens)", lambda e: str(e.kv_block_size))
    row("KV waste", lambda e: f"{e.kv_waste:.1%}")
    row(
        "prefix cache hit rate",
        lambda e: f"{e.prefix_hit_rate:.1%} ({e.prefix_cache_hits} / {e.prefix_cache_queries})",
    )
    row("preemptions swap / recompute", lambda e: f"{e.preemptions_swap} / {e.preemptions_recompute}")
    row(
        "preemptions to a paired device (failed)",
        lambda e: f"{e.preemptions_remote} ({e.remote_kv_failures})",
    )
    row(
        "KV sent to / back from paired devices",
        lambda e: f"{_mib(e.remote_kv_bytes_sent)} / {_mib(e.remote_kv_bytes_received)}",
    )
    row(
        "requests waiting / running / swapped",
        lambda e: f"{e.requests_waiting} / {e.requests_running} / {e.requests_swapped}",
    )
    row("requests finished", lambda e: str(e.requests_finished))
    row("tokens prompt / generated", lambda e: f"{e.prompt_tokens_total} / {e.generation_tokens_total}")
    row(
        "time to first token p50 / p99 (ms)",
        lambda e: f"{_ms(e.time_to_first_token.p50)} / {_ms(e.time_to_first_token.p99)}",
    )
    row(
        "inter-token latency p50 / p99 (ms)",
        lambda e: f"{_ms(e.inter_token_latency.p50)} / {_ms(e.inter_token_latency.p99)}",
    )
    out.print(table)
