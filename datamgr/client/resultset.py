"""DataShareResultSet: a cursor over a streamed query result, with OpenHarmony's typed getters.

Pages arrive column-wise from the daemon and are fetched only when the cursor moves past the rows it
has; `row_count` (and moving to the last row) fetches the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import Any

from datamgr import values as codec
from datamgr.errors import DatamgrError, InvalidArgument
from datamgr.v1 import datashare_pb2 as pb
from datamgr.v1 import types_pb2


class DataType(IntEnum):
    """Column types, as OpenHarmony's DataShareResultSet.DataType (plus BOOL)."""

    TYPE_NULL = types_pb2.DATA_TYPE_NULL
    TYPE_LONG = types_pb2.DATA_TYPE_LONG
    TYPE_DOUBLE = types_pb2.DATA_TYPE_DOUBLE
    TYPE_STRING = types_pb2.DATA_TYPE_STRING
    TYPE_BLOB = types_pb2.DATA_TYPE_BLOB
    TYPE_BOOL = types_pb2.DATA_TYPE_BOOL


class DataShareResultSet:
    """A cursor (`go_to_next_row`, `get_string`, ...) over rows streamed in pages."""

    def __init__(self, responses: Iterator[pb.QueryResponse], cancel: Any = None) -> None:
        self._responses = responses
        self._cancel = cancel
        self._columns: list[list[Any]] = []
        self._done = False
        self._closed = False
        self._pos = -1
        first = next(responses, None)
        if first is None:
            raise DatamgrError("the daemon sent no result header")
        self.column_names = [c.name for c in first.columns]
        self._types = [c.type for c in first.columns]
        self._columns = [[] for _ in self.column_names]
        self._add(first)

    # ---- loading ----

    def _add(self, msg: pb.QueryResponse) -> None:
        for store, values in zip(self._columns, codec.decode_page(msg.page), strict=True):
            store.extend(values)

    def _loaded(self) -> int:
        return len(self._columns[0]) if self._columns else 0

    def _fetch_until(self, row: int) -> bool:
        """Fetches pages until `row` is loaded (or the stream ends); whether it is."""
        while self._loaded() <= row and not self._done:
            msg = next(self._responses, None)
            if msg is None:
                self._done = True
            else:
                self._add(msg)
        return row < self._loaded()

    # ---- OpenHarmony's properties ----

    @property
    def column_count(self) -> int:
        return len(self.column_names)

    @property
    def row_count(self) -> int:
        self._fetch_until(2**62)
        return self._loaded()

    @property
    def row_index(self) -> int:
        return self._pos

    @property
    def is_closed(self) -> bool:
        return self._closed

    # ---- cursor ----

    def go_to_row(self, position: int) -> bool:
        self._check_open()
        if position < 0 or not self._fetch_until(position):
            return False
        self._pos = position
        return True

    def go_to(self, offset: int) -> bool:
        return self.go_to_row(self._pos + offset)

    def go_to_first_row(self) -> bool:
        return self.go_to_row(0)

    def go_to_next_row(self) -> bool:
        return self.go_to_row(self._pos + 1)

    def go_to_previous_row(self) -> bool:
        return self.go_to_row(self._pos - 1)

    def go_to_last_row(self) -> bool:
        return self.go_to_row(self.row_count - 1)

    # ---- getters ----

    def get_column_index(self, name: str) -> int:
        try:
            return self.column_names.index(name)
        except ValueError:
            return -1

    def get_column_name(self, index: int) -> str:
        return self.column_names[index]

    def get_data_type(self, index: int) -> DataType:
        value = self._value(index)
        if value is None:
            return DataType.TYPE_NULL
        return DataType(codec.data_type_of(value))

    def _value(self, index: int) -> Any:
        self._check_open()
        if self._pos < 0 or self._pos >= self._loaded():
            raise InvalidArgument(
                "the cursor is not on a row: call go_to_first_row() or go_to_next_row() first"
            )
        if not 0 <= index < len(self._columns):
            raise InvalidArgument(f"column index {index} out of range 0..{len(self._columns) - 1}")
        return self._columns[index][self._pos]

    def get_value(self, index: int) -> Any:
        return self._value(index)

    def get_string(self, index: int) -> str | None:
        v = self._value(index)
        return None if v is None else v if isinstance(v, str) else str(v)

    def get_long(self, index: int) -> int:
        v = self._value(index)
        return 0 if v is None else int(v)

    def get_double(self, index: int) -> float:
        v = self._value(index)
        return 0.0 if v is None else float(v)

    def get_blob(self, index: int) -> bytes:
        v = self._value(index)
        return b"" if v is None else v if isinstance(v, bytes) else str(v).encode()

    def get_bool(self, index: int) -> bool:
        return bool(self._value(index))

    def is_column_null(self, index: int) -> bool:
        return self._value(index) is None

    # ---- Pythonic access ----

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row from the first, as a dict, fetching pages as it goes."""
        i = 0
        while self._fetch_until(i):
            yield {name: col[i] for name, col in zip(self.column_names, self._columns, strict=True)}
            i += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._done and self._cancel is not None:
                self._cancel()
            self._columns = [[] for _ in self.column_names]

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument("the result set is closed")

    def __enter__(self) -> DataShareResultSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
