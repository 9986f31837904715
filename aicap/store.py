"""The models added at run time (AddModel), kept in the daemon's database so they survive a restart.

Plain synchronous SQLAlchemy Core on the engine the daemon passes in; the service runs these methods
on the daemon's database writer (never on the event loop).
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from aicap.config import ModelSpec

metadata = sa.MetaData()
models_table = sa.Table(
    "aicap_models",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("n_ctx", sa.Integer, nullable=False),
    sa.Column("chat_template", sa.Text, nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)


class ModelStore:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        metadata.create_all(engine)

    def all(self) -> list[ModelSpec]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(models_table).order_by(models_table.c.added_at)).all()
        return [ModelSpec(r.name, Path(r.path), r.n_ctx, r.chat_template) for r in rows]

    def add(self, spec: ModelSpec) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.insert(models_table).values(
                    name=spec.name,
                    path=str(spec.path),
                    n_ctx=spec.n_ctx,
                    chat_template=spec.chat_template,
                    added_at=time.time(),
                )
            )

    def remove(self, name: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(models_table).where(models_table.c.name == name))
