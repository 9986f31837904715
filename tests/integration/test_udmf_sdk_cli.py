"""The UDMF SDK (UdmfClient, AsyncUdmfClient) and `datamgr udmf ...` against the real daemon."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import Daemon

from datamgr.cli import main
from udmf import (
    HTML,
    AppItem,
    ApplicationDefinedRecord,
    AsyncUdmfClient,
    Audio,
    ContentForm,
    File,
    FileUri,
    Folder,
    Form,
    Hyperlink,
    Image,
    Intention,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PixelMap,
    PlainText,
    ShareOptions,
    UdmfClient,
    UdmfError,
    Unauthenticated,
    UnifiedData,
    UnifiedDataProperties,
    UnifiedRecord,
    Video,
    Visibility,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITER, READER, TARGET = "com.example.writer", "com.example.reader", "com.example.target"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    data_dir = tmp_path_factory.mktemp("udmf-sdk") / "data"
    d = Daemon(data_dir, env={"DATAMGR_AI__ENABLED": "false"}).start(service="udmf.v1.UdmfService")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def tokens(daemon: Daemon) -> dict[str, str]:
    return {bundle: daemon.add_app(bundle) for bundle in (WRITER, READER, TARGET)}


@pytest.fixture(scope="module")
def admin_token(daemon: Daemon) -> str:
    return (daemon.data_dir / "admin.token").read_text().strip()


def client(daemon: Daemon, token: str) -> UdmfClient:
    return UdmfClient.connect(daemon.address, token)


def every_struct() -> UnifiedData:
    structs: list[Any] = [
        PlainText("plain", "abs"),
        Hyperlink("https://example.org", "Example"),
        HTML("<p>hi</p>", "hi"),
        File("file:///tmp/a.txt"),
        Image("file:///tmp/a.png"),
        Video("file:///tmp/a.mp4"),
        Audio("file:///tmp/a.mp3"),
        Folder("file:///tmp/dir"),
        FileUri("file:///tmp/a.jpg", "general.jpeg"),
        AppItem("app-1", "Notes", "icon", "label", "com.example.notes", "MainAbility"),
        Form(42, "clock", "com.example.clock", "FormAbility", "entry"),
        ContentForm("Title", b"\x89PNG" * 10, "desc", b"icon", "Notes", "https://example.org/1"),
        PixelMap(bytes(range(256)) * 400, 160, 160),  # over the blob threshold: a streamed field
        ApplicationDefinedRecord("ApplicationDefined.notes", b"\x00\x01" * 50_000),
    ]
    data = UnifiedData()
    for struct in structs:
        data.add_record(UnifiedRecord(struct))
    multi = UnifiedRecord(HTML("<b>both</b>", "both"))
    multi.add_entry(PlainText("both"))
    multi.add_entry("general.png", b"\x89PNG\r\n")
    data.add_record(multi)
    data.add_record(UnifiedRecord("general.plain-text", "é" * 70_000))  # a text blob
    data.properties = UnifiedDataProperties(
        "every-struct", {"n": 1, "nested": {"b": b"\x00"}}, ShareOptions.CROSS_APP
    )
    return data


def same(a: UnifiedData, b: UnifiedData) -> None:
    """Equal records and properties but the timestamp, which the daemon sets."""
    assert a.get_records() == b.get_records()
    assert (a.properties.tag, a.properties.extras, a.properties.share_options) == (
        b.properties.tag,
        b.properties.extras,
        b.properties.share_options,
    )


# ---- the SDK ----


def test_every_struct_round_trips_through_the_daemon(daemon: Daemon, tokens: dict[str, str]) -> None:
    sent = every_struct()
    before = datetime.now(UTC) - timedelta(seconds=5)
    with client(daemon, tokens[WRITER]) as writer, client(daemon, tokens[READER]) as reader:
        key = writer.insert_data(sent)
        assert key.startswith(f"udmf://DataHub/{WRITER}/")
        (back,) = reader.query_data(key=key)
        same(back, sent)
        assert before < back.properties.timestamp < datetime.now(UTC) + timedelta(seconds=5)
        assert back.runtime is not None
        assert (back.runtime.key, back.runtime.intention, back.runtime.writer) == (
            key,
            Intention.DATA_HUB,
            WRITER,
        )
        assert back.runtime.summary.total_size > 300_000
        got = reader.get_data(key)
        same(got, sent)
        assert isinstance(got.get_records()[12].get_value(), PixelMap)
        summary, props, intention, who = reader.get_summary(key)
        assert set(summary.summary) == set(sent.get_types()) and props.tag == "every-struct"
        assert (intention, who) == (Intention.DATA_HUB, WRITER)
        assert key in [d.runtime.key for d in reader.query_data(intention=Intention.DATA_HUB) if d.runtime]

        writer.update_data(key, UnifiedData(UnifiedRecord(PlainText("updated"))))
        assert reader.get_data(key).get_records()[0].get_value() == PlainText("updated")
        with pytest.raises(PermissionDenied):
            reader.update_data(key, UnifiedData(UnifiedRecord(PlainText("not mine"))))
        assert reader.delete_data(key=key) == []  # others' data is skipped
        (deleted,) = writer.delete_data(key=key)
        assert deleted.runtime is not None and deleted.runtime.key == key
        with pytest.raises(NotFound):
            reader.query_data(key=key)


def test_has_type_through_the_daemon_and_own_process_visibility(
    daemon: Daemon, tokens: dict[str, str]
) -> None:
    record = UnifiedRecord("general.jpeg", b"\xff\xd8\xff" + bytes(100))
    record.add_entry(FileUri("file:///tmp/p.jpg", "general.jpeg"))
    with client(daemon, tokens[WRITER]) as writer, client(daemon, tokens[READER]) as reader:
        key = writer.insert_data(UnifiedData(record), visibility=Visibility.OWN_PROCESS)
        (back,) = writer.query_data(key=key)
        assert (
            back.has_type("general.image") and back.has_type("general.jpeg") and back.has_type("general.uri")
        )
        assert not back.has_type("general.video") and not back.has_type("general.file")
        with pytest.raises(NotFound):
            reader.query_data(key=key)
        writer.delete_data(key=key)


def test_a_drag_is_read_once_by_the_granted_target(
    daemon: Daemon, tokens: dict[str, str], admin_token: str
) -> None:
    data = UnifiedData(UnifiedRecord(HTML("<i>dragged</i>", "dragged")))
    with (
        client(daemon, tokens[WRITER]) as source,
        client(daemon, admin_token) as system,
        client(daemon, tokens[TARGET]) as target,
        client(daemon, tokens[READER]) as other,
    ):
        key = source.set_drag_data(data)
        assert key.startswith(f"udmf://drag/{WRITER}/")
        with pytest.raises(PermissionDenied):
            target.get_data(key)
        with pytest.raises(PermissionDenied):
            source.grant_access(key, TARGET)
        system.grant_access(key, TARGET)
        with pytest.raises(PermissionDenied):
            other.get_data(key)
        got = target.get_data(key)
        same(got, data)
        assert got.runtime is not None and got.runtime.intention is Intention.DRAG
        with pytest.raises(NotFound):
            target.get_data(key)
        with pytest.raises(InvalidArgument):
            source.insert_data(data, Intention.DRAG)


def test_a_lazy_drag_loads_when_the_target_reads(
    daemon: Daemon, tokens: dict[str, str], admin_token: str
) -> None:
    payload = os.urandom(3 * MB)
    calls: list[int] = []

    def loader() -> UnifiedData:
        calls.append(1)
        data = UnifiedData(UnifiedRecord("general.png", payload))
        data.add_record(UnifiedRecord(PlainText("caption")))
        return data

    with client(daemon, tokens[WRITER]) as source, client(daemon, admin_token) as system:
        props = UnifiedDataProperties(tag="lazy")
        with source.start_lazy_drag(
            props, ["general.png", "general.plain-text"], loader, record_count=2
        ) as drag:
            assert drag.key.startswith(f"udmf://drag/{WRITER}/") and not calls
            system.grant_access(drag.key, TARGET)
            with client(daemon, tokens[TARGET]) as target:
                summary = target.get_summary(drag.key)[0]
                assert set(summary.summary) == {"general.png", "general.plain-text"}
                got = target.get_data(drag.key)
            assert calls == [1] and drag.error is None
            assert got.get_records()[0].get_value() == payload
            assert got.get_records()[1].get_value() == PlainText("caption")


def test_30_mb_get_with_progress_to_a_file_and_cancel(
    daemon: Daemon, tokens: dict[str, str], admin_token: str, tmp_path: Path
) -> None:
    payload = os.urandom(30 * MB)
    with (
        client(daemon, tokens[WRITER]) as source,
        client(daemon, admin_token) as system,
        client(daemon, tokens[TARGET]) as target,
    ):
        key = source.set_drag_data(UnifiedData(UnifiedRecord("general.png", payload)))
        system.grant_access(key, TARGET)

        cancel = threading.Event()
        after_cancel: list[int] = []

        def stop_at_ten(percent: int) -> None:
            if cancel.is_set():
                after_cancel.append(percent)
            if percent >= 10:
                cancel.set()

        with pytest.raises(UdmfError) as info:
            target.get_data(key, progress=stop_at_ten, out_dir=tmp_path / "cancelled", cancel=cancel)
        assert info.value.code == "CANCELLED"
        assert after_cancel == []  # the read stops at once, not when a watcher gets round to it
        assert list((tmp_path / "cancelled").iterdir()) == []

        seen: list[int] = []  # the cancelled read consumed nothing: the target reads it whole now
        got = target.get_data(key, progress=seen.append, out_dir=tmp_path / "out")
        path = got.get_records()[0].get_value()
        assert isinstance(path, Path) and path.parent == tmp_path / "out"
        assert path.stat().st_size == len(payload)
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(payload).digest()
        assert seen == sorted(seen) and seen[-1] == 100 and len(set(seen)) >= 10
        with pytest.raises(NotFound):
            target.get_data(key)


def test_the_async_client(daemon: Daemon, tokens: dict[str, str], admin_token: str) -> None:
    async def main() -> None:
        async with (
            AsyncUdmfClient.connect(daemon.address, tokens[WRITER]) as source,
            AsyncUdmfClient.connect(daemon.address, admin_token) as system,
            AsyncUdmfClient.connect(daemon.address, tokens[TARGET]) as target,
        ):
            key = await source.insert_data(every_struct())
            same(await target.get_data(key), every_struct())
            (back,) = await target.query_data(key=key)
            same(back, every_struct())
            assert [d.runtime.key for d in await source.delete_data(key=key) if d.runtime] == [key]

            async def loader() -> UnifiedData:
                return UnifiedData(UnifiedRecord(PlainText("lazy")))

            async with await source.start_lazy_drag(
                UnifiedDataProperties(), ["general.plain-text"], loader
            ) as drag:
                await system.grant_access(drag.key, TARGET)
                got = await target.get_data(drag.key)
                assert got.get_records()[0].get_value() == PlainText("lazy")

            big = await source.set_drag_data(UnifiedData(UnifiedRecord("general.png", os.urandom(20 * MB))))
            await system.grant_access(big, TARGET)
            started = asyncio.Event()
            task = asyncio.create_task(target.get_data(big, progress=lambda p: p >= 5 and started.set()))
            await asyncio.wait_for(started.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len((await target.get_data(big)).get_records()[0].get_value()) == 20 * MB

    asyncio.run(main())


def test_types_and_errors(daemon: Daemon, tokens: dict[str, str]) -> None:
    with client(daemon, tokens[WRITER]) as udmf:
        assert udmf.query_types(filename_extension=".jpg")[0].type_id == "general.jpeg"
        assert udmf.query_types(mime_type="image/png")[0].type_id == "general.png"
        (jpeg,) = udmf.query_types(type_id="general.jpeg")
        assert "general.image" in jpeg.belonging_to_types
        assert udmf.query_types(filename_extension=".zzq")[0].type_id.startswith("flex.z")
        note = f"{WRITER}.note"
        udmf.register_types(
            [{"type_id": note, "belonging_to_types": ["general.text"], "filename_extensions": [".nte"]}]
        )
        (found,) = udmf.query_types(filename_extension=".nte")
        assert (found.type_id, found.owner_bundle) == (note, WRITER)
        key = udmf.insert_data(UnifiedData(UnifiedRecord(note, "a note")))
        assert udmf.query_data(key=key)[0].get_records()[0].get_value() == "a note"
        udmf.delete_data(key=key)
        udmf.unregister_types([note])
        with pytest.raises(InvalidArgument):
            udmf.insert_data(UnifiedData(UnifiedRecord("no.such.type", "x")))
        with pytest.raises(InvalidArgument):
            udmf.insert_data(UnifiedData(UnifiedRecord("general.html", "a bare string is no HTML")))
        with pytest.raises(NotFound):
            udmf.get_data(f"udmf://DataHub/{WRITER}/{'0' * 32}")
    with UdmfClient.connect(daemon.address, "not-a-token") as udmf, pytest.raises(Unauthenticated):
        udmf.query_types(type_id="general.jpeg")


# ---- the CLI ----


@pytest.fixture
def cli(daemon: Daemon, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("DATAMGR_CONFIG", "DATAMGR_ADDRESS", "DATAMGR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATAMGR_DATA_DIR", str(daemon.data_dir))  # the socket and the admin token
    return CliRunner(env={"DATAMGR_DATA_DIR": str(daemon.data_dir), "DATAMGR_TOKEN": tokens[WRITER]})


def run(cli: CliRunner, *args: str, code: int = 0, **kwargs: Any) -> Any:
    result = cli.invoke(main, ["udmf", *args], catch_exceptions=False, **kwargs)
    assert result.exit_code == code, result.output
    return result


def test_cli_put_list_get_summary_delete(cli: CliRunner, tokens: dict[str, str]) -> None:
    key = run(cli, "put-text", "hello from the cli", "--tag", "greeting").stdout.strip()
    assert key.startswith(f"udmf://DataHub/{WRITER}/")
    html_key = run(cli, "put-text", "<p>rich <b>text</b></p>", "--html", "--own-process").stdout.strip()
    listed = json.loads(run(cli, "list", "--json").stdout)
    mine = {d["key"]: d for d in listed}
    assert mine[key]["tag"] == "greeting" and mine[key]["writer"] == WRITER
    assert mine[key]["records"] == [
        {"general.plain-text": {"$struct": "PlainText", "text_content": "hello from the cli", "abstract": ""}}
    ]
    assert list(mine[html_key]["records"][0]) == ["general.html", "general.plain-text"]
    table = run(cli, "list").stdout
    assert "greeting" in table and table.count("udmf://DataHub/") >= 2  # narrow: the cells fold
    reader_list = json.loads(run(cli, "list", "--json", env={"DATAMGR_TOKEN": tokens[READER]}).stdout)
    assert key in [d["key"] for d in reader_list] and html_key not in [d["key"] for d in reader_list]

    result = run(cli, "get", key)
    assert result.stdout == "hello from the cli\n" and "general.plain-text" in result.stderr
    got = json.loads(run(cli, "get", key, "--json").stdout)
    assert (got["key"], got["intention"], got["writer"], got["tag"]) == (key, "DataHub", WRITER, "greeting")
    picked = run(cli, "put-text", "for the picker", "--intention", "picker").stdout.strip()
    assert picked.startswith(f"udmf://Picker/{WRITER}/")
    assert run(cli, "get", picked).stdout == "for the picker\n"  # its writer may read it, once
    assert "error: NOT_FOUND" in run(cli, "get", picked, code=1).stderr
    assert run(cli, "get", html_key).stdout == "<p>rich <b>text</b></p>\nrich text\n"
    summary = json.loads(run(cli, "summary", key, "--json").stdout)
    assert (summary["writer"], summary["intention"], list(summary["summary"])) == (
        WRITER,
        "DataHub",
        ["general.plain-text"],
    )
    assert "general.plain-text" in run(cli, "summary", key).stdout

    assert run(cli, "delete", key).stdout.split() == [key]
    result = run(cli, "get", key, code=1)
    assert "error: NOT_FOUND" in result.stderr
    run(cli, "delete", "--intention", "data-hub")
    run(cli, "delete", code=2)


def test_cli_put_file_and_get_to_a_directory(cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    payload = os.urandom(5 * MB)
    src.write_bytes(payload)
    key = run(cli, "put-file", str(src), "--share", "in-app").stdout.strip()
    listed = {d["key"]: d for d in json.loads(run(cli, "list", "--json").stdout)}
    (entry,) = listed[key]["records"]
    assert listed[key]["share_options"] == "IN_APP"
    assert entry["general.file"] == {"$struct": "File", "uri": src.as_uri()}
    assert list(entry) == ["general.png", "general.file"]
    out_dir = tmp_path / "out"
    result = run(cli, "get", key, "--out", str(out_dir))
    (saved,) = out_dir.iterdir()
    assert saved.read_bytes() == payload and str(saved) in result.stdout
    assert src.as_uri() in result.stdout
    run(cli, "delete", key)


def test_cli_types(cli: CliRunner, tmp_path: Path) -> None:
    assert "general.jpeg" in run(cli, "types", "--ext", ".jpg").stdout
    found = json.loads(run(cli, "types", "--mime", "image/*", "--all", "--json").stdout)
    assert "general.png" in [t["type_id"] for t in found] and len(found) > 5
    assert json.loads(run(cli, "types", "--id", "general.jpeg", "--json").stdout)[0]["mime_types"] == [
        "image/jpeg"
    ]
    both = json.loads(run(cli, "types", "--ext", ".ts", "--all", "--json").stdout)
    assert [t["type_id"] for t in both] == ["general.type-script", "general.ts"]  # an ambiguous extension
    video = json.loads(
        run(cli, "types", "--ext", ".ts", "--all", "--belongs-to", "general.video", "--json").stdout
    )
    assert [t["type_id"] for t in video] == ["general.ts"]
    assert (
        "error: UNAUTHENTICATED"
        in run(cli, "types", "--ext", ".jpg", code=1, env={"DATAMGR_TOKEN": None}).stderr
    )
    run(cli, "types", code=2)

    declarations = tmp_path / "utd.json"
    declarations.write_text(
        json.dumps(
            {
                "UniformDataTypeDeclarations": [
                    {"TypeId": f"{WRITER}.memo", "BelongingToTypes": ["general.text"]}
                ]
            }
        )
    )
    assert run(cli, "types", "register", str(declarations)).stdout.strip() == f"registered {WRITER}.memo"
    assert run(cli, "types", "register", str(declarations), code=1).stderr.startswith("error: ALREADY_EXISTS")
    run(cli, "types", "unregister", f"{WRITER}.memo")
    assert "error: NOT_FOUND" in run(cli, "types", "unregister", f"{WRITER}.memo", code=1).stderr


def test_cli_drag_from_one_app_to_another(cli: CliRunner, tokens: dict[str, str], tmp_path: Path) -> None:
    result = run(cli, "drag", "dragged text", "--from-token", tokens[WRITER], "--to", TARGET)
    key = result.stdout.strip()
    assert key.startswith(f"udmf://drag/{WRITER}/") and f"granted {TARGET}" in result.stderr
    assert run(cli, "get", key, env={"DATAMGR_TOKEN": tokens[TARGET]}).stdout == "dragged text\n"
    assert "error: NOT_FOUND" in run(cli, "get", key, code=1, env={"DATAMGR_TOKEN": tokens[TARGET]}).stderr

    result = run(
        cli,
        "drag",
        "read at once",
        "--from-token",
        tokens[WRITER],
        "--to",
        TARGET,
        "--to-token",
        tokens[TARGET],
    )
    key, text = result.stdout.splitlines()
    assert text == "read at once" and "a second read is refused: NOT_FOUND" in result.stderr

    note = tmp_path / "notes.txt"  # a text file travels as text, and is printed
    note.write_text("a dragged file")
    args = ("--from-token", tokens[WRITER], "--to", TARGET, "--to-token", tokens[TARGET])
    result = run(cli, "drag", "--file", str(note), *args)
    assert result.stdout.splitlines()[1:] == ["a dragged file", note.as_uri()]
    assert "general.plain-text" in result.stderr
    image = tmp_path / "photo.png"  # bytes go to --out
    image.write_bytes(b"\x89PNG" + os.urandom(100_000))
    out_dir = tmp_path / "dropped"
    result = run(cli, "drag", "--file", str(image), *args, "--out", str(out_dir))
    (saved,) = out_dir.iterdir()
    assert saved.read_bytes() == image.read_bytes() and str(saved) in result.stdout

    refused = run(
        cli,
        "drag",
        "wrong target",
        "--from-token",
        tokens[WRITER],
        "--to",
        TARGET,
        "--to-token",
        tokens[READER],
        code=1,
    )
    assert "error: PERMISSION_DENIED" in refused.stderr
