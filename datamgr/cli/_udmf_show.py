"""How `datamgr udmf` shows UnifiedData: text as it is, bytes saved or sized, JSON, a progress bar."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from datamgr.cli._common import err

if TYPE_CHECKING:
    from udmf import UnifiedData


def size(n: float) -> str:
    """1234567 -> '1.2 MB'."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def jsonable(value: Any) -> Any:
    """A value for `print_json`: structs as `{"$struct": name, fields...}`, saved blobs as `{"$file"}`."""
    from udmf import Struct

    if isinstance(value, Struct):
        fields = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
        return {"$struct": type(value).__name__, **fields}
    if isinstance(value, Path):
        return {"$file": str(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def data_json(data: UnifiedData) -> dict[str, Any]:
    props, runtime = data.properties, data.runtime
    return {
        "key": runtime.key if runtime else "",
        "intention": runtime.intention.value if runtime and runtime.intention else None,
        "writer": runtime.writer if runtime else "",
        "total_size": runtime.summary.total_size if runtime else None,
        "tag": props.tag,
        "extras": jsonable(props.extras),
        "share_options": props.share_options.name,
        "timestamp": props.timestamp.isoformat(),
        "records": [{t: jsonable(v) for t, v in r.get_entries().items()} for r in data.get_records()],
    }


def _bytes_note(raw: bytes) -> str:
    return f"<{size(len(raw))} of bytes>"


def show(value: Any, save: Callable[[bytes], Path] | None) -> str:
    """One value as `get` prints it; `save` writes bytes to a file (with --out)."""
    from udmf import HTML, File, FileUri, Hyperlink, PlainText

    if isinstance(value, str):
        return value
    if isinstance(value, PlainText):
        return value.text_content
    if isinstance(value, HTML):
        return value.html_content
    if isinstance(value, File):
        return value.uri
    if isinstance(value, FileUri):
        return value.ori_uri + (f" ({value.file_type})" if value.file_type else "")
    if isinstance(value, Hyperlink):
        return value.url + (f" ({value.description})" if value.description else "")
    if isinstance(value, Path):
        return f"-> {value} ({size(value.stat().st_size)})"
    if isinstance(value, (bytes, bytearray, memoryview)):
        if save is None:
            return f"<{size(len(value))} of bytes: --out DIR saves them>"
        return f"-> {save(bytes(value))} ({size(len(value))})"
    return json.dumps(jsonable(value), default=_bytes_note, ensure_ascii=False)


def print_data(data: UnifiedData, out_dir: Path | None) -> None:
    """Each entry: `record i · type` on stderr, its value on stdout (bytes saved to `out_dir`)."""
    from udmf._wire import blob_path

    for i, record in enumerate(data.get_records()):
        for type_id, value in record.get_entries().items():
            err.print(f"[dim]record {i} · {type_id}[/]", highlight=False)
            save = None
            if out_dir is not None:
                path = blob_path(out_dir, i, type_id, "", False)

                def save(raw: bytes, path: Path = path) -> Path:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(raw)
                    return path

            click.echo(show(value, save))


class ProgressBar:
    """A progress callback drawing a bar on stderr, once a read turns out not to arrive at once."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, percent: int) -> None:
        if self._progress is None:
            if percent >= 100 or not err.is_terminal:
                return
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                console=err,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=100)
        assert self._task is not None
        self._progress.update(self._task, completed=percent)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
