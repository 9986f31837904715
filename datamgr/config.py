"""Daemon configuration: one pydantic-settings root, read from defaults, a TOML file and `DATAMGR_*`.

Precedence, highest first: environment (`DATAMGR_DATA_DIR`, nested with `__`, e.g.
`DATAMGR_DATASHARE__PAGE_ROWS=500`), the TOML file (`--config` or `DATAMGR_CONFIG`), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "datamgr"


class DataShareSettings(BaseModel):
    """Limits and tuning of DataShare (defaults follow OpenHarmony where it sets one)."""

    max_call_bytes: int = Field(
        900 * 1024, ge=1024, description="Largest single call (uri + values), as OpenHarmony's 900 KB."
    )
    max_batch_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="Largest batch insert or query predicates, as OpenHarmony's 128 MB.",
    )
    page_rows: int = Field(1000, ge=1, le=100_000, description="Rows per streamed query page by default.")
    max_page_bytes: int = Field(
        2 * 1024 * 1024, ge=4096, description="A page is cut early when its values pass this many bytes."
    )
    max_subscriptions_per_app: int = Field(
        51, ge=1, description="Live change subscriptions one app may hold (OpenHarmony: 51 per URI)."
    )
    subscriber_queue: int = Field(
        10_000,
        ge=16,
        description="Changes buffered per subscriber; a subscriber that falls further behind is dropped.",
    )
    provider_timeout_s: float = Field(
        5.0, gt=0, description="How long the daemon waits for an extension provider's answer."
    )
    change_chunk_rows: int = Field(500, ge=1, description="Rows per ChangeInfo message for large changes.")


class Settings(BaseSettings):
    """The daemon's settings. Every field has a default; see README for the TOML layout."""

    model_config = SettingsConfigDict(
        env_prefix="DATAMGR_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="Where the database, socket, lock and admin token live."
    )
    socket: Path | None = Field(
        None, description="Unix socket for local apps; default {data_dir}/datamgr.sock."
    )
    tcp: str | None = Field(
        None, description="Optional TCP listen address, e.g. 127.0.0.1:50051 (port 0 picks one)."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite at {data_dir}/datamgr.db. PostgreSQL works too."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "NORMAL",
        description="SQLite WAL sync level. NORMAL (Android's WAL default): a commit survives a crash or "
        "kill -9 of the daemon, the last commits may be lost on power loss. FULL: fsync on every commit.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Time in-flight calls get to finish on SIGTERM.")
    read_threads: int = Field(4, ge=1, le=64, description="Threads serving database reads.")
    datashare: DataShareSettings = Field(DataShareSettings(), description="DataShare limits and tuning.")

    config_file: Path | None = Field(
        None, exclude=True, description="The TOML file these settings came from."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the TOML file is the one in model_config (set by load_settings); none by default
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @property
    def socket_path(self) -> Path:
        return self.socket or self.data_dir / "datamgr.sock"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'datamgr.db'}"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "daemon.lock"


def load_settings(config_file: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from the environment and, if given (or `DATAMGR_CONFIG` names one), a TOML file."""
    given = config_file if config_file is not None else os.environ.get("DATAMGR_CONFIG")
    path = Path(given) if given else None
    cls: type[Settings] = Settings
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

        cls = FileSettings
    settings = cls(**overrides)  # type: ignore[arg-type]
    settings.config_file = path
    return settings
