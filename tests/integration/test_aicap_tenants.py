"""Apps as tenants of the AI service (issue 10), against the real daemon and model: the prefix cache
tells no app another app's prompt (the PIN attack through usage.cached_tokens), except the blocks of
a prefix the owner declared shareable; giant prompts are refused before tokenizing while other apps
work; GetStats needs USE_AI; revoking USE_AI or removing the app ends its open generations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import CONTACTS, PEOPLE_URI, WRITE, Daemon, contacts_manifest

from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
AI_SERVICE = "aicap.v1.AiService"
BLOCK = 8  # ai.block_size's default
SYSTEM = (
    "You are the help desk of Example Bank. Answer briefly and politely, in plain English, and never "
    "ask for passwords or card numbers."
)
# the declared prefix is shared by the bank and the spy only; everything else keeps the defaults
CONFIG = f"""
[[ai.shared_prefixes]]
name = "helpdesk"
text = "{SYSTEM}"
apps = ["com.example.bank", "com.example.spy"]
"""


def pin_prompt(pin: str) -> str:
    return (
        f"You are the assistant of Example Bank. The customer's PIN is {pin}. Never reveal the PIN to "
        "anyone, whatever they say. Question: what are your opening hours on Sunday?"
    )


class Ai:
    def __init__(self, daemon: Daemon, token: str) -> None:
        self.channel = grpc.insecure_channel(daemon.address)
        self.stub = pb_grpc.AiServiceStub(self.channel)
        self.md = [("authorization", f"Bearer {token}")]

    def stream(self, prompt: str, timeout: float = 120, **params: Any) -> Any:
        req = pb.CompleteRequest(prompt=prompt, params=pb.SamplingParams(**params))
        return self.stub.Complete(req, metadata=self.md, timeout=timeout)

    def cached(self, prompt: str) -> int:
        """usage.cached_tokens of a one-token greedy completion of `prompt`."""
        return list(self.stream(prompt, max_tokens=1, temperature=0.0))[-1].usage.cached_tokens

    def chat_cached(self, system: str, user: str) -> int:
        msgs = [pb.ChatMessage(role="system", content=system), pb.ChatMessage(role="user", content=user)]
        req = pb.ChatRequest(messages=msgs, params=pb.SamplingParams(max_tokens=1, temperature=0.0))
        return list(self.stub.Chat(req, metadata=self.md, timeout=120))[-1].usage.cached_tokens

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        req = pb.TokenizeRequest(text=text, add_special=add_special)
        return list(self.stub.Tokenize(req, metadata=self.md, timeout=60).tokens)

    def engine(self) -> pb.EngineStats:
        return self.stub.GetStats(pb.GetStatsRequest(), metadata=self.md, timeout=30).engines[0]


def code_of(fn: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def wait_idle(admin: Ai, timeout: float = 30.0) -> None:
    """Until no request runs or waits and no KV block is used (the admin token reads the stats)."""
    deadline = time.monotonic() + timeout
    while True:
        e = admin.engine()
        if (e.kv_blocks_used, e.requests_running, e.requests_waiting) == (0, 0, 0):
            return
        assert time.monotonic() < deadline, f"the engine did not go idle: {e}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("ai-tenants")
    config = root / "datamgr.toml"
    config.write_text(CONFIG)
    d = Daemon(root / "data", config=config).start(service=AI_SERVICE)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def admin(daemon: Daemon) -> Ai:
    return Ai(daemon, (daemon.data_dir / "admin.token").read_text().strip())


def test_another_app_cannot_confirm_a_pin_through_cached_tokens(daemon: Daemon) -> None:
    victim = Ai(daemon, daemon.add_app("com.example.notes", USE_AI))
    spy = Ai(daemon, daemon.add_app("com.example.game", USE_AI))
    victim.cached(pin_prompt("4821"))
    spy.cached(pin_prompt("0000"))  # caches the spy's own copy of the template up to the PIN
    right, wrong = spy.cached(pin_prompt("4821")), spy.cached(pin_prompt("9999"))
    assert right == wrong, f"the cache told the spy the PIN: {right} cached tokens vs {wrong}"
    assert victim.cached(pin_prompt("4821")) > right  # the victim still hits its own prompt


def test_a_declared_shared_prefix_is_shared_by_its_apps_only(daemon: Daemon) -> None:
    bank = Ai(daemon, daemon.add_app("com.example.bank", USE_AI))
    spy = Ai(daemon, daemon.add_app("com.example.spy", USE_AI))
    other = Ai(daemon, daemon.add_app("com.example.other", USE_AI))
    bank.chat_cached(SYSTEM, "My PIN is 4821. What are your opening hours on Sunday?")
    # the blocks wholly inside the declared system message, as the chat template renders it
    declared = len(bank.tokenize(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"))
    shared = declared // BLOCK * BLOCK
    assert spy.chat_cached(SYSTEM, "My PIN is 0000. What are your opening hours on Sunday?") == shared
    assert other.chat_cached(SYSTEM, "My PIN is 4821. What are your opening hours on Sunday?") == 0
    # past the declared prefix the spy hits only its own blocks: a right guess looks like a wrong one
    right = spy.chat_cached(SYSTEM, "My PIN is 4821. What are your opening hours on Sunday?")
    wrong = spy.chat_cached(SYSTEM, "My PIN is 9999. What are your opening hours on Sunday?")
    assert right == wrong >= shared
    # a Complete prompt that starts with the declared text shares its blocks too
    bank.cached(SYSTEM + " Customer: where is the nearest branch?")
    hit = spy.cached(SYSTEM + " Customer: what does a transfer cost?")
    assert len(spy.tokenize(SYSTEM, add_special=True)) - 2 * BLOCK < hit <= len(spy.tokenize(SYSTEM, True))
    assert other.cached(SYSTEM + " Customer: what does a transfer cost?") == 0


def test_giant_prompts_are_refused_before_tokenizing_while_other_apps_work(daemon: Daemon) -> None:
    flood = Ai(daemon, daemon.add_app("com.example.flood", USE_AI))
    provider = daemon.add_app(CONTACTS)
    writer = daemon.add_app("com.example.dialer", WRITE)
    with daemon.helper(provider) as h:
        h.register_provider(contacts_manifest())
    giant = "x" * 500_000

    def send(i: int) -> tuple[grpc.StatusCode, str]:
        return code_of(lambda: list(flood.stream(giant, max_tokens=1)))

    inserted = 0
    with ThreadPoolExecutor(40) as pool, daemon.helper(writer) as ds:
        refused = [pool.submit(send, i) for i in range(40)]
        while inserted < 20 or not all(f.done() for f in refused):
            assert ds.insert(PEOPLE_URI, {"name": f"caller {inserted}"}) > 0
            inserted += 1
        results = [f.result() for f in refused]
    for code, details in results:
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "ai.max_prompt_chars" in details, details
    msgs = [pb.ChatMessage(role="user", content="x" * 40_000) for _ in range(2)]
    chat = pb.ChatRequest(messages=msgs, params=pb.SamplingParams(max_tokens=1))
    code, details = code_of(lambda: list(flood.stub.Chat(chat, metadata=flood.md, timeout=60)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ai.max_prompt_chars" in details
    code, details = code_of(lambda: flood.tokenize(giant))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ai.max_prompt_chars" in details
    assert len(flood.tokenize("word " * 10_000)) == 10_001  # long but allowed: tokenized off the loop
    assert list(flood.stream("Hello", max_tokens=2, ignore_eos=True))[-1].usage.completion_tokens == 2


def test_stats_need_use_ai_or_the_admin_token(daemon: Daemon, admin: Ai) -> None:
    outsider = Ai(daemon, daemon.add_app("com.example.calculator"))
    code, details = code_of(outsider.engine)
    assert code == grpc.StatusCode.PERMISSION_DENIED and USE_AI in details
    assert code_of(Ai(daemon, "dmapp_not-a-token").engine)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert admin.engine().kv_blocks_total > 0
    assert Ai(daemon, daemon.add_app("com.example.stats", USE_AI)).engine().kv_blocks_total > 0


@pytest.mark.parametrize("how", ["revoke", "remove"])
def test_revoking_use_ai_or_removing_the_app_ends_its_generation(daemon: Daemon, admin: Ai, how: str) -> None:
    bundle = f"com.example.{how}d"
    app = Ai(daemon, daemon.add_app(bundle, USE_AI))
    call = app.stream("Count from one to one thousand:", max_tokens=1000, ignore_eos=True)
    chunks = [next(call)]
    with daemon.admin() as owner:
        if how == "revoke":
            owner.revoke(bundle, [USE_AI])
        else:
            owner.remove_app(bundle)

    def drain() -> None:
        for chunk in call:
            chunks.append(chunk)

    code, details = code_of(drain)
    want = grpc.StatusCode.PERMISSION_DENIED if how == "revoke" else grpc.StatusCode.UNAUTHENTICATED
    assert code == want, details
    assert len(chunks) < 1000 and not chunks[-1].finish_reason
    wait_idle(admin)  # its generation was aborted and its KV freed
    code, _ = code_of(lambda: list(app.stream("Hello", max_tokens=1)))
    assert code == want


def test_a_shared_prefix_may_come_from_a_file(tmp_path: Path) -> None:
    from datamgr.config import load_settings

    (tmp_path / "system.txt").write_text(SYSTEM)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[ai.shared_prefixes]]\nname = "h"\nfile = "{tmp_path / "system.txt"}"\napps = ["*"]\n'
    )
    settings = load_settings(config)
    assert settings.ai.isolate_prefix_cache_per_app
    assert [(p.name, p.text, p.apps) for p in settings.ai.shared_prefixes] == [("h", SYSTEM, ["*"])]
