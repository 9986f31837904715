"""The `postgres_url` fixture starts a real PostgreSQL server that SQLAlchemy can use."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.postgres


def test_postgres_url_connects_to_the_test_database(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select current_database()")).scalar_one() == "datamgr_test"
            assert engine.dialect.name == "postgresql"
    finally:
        engine.dispose()
