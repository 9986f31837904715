"""Grounded answers through the real daemon, model and database (issue 15, part 3): a chat names an
indexed DataShare table as its context; the daemon retrieves as the calling app, puts the rows in the
prompt and cites them. Nothing the app could not read itself reaches its prompt: an app without the
table's read permission is refused before anything runs, and predicates bound what is retrieved."""

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
from datamgr.client import DataSharePredicates
from datamgr.errors import InvalidArgument, PermissionDenied

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
    d = Daemon(tmp_path_factory.mktemp("grounded") / "data").start(service="aicap.v1.AiService")
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
