"""The player's durable record of every task it accepted, started and finished.

Each step is committed (WAL, synchronous=FULL) before the conductor hears of it, so after
any crash or reconnect the player knows exactly what it has done: an attempt of a task it
already holds is never run again, and a finished result is re-sent until acknowledged.
Acknowledged entries stay as tombstones for a while so late duplicates are still refused.

One entry per task id: a later attempt of the task (the conductor retried it) replaces the
entry once the earlier attempt is over here (finished or acknowledged); while the earlier
one is still accepted or started here, the later one is refused (:meth:`Spool.admit`).

``PRAGMA user_version`` is the layout of the stored results: a spool left by an older
player is converted on open, so an unacknowledged result survives the upgrade.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orchestra.db import Database, Transaction
from orchestra.errors import StartupError
from orchestra.wire import common_pb2, player_pb2

TOMBSTONE_SECONDS = 7 * 86400
# 2: results are protocol 2's TaskResult (outcome in a TaskOutcome); 0 or 1: protocol 1's.
SPOOL_VERSION = 2


class Step(StrEnum):
    ACCEPTED = "accepted"
    STARTED = "started"
    FINISHED = "finished"
    ACKED = "acked"


class Verdict(StrEnum):
    """What :meth:`Spool.admit` made of a RunTask."""

    NEW = "new"  # a task id the spool did not hold: recorded, to be run
    NEW_ATTEMPT = "new_attempt"  # a later attempt; the earlier one is over: replaced, to be run
    DUPLICATE = "duplicate"  # this attempt, or a later one, is held already: never run twice
    BUSY = "busy"  # a later attempt while the earlier one is still accepted or started here


@dataclass(frozen=True)
class Entry:
    task_id: str
    attempt: int
    job_id: str
    score: str
    params: dict[str, str]
    requester: str
    deadline_at: float
    step: Step
    pid: int | None
    proc_start: int | None
    kill_at: float | None
    result: player_pb2.TaskResult | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        result = None
        if row["result"] is not None:
            result = player_pb2.TaskResult.FromString(row["result"])
        return cls(row["task_id"], row["attempt"], row["job_id"], row["score"],
                   json.loads(row["params"]), row["requester"], row["deadline_at"],
                   Step(row["step"]), row["pid"], row["proc_start"], row["kill_at"], result)

    def to_wire(self) -> player_pb2.SpoolEntry:
        """The entry as the Hello lists it: where the task stands, never its result (which
        follows the Hello in a message of its own, protocol 3)."""
        state = {
            Step.ACCEPTED: player_pb2.SPOOL_STATE_ACCEPTED,
            Step.STARTED: player_pb2.SPOOL_STATE_STARTED,
            Step.FINISHED: player_pb2.SPOOL_STATE_FINISHED,
        }[self.step]
        return player_pb2.SpoolEntry(task_id=self.task_id, attempt=self.attempt, state=state)


@dataclass(frozen=True)
class Admission:
    """A RunTask as the spool took it: ``entry`` is the one recorded for it (NEW,
    NEW_ATTEMPT) or the one the spool holds and keeps (DUPLICATE, BUSY); ``replaced`` is
    the earlier attempt's entry a NEW_ATTEMPT took the place of."""

    verdict: Verdict
    entry: Entry
    replaced: Entry | None = None

    @property
    def runs(self) -> bool:
        return self.verdict in (Verdict.NEW, Verdict.NEW_ATTEMPT)


def _schema(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE spool (
            task_id TEXT PRIMARY KEY,
            attempt INTEGER NOT NULL,
            job_id TEXT NOT NULL,
            score TEXT NOT NULL,
            params TEXT NOT NULL,
            requester TEXT NOT NULL,
            deadline_at REAL NOT NULL,
            step TEXT NOT NULL CHECK (step IN ('accepted','started','finished','acked')),
            pid INTEGER,
            proc_start INTEGER,
            kill_at REAL,
            result BLOB,
            accepted_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            acked_at REAL
        )""")


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Create a new spool at SPOOL_VERSION, or bring an older one up to it: one transaction."""
    with Transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SPOOL_VERSION:
            raise StartupError(f"{path} was written by a newer player (spool version {version},"
                               f" this player knows {SPOOL_VERSION})")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spool'").fetchone():
            if version < 2:
                _convert_protocol1_results(conn)
        else:
            _schema(conn)
        # Hellos read the unacknowledged entries, acks purge old tombstones: both indexed.
        conn.execute("CREATE INDEX IF NOT EXISTS spool_pending ON spool(accepted_at) WHERE step != 'acked'")
        conn.execute("CREATE INDEX IF NOT EXISTS spool_acked ON spool(acked_at) WHERE step = 'acked'")
        # PRAGMA does not take parameters; SPOOL_VERSION is a constant int.
        conn.execute(f"PRAGMA user_version = {SPOOL_VERSION}")


def _convert_protocol1_results(conn: sqlite3.Connection) -> None:
    rows = conn.execute("SELECT task_id, result FROM spool WHERE result IS NOT NULL").fetchall()
    for row in rows:
        result = _from_protocol1(row["result"])
        conn.execute("UPDATE spool SET result = ? WHERE task_id = ?",
                     (result.SerializeToString(), row["task_id"]))


def _from_protocol1(blob: bytes) -> player_pb2.TaskResult:
    """Protocol 1 kept the outcome's fields at TaskResult numbers 4..15; TaskOutcome uses
    the same numbers, so the old blob parses as both messages (extra fields unknown)."""
    result = player_pb2.TaskResult.FromString(blob)
    if result.HasField("outcome"):
        return result  # already protocol 2: converting again would lose the outcome
    outcome = common_pb2.TaskOutcome.FromString(blob)
    outcome.DiscardUnknownFields()
    return player_pb2.TaskResult(task_id=result.task_id, attempt=result.attempt,
                                 ending=result.ending, outcome=outcome)


class Spool:
    def __init__(self, spool_dir: Path) -> None:
        # Params (secret ones too) are kept here until the task is done: owner only.
        spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        spool_dir.chmod(0o700)
        self.db = Database(spool_dir / "spool.db")
        try:
            self.db.call(_prepare, self.db.conn, self.db.path)
        except Exception:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # Which records are awaited (durable before the conductor hears of the step) and
    # which are not is argued in docs/ARCHITECTURE.md, "What each side commits, and why".

    async def admit(self, run: player_pb2.RunTask) -> Admission:
        """Record a task to run, or say why not; one transaction, durable before the start
        request (a restarted player still knows it).

        At most once per attempt: an attempt no later than the one held is a duplicate. A
        later attempt replaces the entry only once the earlier attempt is over here
        (finished or acknowledged: the conductor sends a new attempt only after it has
        committed how the earlier one ended); while the earlier one is accepted or started,
        it may still run here, so the later one is BUSY and the entry is kept as it is."""
        def op(conn: sqlite3.Connection) -> Admission:
            held = _get(conn, run.task_id)
            if held is None:
                return Admission(Verdict.NEW, _insert(conn, run))
            if run.attempt <= held.attempt:
                return Admission(Verdict.DUPLICATE, held)
            if held.step in (Step.ACCEPTED, Step.STARTED):
                return Admission(Verdict.BUSY, held)
            conn.execute("DELETE FROM spool WHERE task_id = ?", (run.task_id,))
            return Admission(Verdict.NEW_ATTEMPT, _insert(conn, run), replaced=held)
        return await self.db.write(op)

    async def accept(self, run: player_pb2.RunTask) -> Entry | None:
        """:meth:`admit`: the entry recorded for the task to run, None if it is not to run."""
        admission = await self.admit(run)
        return admission.entry if admission.runs else None

    async def mark_started(self, task_id: str, attempt: int, kill_at: float) -> None:
        """Durable before the score is spawned: a crash after this is never re-run."""
        await self.db.write(_update, task_id, attempt, "step = ?, started_at = ?, kill_at = ?",
                            (Step.STARTED, time.time(), kill_at), Step.ACCEPTED)

    async def set_process(self, task_id: str, attempt: int, pid: int, proc_start: int | None) -> None:
        """Durable before the result is: a restarted player finds the orphan by it,
        enforces its timeout and reports how it ended."""
        await self.db.write(_update, task_id, attempt, "pid = ?, proc_start = ?", (pid, proc_start),
                            Step.STARTED)

    async def finish(self, result: player_pb2.TaskResult) -> bool:
        """Record the result; False if that attempt was already finished (first result
        wins) or is not the one held. Durable before the result is sent: it is re-sent
        until acknowledged."""
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE spool SET step = ?, result = ?, finished_at = ? WHERE task_id = ?"
                " AND attempt = ? AND step IN ('accepted', 'started')",
                (Step.FINISHED, result.SerializeToString(), time.time(), result.task_id,
                 result.attempt))
            return cur.rowcount == 1
        return await self.db.write(op)

    async def ack(self, task_id: str, attempt: int) -> bool:
        """The conductor has the result: keep a tombstone only. False if not ours: an ack
        of another attempt than the one held touches nothing."""
        return await self.db.write(_ack, task_id, attempt)

    def ack_later(self, task_id: str, attempt: int) -> None:
        """:meth:`ack`, not waited for: if it is lost in a crash, the result is re-sent
        once more and the conductor, which has it already, acknowledges it again."""
        self.db.write_later(_ack, task_id, attempt)

    async def get(self, task_id: str) -> Entry | None:
        return await self.db.run(_get, self.db.conn, task_id)

    async def counts(self) -> dict[Step, int]:
        """How many entries are at each step (for the metrics): the unacknowledged ones
        and the tombstones, each counted from its own partial index."""
        def op(conn: sqlite3.Connection) -> dict[Step, int]:
            counts = dict.fromkeys(Step, 0)
            for step, count in conn.execute("SELECT step, COUNT(*) FROM spool WHERE step != 'acked' GROUP BY step"):
                counts[Step(step)] = count
            counts[Step.ACKED] = conn.execute("SELECT COUNT(*) FROM spool WHERE step = 'acked'").fetchone()[0]
            return counts
        return await self.db.run(op, self.db.conn)

    async def pending(self) -> list[Entry]:
        """Every entry not yet acknowledged, oldest first."""
        def op(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute("SELECT * FROM spool WHERE step != 'acked' ORDER BY accepted_at")
            return [Entry.from_row(row) for row in rows]
        return await self.db.run(op, self.db.conn)



def _insert(conn: sqlite3.Connection, run: player_pb2.RunTask) -> Entry:
    conn.execute(
        "INSERT INTO spool (task_id, attempt, job_id, score, params, requester,"
        " deadline_at, step, accepted_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (run.task_id, run.attempt, run.job_id, run.score,
         json.dumps(dict(run.params), sort_keys=True), run.requester,
         run.deadline_at, Step.ACCEPTED, time.time()))
    entry = _get(conn, run.task_id)
    assert entry is not None  # inserted just now, in this transaction
    return entry


def _ack(conn: sqlite3.Connection, task_id: str, attempt: int) -> bool:
    now = time.time()
    cur = conn.execute("UPDATE spool SET step = ?, acked_at = ?, result = NULL, params = '{}'"
                       " WHERE task_id = ? AND attempt = ? AND step = 'finished'",
                       (Step.ACKED, now, task_id, attempt))
    conn.execute("DELETE FROM spool WHERE step = 'acked' AND acked_at < ?", (now - TOMBSTONE_SECONDS,))
    return cur.rowcount == 1


def _update(conn: sqlite3.Connection, task_id: str, attempt: int, sets: str, values: tuple[object, ...],
            expect: Step) -> None:
    cur = conn.execute(f"UPDATE spool SET {sets} WHERE task_id = ? AND attempt = ? AND step = ?",
                       (*values, task_id, attempt, expect))
    if cur.rowcount != 1:
        raise RuntimeError(f"spool entry {task_id} is not {expect} at attempt {attempt}")


def _get(conn: sqlite3.Connection, task_id: str) -> Entry | None:
    row = conn.execute("SELECT * FROM spool WHERE task_id = ?", (task_id,)).fetchone()
    return Entry.from_row(row) if row else None
