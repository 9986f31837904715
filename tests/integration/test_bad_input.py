"""Bad input gets a clear gRPC error, never INTERNAL, and changes nothing.

URIs, names, values, sizes and manifests are each tried against a daemon with lowered size limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from harness import CONTACTS, PEOPLE_URI, READ, WRITE, Daemon, contacts_manifest

from datamgr.client import DataShareHelper, DataSharePredicates
from datamgr.connection import metadata
from datamgr.datashare.predicates import PredicateOp
from datamgr.errors import DatamgrError
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import datashare_pb2_grpc as pb_grpc
from datamgr.v1 import types_pb2

pytestmark = pytest.mark.integration

MAX_CALL = 4096
MAX_BATCH = 65536
P = DataSharePredicates
SEED = [
    {"name": "Ada", "phone": "555-0101", "age": 36, "score": 9.5, "starred": True, "photo": b"\x00"},
    {"name": "Alan", "phone": None, "age": 41, "score": 7.0, "starred": False, "photo": None},
    {"name": "Grace", "phone": "555-0103", "age": 85, "score": None, "starred": True, "photo": None},
]


@dataclass
class Env:
    daemon: Daemon
    provider: DataShareHelper
    dialer: DataShareHelper
    provider_token: str
    dialer_token: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    limits = {
        "DATAMGR_DATASHARE__MAX_CALL_BYTES": str(MAX_CALL),
        "DATAMGR_DATASHARE__MAX_BATCH_BYTES": str(MAX_BATCH),
    }
    daemon = Daemon(tmp_path_factory.mktemp("bad") / "data", env=limits).start()
    try:
        provider_token = daemon.add_app(CONTACTS)
        dialer_token = daemon.add_app("com.example.dialer", READ, WRITE)
        with daemon.helper(provider_token) as provider, daemon.helper(dialer_token) as dialer:
            provider.register_provider(contacts_manifest())
            assert provider.batch_insert(PEOPLE_URI, SEED) == len(SEED)
            yield Env(daemon, provider, dialer, provider_token, dialer_token)
    finally:
        daemon.stop()


def table(h: DataShareHelper) -> list[dict[str, Any]]:
    with h.query(PEOPLE_URI, P().order_by_asc("id")) as rs:
        return list(rs.rows())


@pytest.fixture
def ds(env: Env) -> Iterator[DataShareHelper]:
    """The dialer's helper; after the test, the table must be exactly as before and the log clean."""
    before = table(env.provider)
    assert len(before) == len(SEED)
    yield env.dialer
    after = table(env.provider)
    if after != before:  # put the table back so that one failure does not cascade, then fail
        env.provider.delete(PEOPLE_URI)
        env.provider.batch_insert(PEOPLE_URI, before)
    assert after == before
    log = env.daemon.log()
    assert "Traceback" not in log
    assert "bug in" not in log


def rejected(code: str, fn: Callable[..., Any], *args: Any) -> str:
    """Calls fn, expects a DatamgrError with `code` (never INTERNAL); returns its message."""
    with pytest.raises(DatamgrError) as info:
        fn(*args)
    assert info.value.code != "INTERNAL"
    assert info.value.code == code, info.value.message
    assert info.value.message
    return info.value.message


def every_operation(h: DataShareHelper, uri: str) -> dict[str, Callable[[], Any]]:
    def query() -> None:
        with h.query(uri) as rs:
            rs.row_count  # noqa: B018

    def subscribe() -> None:
        h.subscribe(uri).close()

    return {
        "insert": lambda: h.insert(uri, {"name": "x"}),
        "batch_insert": lambda: h.batch_insert(uri, [{"name": "x"}]),
        "update": lambda: h.update(uri, None, {"name": "x"}),
        "delete": lambda: h.delete(uri),
        "batch_update": lambda: h.batch_update({uri: [({"name": "x"}, None)]}),
        "query": query,
        "subscribe": subscribe,
    }


# ---- URIs ----

MALFORMED_URIS = [
    "",
    "http:///com.example.contacts/main/people",
    "datashare:/com.example.contacts/main/people",
    "datashare://device-1234/com.example.contacts/main/people",
    "datashare://localhost/com.example.contacts/main/people",
    "datashare:///",
    "datashare:////main/people",
    "datashare:///com.example.contacts//people",
    "datashare:///com.example.contacts/main/people/",
    "datashare:///com.example.contacts/main/people?limit=1",
    "datashare:///com.example.contacts/main/people#frag",
    "datashare:///com.example.contacts/main/people;DROP TABLE ds_1",
    "datashare:///com.example.contacts/main/people' OR '1'='1",
    "datashare:///com.example.contacts/main/people--",
    "datashare:///com.example.contacts/main/pe%6Fple",
    "datashare:///com.example.contacts/main/" + "p" * 65,
    "datashare:///com.example.contacts/main/" + "p" * 3000,
    "datashare:///com example/main/people",
    "datashare:///../main/people",
    "datashareproxy://com.example.contacts/main/people",
    # control characters: urlsplit drops a tab or newline anywhere, so these once reached the table
    "datashare:///com.example.contacts/main/peo\tple",
    "datashare:///com.example.contacts/main/people\n",
    "datashare:///com.example.con\ntacts/main/people",
    "\tdatashare:///com.example.contacts/main/people",
    "datashare:///com.example.contacts/ma\rin/people",
    "datashare:///com.example.contacts/main/people\x00",
]


@pytest.mark.parametrize("uri", MALFORMED_URIS)
def test_malformed_uris_are_invalid_argument(ds: DataShareHelper, uri: str) -> None:
    for op in every_operation(ds, uri).values():
        message = rejected("INVALID_ARGUMENT", op)
        assert "uri" in message or "bundle" in message


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("datashare:///com.example.nobody/main/people", "no provider com.example.nobody"),
        ("datashare:///com.example.contacts/main/nobody", "no table main/nobody"),
        ("datashare:///com.example.contacts/other/people", "no table other/people"),
        ("datashare:///com.example.contacts/main/People", "no table main/People"),
        ("datashare:///com.example.contacts", "declares no table"),
        ("datashare:///com.example.contacts/main", "declares no table"),
        ("datashare:///com.example.contacts/main/people/extra", "declares no table"),
    ],
)
def test_unknown_providers_and_tables_are_not_found(ds: DataShareHelper, uri: str, says: str) -> None:
    for name, op in every_operation(ds, uri).items():
        if name == "subscribe" and uri.count("/") != 5:  # subscriptions take table URIs only
            assert "does not name a table" in rejected("INVALID_ARGUMENT", op)
        else:
            assert says in rejected("NOT_FOUND", op)


# ---- names: unknown or SQL are refused, never reach SQL text ----

BAD_NAMES = ["nope", "Name", "name; DROP TABLE ds_1", "name OR 1=1", "*", "name, phone", "", "id--", '"name"']


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unknown_or_sql_column_names_are_invalid_argument(ds: DataShareHelper, name: str) -> None:
    def query(preds: DataSharePredicates | None, columns: list[str] | None = None) -> Callable[[], None]:
        def run() -> None:
            with ds.query(PEOPLE_URI, preds, columns) as rs:
                rs.row_count  # noqa: B018

        return run

    calls = [
        lambda: ds.insert(PEOPLE_URI, {"name": "ok", name: 1}),
        lambda: ds.batch_insert(PEOPLE_URI, [{"name": "ok", name: 1}]),
        lambda: ds.update(PEOPLE_URI, None, {name: "x"}),
        lambda: ds.batch_update({PEOPLE_URI: [({"phone": "x"}, None), ({name: "x"}, None)]}),
        lambda: ds.delete(PEOPLE_URI, P().equal_to(name, "x")),
        lambda: ds.update(PEOPLE_URI, P().is_null(name), {"phone": "x"}),
        query(P().equal_to(name, 1)),
        query(P().in_(name, [1, 2])),
        query(P().order_by_asc(name)),
        query(P().group_by(["name", name]), ["name"]),
        query(None, [name]),
        query(None, ["id", name]),
    ]
    for call in calls:
        rejected("INVALID_ARGUMENT", call)


# ---- values ----

WRONG_TYPES = [
    {"name": "x", "age": "forty"},
    {"name": "x", "age": 4.5},
    {"name": "x", "age": True},
    {"name": 42},
    {"name": b"bytes"},
    {"name": "x", "score": "high"},
    {"name": "x", "starred": 1},
    {"name": "x", "photo": "not bytes"},
    {"name": "x", "phone": 5550101},
]


@pytest.mark.parametrize(
    "values", WRONG_TYPES, ids=lambda v: "-".join(f"{k}={type(x).__name__}" for k, x in v.items())
)
def test_wrong_value_types_are_invalid_argument(ds: DataShareHelper, values: dict[str, Any]) -> None:
    (column, value), *_ = [(k, v) for k, v in values.items() if (k, v) != ("name", "x")]
    assert column in rejected("INVALID_ARGUMENT", ds.insert, PEOPLE_URI, values)
    rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, P().equal_to("name", "Ada"), values)
    good = [{"name": "a", column: None}, {"name": "b", column: None}]
    rejected("INVALID_ARGUMENT", ds.batch_insert, PEOPLE_URI, [*good, values])  # a mixed column
    rejected("INVALID_ARGUMENT", ds.batch_insert, PEOPLE_URI, [values, dict(values)])  # a typed column
    rejected("INVALID_ARGUMENT", ds.batch_update, {PEOPLE_URI: [({"phone": "p"}, None), (values, None)]})

    def query() -> None:
        with ds.query(PEOPLE_URI, P().equal_to(column, value)) as rs:
            rs.row_count  # noqa: B018

    if column != "name" or not isinstance(value, str):
        rejected("INVALID_ARGUMENT", query)


def test_not_null_violations_are_invalid_argument(ds: DataShareHelper) -> None:
    assert "name" in rejected("INVALID_ARGUMENT", ds.insert, PEOPLE_URI, {"phone": "555"})
    assert "name" in rejected("INVALID_ARGUMENT", ds.insert, PEOPLE_URI, {"name": None})
    assert "name" in rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, None, {"name": None})
    rejected(
        "INVALID_ARGUMENT", ds.batch_insert, PEOPLE_URI, [{"name": "ok"}, {"name": None}, {"name": "ok"}]
    )
    rejected("INVALID_ARGUMENT", ds.batch_insert, PEOPLE_URI, [{"phone": "1"}, {"phone": "2"}])
    rejected(
        "INVALID_ARGUMENT", ds.batch_update, {PEOPLE_URI: [({"phone": "p"}, None), ({"name": None}, None)]}
    )


def test_empty_values_and_null_comparisons_are_invalid_argument(ds: DataShareHelper) -> None:
    rejected("INVALID_ARGUMENT", ds.insert, PEOPLE_URI, {})
    rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, None, {})
    with pytest.raises(DatamgrError) as info, ds.query(PEOPLE_URI, P().equal_to("phone", None)) as rs:
        rs.row_count  # noqa: B018
    assert info.value.code == "INVALID_ARGUMENT"
    assert "is_null" in info.value.message


def test_duplicate_primary_key_is_already_exists(ds: DataShareHelper, env: Env) -> None:
    first = table(env.provider)[0]["id"]
    assert "primary key" in rejected("ALREADY_EXISTS", ds.insert, PEOPLE_URI, {"id": first, "name": "dup"})
    rejected("ALREADY_EXISTS", ds.update, PEOPLE_URI, P().equal_to("name", "Alan"), {"id": first})


def test_not_a_number_is_refused_rather_than_stored_as_null(ds: DataShareHelper) -> None:
    nan = float("nan")
    assert "NaN" in rejected("INVALID_ARGUMENT", ds.insert, PEOPLE_URI, {"name": "nan", "score": nan})
    rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, P().equal_to("name", "Ada"), {"score": nan})
    rejected(
        "INVALID_ARGUMENT",
        ds.batch_insert,
        PEOPLE_URI,
        [{"name": "a", "score": 1.0}, {"name": "b", "score": nan}],
    )
    rejected(
        "INVALID_ARGUMENT",
        ds.batch_insert,
        PEOPLE_URI,
        [{"name": "a", "score": 1}, {"name": "b", "score": nan}],
    )


def test_text_with_nul_characters_is_refused_as_on_postgresql(ds: DataShareHelper) -> None:
    """PostgreSQL cannot store NUL in text and predicates cannot match it, so it is refused everywhere."""
    assert "NUL" in rejected("INVALID_ARGUMENT", ds.insert, PEOPLE_URI, {"name": "x\x00y"})
    rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, None, {"phone": "\x00"})
    rejected("INVALID_ARGUMENT", ds.batch_insert, PEOPLE_URI, [{"name": "a"}, {"name": "b\x00"}])
    rejected(
        "INVALID_ARGUMENT",
        ds.batch_insert,
        PEOPLE_URI,
        [{"name": "a", "phone": None}, {"name": "b", "phone": "\x00"}],
    )
    # Blobs hold any bytes.
    row = ds.insert(PEOPLE_URI, {"name": "blob", "photo": b"\x00\x00"})
    with ds.query(PEOPLE_URI, P().equal_to("id", row), ["photo"]) as rs:
        assert [r["photo"] for r in rs.rows()] == [b"\x00\x00"]
    assert ds.delete(PEOPLE_URI, P().equal_to("id", row)) == 1


# ---- SQL in values is data ----


def test_sql_in_values_is_stored_verbatim(env: Env) -> None:
    h = env.dialer
    evil = [
        "Robert'); DROP TABLE ds_1;--",
        "' OR '1'='1",
        '"; DELETE FROM dm_apps; --',
        "%",
        "_",
        "\\",
        "名前 🙂",
    ]
    before = table(env.provider)
    row_ids = [h.insert(PEOPLE_URI, {"name": s, "phone": s}) for s in evil]
    try:
        with h.query(PEOPLE_URI, P().in_("id", row_ids).order_by_asc("id"), ["name", "phone"]) as rs:
            assert [(r["name"], r["phone"]) for r in rs.rows()] == [(s, s) for s in evil]
        for s in evil:
            with h.query(PEOPLE_URI, P().equal_to("name", s), ["name"]) as rs:
                assert [r["name"] for r in rs.rows()] == [s]
            with h.query(PEOPLE_URI, P().contains("phone", s), ["name"]) as rs:
                assert s in [r["name"] for r in rs.rows()]
        with h.query(PEOPLE_URI, P().equal_to("name", "nobody' OR '1'='1")) as rs:
            assert rs.row_count == 0
        # The apps table and the other rows are intact: the dialer still authenticates, Ada is still there.
        assert h.update(PEOPLE_URI, P().equal_to("name", "' OR '1'='1"), {"phone": "changed"}) == 1
    finally:
        assert env.provider.delete(PEOPLE_URI, P().in_("id", row_ids)) == len(evil)
    assert table(env.provider) == before


# ---- predicates that do not parse ----

BAD_PREDICATES = [
    P().equal_to("age", 1).or_(),
    P().or_().equal_to("age", 1),
    P().equal_to("age", 1).and_().or_().equal_to("age", 2),
    P().begin_wrap().equal_to("age", 1),
    P().equal_to("age", 1).end_wrap(),
    P().begin_wrap().end_wrap(),
    P(
        [PredicateOp("BEGIN_WRAP")] * 40
        + [PredicateOp("EQUAL_TO", "age", (1,))]
        + [PredicateOp("END_WRAP")] * 40
    ),
    P().like("age", "1%"),
    P().between("age", 1, "z"),
    P().limit(1).limit(2),
    P([PredicateOp("EQUAL_TO", "age", ())]),
    P([PredicateOp("EQUAL_TO", "age", (1, 2))]),
    P([PredicateOp("IS_NULL", "", ())]),
    P([PredicateOp("LIMIT", "", ("ten", 0))]),
    P([PredicateOp("DISTINCT", "age", ())]),
    P([PredicateOp("GROUP_BY", "", (), ())]),
]


@pytest.mark.parametrize("preds", BAD_PREDICATES, ids=range(len(BAD_PREDICATES)))
def test_malformed_predicates_are_invalid_argument(ds: DataShareHelper, preds: DataSharePredicates) -> None:
    def query() -> None:
        with ds.query(PEOPLE_URI, preds) as rs:
            rs.row_count  # noqa: B018

    rejected("INVALID_ARGUMENT", query)
    rejected("INVALID_ARGUMENT", ds.delete, PEOPLE_URI, preds)
    rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, preds, {"phone": "x"})


def test_distinct_and_group_by_cannot_write(ds: DataShareHelper) -> None:
    rejected("INVALID_ARGUMENT", ds.delete, PEOPLE_URI, P().distinct())
    rejected("INVALID_ARGUMENT", ds.update, PEOPLE_URI, P().group_by(["age"]), {"phone": "x"})


def test_unknown_op_types_on_the_wire_are_invalid_argument(env: Env, ds: DataShareHelper) -> None:
    with grpc.insecure_channel(env.daemon.address) as ch:
        stub = pb_grpc.DataShareServiceStub(ch)
        md = metadata(env.dialer_token)
        for op_type in (0, 999):
            preds = pb.Predicates(ops=[pb.PredicateOp(type=op_type, field="age")])
            with pytest.raises(grpc.RpcError) as info:
                stub.Delete(pb.DeleteRequest(uri=PEOPLE_URI, predicates=preds), metadata=md)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


# ---- malformed batches on the wire ----


def _raw_batch(columns: list[str], page: types_pb2.Page) -> pb.BatchInsertRequest:
    return pb.BatchInsertRequest(uri=PEOPLE_URI, columns=columns, rows=page)


def _text_column(values: list[str]) -> types_pb2.Column:
    return types_pb2.Column(type=types_pb2.DATA_TYPE_STRING, strings=values)


def test_malformed_batch_messages_are_invalid_argument(env: Env, ds: DataShareHelper) -> None:
    bad = [
        _raw_batch(["name", "phone"], types_pb2.Page(row_count=2, columns=[_text_column(["a", "b"])])),
        _raw_batch(["name"], types_pb2.Page(row_count=3, columns=[_text_column(["a", "b"])])),
        _raw_batch(
            ["name", "name"], types_pb2.Page(row_count=1, columns=[_text_column(["a"]), _text_column(["b"])])
        ),
        _raw_batch(["name"], types_pb2.Page(row_count=1, columns=[types_pb2.Column(type=77, ints=[1])])),
        _raw_batch(
            ["name"],
            types_pb2.Page(
                row_count=2,
                columns=[
                    types_pb2.Column(type=types_pb2.DATA_TYPE_STRING, strings=["a", "b"], null_rows=[5])
                ],
            ),
        ),
    ]
    with grpc.insecure_channel(env.daemon.address) as ch:
        stub = pb_grpc.DataShareServiceStub(ch)
        for req in bad:
            with pytest.raises(grpc.RpcError) as info:
                stub.BatchInsert(iter([req]), metadata=metadata(env.dialer_token))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, info.value.details())


# ---- sizes ----


def test_an_oversize_call_is_resource_exhausted_with_a_clear_message(ds: DataShareHelper) -> None:
    big = "x" * (MAX_CALL + 1)
    message = rejected("RESOURCE_EXHAUSTED", ds.insert, PEOPLE_URI, {"name": big})
    assert str(MAX_CALL) in message
    assert "limit" in message
    rejected("RESOURCE_EXHAUSTED", ds.update, PEOPLE_URI, None, {"name": big})
    rejected("RESOURCE_EXHAUSTED", ds.delete, PEOPLE_URI, P().equal_to("name", big))
    rejected("RESOURCE_EXHAUSTED", ds.batch_update, {PEOPLE_URI: [({"phone": "1" * 2000}, None)] * 3})
    manifest = contacts_manifest()
    manifest["stores"][0]["tables"][0]["columns"] += [
        {"name": f"extra_column_number_{i}", "type": "text"} for i in range(100)
    ]
    rejected("RESOURCE_EXHAUSTED", ds.register_provider, json.dumps(manifest))
    # Just under the limit is fine.
    row = ds.insert(PEOPLE_URI, {"name": "y" * (MAX_CALL - 200)})
    assert ds.delete(PEOPLE_URI, P().equal_to("id", row)) == 1


def test_an_oversize_batch_is_resource_exhausted_and_a_large_one_is_not(ds: DataShareHelper) -> None:
    rows = [{"name": f"{i:04d}" + "z" * 996} for i in range(MAX_BATCH // 1000 + 1)]
    message = rejected("RESOURCE_EXHAUSTED", ds.batch_insert, PEOPLE_URI, rows)
    assert str(MAX_BATCH) in message
    # A batch is bounded by the batch limit, not the per-call one.
    assert ds.batch_insert(PEOPLE_URI, rows[:10]) == 10
    assert ds.delete(PEOPLE_URI, P().like("name", "%zzzz")) == 10


# ---- manifests ----


def _manifest_with(**table_changes: Any) -> str:
    manifest = contacts_manifest()
    manifest["stores"][0]["tables"][0].update(table_changes)
    return json.dumps(manifest)


def _columns(*extra: dict[str, Any], drop: str | None = None) -> list[dict[str, Any]]:
    columns = [c for c in contacts_manifest()["stores"][0]["tables"][0]["columns"] if c["name"] != drop]
    return [*columns, *extra]


INVALID_MANIFESTS = {
    "not json": "{not json",
    "not an object": "[1, 2]",
    "empty": "{}",
    "unknown field": json.dumps(contacts_manifest(colour="blue")),
    "bad bundle": json.dumps(contacts_manifest(bundle="com.example.contacts; DROP TABLE x")),
    "duplicate column": _manifest_with(columns=_columns({"name": "phone", "type": "text"})),
    "duplicate column, other case": _manifest_with(columns=_columns({"name": "Phone", "type": "text"})),
    "pk not a column": _manifest_with(primary_key="uid"),
    "no columns": _manifest_with(columns=[]),
    "unknown type": _manifest_with(columns=_columns({"name": "when", "type": "datetime"})),
    "default of the wrong type": _manifest_with(
        columns=_columns({"name": "n", "type": "integer", "default": "1"})
    ),
    "NUL in a text default": _manifest_with(
        columns=_columns({"name": "n", "type": "text", "default": "a\x00b"})
    ),
    "lone surrogate in a text default": _manifest_with(
        columns=_columns({"name": "n", "type": "text", "default": "\ud800"})
    ),
    "NUL in a permission": json.dumps(contacts_manifest(read_permission="com.example.READ\x00")),
    "NaN default": _manifest_with(columns=_columns({"name": "n", "type": "real", "default": float("nan")})),
    "Infinity default": _manifest_with(
        columns=_columns({"name": "n", "type": "real", "default": float("inf")})
    ),
    "-Infinity default": _manifest_with(
        columns=_columns({"name": "n", "type": "real", "default": float("-inf")})
    ),
    "1e999 default (overflows to infinity)": _manifest_with(
        columns=_columns({"name": "n", "type": "real", "default": 1.0})
    ).replace('"default": 1.0', '"default": 1e999'),
    "integer default past 64 bits": _manifest_with(
        columns=_columns({"name": "n", "type": "integer", "default": 1 << 63})
    ),
    "1e30 in an integer column": _manifest_with(
        columns=_columns({"name": "n", "type": "integer", "default": 1.0})
    ).replace('"default": 1.0', '"default": 1e30'),
    "10**30 in an integer column": _manifest_with(
        columns=_columns({"name": "n", "type": "integer", "default": 10**30})
    ),
    "real default past the float range": _manifest_with(
        columns=_columns({"name": "n", "type": "real", "default": 10**400})
    ),
    "nested 1,500 deep": "[" * 1500 + "]" * 1500,
    "column name with a trailing newline": _manifest_with(
        columns=_columns({"name": "email\n", "type": "text"})
    ),
    "sql in a column name": _manifest_with(
        columns=_columns({"name": "x text); DROP TABLE ds_1; --", "type": "text"})
    ),
    "sql in a table name": _manifest_with(name="people; DROP TABLE ds_1"),
    "removes a column": _manifest_with(columns=_columns(drop="phone")),
    "changes a type": _manifest_with(
        columns=[{**c, "type": "text"} if c["name"] == "age" else c for c in _columns()]
    ),
    "changes the primary key": _manifest_with(
        columns=[{**c, "nullable": False} if c["name"] == "phone" else c for c in _columns()],
        primary_key="phone",
    ),
    "adds a required column without default": _manifest_with(
        columns=_columns({"name": "email", "type": "text", "nullable": False})
    ),
    "removes the table": json.dumps(
        contacts_manifest(
            stores=[
                {
                    "name": "other",
                    "tables": [
                        {"name": "t", "primary_key": "id", "columns": [{"name": "id", "type": "integer"}]}
                    ],
                }
            ]
        )
    ),
}


@pytest.mark.parametrize("text", INVALID_MANIFESTS.values(), ids=INVALID_MANIFESTS.keys())
def test_invalid_manifests_are_invalid_argument_and_change_nothing(
    env: Env, ds: DataShareHelper, text: str
) -> None:
    with grpc.insecure_channel(env.daemon.address) as ch:  # raw: the SDK would take "[1, 2]" for a path
        stub = pb_grpc.DataShareServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterProvider(
                pb.RegisterProviderRequest(manifest_json=text), metadata=metadata(env.provider_token)
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "manifest" in (info.value.details() or "") or "datashare:///" in (info.value.details() or "")
    # Still the same table, columns and access rules: the dialer can write every declared column.
    row = ds.insert(
        PEOPLE_URI, {"name": "probe", "phone": "1", "age": 2, "score": 3.0, "starred": True, "photo": b""}
    )
    assert ds.delete(PEOPLE_URI, P().equal_to("id", row)) == 1


def test_the_daemon_survived_everything(env: Env) -> None:
    log = env.daemon.log()
    assert "Traceback" not in log
    assert "internal error" not in log
    assert env.daemon.proc is not None and env.daemon.proc.poll() is None
