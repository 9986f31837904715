"""A Retrieve call, checked and planned: which columns it searches and how, before any work is done.

The bounds (k, the query's length) are settings; the predicates select rows only (the ranking orders
them); an unknown column is the caller's mistake (INVALID_ARGUMENT), a column or table without the
index a mode needs is the table's state (FAILED_PRECONDITION, naming it), and so is vector retrieval
while the daemon has no embedding model. Mode UNSPECIFIED is hybrid where the searched columns have
both indexes, else the one they have (full text alone when the embedding model is missing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datamgr.config import DataShareSettings
from datamgr.datashare._compile import CompiledPredicates
from datamgr.datashare.tables import HostedTable
from datamgr.errors import FailedPrecondition, InvalidArgument, TooLarge
from datamgr.v1 import datashare_pb2 as pb

DEFAULT_K = 10
VECTOR, FULLTEXT, HYBRID = pb.RETRIEVE_MODE_VECTOR, pb.RETRIEVE_MODE_FULLTEXT, pb.RETRIEVE_MODE_HYBRID
MODES: dict[int, str] = {
    pb.RETRIEVE_MODE_UNSPECIFIED: "UNSPECIFIED",
    VECTOR: "VECTOR",
    FULLTEXT: "FULLTEXT",
    HYBRID: "HYBRID",
}
_INDEX_HINT = '(declare "index": {"vector": true, "fulltext": true} on a text column in the manifest)'


@dataclass(frozen=True, slots=True)
class Plan:
    """The checked call: the rows to return, the columns to return, and to search by each ranker."""

    query: str
    k: int
    columns: list[str]
    vector: list[str]
    fulltext: list[str]


@dataclass(frozen=True, slots=True)
class RetrievedRow:
    """A row Retrieve found: `row_id` as Insert returns it (-1 unless the key is an integer), `key`
    its primary key, `score` higher is better, `column` the indexed column that matched best."""

    uri: str
    row_id: int
    key: Any
    score: float
    column: str
    values: dict[str, Any]


def check_predicates(hosted: HostedTable, compiled: CompiledPredicates) -> None:
    if compiled.order_by or compiled.limit is not None or compiled.offset is not None:
        raise InvalidArgument(
            f"Retrieve's predicates select the rows of {hosted.uri} only: the ranking orders them and k "
            "limits them (no order_by_asc/desc or limit)"
        )
    if compiled.distinct or compiled.group_by:
        raise InvalidArgument(
            f"Retrieve's predicates select the rows of {hosted.uri} only (no distinct or group_by)"
        )


def plan(
    settings: DataShareSettings,
    hosted: HostedTable,
    query: str,
    k: int,
    mode: int,
    column: str,
    columns: Sequence[str],
    vectors_unavailable: str | None,
) -> Plan:
    """Checks a Retrieve call against the table (raising the errors above) and plans it;
    `vectors_unavailable` says why there is no embedding model (None: there is one)."""
    uri = hosted.uri
    if mode not in MODES:
        raise InvalidArgument(f"unknown retrieve mode {mode}")
    if not query.strip():
        raise InvalidArgument("the query is empty")
    if len(query) > settings.max_retrieve_query_chars:
        raise TooLarge(
            f"the query is {len(query)} characters, over datashare.max_retrieve_query_chars "
            f"({settings.max_retrieve_query_chars})"
        )
    k = k or DEFAULT_K
    if k > settings.max_retrieve_k:
        raise InvalidArgument(f"k is {k}, over datashare.max_retrieve_k ({settings.max_retrieve_k})")
    out = list(columns) or [c.name for c in hosted.spec.columns]
    for name in [*out, *([column] if column else [])]:
        if name not in hosted.table.c:
            raise InvalidArgument(f"{uri} has no column {name!r}")
    if len(set(out)) != len(out):
        raise InvalidArgument("a column is named twice in columns")
    spec = hosted.spec
    if column:
        if not spec.column(column).indexed:
            raise FailedPrecondition(f"column {column} of {uri} is not indexed {_INDEX_HINT}")
        searched = [column]
    else:
        searched = [c.name for c in spec.columns if c.indexed]
        if not searched:
            raise FailedPrecondition(f"{uri} has no indexed column {_INDEX_HINT}")
    vector = [c for c in searched if spec.column(c).vector]
    fulltext = [c for c in searched if spec.column(c).fulltext]
    where = f"column {column} of {uri}" if column else uri
    if mode in (VECTOR, HYBRID) and not vector:
        raise FailedPrecondition(f"{where} has no vector index, which mode {MODES[mode]} needs {_INDEX_HINT}")
    if mode in (FULLTEXT, HYBRID) and not fulltext:
        raise FailedPrecondition(
            f"{where} has no full-text index, which mode {MODES[mode]} needs {_INDEX_HINT}"
        )
    if mode == VECTOR:
        fulltext = []
    elif mode == FULLTEXT:
        vector = []
    if vector and vectors_unavailable is not None:
        if mode == pb.RETRIEVE_MODE_UNSPECIFIED and fulltext:
            vector = []  # full text alone, rather than nothing
        else:
            raise FailedPrecondition(
                f"vector retrieval of {where} needs the AI service's embedding model: "
                f"{vectors_unavailable}; mode FULLTEXT works without it"
            )
    return Plan(query, k, out, vector, fulltext)


def row_id(hosted: HostedTable, key: Any) -> int:
    """A row's id as Insert returns it: its integer primary key, else -1 (the key is among its values)."""
    integer = hosted.spec.column(hosted.spec.primary_key).type == "integer"
    return key if integer and isinstance(key, int) else -1
