"""Listing a large queue: ``listjobs`` and ``getstatus`` as real processes (``.venv/bin/python bench/listing.py``).

Fills a fresh queue with N jobs through the store's own verbs, in-process and before any
daemon starts (submit, claim, running, then ok or failed; about 1 % left queued), then
starts the real conductor on it (devtools.devcluster; no player needs to run) and times
real CLI processes over the local socket, each figure the median of R runs:

  * ``listjobs`` (the newest 50), ``--limit 1000``, ``--state failed``, ``--state pending``,
    ``--score`` of a rare score, ``--target`` of a common host and of a rare one,
    ``--requester`` of one certificate, ``--since 1h``; and ``getstatus JOBID`` of a
    finished job.
  * the conductor's CPU per call, from /proc, over the same calls.

The floor is ``python -c "import grpc"`` (as for getstatus in bench/run.py): run alternately
with each figure's runs, so each row has its own floor from the same minutes and the same
load. Every job is created during the fill, so ``--since 1h`` matches all of them (it
walks the same index as the unfiltered listing, with one more bound).

``--json PATH`` also writes every figure, floor and raw measurement as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pwd
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conductor.states import TaskState  # noqa: E402
from conductor.store import NewJob, QueuedTask, Store, open_store  # noqa: E402
from devtools.devcluster import Cluster, Proc  # noqa: E402
from measure import cpu_seconds, timed_cli  # noqa: E402
from orchestra.outcome import TaskOutcome  # noqa: E402

# 50 hosts that jobs pick their targets from, as a players file would name them, and one
# that only every RARE_EVERY-th job names (a host added lately, or seldom used).
COMMON_HOSTS = ([f"web{n:02d}.example" for n in range(1, 21)] + [f"db{n:02d}.example" for n in range(1, 11)]
                + [f"cache{n:02d}.example" for n in range(1, 11)] + [f"batch{n:02d}.example" for n in range(1, 11)])
RARE_TARGET = "spare01.example"
PLAYERS = [*COMMON_HOSTS, RARE_TARGET]
# (score, weight); RARE_SCORE is given to every RARE_EVERY-th job instead (about 0.1 %).
SCORES = (("puppet-run", 60), ("uptime", 20), ("restart-service", 12), ("disk-usage", 8))
RARE_SCORE = "reboot"
RARE_EVERY = 1000
# The CLIs' own requester label on the local socket (user:root when run as root), then
# certificates: most jobs are the caller's own, the rest pass the read policy.
CALLER = f"user:{pwd.getpwuid(os.getuid()).pw_name}"
REQUESTERS = ((CALLER, 70), ("cert:ops01.example", 15), ("cert:ci.example", 12), ("cert:backup.example", 3))
TARGET_COUNTS = ((1, 50), (2, 30), (3, 20))
PENDING_EVERY = 100       # every 100th job stays queued (its targets never connect)
FAILED_EVERY = 40         # every 40th job's tasks all fail (about 2.5 % of jobs: failed)
TASK_FAILS = 0.01         # and any other task fails with this chance (partial_fail, failed)
DEADLINE_SECONDS = 7 * 86400  # no queued job expires while the benchmark runs

LISTED_TARGET = "web07.example"
LISTED_REQUESTER = "cert:backup.example"
CHUNK = 1000              # submissions in flight at once while filling


@dataclass(frozen=True)
class Sizes:
    jobs: int
    runs: int   # CLI runs per figure (medians), each alternated with a floor run
    seed: int


# ---- filling the queue ------------------------------------------------------------------

@dataclass
class Fill:
    """What the fill wrote and how long it took (information, not a figure)."""
    jobs: int = 0
    tasks: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    requesters: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)   # jobs naming each host
    queue_bytes: int = 0
    finished_job: str = ""        # a finished all-of job of 3 targets, for getstatus

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds else math.nan


def new_job(rng: random.Random, number: int, now: float) -> NewJob:
    score = (RARE_SCORE if number % RARE_EVERY == 17
             else rng.choices([s for s, _ in SCORES], [w for _, w in SCORES])[0])
    count = rng.choices([c for c, _ in TARGET_COUNTS], [w for _, w in TARGET_COUNTS])[0]
    targets = tuple(rng.sample(COMMON_HOSTS, count))
    if number % RARE_EVERY == 117:
        targets = (RARE_TARGET, *targets[1:])
    scope = "one" if count > 1 and rng.random() < 0.3 else "all"
    requester = rng.choices([r for r, _ in REQUESTERS], [w for _, w in REQUESTERS])[0]
    return NewJob(score=score, scope=scope, targets=targets, params={"mode": "apply", "batch": str(number)},
                  secret_keys=(), requester=requester, deadline_at=now + DEADLINE_SECONDS)


def outcome(rng: random.Random, failed: bool, started: float) -> TaskOutcome:
    took = rng.uniform(0.5, 40.0)
    lines = b"Info: Applying configuration version '%d'\nNotice: Applied catalog in %.2f seconds\n" % (
        rng.randrange(10**9), took)
    if failed:
        return TaskOutcome(exit_code=1, stdout=lines, stderr=b"Error: could not retrieve catalog\n",
                           reason="exit 1", started_at=started, finished_at=started + took)
    return TaskOutcome(exit_code=0, stdout=lines, started_at=started, finished_at=started + took)


async def finish(store: Store, rng: random.Random, queued: Sequence[tuple[QueuedTask, bool]]) -> None:
    """claim (one commit for the chunk), then running, then ok or failed: each move many
    at once, so the group commit batches them as it would a busy conductor's."""
    pairs = [(task.task_id, task.player or task.targets[0]) for task, _ in queued]
    claimed = {c.task_id: c for c in await store.claim_many(pairs)}
    if len(claimed) != len(pairs):
        raise RuntimeError(f"claimed {len(claimed)} of {len(pairs)} queued tasks")
    started = time.time()
    moved = await asyncio.gather(*(store.transition(task.task_id, TaskState.RUNNING, detail="started",
                                                    expect_attempt=claimed[task.task_id].attempt)
                                   for task, _ in queued))
    ended = await asyncio.gather(*(
        store.transition(task.task_id, TaskState.FAILED if fails else TaskState.OK,
                         detail="exit 1" if fails else "exit 0", outcome=outcome(rng, fails, started))
        for task, fails in queued))
    if not all(change.applied for change in [*moved, *ended]):
        raise RuntimeError("a task of the fill did not move as asked")


async def fill_queue(state_dir: Path, jobs: int, seed: int, progress: bool) -> Fill:
    rng = random.Random(seed)
    state_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(state_dir)
    result = Fill()
    statuses: Counter[str] = Counter()
    scores: Counter[str] = Counter()
    requesters: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    start = time.perf_counter()
    try:
        for first in range(0, jobs, CHUNK):
            now = time.time()
            chunk = [new_job(rng, number, now) for number in range(first, min(jobs, first + CHUNK))]
            submitted = await asyncio.gather(*(store.submit(job) for job in chunk))
            queued: list[tuple[QueuedTask, bool]] = []
            for offset, (job, sub) in enumerate(zip(chunk, submitted, strict=True)):
                number = first + offset
                scores[job.score] += 1
                requesters[job.requester] += 1
                targets.update(job.targets)
                result.tasks += len(sub.queued)
                if number % PENDING_EVERY == PENDING_EVERY - 1:
                    statuses["pending"] += 1
                    continue
                all_fail = number % FAILED_EVERY == FAILED_EVERY // 2
                fails = [all_fail or rng.random() < TASK_FAILS for _ in sub.queued]
                statuses["ok" if not any(fails) else "failed" if all(fails) else "partial_fail"] += 1
                queued += zip(sub.queued, fails, strict=True)
                if job.scope == "all" and len(job.targets) == 3 and not any(fails):
                    result.finished_job = sub.job_id
            await finish(store, rng, queued)
            if progress and (first // CHUNK) % 10 == 9:
                done = first + len(chunk)
                print(f"  filled {done:,} jobs in {time.perf_counter() - start:.1f} s", file=sys.stderr,
                      flush=True)
    finally:
        store.close()
    result.seconds = time.perf_counter() - start
    result.jobs = jobs
    result.statuses, result.scores, result.requesters = dict(statuses), dict(scores), dict(requesters)
    result.targets = dict(targets)
    result.queue_bytes = sum(path.stat().st_size for path in state_dir.glob("queue.db*"))
    if not result.finished_job:
        raise RuntimeError("the fill made no finished all-of job of 3 targets (too few jobs?)")
    return result


# ---- timing CLI processes ---------------------------------------------------------------

def thread_cpu(pid: int) -> dict[int, int]:
    """Nanoseconds on CPU of each of pid's threads (schedstat): finer than /proc/PID/stat's
    clock ticks, which are 10 ms while one listing costs the conductor a few."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return found


def cpu_between(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds of CPU between two thread_cpu snapshots (threads ended meanwhile are lost)."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    argv: tuple[str, ...]   # after `python -m`
    listing: bool = True    # a listjobs call: count the rows it printed


@dataclass
class Sample:
    """One figure's runs: wall seconds, the floor runs between them, the conductor's CPU."""
    seconds: list[float] = field(default_factory=list)
    floor_seconds: list[float] = field(default_factory=list)
    conductor_cpu_s: list[float] = field(default_factory=list)       # schedstat, per call
    conductor_ticks_s: float = 0.0                                    # /proc/PID/stat over all calls
    rows: int | None = None


def figures(fill: Fill) -> list[Figure]:
    listjobs = ("audience.listjobs",)
    return [
        Figure("listjobs_newest_ms", "listjobs (newest 50)", listjobs),
        Figure("listjobs_limit_1000_ms", "listjobs --limit 1000", (*listjobs, "--limit", "1000")),
        Figure("listjobs_state_failed_ms", "listjobs --state failed", (*listjobs, "--state", "failed")),
        Figure("listjobs_state_pending_ms", "listjobs --state pending", (*listjobs, "--state", "pending")),
        Figure("listjobs_score_ms", f"listjobs --score {RARE_SCORE} ({fill.scores.get(RARE_SCORE, 0):,} jobs)",
               (*listjobs, "--score", RARE_SCORE)),
        Figure("listjobs_target_ms",
               f"listjobs --target {LISTED_TARGET} ({fill.targets.get(LISTED_TARGET, 0):,} jobs)",
               (*listjobs, "--target", LISTED_TARGET)),
        Figure("listjobs_rare_target_ms",
               f"listjobs --target {RARE_TARGET} ({fill.targets.get(RARE_TARGET, 0):,} jobs)",
               (*listjobs, "--target", RARE_TARGET)),
        Figure("listjobs_requester_ms",
               f"listjobs --requester {LISTED_REQUESTER} ({fill.requesters.get(LISTED_REQUESTER, 0):,} jobs)",
               (*listjobs, "--requester", LISTED_REQUESTER)),
        Figure("listjobs_since_ms", "listjobs --since 1h", (*listjobs, "--since", "1h")),
        Figure("getstatus_ms", "getstatus JOBID (finished, 3 tasks)",
               ("audience.getstatus", fill.finished_job), listing=False),
    ]



def measure(cluster: Cluster, conductor: Proc, chosen: Sequence[Figure], runs: int) -> dict[str, Sample]:
    """Each figure in turn: one warm-up call, then `runs` times the floor and the call."""
    assert conductor.popen is not None
    pid = conductor.popen.pid
    env = cluster.env()
    env["ORCHESTRA_CONFIG"] = str(cluster.audience_config)
    floor = [sys.executable, "-c", "import grpc"]
    timed_cli(floor, env)  # warm the page cache
    samples: dict[str, Sample] = {}
    for figure in chosen:
        argv = [sys.executable, "-m", *figure.argv]
        _, out = timed_cli(argv, env)
        sample = samples[figure.key] = Sample()
        if figure.listing:
            sample.rows = max(0, len(out.splitlines()) - 1)  # less the header
        ticks = 0.0
        for _ in range(runs):
            sample.floor_seconds.append(timed_cli(floor, env)[0])
            before, ticks_before = thread_cpu(pid), cpu_seconds(pid)
            sample.seconds.append(timed_cli(argv, env)[0])
            # The CLI has exited once timed_cli returns, and the conductor answered before that.
            sample.conductor_cpu_s.append(cpu_between(before, thread_cpu(pid)))
            ticks += cpu_seconds(pid) - ticks_before
        sample.conductor_ticks_s = ticks
    return samples


# ---- the table --------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    value_ms: float
    floor_ms: float
    conductor_cpu_ms: float | None   # per call (mean)
    rows: int | None

    @property
    def ratio(self) -> float:
        return self.value_ms / self.floor_ms

    def as_json(self) -> dict[str, object]:
        return {"label": self.label, "unit": "ms", "value": self.value_ms, "floor": self.floor_ms,
                "ratio": self.ratio, "conductor_cpu_ms_per_call": self.conductor_cpu_ms, "rows": self.rows}


def build_rows(chosen: Sequence[Figure], samples: dict[str, Sample]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for figure in chosen:
        sample = samples[figure.key]
        cpu = statistics.mean(sample.conductor_cpu_s) * 1000 if sample.conductor_cpu_s else None
        rows[figure.key] = Row(figure.label, statistics.median(sample.seconds) * 1000,
                               statistics.median(sample.floor_seconds) * 1000, cpu, sample.rows)
    return rows


def render(fill: Fill, startup_s: float, floor_ms: float, rows: dict[str, Row], runs: int,
           notes: Sequence[str]) -> str:
    statuses = ", ".join(f"{count:,} {status}" for status, count in sorted(fill.statuses.items()))
    lines = [f"fill: {fill.jobs:,} jobs, {fill.tasks:,} tasks ({statuses}) in {fill.seconds:.1f} s"
             f" through the store ({fill.jobs_per_s:,.0f} jobs/s); queue {fill.queue_bytes / 2**20:.0f} MiB",
             f"conductor ready on that queue in {startup_s:.2f} s",
             "",
             "floor (same machine, same run; median of every floor run)",
             f"  python -c 'import grpc' (CLI floor)      {floor_ms:8.2f} ms",
             "",
             f"listing {fill.jobs:,} jobs (CLI processes on the local socket; medians of {runs},"
             " each row's floor alternated with its runs)"]
    header = (f"  {'figure':<56} {'value':>10} {'floor':>10} {'ratio':>7}"
              f" {'conductor CPU/call':>19} {'rows':>6}")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for row in rows.values():
        cpu = "n/a" if row.conductor_cpu_ms is None else f"{row.conductor_cpu_ms:.2f} ms"
        shown = "" if row.rows is None else f"{row.rows:,}"
        lines.append(f"  {row.label:<56} {row.value_ms:7.1f} ms {row.floor_ms:7.1f} ms {row.ratio:6.2f}x"
                     f" {cpu:>19} {shown:>6}")
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


# ---- main -------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the queue (100000)")
    parser.add_argument("--runs", type=int, default=10, help="CLI runs per figure, medians (10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the queue's contents (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the cluster in DIR (must not exist) and leave it there")
    parser.add_argument("--log-level", default="warning", help="the conductor's log level (warning)")
    args = parser.parse_args(argv)
    if args.jobs < 2 * PENDING_EVERY:
        parser.error(f"--jobs must be at least {2 * PENDING_EVERY}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: already exists")
    return args


def bench(root: Path, sizes: Sizes, log_level: str, notes: list[str]) -> tuple[Fill, float, dict[str, Sample]]:
    cluster = Cluster(root / "cluster", PLAYERS, log_level=log_level)
    fill = asyncio.run(fill_queue(cluster.state_dir, sizes.jobs, sizes.seed, progress=sys.stderr.isatty()))
    chosen = figures(fill)
    try:
        start = time.perf_counter()
        conductor = cluster.start_conductor()
        startup = time.perf_counter() - start
        samples = measure(cluster, conductor, chosen, sizes.runs)
    finally:
        cluster.stop()
    if samples:
        ticks = sum(s.conductor_ticks_s for s in samples.values())
        fine = sum(sum(s.conductor_cpu_s) for s in samples.values())
        notes.append(f"conductor CPU over every timed call: {fine * 1000:.0f} ms from schedstat,"
                     f" {ticks * 1000:.0f} ms from /proc/PID/stat (10 ms ticks)")
    return fill, startup, samples


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes(jobs=args.jobs, runs=args.runs, seed=args.seed)
    json_path = args.json.resolve() if args.json else None
    keep = args.keep.resolve() if args.keep else None
    # The daemon and CLIs run as `python -m ...` from the working directory: make it the
    # checkout this script belongs to, so that is the code measured.
    os.chdir(REPO)
    notes: list[str] = []
    load_before = os.getloadavg()
    if keep is not None:
        keep.mkdir(parents=True)
        fill, startup, samples = bench(keep, sizes, args.log_level, notes)
    else:
        with tempfile.TemporaryDirectory(prefix="orchestra-listing-") as tmp:
            fill, startup, samples = bench(Path(tmp), sizes, args.log_level, notes)
    load_after = os.getloadavg()
    notes.append(f"load average (1 min) {load_before[0]:.2f} at start, {load_after[0]:.2f} at end,"
                 f" on {os.cpu_count()} CPUs")
    chosen = figures(fill)
    rows = build_rows(chosen, samples)
    floor_ms = statistics.median(s for sample in samples.values() for s in sample.floor_seconds) * 1000
    sys.stdout.write(render(fill, startup, floor_ms, rows, sizes.runs, notes))
    if json_path is not None:
        report = {
            "sizes": asdict(sizes),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_start": load_before, "loadavg_end": load_after},
            "fill": {**asdict(fill), "jobs_per_s": fill.jobs_per_s, "conductor_startup_s": startup},
            "floors": {"import_grpc_ms": floor_ms},
            "figures": {key: row.as_json() for key, row in rows.items()},
            "commands": {figure.key: ["python", "-m", *figure.argv] for figure in chosen},
            "raw": {key: {"ms": [s * 1000 for s in sample.seconds],
                          "floor_ms": [s * 1000 for s in sample.floor_seconds],
                          "conductor_cpu_ms": [s * 1000 for s in sample.conductor_cpu_s],
                          "conductor_cpu_ticks_ms": sample.conductor_ticks_s * 1000}
                    for key, sample in samples.items()},
            "notes": notes,
        }
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
