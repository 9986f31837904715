"""The plain values the UDMF service runs with; the daemon builds them from its settings (`udmf` section)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
MANAGE_UDMF_ACCESS = "ohos.permission.MANAGE_UDMF_ACCESS"


@dataclass(frozen=True, slots=True)
class UdmfConfig:
    """What the UDMF service needs to know, as plain values (the daemon's `udmf` settings section)."""

    data_dir: Path  # large blobs live under {data_dir}/udmf/blobs
    entry_ttl_s: float = 3600.0  # data older than this is swept (OpenHarmony: hourly, older than 1 h)
    sweep_interval_s: float = 60.0
    max_data_bytes: int = 200 * MIB  # per UnifiedData (OpenHarmony's UnifiedData::MAX_DATA_SIZE)
    inline_blob_bytes: int = 64 * 1024  # blobs up to this size stay in the database row
    chunk_bytes: int = MIB  # bytes per chunk part on reads
    lazy_load_timeout_s: float = 30.0  # how long a drop target waits for a lazy drag source's data
    max_records: int = 10_000  # records per UnifiedData
    max_entries_per_record: int = 64  # entries (types) per record
    max_tag_bytes: int = 1024  # UTF-8 bytes of properties.tag
    max_extras_bytes: int = MIB  # serialized size of properties.extras

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "udmf" / "blobs"
