"""Statement budgets on a real SQLite file: a long LIKE scan is interrupted when its budget or its
call's deadline passes or when it is cancelled, its transaction rolls back, and nothing lingers on
the connection for the next statement."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamgr.budget import Budget, Watchdog
from datamgr.errors import Cancelled, DeadlineExceeded
from datamgr.storage import create_engine

ROWS = 40
TEXT = "a" * 200_000
# ~3 ns x 120 x 200,000 per row: ~70 ms a row, several seconds for the table, one row per VM loop
SLOW = "%" + "a" * 118 + "b"
SETTING = "datashare.max_statement_ms"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        conn.exec_driver_sql("INSERT INTO t (body) VALUES (?)", [(TEXT,)] * ROWS)
    yield engine
    engine.dispose()


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    w = Watchdog()
    yield w
    w.close()


def slow_delete(conn: sa.Connection) -> None:
    conn.exec_driver_sql("DELETE FROM t WHERE body NOT LIKE ?", (SLOW,))


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())


def test_a_statement_past_its_budget_is_interrupted_and_rolled_back(
    engine: sa.Engine, watchdog: Watchdog
) -> None:
    budget = Budget(200, SETTING)
    limit = rf"longer than {SETTING} \(200 ms\)"
    with engine.connect() as conn:
        with pytest.raises(DeadlineExceeded, match=limit), watchdog.guard(conn, budget):
            slow_delete(conn)
            conn.commit()
        conn.rollback()
        assert budget.fired == "budget"
        # the same connection runs the next statement: no interrupt is left over
        with watchdog.guard(conn, Budget(60_000, SETTING)):
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == ROWS
    assert count(engine) == ROWS


def test_the_calls_deadline_stops_it_when_sooner(engine: sa.Engine, watchdog: Watchdog) -> None:
    budget = Budget(60_000, SETTING, timeout_s=0.2)
    passed = pytest.raises(DeadlineExceeded, match="the call's deadline passed")
    with engine.connect() as conn, passed, watchdog.guard(conn, budget):
        slow_delete(conn)
    assert count(engine) == ROWS


def test_a_deadline_already_passed_runs_nothing(engine: sa.Engine, watchdog: Watchdog) -> None:
    budget = Budget(60_000, SETTING, timeout_s=-1)
    ran = []
    passed = pytest.raises(DeadlineExceeded, match="deadline passed")
    with engine.connect() as conn, passed, watchdog.guard(conn, budget):
        ran.append(1)
    assert ran == []


def test_cancel_interrupts_the_running_statement(engine: sa.Engine, watchdog: Watchdog) -> None:
    budget = Budget(60_000, SETTING)
    started = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        with engine.connect() as conn:
            try:
                with watchdog.guard(conn, budget):
                    started.set()
                    slow_delete(conn)
                    conn.commit()
            except Exception as exc:
                outcome.append(exc)

    th = threading.Thread(target=run)
    th.start()
    assert started.wait(30)
    watchdog.cancel(budget)
    th.join(60)  # a bound, not a measurement: the whole scan would take several seconds
    assert not th.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
    assert count(engine) == ROWS
    with engine.connect() as conn, pytest.raises(Cancelled), watchdog.guard(conn, budget):
        pass  # no later step starts


def test_quick_statements_pass_and_each_step_gets_the_whole_budget(
    engine: sa.Engine, watchdog: Watchdog
) -> None:
    budget = Budget(60_000, SETTING)
    with engine.connect() as conn:
        cursor = None
        for _ in range(3):
            with watchdog.guard(conn, budget):
                if cursor is None:
                    cursor = conn.exec_driver_sql("SELECT id FROM t ORDER BY id").cursor
                assert len(cursor.fetchmany(10)) == 10
        with watchdog.guard(conn, budget):
            conn.exec_driver_sql("DELETE FROM t WHERE id = 1")
            conn.commit()
    assert budget.fired is None
    assert count(engine) == ROWS - 1


def test_errors_other_than_the_interrupt_pass_through(engine: sa.Engine, watchdog: Watchdog) -> None:
    missing = pytest.raises(sa.exc.OperationalError, match="no such table")
    with engine.connect() as conn, missing, watchdog.guard(conn, Budget(60_000, SETTING)):
        conn.exec_driver_sql("SELECT * FROM missing")


def test_no_budget_means_unguarded(engine: sa.Engine, watchdog: Watchdog) -> None:
    with engine.connect() as conn, watchdog.guard(conn, None):
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == ROWS
