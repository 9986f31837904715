"""Grounded answers through the real daemon, model and database (issue 15, part 3): a chat names an
indexed DataShare table, one of the app's KV stores or UDMF data as its context; the daemon retrieves as
the calling app, puts what it found in the prompt and cites it. Nothing the app could not read itself
reaches its prompt: an app without the table's read permission, another app's KV store, UDMF data
without a grant are refused before anything runs (and a refused source consumes no drag data), and
predicates, key prefixes and the scan bound limit what is retrieved."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from harness import Daemon

from aicap import AiClient, Context
from datamgr.cli import main
from datamgr.client import DataSharePredicates, KvStoreClient, KvStoreType, SecurityLevel
from datamgr.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from udmf import (
    HTML,
    Image,
    PlainText,
    ShareOptions,
    UdmfClient,
    UnifiedData,
    UnifiedDataProperties,
    UnifiedRecord,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.model]

USE_AI = "ohos.permission.USE_AI"
NOTES = "com.example.notes"
READ = "com.example.notes.READ"
WRITE = "com.example.notes.WRITE"
URI = f"datashare:///{NOTES}/main/notes"
SECRET_URI = f"datashare:///{NOTES}/main/secrets"
NOTES_ROWS = [
    ("home", "The wifi password at the cabin is BLUEFJORD42."),
    ("home", "The dentist appointment is on Tuesday at nine in the morning."),
    ("work", "The quarterly report is due on the last Friday of March."),
    ("work", "The team lunch is at the Thai place on Market Street."),
    ("home", "Water the tomato plants every second evening in summer."),
    ("work", "The staging server restarts every night at two."),
    ("home", "The car needs new winter tyres before November."),
    ("work", "Expense claims go to the finance inbox within thirty days."),
]


SCAN = 50  # ai.max_context_scan: KV entries a source reads
UDMF_BYTES = 65536  # ai.max_context_udmf_bytes


def table(name: str, read: str) -> dict[str, Any]:
    return {
        "name": name,
        "primary_key": "id",
        "read_permission": read,
        "write_permission": WRITE,
        "columns": [
            {"name": "id", "type": "integer"},
            {"name": "folder", "type": "text"},
            {"name": "body", "type": "text", "index": {"vector": True, "fulltext": True}},
        ],
    }


MANIFEST = {
    "bundle": NOTES,
    "stores": [
        {"name": "main", "tables": [table("notes", READ), table("secrets", f"{NOTES}.SECRET")]},
    ],
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    bounds = {
        "DATAMGR_AI__MAX_CONTEXT_SCAN": str(SCAN),
        "DATAMGR_AI__MAX_CONTEXT_UDMF_BYTES": str(UDMF_BYTES),
    }
    d = Daemon(tmp_path_factory.mktemp("grounded") / "data", env=bounds).start(service="aicap.v1.AiService")
    try:
        provider = d.add_app(NOTES, WRITE, READ)
        with d.helper(provider) as h:
            h.register_provider(MANIFEST)
            for folder, body in NOTES_ROWS:
                h.insert(URI, {"folder": folder, "body": body})
            h.insert(SECRET_URI, {"folder": "home", "body": "The safe's code is 7731."})
            deadline = time.monotonic() + 120
            while any(h.retrieve(u, "code", k=1).pending for u in (URI, SECRET_URI)):
                assert time.monotonic() < deadline, "the index did not catch up"
                time.sleep(0.2)
        yield d
    finally:
        d.stop()
    assert "Traceback" not in d.log()


@pytest.fixture(scope="module")
def reader_token(daemon: Daemon) -> str:
    return daemon.add_app("com.example.reader", USE_AI, READ)


@pytest.fixture(scope="module")
def reader(daemon: Daemon, reader_token: str) -> Iterator[AiClient]:
    with AiClient.connect(daemon.address, reader_token) as ai:
        yield ai


@pytest.fixture(scope="module")
def outsider(daemon: Daemon) -> Iterator[AiClient]:
    with AiClient.connect(daemon.address, daemon.add_app("com.example.outsider", USE_AI)) as ai:
        yield ai


def question(text: str) -> list[tuple[str, str]]:
    return [("user", text)]


def test_the_answer_cites_the_rows_its_prompt_held(reader: AiClient) -> None:
    q = question("What is the wifi password at the cabin?")
    plain = reader.chat(q, max_tokens=24, temperature=0)
    grounded = reader.chat(q, context=[Context(URI, k=3)], max_tokens=24, temperature=0)
    assert plain.citations == []
    cited = grounded.citations
    assert 1 <= len(cited) <= 3 and {c.uri for c in cited} == {URI}
    assert [c.score for c in cited] == sorted((c.score for c in cited), reverse=True)
    assert cited[0].row_id == 1  # the wifi note is the best match
    assert grounded.usage is not None and plain.usage is not None
    assert grounded.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the rows went into the prompt


def test_predicates_bound_what_is_retrieved(reader: AiClient) -> None:
    work = DataSharePredicates().equal_to("folder", "work")
    c = reader.chat(
        question("When is the wifi password or the report due?"),
        context=[Context(URI, k=8, predicates=work)],
        max_tokens=8,
        temperature=0,
    )
    work_rows = {i for i, (folder, _) in enumerate(NOTES_ROWS, 1) if folder == "work"}
    assert c.citations and {x.row_id for x in c.citations} <= work_rows


def test_an_app_that_may_not_read_the_table_is_refused_and_nothing_runs(
    reader: AiClient, outsider: AiClient
) -> None:
    before = reader.stats("smollm2-135m").engines[0]
    with pytest.raises(PermissionDenied):
        outsider.chat(question("What is the wifi password?"), context=[Context(URI)], max_tokens=8)
    with pytest.raises(PermissionDenied):  # one readable source does not let an unreadable one in
        reader.chat(
            question("What is the safe's code?"),
            context=[Context(URI), Context(SECRET_URI)],
            max_tokens=8,
        )
    after = reader.stats("smollm2-135m").engines[0]
    assert after.prompt_tokens_total == before.prompt_tokens_total


def test_bad_sources_are_invalid_arguments(reader: AiClient) -> None:
    with pytest.raises(InvalidArgument, match="at most"):
        reader.chat(question("x"), context=[Context(URI, k=10_000)], max_tokens=4)
    with pytest.raises(InvalidArgument, match="not a datashare"):
        reader.chat(question("x"), context=[Context("file:///etc/passwd")], max_tokens=4)
    with pytest.raises(InvalidArgument, match="max_context_sources"):
        reader.chat(question("x"), context=[Context(URI)] * 5, max_tokens=4)


def test_the_cli_grounds_a_chat_and_lists_what_it_cited(daemon: Daemon, reader_token: str) -> None:
    cli = CliRunner(env={"DATAMGR_ADDRESS": daemon.address, "DATAMGR_TOKEN": reader_token})
    args = ["ai", "chat", "When is the dentist appointment?", "--context", URI, "--rows", "2"]
    result = cli.invoke(main, [*args, "--max-tokens", "16", "--temperature", "0", "--json"])
    assert result.exit_code == 0, result.output
    (sample,) = json.loads(result.stdout)["samples"]
    assert [c["row_id"] for c in sample["citations"]][:1] == [2] and len(sample["citations"]) <= 2
    result = cli.invoke(main, [*args, "--max-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert f"[1] {URI} row 2" in result.stderr


# ---- KV stores and UDMF data as sources ----

KV_NOTES = {
    "note/wifi": "The wifi password at the cabin is BLUEFJORD42.",
    "note/dentist": "The dentist appointment is on Tuesday at nine in the morning.",
    "note/report": "The quarterly report is due on the last Friday of March.",
    "note/photo": b"\x89PNG wifi password",  # bytes never enter a prompt
    "note/count": 42,
    "other/wifi": "The office wifi password is taped under the keyboard.",  # outside the prefix
}


@pytest.fixture(scope="module")
def reader_kv(daemon: Daemon, reader_token: str) -> str:
    """The reader's own store "notes" (and "log": 60 entries, the only "lighthouse" one last)."""
    with KvStoreClient.connect(daemon.address, reader_token) as kv:
        level = SecurityLevel.S1
        kv.get_kv_store("notes", kind=KvStoreType.SINGLE_VERSION, security_level=level).put_batch(KV_NOTES)
        log = kv.get_kv_store("log", kind=KvStoreType.DEVICE_COLLABORATION, security_level=level)
        log.put_batch({f"e/{i:02}": f"entry {i}: tide low, calm sea" for i in range(59)})
        log.put("e/59", "entry 59: the lighthouse keeper left at dawn")
    return "notes"


@pytest.fixture(scope="module")
def udmf_admin(daemon: Daemon) -> Iterator[UdmfClient]:
    with UdmfClient.connect(daemon.address, (daemon.data_dir / "admin.token").read_text().strip()) as c:
        yield c


@pytest.fixture(scope="module")
def writer(daemon: Daemon) -> Iterator[UdmfClient]:
    """A UDMF app whose data the reader reads (by key, or dropped on it)."""
    with UdmfClient.connect(daemon.address, daemon.add_app("com.example.editor")) as c:
        yield c


def prompt_tokens(ai: AiClient) -> int:
    return ai.stats("smollm2-135m").engines[0].prompt_tokens_total


def test_a_kv_store_grounds_the_answer_and_the_citations_name_the_best_entries(
    reader: AiClient, reader_kv: str
) -> None:
    q = question("What is the wifi password at the cabin?")
    plain = reader.chat(q, max_tokens=16, temperature=0)
    grounded = reader.chat(
        q, context=[Context.kv(reader_kv, prefix="note/", k=3)], max_tokens=16, temperature=0
    )
    cited = grounded.citations
    assert cited and cited[0].key == "note/wifi" and len(cited) <= 3
    assert {(c.uri, c.row_id) for c in cited} == {("kv://notes", -1)}
    assert {c.key for c in cited} <= {"note/wifi", "note/dentist", "note/report", "note/count"}
    assert [c.score for c in cited] == sorted((c.score for c in cited), reverse=True)
    assert all(0 < c.score < 1 for c in cited)
    assert grounded.usage is not None and plain.usage is not None
    assert grounded.usage.prompt_tokens > plain.usage.prompt_tokens + 10
    everywhere = reader.chat(q, context=[Context("kv:notes", k=4)], max_tokens=4, temperature=0).citations
    assert "other/wifi" in {c.key for c in everywhere} and "note/photo" not in {c.key for c in everywhere}


def test_a_kv_source_reads_only_the_first_entries_of_its_prefix(reader: AiClient, reader_kv: str) -> None:
    """ai.max_context_scan (50 here): the 60th entry is past it unless the prefix narrows the scan."""
    q = question("Who was the lighthouse keeper?")
    assert reader.chat(q, context=[Context.kv("log")], max_tokens=4).citations == []
    cited = reader.chat(q, context=[Context.kv("log", prefix="e/5")], max_tokens=4).citations
    assert [c.key for c in cited] == ["e/59"]


def test_another_app_cannot_use_the_store_and_nothing_runs(
    reader: AiClient, outsider: AiClient, reader_kv: str
) -> None:
    before = prompt_tokens(reader)
    with pytest.raises(NotFound, match="has no KV store notes"):  # the KV service's answer
        outsider.chat(question("What is the wifi password?"), context=[Context.kv(reader_kv)], max_tokens=8)
    with pytest.raises(NotFound, match="has no KV store missing"):
        reader.chat(question("x"), context=[Context.kv("missing")], max_tokens=8)
    assert prompt_tokens(reader) == before


def test_udmf_data_the_app_may_read_is_one_passage_per_record(reader: AiClient, writer: UdmfClient) -> None:
    data = UnifiedData(UnifiedRecord(PlainText("The ferry leaves from pier 7 at noon.")))
    data.add_record(UnifiedRecord(Image("file:///photos/pier.jpg")))  # no text: no passage
    data.add_record(UnifiedRecord(HTML("<p>Bring a <b>raincoat</b>.</p><script>x()</script>")))
    key = writer.insert_data(data)  # DATA_HUB, CROSS_APP: every app may read it by key
    c = reader.chat(question("Where does the ferry leave from?"), context=[Context.udmf(key)], max_tokens=8)
    assert [(x.uri, x.row_id, x.score, x.key) for x in c.citations] == [(key, 0, 1.0, ""), (key, 2, 1.0, "")]
    again = reader.chat(question("What should I bring?"), context=[Context(key)], max_tokens=4)
    assert len(again.citations) == 2  # DATA_HUB data stays


def test_drag_data_is_read_by_its_target_once_and_a_refused_chat_consumes_nothing(
    daemon: Daemon,
    reader: AiClient,
    reader_token: str,
    outsider: AiClient,
    writer: UdmfClient,
    udmf_admin: UdmfClient,
) -> None:
    key = writer.set_drag_data(UnifiedData(UnifiedRecord(PlainText("The gate code is 4711."))))
    udmf_admin.grant_access(key, "com.example.reader")
    q = question("What is the gate code?")
    before = prompt_tokens(reader)
    with pytest.raises(PermissionDenied, match="no grant"):
        outsider.chat(q, context=[Context.udmf(key)], max_tokens=8)
    with pytest.raises(PermissionDenied):  # the unreadable table fails the chat before the drag is read
        reader.chat(q, context=[Context.udmf(key), Context(SECRET_URI)], max_tokens=8)
    assert prompt_tokens(reader) == before
    c = reader.chat(q, context=[Context.udmf(key)], max_tokens=8)
    assert [(x.uri, x.row_id) for x in c.citations] == [(key, 0)]
    with pytest.raises(NotFound, match="read once"):  # the chat's read was the target's one read
        reader.chat(q, context=[Context.udmf(key)], max_tokens=8)
    with UdmfClient.connect(daemon.address, reader_token) as mine, pytest.raises(NotFound):
        mine.get_data(key)


def test_udmf_data_the_app_may_not_read_or_too_large_is_refused(reader: AiClient, writer: UdmfClient) -> None:
    private = UnifiedData(UnifiedRecord(PlainText("The editor's own notes.")))
    private.properties = UnifiedDataProperties(share_options=ShareOptions.IN_APP)
    key = writer.set_drag_data(private)
    before = prompt_tokens(reader)
    with pytest.raises(PermissionDenied):
        reader.chat(question("x"), context=[Context.udmf(key)], max_tokens=8)
    big = writer.insert_data(UnifiedData(UnifiedRecord(PlainText("word " * (UDMF_BYTES // 4)))))
    with pytest.raises(ResourceExhausted, match=r"ai\.max_context_udmf_bytes"):
        reader.chat(question("x"), context=[Context.udmf(big)], max_tokens=8)
    assert prompt_tokens(reader) == before


def test_bad_kv_and_udmf_sources_are_invalid_arguments(reader: AiClient, reader_kv: str) -> None:
    before = prompt_tokens(reader)
    bad = [
        ([Context.kv("no-dashes!")], "invalid store name"),
        ([Context("kv:")], "names no KV store"),
        ([Context.kv(reader_kv, prefix="k" * 1025)], "at most 1024 bytes"),
        ([Context.kv(reader_kv, k=10_000)], "at most"),
        ([Context("udmf://nonsense")], "malformed key"),
        ([Context.udmf("udmf://DataHub/com.example.editor/x")] * 2, "named twice"),
    ]
    for context, message in bad:
        with pytest.raises(InvalidArgument, match=message):
            reader.chat(question("x"), context=context, max_tokens=4)
    assert prompt_tokens(reader) == before


def test_the_cli_grounds_a_chat_in_a_kv_store(daemon: Daemon, reader_token: str, reader_kv: str) -> None:
    cli = CliRunner(env={"DATAMGR_ADDRESS": daemon.address, "DATAMGR_TOKEN": reader_token})
    args = [
        "ai",
        "chat",
        "What is the wifi password at the cabin?",
        "--context",
        "kv:notes/note/",
        "--rows",
        "1",
    ]
    result = cli.invoke(main, [*args, "--max-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "[1] kv://notes key 'note/wifi'" in result.stderr
    result = cli.invoke(main, [*args, "--max-tokens", "4", "--json"])
    (sample,) = json.loads(result.stdout)["samples"]
    assert [(c["uri"], c["key"], c["row_id"]) for c in sample["citations"]] == [
        ("kv://notes", "note/wifi", -1)
    ]
