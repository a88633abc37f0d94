"""What the conductor counts for its metrics, and what a scrape reads.

The lifecycle (:class:`Counts`), the gate, the audit log and the reload paths count as
they go, in plain numbers changed on the event loop only: a few dict updates per task,
nothing next to a commit, and no SQL. A scrape (``metrics_listen``, see
:mod:`orchestra.metrics`) asks the loop for one :class:`Snapshot`, taken by
:func:`take_snapshot` on the loop, and turns it into metric families with
:func:`families` in the HTTP server's thread.

This module does not import prometheus_client: :func:`families` does, the first time a
scrape calls it, so a conductor without ``metrics_listen`` never loads it.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from conductor.state import ConductorState, StateMachine
from conductor.states import TERMINAL, TaskState
from orchestra import log
from orchestra.outcome import FINISHED_STATUSES, TaskOutcome
from orchestra.tls import Material

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from conductor.auth import Gate, Revocation
    from conductor.lifecycle import Lifecycle

RELOADED_PARTS = ("players_file", "policy", "certificate", "crl")
# Dispatch to result: ~10 ms for a trivial task on a quiet conductor, hours for a long score.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                   3600.0, 14400.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
# Run times are labelled by score. Only tasks that ran are timed, so the names are those
# of scores installed on players; past this many, the rest share one label value, so no
# number of scores grows the series without bound. No score name starts with "_".
MAX_SCORE_LABELS = 100
OTHER_SCORES = "_other"
# A player certificate expiring within this many days is counted as expiring (the same
# horizon as the conductor's certificate_expiring warning).
EXPIRY_HORIZON_DAYS = 30
_OK, _NOT_OK = 1, 2  # what the tasks of an open job ended as so far


class Tally:
    """A histogram as plain numbers: how many observations fell in each bucket (the last
    one above every bound), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # a value on a bound counts in it
        self.sum += value

    def copy(self) -> Tally:
        copied = Tally(self.bounds)
        copied.counts, copied.sum = list(self.counts), self.sum
        return copied

    @property
    def count(self) -> int:
        return sum(self.counts)


class Counts:
    """What the lifecycle counts as jobs and tasks move, on the event loop only.

    Jobs finished are counted by status without reading the queue: each open job keeps
    whether any of its tasks ended ok and whether any ended otherwise, and the status
    follows from those two bits when the job finishes (jobs open when the conductor
    started get theirs from :meth:`job_restored`). Run times and dispatch-to-result
    latencies are measured for the tasks this process dispatched.
    """

    def __init__(self) -> None:
        self.jobs_submitted = 0
        self.jobs_finished: Counter[str] = Counter(dict.fromkeys(FINISHED_STATUSES, 0))
        self.tasks_ended: Counter[str] = Counter(dict.fromkeys(sorted(TERMINAL), 0))
        self.dispatch_to_result = Tally(LATENCY_BUCKETS)
        self.run_seconds: dict[str, Tally] = {}
        self._sent: dict[str, tuple[float, str]] = {}  # task id -> (monotonic time sent, score)
        self._jobs: dict[str, int] = {}  # open job id -> _OK | _NOT_OK bits

    def job_submitted(self, job_id: str) -> None:
        self.jobs_submitted += 1
        self._jobs[job_id] = 0

    def job_restored(self, job_id: str, states: Mapping[TaskState, int]) -> None:
        """A job open when the conductor started, with its tasks by state so far."""
        bits = _OK if states.get(TaskState.OK) else 0
        if any(count and state.terminal and state != TaskState.OK for state, count in states.items()):
            bits |= _NOT_OK
        self._jobs[job_id] = bits

    def dispatched(self, task_id: str, score: str) -> None:
        self._sent[task_id] = (time.monotonic(), score)

    def sent(self, task_id: str) -> tuple[float, str] | None:
        """When this process sent the task and its score (None: before it started)."""
        return self._sent.get(task_id)

    def task_moved(self, job_id: str, task_id: str, state: TaskState) -> None:
        """A committed move of one task."""
        if state.terminal:
            self._sent.pop(task_id, None)
            self.tasks_ended[state.value] += 1
            if job_id in self._jobs:
                self._jobs[job_id] |= _OK if state == TaskState.OK else _NOT_OK
        elif state == TaskState.QUEUED:
            self._sent.pop(task_id, None)  # back in the queue: timed again from its next dispatch

    def attempt_ended(self, state: TaskState) -> None:
        """An attempt ended so and its task was queued again (the score's retries): the
        ending is counted, but not for its job's status, which the retry decides."""
        self.tasks_ended[state.value] += 1

    def job_finished(self, job_id: str) -> None:
        bits = self._jobs.pop(job_id, None)
        if bits is not None:
            self.jobs_finished["ok" if bits == _OK else "partial_fail" if bits == _OK | _NOT_OK else "failed"] += 1

    def result(self, sent: tuple[float, str] | None, outcome: TaskOutcome) -> None:
        """A player's result was committed: the time since its dispatch and, if the score
        ran, how long it ran (both times from the player's clock)."""
        if sent is None:
            return
        since, score = sent
        self.dispatch_to_result.observe(time.monotonic() - since)
        if outcome.started_at and outcome.finished_at and outcome.finished_at >= outcome.started_at:
            tally = self.run_seconds.get(score)
            if tally is None:
                if len(self.run_seconds) >= MAX_SCORE_LABELS:
                    score = OTHER_SCORES
                tally = self.run_seconds.setdefault(score, Tally(RUN_BUCKETS))
            tally.observe(outcome.finished_at - outcome.started_at)


# ---- a scrape --------------------------------------------------------------------------

class Watched(Protocol):
    """What a scrape reads: the running conductor (conductor.main.Conductor)."""

    lifecycle: Lifecycle
    gate: Gate
    revocation: Revocation
    material: Material
    reload_failures: Counter[str]
    state: StateMachine


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape shows, copied on the event loop at one moment."""

    players_connected: int
    players_offline: int
    open_tasks: dict[str, int]
    queue_depth: int
    oldest_queued_at: float | None
    jobs_submitted: int
    jobs_finished: dict[str, int]
    tasks_ended: dict[str, int]
    dispatch_to_result: Tally
    run_seconds: dict[str, Tally]
    handshakes_refused: dict[str, int]
    calls_refused: dict[str, int]
    audit_write_failures: int
    audit_pending: int
    reload_failures: dict[str, int]
    material: Material
    # The player certificate that expires first (name, not_after), and how many expire
    # within EXPIRY_HORIZON_DAYS, of the players in the players file.
    first_player_expiry: tuple[str, float] | None
    players_expiring: int
    # None: no CRL configured; else whether it is usable and each CRL's next update.
    crl: tuple[bool, tuple[tuple[str, float | None], ...]] | None = None
    players_drained: int = 0
    tasks_held: int = 0  # queued tasks a rollout holds back
    state: ConductorState = ConductorState.STARTING  # the conductor's own
    followers: int = 0  # live output viewers open (getstatus --follow, web view)
    output_dropped_bytes: int = 0  # live output a viewer had no room for
    taken_at: float = field(default_factory=time.time)


def player_certificates(lifecycle: Lifecycle, now: float) -> tuple[tuple[str, float] | None, int]:
    """The first player certificate to expire and how many expire within the horizon,
    from what each player of the players file last connected with: one pass over the
    roster (about 1.3 ms for 10,000 players)."""
    known = lifecycle.sessions.known
    horizon = now + EXPIRY_HORIZON_DAYS * 86400
    first: tuple[str, float] | None = None
    expiring = 0
    for name in lifecycle.sessions.roster:
        record = known.get(name)
        if record is None or not record.cert_not_after:
            continue
        if first is None or record.cert_not_after < first[1]:
            first = (name, record.cert_not_after)
        if record.cert_not_after < horizon:
            expiring += 1
    return first, expiring


async def take_snapshot(watched: Watched) -> Snapshot:
    """On the event loop: copy what the scrape shows. One read of the queue (the open
    tasks by state, from a partial index); everything else is in memory."""
    lifecycle, counts = watched.lifecycle, watched.lifecycle.counts
    sessions, index, revocation = lifecycle.sessions, lifecycle.index, watched.revocation
    now = time.time()
    first, expiring = player_certificates(lifecycle, now)
    crl = None if revocation.path is None else (revocation.unusable() is None, revocation.next_updates)
    open_tasks = await lifecycle.store.open_task_counts()
    return Snapshot(
        players_connected=sessions.connected(), players_offline=sessions.offline(),
        open_tasks={state.value: count for state, count in open_tasks.items()},
        queue_depth=index.depth(), oldest_queued_at=index.oldest_created_at(),
        jobs_submitted=counts.jobs_submitted, jobs_finished=dict(counts.jobs_finished),
        tasks_ended=dict(counts.tasks_ended), dispatch_to_result=counts.dispatch_to_result.copy(),
        run_seconds={score: tally.copy() for score, tally in counts.run_seconds.items()},
        handshakes_refused=dict(log.handshake_refusals), calls_refused=dict(watched.gate.refusals),
        audit_write_failures=lifecycle.audit.write_failures, audit_pending=len(lifecycle.audit.backlog),
        reload_failures=dict(watched.reload_failures), material=watched.material,
        first_player_expiry=first, players_expiring=expiring, crl=crl,
        players_drained=sum(1 for name in lifecycle.drained if name in sessions.roster),
        tasks_held=lifecycle.rollouts.holding(), state=watched.state.current,
        followers=lifecycle.output.open_viewers, output_dropped_bytes=lifecycle.output.dropped_bytes)


def families(snapshot: Snapshot) -> list[Metric]:
    """The conductor's metric families (README, "Monitoring"), in the scraping thread."""
    from prometheus_client.core import GaugeMetricFamily

    from orchestra import metrics as m

    p = "orchestra_conductor"
    now = time.time()
    oldest = 0.0 if snapshot.oldest_queued_at is None else max(0.0, now - snapshot.oldest_queued_at)
    found: list[Metric] = [
        m.gauges(f"{p}_state", "The conductor's state: 1 for the one it is in (starting, recovering, serving,"
                 " draining), 0 for the others.", "state",
                 {state.value: 1.0 if state is snapshot.state else 0.0 for state in ConductorState}),
        GaugeMetricFamily(f"{p}_players_connected", "Players with a live session.",
                          value=snapshot.players_connected),
        GaugeMetricFamily(f"{p}_players_offline", "Players in the players file without a live session.",
                          value=snapshot.players_offline),
        m.gauges(f"{p}_open_tasks", "Tasks not ended, by state, as the queue has them.", "state",
                 snapshot.open_tasks),
        GaugeMetricFamily(f"{p}_players_drained", "Players in the players file that are drained (no new tasks).",
                          value=snapshot.players_drained),
        GaugeMetricFamily(f"{p}_queue_depth", "Tasks waiting to be dispatched (the in-memory dispatch index).",
                          value=snapshot.queue_depth),
        GaugeMetricFamily(f"{p}_tasks_held", "Queued tasks their rollout holds back (canary, batch window).",
                          value=snapshot.tasks_held),
        GaugeMetricFamily(f"{p}_queue_oldest_age_seconds", "Seconds since the job of the longest-waiting queued"
                          " task was submitted (0: none queued).", value=oldest),
        m.counter(f"{p}_jobs_submitted_total", "Jobs queued (a repeated idempotency key queues none).",
                  snapshot.jobs_submitted),
        m.counters(f"{p}_jobs_finished_total", "Jobs finished, by status.", "status", snapshot.jobs_finished),
        m.counters(f"{p}_tasks_ended_total", "Tasks that reached a final state, by that state.", "state",
                   snapshot.tasks_ended),
        m.histogram(f"{p}_dispatch_to_result_seconds",
                    "Seconds from sending a task to its player to committing the result the player reported.",
                    [], {(): snapshot.dispatch_to_result}),
        m.histogram(f"{p}_task_run_seconds", "Seconds a score ran, by score (as measured on its player).",
                    ["score"], {(score,): tally for score, tally in snapshot.run_seconds.items()}),
        m.counters(f"{p}_tls_handshakes_refused_total", "TLS handshakes refused on the public port, by reason.",
                   "reason", snapshot.handshakes_refused),
        m.counters(f"{p}_calls_refused_total", "Calls refused by authentication or authorization, by reason.",
                   "reason", snapshot.calls_refused),
        GaugeMetricFamily(f"{p}_live_output_followers", "Live output followers open (getstatus --follow, web"
                          " view).", value=snapshot.followers),
        m.counter(f"{p}_live_output_dropped_bytes_total", "Live output bytes a follower had no room for (it was"
                  " told how many it missed).", snapshot.output_dropped_bytes),
        m.counter(f"{p}_audit_write_failures_total", "Audit lines that could not be written when recorded.",
                  snapshot.audit_write_failures),
        GaugeMetricFamily(f"{p}_audit_pending_lines", "Audit lines kept in memory until the file can be written.",
                          value=snapshot.audit_pending),
        m.counters(f"{p}_reload_failures_total", "Reloads that failed and kept the old value, by part.", "part",
                   snapshot.reload_failures),
        m.certificate_gauges(f"{p}_certificate_expires_in_seconds",
                             "Seconds until the conductor's certificate and each CA certificate of its bundle expire.",
                             m.certificate_expiries("conductor", snapshot.material.cert, snapshot.material.ca), now),
        GaugeMetricFamily(f"{p}_player_certificates_expiring",
                          f"Players in the players file whose last certificate expires within {EXPIRY_HORIZON_DAYS}"
                          " days (or has expired).", value=snapshot.players_expiring),
    ]
    first = GaugeMetricFamily(f"{p}_player_certificate_min_expires_in_seconds",
                              "Seconds until the first player certificate to expire does so (of the players in the"
                              " players file, as they last connected); the label names that player.",
                              labels=["player"])
    if snapshot.first_player_expiry is not None:
        first.add_metric([snapshot.first_player_expiry[0]], snapshot.first_player_expiry[1] - now)
    found.append(first)
    if snapshot.crl is not None:
        usable, next_updates = snapshot.crl
        found.append(GaugeMetricFamily(f"{p}_crl_usable", "1 if the CRL is current; 0: it is unreadable or stale,"
                                       " and every certificate is refused.", value=1.0 if usable else 0.0))
        found.append(m.gauges(f"{p}_crl_next_update_in_seconds", "Seconds until each CRL's nextUpdate, by issuer.",
                              "issuer", {issuer: at - now for issuer, at in next_updates if at is not None}))
    return found
