"""The PostgreSQL store and the lease on a real server: the state table enforced by the
database, fenced writes, refused settings, and who may take the lease when."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from conductor.leadership import Lease
from conductor.main import Conductor
from conductor.states import TaskState
from conductor.store import NewJob, open_store
from conductor.store.postgresql import Fenced, PgDatabase, translate
from orchestra.db import Unavailable
from orchestra.errors import StartupError


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_the_store_sql_is_translated_once_and_only_where_it_differs() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE '5%'", True) == \
        "SELECT a FROM t WHERE b = %s AND c LIKE '5%%'"
    assert translate("SELECT a FROM t WHERE c LIKE '5%'", False) == "SELECT a FROM t WHERE c LIKE '5%'"
    assert "json_each_text(tasks.response::json)" in translate(
        "SELECT DISTINCT entry.value FROM tasks, json_each(tasks.response) AS entry WHERE x = ?", True)
    assert translate("WHERE +jobs.status IN (?, ?)", True) == "WHERE jobs.status IN (%s, %s)"


def test_the_database_refuses_what_the_state_table_forbids(tmp_path: Path, pg_dsn: str) -> None:
    async def scenario() -> str:
        store = open_store(tmp_path, "postgresql", pg_dsn)
        job_id = (await store.submit(NewJob("hello", "all", ("p1",), {}, (), "me", 2e9))).job_id
        store.close()
        return job_id
    job_id = run(scenario())
    with psycopg.connect(pg_dsn) as pg:
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="illegal task state transition"):
            pg.execute("UPDATE tasks SET state = 'ok' WHERE id = %s", (f"{job_id}.0",))
        pg.rollback()
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="tasks start queued"):
            pg.execute("INSERT INTO tasks (id, job_id, state, updated_at) VALUES ('x.0', %s, 'running', 0)",
                       (job_id,))
        pg.rollback()
        pg.execute("UPDATE tasks SET state = 'dispatched' WHERE id = %s", (f"{job_id}.0",))  # allowed


def test_a_fenced_store_commits_nothing_and_says_it_lost_the_lead(tmp_path: Path, pg_dsn: str) -> None:
    lost: list[str] = []
    open_store(tmp_path, "postgresql", pg_dsn).close()  # the schema, the lease table with it
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        pg.execute("INSERT INTO leader VALUES (1, 7, 'test', 'here', '127.0.0.1:1', now(), now() + interval '1 h')")

    async def scenario() -> None:
        store = open_store(tmp_path, "postgresql", pg_dsn, epoch=7, on_lost=lost.append)
        await store.submit(NewJob("hello", "all", ("p1",), {}, (), "me", 2e9))
        with psycopg.connect(pg_dsn, autocommit=True) as pg:  # another conductor takes over
            pg.execute("UPDATE leader SET epoch = 8")
        with pytest.raises(Fenced):
            await store.submit(NewJob("hello", "all", ("p1",), {}, (), "me", 2e9))
        store.close()
    run(scenario())
    assert len(lost) == 1 and "epoch is 8" in lost[0]
    with psycopg.connect(pg_dsn) as pg:
        row = pg.execute("SELECT count(*) FROM jobs").fetchone()
        assert row is not None and row[0] == 1
    assert issubclass(Fenced, Unavailable)


def test_a_server_that_would_not_make_commits_durable_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        name = pg.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        pg.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    with pytest.raises(StartupError, match="synchronous_commit = off"):
        PgDatabase(pg_dsn)


def test_a_dsn_that_cannot_connect_fails_in_one_line_without_its_password(tmp_path: Path) -> None:
    dsn = "host=127.0.0.1 port=1 user=x password=hunter2 dbname=y connect_timeout=2"
    with pytest.raises(StartupError) as caught:
        open_store(tmp_path, "postgresql", dsn)
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)


def test_the_lease_is_taken_once_renewed_by_its_holder_and_taken_over_only_once_it_lapsed(
        tmp_path: Path, pg_dsn: str) -> None:
    async def scenario() -> None:
        first = Lease(pg_dsn, 1.0, "first", "127.0.0.1:1", "host:/one")
        second = Lease(pg_dsn, 1.0, "second", "127.0.0.1:2", "host:/two")
        try:
            assert await first.acquire() == 1
            assert await second.acquire() is None  # held
            assert await second.leader() == "127.0.0.1:1"
            assert await first.renew() is True
            await asyncio.sleep(1.3)  # first stops renewing: the lease lapses
            assert await second.acquire() == 2
            assert await first.renew() is False  # taken over: first must step down
            assert await first.leader() == "127.0.0.1:2"
            # A restart of the same conductor (same host and state_dir) takes its own lease back at once.
            again = Lease(pg_dsn, 1.0, "second, restarted", "127.0.0.1:2", "host:/two")
            assert await again.acquire() == 3
            assert await second.renew() is False
            await again.release()
            started = time.monotonic()
            assert await first.acquire() == 4  # released: no need to wait for it to lapse
            assert time.monotonic() - started < 1.0
            again.close()
        finally:
            first.close()
            second.close()
    run(scenario())


@pytest.mark.parametrize("frozen", [True, False])
def test_a_leader_says_why_its_renewal_ran_out(pg_dsn: str, frozen: bool) -> None:
    """A renewal's timeout is due when the lease ends. A leader frozen while it waits
    (SIGSTOP) wakes with that timeout long overdue: it stepped down because it did not
    run, though the database answered. One whose renewal hangs while it runs blames the
    database."""
    async def scenario() -> str:
        lease = Lease(pg_dsn, 1.0, "leader", "127.0.0.1:1", f"host:/{frozen}")
        renew = lease.renew

        async def stuck() -> bool | None:
            if frozen:
                time.sleep(1.5)  # the whole process stops once the renewal is asked
                return await renew()
            await asyncio.Event().wait()  # no answer, while the process runs on
            return None
        try:
            assert await lease.acquire() is not None
            lease.renew = stuck  # type: ignore[method-assign]
            conductor = Conductor.__new__(Conductor)  # only what stepping down uses
            conductor.lease, conductor.lost = lease, ""
            conductor.stopping, conductor.stop_now = asyncio.Event(), asyncio.Event()
            await asyncio.wait_for(conductor._keep_lease(), 10)  # noqa: SLF001
            assert conductor.stopping.is_set() and conductor.stop_now.is_set()
            return conductor.lost
        finally:
            lease.close()
    reason = run(scenario())
    if frozen:
        assert reason.startswith("the lease ran out ")
        assert reason.endswith(" while this conductor did not run to renew it")
    else:
        assert reason == "could not renew the lease in 1 s: the database does not answer"


def test_a_takeover_waits_for_the_holders_open_write_and_fences_the_next(tmp_path: Path, pg_dsn: str) -> None:
    """The old leader's transaction that passed its epoch check commits before the
    takeover; the one after the takeover is fenced."""
    open_store(tmp_path, "postgresql", pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        pg.execute("INSERT INTO leader VALUES (1, 1, 'old', 'old', '127.0.0.1:1', now(), now() - interval '1 s')")
    holder = psycopg.connect(pg_dsn)
    holder.execute("SELECT epoch FROM leader WHERE id = 1 FOR KEY SHARE")  # a write transaction under way

    async def scenario() -> int | None:
        lease = Lease(pg_dsn, 4.0, "new", "127.0.0.1:2", "host:/new")
        try:
            taking = asyncio.ensure_future(lease.acquire())
            await asyncio.sleep(0.5)
            assert not taking.done()  # waits for the old leader's transaction
            holder.commit()
            return await taking
        finally:
            lease.close()
    try:
        assert run(scenario()) == 2
        row = holder.execute("SELECT epoch FROM leader WHERE id = 1 FOR KEY SHARE").fetchone()
        assert row is not None and row[0] == 2  # its next check sees the new epoch
    finally:
        holder.close()


def test_every_store_verb_round_trips_a_task_through_its_states(tmp_path: Path, pg_dsn: str) -> None:
    async def scenario() -> None:
        store = open_store(tmp_path, "postgresql", pg_dsn)
        job_id = (await store.submit(NewJob("hello", "all", ("p1", "p2"), {"A": "1"}, (), "me", 2e9))).job_id
        claimed = await store.claim_many([(f"{job_id}.0", "p1"), (f"{job_id}.1", "p2")])
        assert [c.attempt for c in claimed] == [1, 1]
        await store.transition(f"{job_id}.0", TaskState.RUNNING, detail="granted")
        change = await store.transition(f"{job_id}.0", TaskState.OK, detail="done")
        assert change.applied and not change.job_finished
        await store.transition(f"{job_id}.1", TaskState.RUNNING, detail="granted")
        assert (await store.transition(f"{job_id}.1", TaskState.FAILED, detail="done")).job_finished
        job = await store.get_job(job_id)
        assert job is not None and job.status == "partial_fail" and [t.state for t in job.tasks] == [
            TaskState.OK, TaskState.FAILED]
        assert await store.delete_job(job_id) is True
        assert await store.get_job(job_id) is None
        store.close()
    run(scenario())
