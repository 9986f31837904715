"""Grounded chats' KV and UDMF sources on the AI side (aicap.grounding): their checks, the order in
which sources are read (UDMF, whose read may consume the data, after every other source succeeded and
every UDMF source passed its check), how citations name what they cite, and the SDK's Context."""

from __future__ import annotations

import asyncio

import pytest

from aicap import Context, grounding
from aicap.errors import InvalidArgument
from aicap.grounding import Passage, Source
from aicap.v1 import aicap_pb2 as pb

KEY = "udmf://drag/com.example.editor/g1"


def kv(store: str = "notes", prefix: str = "", k: int = 0) -> pb.ContextSource:
    return pb.ContextSource(kv=pb.KvSource(store=store, key_prefix=prefix, k=k))


def udmf(key: str = KEY) -> pb.ContextSource:
    return pb.ContextSource(udmf=pb.UdmfSource(key=key))


def test_kv_and_udmf_sources_are_checked() -> None:
    a, b = grounding.sources([kv("notes", "recipes/", 3), udmf()], max_sources=4, max_k=8)
    assert a == Source("kv://notes", 3, kind="kv", store="notes", prefix="recipes/")
    assert b == Source(KEY, 0, kind="udmf")
    assert grounding.sources([kv()], 4, 8)[0].k == grounding.DEFAULT_K
    with pytest.raises(InvalidArgument, match="names no KV store"):
        grounding.sources([kv("")], 4, 8)
    with pytest.raises(InvalidArgument, match="names no KV store"):
        grounding.sources([kv("x" * 129)], 4, 8)
    with pytest.raises(InvalidArgument, match="at most 1024 bytes"):
        grounding.sources([kv(prefix="é" * 513)], 4, 8)
    with pytest.raises(InvalidArgument, match="at most 8"):
        grounding.sources([kv(k=9)], 4, 8)
    with pytest.raises(InvalidArgument, match="not a udmf:// key"):
        grounding.sources([udmf("datashare:///a/b/c")], 4, 8)
    with pytest.raises(InvalidArgument, match="named twice"):
        grounding.sources([udmf(), kv(), udmf()], 4, 8)
    with pytest.raises(InvalidArgument, match=r"names no source \(datashare, kv, udmf\)"):
        grounding.sources([pb.ContextSource()], 4, 8)


def test_citations_name_entries_by_key_and_records_by_index() -> None:
    assert (
        grounding.block(1, Passage("kv://notes", -1, 0.5, "text", "a/b"))
        == "[1] (kv://notes, key 'a/b')\ntext\n"
    )
    assert grounding.block(2, Passage(KEY, 3, 1.0, "t")) == f"[2] ({KEY}, record 3)\nt\n"
    assert grounding.block(3, Passage("datashare:///a/b/c", 7, 0.1, "t")).startswith(
        "[3] (datashare:///a/b/c, row 7)"
    )
    (cut,) = grounding.pack([Passage("kv://n", -1, 0.5, "abcdef", "k")], 1000, len, max_chars=3)
    assert (cut.key, cut.text) == ("k", "abc")


class Log:
    """A retriever that logs its calls; `refuse` names sources whose check or read fails."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse = refuse

    async def check(self, app: str, source: Source) -> None:
        self.calls.append(("check", source.uri))
        if "check:" + source.uri in self.refuse:
            raise PermissionError(source.uri)

    async def retrieve(self, app: str, source: Source, query: str) -> list[Passage]:
        await asyncio.sleep(0)
        self.calls.append(("read", source.uri))
        if "read:" + source.uri in self.refuse:
            raise PermissionError(source.uri)
        return [Passage(source.uri, 0, 0.5, query)]


SOURCES = [
    Source("udmf://a", 0, kind="udmf"),
    Source("datashare:///x/y/z", 4),
    Source("udmf://b", 0, kind="udmf"),
    Source("kv://n", 4, query="own query", kind="kv", store="n"),
]


def test_udmf_sources_are_read_last_after_all_were_checked() -> None:
    log = Log()
    got = asyncio.run(grounding.retrieve(log, "com.a", SOURCES, "question"))
    assert log.calls[:2] == [("read", "datashare:///x/y/z"), ("read", "kv://n")]
    assert log.calls[2:] == [
        ("check", "udmf://a"),
        ("check", "udmf://b"),
        ("read", "udmf://a"),
        ("read", "udmf://b"),
    ]
    assert [(p.uri, p.text) for p in got] == [
        ("datashare:///x/y/z", "question"),
        ("kv://n", "own query"),
        ("udmf://a", "question"),
        ("udmf://b", "question"),
    ]


@pytest.mark.parametrize("refused", ["read:datashare:///x/y/z", "read:kv://n", "check:udmf://b"])
def test_a_refused_source_leaves_every_udmf_source_unread(refused: str) -> None:
    log = Log(frozenset({refused}))
    with pytest.raises(PermissionError):
        asyncio.run(grounding.retrieve(log, "com.a", SOURCES, "question"))
    assert not [c for c in log.calls if c[0] == "read" and c[1].startswith("udmf://")]


def test_the_sdks_context_names_kv_stores_and_udmf_keys() -> None:
    msg = Context.kv("notes", prefix="recipes/", k=3, query="eggs").proto()
    assert msg.WhichOneof("source") == "kv"
    assert (msg.kv.store, msg.kv.key_prefix, msg.kv.k, msg.kv.query) == ("notes", "recipes/", 3, "eggs")
    assert Context("kv:notes").proto().kv == pb.KvSource(store="notes")
    assert Context("kv:notes/a/b").proto().kv.key_prefix == "a/b"  # a store name has no "/"
    assert Context.udmf(KEY).proto() == pb.ContextSource(udmf=pb.UdmfSource(key=KEY))
    assert Context(KEY).proto().WhichOneof("source") == "udmf"
    assert Context("datashare:///a/b/c", k=2).proto().WhichOneof("source") == "datashare"
    with pytest.raises(InvalidArgument, match="no k, query or predicates"):
        Context(KEY, k=3).proto()
    with pytest.raises(InvalidArgument, match="predicates are DataShare's"):
        Context("kv:notes", predicates=b"\x01").proto()
