"""Benchmarks against floors measured in the same run (``.venv/bin/python bench/run.py``).

Starts the real daemons on loopback (devtools.devcluster) and prints one table: each
figure, the floor it is compared with, their ratio, and the goal.

  * submit -> result latency p50/p99 of a trivial score, 1 player, one job at a time;
    floor: one asyncio spawn+wait of /bin/true plus four durable SQLite commits.
  * tasks/s with 1 player (max_concurrent 8) draining a backlog queued up front, at two
    backlog sizes; floor: the spawn rate of /bin/true.
  * tasks/s with 4 players (all-of jobs, many in flight).
  * conductor and player CPU per task, and durable commits per task on each daemon
    (read from the daemons' SIGUSR1 stats line), over the backlog runs.
  * ``getstatus JOBID`` as a real process; floor: ``python -c "import grpc"``.
  * a player's resident memory when idle.
  * ``submitjob --all-of --wait`` on a fleet of real players (``--fleet``).

``--quick`` shrinks every size (the smoke test uses it); ``--json PATH`` also writes
every figure, floor and raw measurement as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from devtools.devcluster import Cluster, Proc  # noqa: E402
from orchestra.wire import audience_pb2, audience_pb2_grpc, common_pb2  # noqa: E402
from measure import catches, cpu_seconds, floor_commit, floor_spawn, memory_bytes, percentile, timed_cli  # noqa: E402

NOOP = "#!/bin/sh\nexit 0\n"
# Holds a slot until the bench writes one line into the FIFO named by the GATE parameter.
GATE = '#!/bin/sh\nread line < "$ORC_GATE"\nexit 0\n'
SCORE_CONF = "interface env\ntimeout 600\n"

SOLO = "solo.bench"                                   # latency and the backlog runs
SOLO_SLOTS = 8                                        # its max_concurrent
FOUR = [f"p{n}.bench" for n in range(1, 5)]           # the 4-player run, max_concurrent 4 each
FOUR_SLOTS = 4

WAIT_TIMEOUT = 600.0
STATS_TIMEOUT = 5.0

Stub = audience_pb2_grpc.AudienceStub


# ---- sizes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    samples: int                 # latency samples; iterations of the spawn and commit floors
    jobs: int                    # tasks in the 4-player run (JOBS/4 all-of jobs)
    backlogs: tuple[int, int]    # jobs queued up front for the two 1-player runs
    cli_runs: int                # getstatus and import-grpc runs (medians)
    fleet: int                   # players in the fleet run (0: skip it)
    fleet_runs: int              # submitjob --wait runs on the fleet (median)


FULL = Sizes(samples=200, jobs=200, backlogs=(200, 2000), cli_runs=10, fleet=50, fleet_runs=5)
QUICK = Sizes(samples=5, jobs=8, backlogs=(8, 40), cli_runs=3, fleet=3, fleet_runs=2)


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    jobs = pick(args.jobs, base.jobs)
    backlogs: tuple[int, int]
    if args.backlogs:
        backlogs = (args.backlogs[0], args.backlogs[1])
    elif args.jobs is None:
        backlogs = base.backlogs
    else:
        backlogs = (jobs, 10 * jobs)
    return Sizes(samples=pick(args.samples, base.samples), jobs=jobs, backlogs=backlogs,
                 cli_runs=pick(args.cli_runs, base.cli_runs), fleet=pick(args.fleet, base.fleet),
                 fleet_runs=pick(args.fleet_runs, base.fleet_runs))


# ---- small helpers ----------------------------------------------------------------------



def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pid_of(proc: Proc) -> int:
    assert proc.popen is not None, f"{proc.name} was never started"
    return proc.popen.pid






def rss_mb(pid: int) -> float:
    return memory_bytes(pid) / (1024 * 1024)




def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or floor is None or floor == 0:
        return None
    return value / floor



# ---- floors -----------------------------------------------------------------------------

@dataclass
class Floors:
    """Medians, so a burst of other work on the machine moves them less than a mean."""
    spawn_s: float                      # asyncio spawn+wait of /bin/true
    spawn_mean_s: float
    spawn_cpu_s: float                  # this process's CPU for one of those (mean)
    commit_s: float                     # durable SQLite insert+commit
    commit_mean_s: float
    import_grpc_s: float | None = None  # `python -c "import grpc"` (measured later)

    @property
    def latency_s(self) -> float:
        return self.spawn_s + 4 * self.commit_s

    @property
    def spawn_rate(self) -> float:
        return 1 / self.spawn_s


def measure_floors(root: Path, count: int) -> Floors:
    asyncio.run(floor_spawn(3))  # warm up
    cpu = self_cpu()
    spawns = asyncio.run(floor_spawn(count))
    spawn_cpu = (self_cpu() - cpu) / count
    commits = floor_commit(root / "floor.db", count)
    return Floors(spawn_s=statistics.median(spawns), spawn_mean_s=statistics.mean(spawns),
                  spawn_cpu_s=spawn_cpu, commit_s=statistics.median(commits),
                  commit_mean_s=statistics.mean(commits))


# ---- daemon counters --------------------------------------------------------------------

@dataclass
class Counters:
    """One daemon's CPU time and, if it answers SIGUSR1, its durable commits and writes."""
    cpu_s: float
    commits: int | None
    writes: int | None


def stats_lines(text: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for line in text.splitlines():
        if '"stats"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "stats":
            found.append(record)
    return found


def as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Notes:
    """What the table cannot show by itself, printed under it and kept in the JSON."""
    no_handler: list[str] = field(default_factory=list)   # daemons without a SIGUSR1 handler
    no_stats: list[str] = field(default_factory=list)     # signalled, but no stats line came
    other: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        found = []
        if self.no_handler:
            found.append("no SIGUSR1 handler (stats line) in " + ", ".join(self.no_handler)
                         + ": commits n/a, not signalled")
        if self.no_stats:
            found.append(f"no stats line within {STATS_TIMEOUT:.0f} s of SIGUSR1 from "
                         + ", ".join(self.no_stats) + ": commits n/a (is it logged below"
                         " --log-level? try --log-level info, which costs some CPU per task)")
        return found + self.other


def read_counters(cluster: Cluster, proc: Proc, notes: Notes) -> Counters:
    """CPU from /proc; commits and writes from the stats line SIGUSR1 makes the daemon log."""
    pid = pid_of(proc)
    if proc.name in notes.no_stats:  # it stayed silent once: do not wait for it again
        return Counters(cpu_seconds(pid), None, None)
    if not catches(pid, signal.SIGUSR1):
        if proc.name not in notes.no_handler:
            notes.no_handler.append(proc.name)
        return Counters(cpu_seconds(pid), None, None)
    seen = len(stats_lines(cluster.log_text(proc.name)))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + STATS_TIMEOUT
    while time.monotonic() < deadline:
        lines = stats_lines(cluster.log_text(proc.name))
        if len(lines) > seen:
            return Counters(cpu_seconds(pid), as_int(lines[-1].get("commits")), as_int(lines[-1].get("writes")))
        time.sleep(0.02)
    notes.no_stats.append(proc.name)
    return Counters(cpu_seconds(pid), None, None)


def delta(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


# ---- audience calls ---------------------------------------------------------------------

def submit(stub: Stub, score: str, targets: Sequence[str], params: dict[str, str] | None = None) -> str:
    reply = stub.Submit(audience_pb2.SubmitRequest(
        score=score, targets=list(targets), params=params or {},
        scope=audience_pb2.SCOPE_ALL_OF if len(targets) > 1 else audience_pb2.SCOPE_UNSPECIFIED))
    job_id: str = reply.job_id
    return job_id


def wait_job(stub: Stub, job_id: str) -> audience_pb2.Job:
    job: audience_pb2.Job = next(iter(stub.WaitJob(
        audience_pb2.WaitRequest(job_id=job_id, timeout_seconds=WAIT_TIMEOUT))))
    if not job.finished or job.status != "ok":
        raise RuntimeError(f"job {job_id} ended {job.status!r} (finished={job.finished}): {job}")
    return job


def get_job(stub: Stub, job_id: str) -> audience_pb2.Job:
    job: audience_pb2.Job = stub.GetJob(audience_pb2.JobRef(job_id=job_id))
    return job


def latency(stub: Stub, player: str, count: int) -> tuple[list[float], str]:
    samples: list[float] = []
    job_id = ""
    for _ in range(count):
        start = time.perf_counter()
        job_id = submit(stub, "noop", [player])
        wait_job(stub, job_id)
        samples.append(time.perf_counter() - start)
    return samples, job_id


def wait_all(stub: Stub, ids: Sequence[str], on_last: Callable[[], None]) -> tuple[float, int]:
    """Wait for every job; return when the last one finished and how many were not yet done
    when the last-submitted one was. on_last runs right after that one finished, before
    the others are checked (so the checks' cost is outside what it measures)."""
    wait_job(stub, ids[-1])
    end = time.perf_counter()
    on_last()
    late = 0
    for job_id in ids[:-1]:
        job = get_job(stub, job_id)
        if not job.finished:
            late += 1
            job = wait_job(stub, job_id)
            end = time.perf_counter()
        if job.status != "ok":
            raise RuntimeError(f"job {job_id} ended {job.status!r}")
    return end, late


# ---- the runs ---------------------------------------------------------------------------

@dataclass
class DaemonCost:
    cpu_s: float
    commits: int | None
    writes: int | None


@dataclass
class Run:
    """One throughput run: what it did, how fast, and what it cost each daemon."""
    name: str
    players: int
    slots: int
    jobs: int
    tasks: int            # tasks whose whole life falls inside the cost window
    measured_tasks: int   # tasks counted in tasks_per_s
    seconds: float
    submit_seconds: float
    out_of_order: int     # jobs still unfinished when the last-submitted one finished
    conductor: DaemonCost
    players_cost: DaemonCost

    @property
    def tasks_per_s(self) -> float:
        return self.measured_tasks / self.seconds


def cost(before: Sequence[Counters], after: Sequence[Counters]) -> DaemonCost:
    commits: int | None = 0
    writes: int | None = 0
    for b, a in zip(before, after):
        d = delta(b.commits, a.commits)
        commits = None if commits is None or d is None else commits + d
        w = delta(b.writes, a.writes)
        writes = None if writes is None or w is None else writes + w
    return DaemonCost(sum(a.cpu_s - b.cpu_s for b, a in zip(before, after)), commits, writes)


def snapshot(cluster: Cluster, players: Sequence[str], notes: Notes) -> list[Counters]:
    procs = [cluster.conductor()] + [cluster.player(name) for name in players]
    return [read_counters(cluster, proc, notes) for proc in procs]


def wait_running(stub: Stub, ids: Sequence[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(task.state == common_pb2.TASK_STATE_RUNNING
               for job_id in ids for task in get_job(stub, job_id).tasks):
            return
        time.sleep(0.02)
    raise TimeoutError(f"the {len(ids)} gate tasks did not all start within {timeout:.0f} s")


def backlog_run(cluster: Cluster, stub: Stub, jobs: int, gates: Path, notes: Notes) -> Run:
    """1 player: fill its slots with gate tasks, queue `jobs` noop jobs behind them, then
    open the gate and time the drain. Costs cover every task's whole life: the counters
    are read before the gate tasks are submitted and after the last job finished."""
    fifo = gates / f"gate-{jobs}"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)  # Linux: never blocks; keeps readers from seeing EOF
    try:
        before = snapshot(cluster, [SOLO], notes)
        blockers = [submit(stub, "gate", [SOLO], {"gate": str(fifo)}) for _ in range(SOLO_SLOTS)]
        wait_running(stub, blockers)
        start = time.perf_counter()
        ids = [submit(stub, "noop", [SOLO]) for _ in range(jobs)]
        submitted = time.perf_counter()
        os.write(fd, b"\n" * SOLO_SLOTS)  # each gate task reads one line and exits
        after: list[Counters] = []

        def finish() -> None:
            for job_id in blockers:
                wait_job(stub, job_id)
            after.extend(snapshot(cluster, [SOLO], notes))

        end, late = wait_all(stub, ids, finish)
    finally:
        os.close(fd)
    if late:
        notes.other.append(f"backlog {jobs}: {late} jobs finished after the last-submitted one;"
                           " its costs include status calls")
        after = snapshot(cluster, [SOLO], notes)
    return Run(name=f"backlog_{jobs}", players=1, slots=SOLO_SLOTS, jobs=jobs,
               tasks=jobs + SOLO_SLOTS, measured_tasks=jobs, seconds=end - submitted,
               submit_seconds=submitted - start, out_of_order=late,
               conductor=cost(before[:1], after[:1]), players_cost=cost(before[1:], after[1:]))


def spread_run(cluster: Cluster, stub: Stub, jobs: int, notes: Notes) -> Run:
    """4 players, all-of jobs submitted while earlier ones run (the long-standing figure)."""
    before = snapshot(cluster, FOUR, notes)
    start = time.perf_counter()
    ids = [submit(stub, "noop", FOUR) for _ in range(jobs)]
    submitted = time.perf_counter()
    after: list[Counters] = []
    end, late = wait_all(stub, ids, lambda: after.extend(snapshot(cluster, FOUR, notes)))
    if late:
        notes.other.append(f"4 players: {late} jobs finished after the last-submitted one;"
                           " its costs include status calls")
        after = snapshot(cluster, FOUR, notes)
    tasks = jobs * len(FOUR)
    return Run(name="four_players", players=len(FOUR), slots=FOUR_SLOTS, jobs=jobs, tasks=tasks,
               measured_tasks=tasks, seconds=end - start, submit_seconds=submitted - start,
               out_of_order=late, conductor=cost(before[:1], after[:1]),
               players_cost=cost(before[1:], after[1:]))


def stop(cluster: Cluster) -> None:
    """Signal every daemon first, then wait for each (Cluster.stop alone goes one by one)."""
    for proc in cluster.procs.values():
        proc.send_signal(signal.SIGTERM)
    cluster.stop()


def cli_medians(cluster: Cluster, job_id: str, runs: int) -> tuple[list[float], list[float]]:
    """getstatus JOBID and `python -c "import grpc"`, alternated, same interpreter and env."""
    env = cluster.env()
    env["ORCHESTRA_CONFIG"] = str(cluster.audience_config)
    getstatus = [sys.executable, "-m", "audience.getstatus", job_id]
    floor = [sys.executable, "-c", "import grpc"]
    timed_cli(getstatus, env)  # warm the page cache for both
    timed_cli(floor, env)
    floors: list[float] = []
    figures: list[float] = []
    for _ in range(runs):
        floors.append(timed_cli(floor, env)[0])
        figures.append(timed_cli(getstatus, env)[0])
    return figures, floors


@dataclass
class Main:
    latency_s: list[float]
    runs: list[Run]
    getstatus_s: list[float]
    import_grpc_s: list[float]
    rss_idle_mb: dict[str, float]
    rss_after_mb: float


def main_cluster(root: Path, sizes: Sizes, log_level: str, notes: Notes) -> Main:
    cluster = Cluster(root / "cluster", [SOLO, *FOUR], log_level=log_level,
                      player_settings={"max_concurrent": FOUR_SLOTS})
    cluster.add_player_config(SOLO, max_concurrent=SOLO_SLOTS)
    cluster.add_score("noop", NOOP, SCORE_CONF)
    cluster.add_score("gate", GATE, SCORE_CONF, [SOLO])
    gates = root / "gates"
    gates.mkdir()
    try:
        cluster.start()
        time.sleep(0.5)  # let the fresh sessions settle before calling the players idle
        rss_idle = {name: rss_mb(pid_of(cluster.player(name))) for name in [SOLO, *FOUR]}
        channel = grpc.insecure_channel(f"unix:{cluster.socket}")
        try:
            stub = audience_pb2_grpc.AudienceStub(channel)
            latency(stub, SOLO, min(10, sizes.samples))  # warm up
            samples, last_job = latency(stub, SOLO, sizes.samples)
            runs = [backlog_run(cluster, stub, jobs, gates, notes) for jobs in sizes.backlogs]
            runs.append(spread_run(cluster, stub, max(1, sizes.jobs // len(FOUR)), notes))
            rss_after = rss_mb(pid_of(cluster.player(SOLO)))
            getstatus, import_grpc = cli_medians(cluster, last_job, sizes.cli_runs)
        finally:
            channel.close()
    finally:
        stop(cluster)
    return Main(samples, runs, getstatus, import_grpc, rss_idle, rss_after)


def fleet_cluster(root: Path, sizes: Sizes, log_level: str) -> tuple[list[float], float]:
    """submitjob --all-of --wait on `fleet` real players; returns the runs and start-up time."""
    names = [f"f{n:03d}.bench" for n in range(1, sizes.fleet + 1)]
    cluster = Cluster(root / "fleet", names, log_level=log_level)
    cluster.add_score("noop", NOOP, SCORE_CONF)
    try:
        start = time.perf_counter()
        cluster.start_conductor()
        for name in names:
            cluster.start_player(name)
        cluster.wait_connected(names, timeout=max(60.0, 3.0 * len(names)))
        startup = time.perf_counter() - start
        argv = ["--all-of", "--wait", "--timeout", "120", "noop", *names]
        env = cluster.env()
        env["ORCHESTRA_CONFIG"] = str(cluster.audience_config)
        command = [sys.executable, "-m", "audience.submitjob", *argv]
        timed_cli(command, env)  # warm up
        return [timed_cli(command, env)[0] for _ in range(sizes.fleet_runs)], startup
    finally:
        stop(cluster)


# ---- the table --------------------------------------------------------------------------

@dataclass(frozen=True)
class Goal:
    limit: float
    on_ratio: bool = False      # the limit is on value/floor, else on the value itself
    at_least: bool = False      # value (or ratio) must be >= limit, else <= limit

    def text(self, unit: str) -> str:
        sign = ">=" if self.at_least else "<="
        return f"{sign} {self.limit:g}x floor" if self.on_ratio else f"{sign} {self.limit:g} {unit}"

    def met(self, figure: float | None) -> bool | None:
        if figure is None:
            return None
        return figure >= self.limit if self.at_least else figure <= self.limit


@dataclass
class Row:
    label: str
    unit: str                   # ms, tasks/s, MB, x, commits
    value: float | None
    floor: float | None = None
    goal: Goal | None = None

    @property
    def ratio(self) -> float | None:
        return ratio(self.value, self.floor)

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.goal.met(self.ratio if self.goal.on_ratio else self.value)

    def as_json(self) -> dict[str, object]:
        return {"label": self.label, "unit": self.unit, "value": self.value, "floor": self.floor,
                "ratio": self.ratio, "goal": self.goal.text(self.unit) if self.goal else None,
                "met": self.met}


def per_task(total: float | None, tasks: int, scale: float = 1.0) -> float | None:
    return None if total is None or tasks == 0 else total * scale / tasks


def summed(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def build_rows(floors: Floors, result: Main, fleet: list[float] | None, fleet_size: int) -> dict[str, Row]:
    ms = 1000.0
    rows: dict[str, Row] = {}
    latency_floor = floors.latency_s * ms
    rows["latency_p50_ms"] = Row("submit->result latency, 1 player, p50", "ms",
                                 percentile(result.latency_s, 0.5) * ms, latency_floor,
                                 Goal(3, on_ratio=True))
    rows["latency_p99_ms"] = Row("submit->result latency, 1 player, p99", "ms",
                                 percentile(result.latency_s, 0.99) * ms, latency_floor)

    backlog_runs = [run for run in result.runs if run.name.startswith("backlog_")]
    for key, run in zip(("small", "large"), backlog_runs):
        rows[f"throughput_1p_{key}_backlog"] = Row(
            f"throughput, 1 player x{run.slots}, backlog {run.jobs}", "tasks/s", run.tasks_per_s,
            floors.spawn_rate, Goal(0.5, on_ratio=True, at_least=True))
    small, large = backlog_runs
    rows["throughput_1p_flatness"] = Row(
        f"  tasks/s at backlog {large.jobs} / at {small.jobs}", "x",
        large.tasks_per_s / small.tasks_per_s, goal=Goal(0.9, at_least=True))
    four = next(run for run in result.runs if run.name == "four_players")
    rows["throughput_4p"] = Row(f"throughput, 4 players x{four.slots}", "tasks/s", four.tasks_per_s,
                                floors.spawn_rate)

    for key, run in zip(("small", "large"), backlog_runs):
        rows[f"conductor_cpu_ms_per_task_{key}_backlog"] = Row(
            f"conductor CPU per task, backlog {run.jobs}", "ms",
            per_task(run.conductor.cpu_s, run.tasks, ms), goal=Goal(0.5))
    for key, run in zip(("small", "large"), backlog_runs):
        rows[f"player_cpu_ms_per_task_{key}_backlog"] = Row(
            f"player CPU per task, backlog {run.jobs}", "ms",
            per_task(run.players_cost.cpu_s, run.tasks, ms), goal=Goal(1.5))
    tasks = sum(run.tasks for run in backlog_runs)
    rows["conductor_commits_per_task"] = Row(
        "conductor durable commits per task (1-player runs)", "commits",
        per_task(summed([run.conductor.commits for run in backlog_runs]), tasks))
    rows["player_commits_per_task"] = Row(
        "player durable commits per task (1-player runs)", "commits",
        per_task(summed([run.players_cost.commits for run in backlog_runs]), tasks))

    import_grpc = statistics.median(result.import_grpc_s) * ms
    rows["getstatus_ms"] = Row("getstatus JOBID (CLI process), median", "ms",
                               statistics.median(result.getstatus_s) * ms, import_grpc,
                               Goal(1.3, on_ratio=True))
    rows["player_rss_idle_mb"] = Row(f"player RSS idle (largest of {len(result.rss_idle_mb)})", "MB",
                                     max(result.rss_idle_mb.values()), goal=Goal(40))
    rows["player_rss_after_mb"] = Row("player RSS after the 1-player runs", "MB",
                                      result.rss_after_mb, goal=Goal(40))
    if fleet is not None:
        rows["fleet_submit_wait_ms"] = Row(
            f"submitjob --all-of --wait, {fleet_size} players, median", "ms",
            statistics.median(fleet) * ms, import_grpc, Goal(300))
    return rows


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    digits = 1 if unit in ("tasks/s", "MB") else 2
    return f"{value:.{digits}f} {unit}"


def render(floors: Floors, rows: dict[str, Row], notes: Notes) -> str:
    lines = ["floor (same machine, same run; medians)",
             f"  asyncio spawn+wait of /bin/true          {floors.spawn_s * 1000:8.2f} ms"
             f"   ({floors.spawn_rate:6.0f} /s, {floors.spawn_cpu_s * 1000:.2f} ms CPU)",
             f"  durable SQLite insert+commit             {floors.commit_s * 1000:8.2f} ms"
             f"   ({1 / floors.commit_s:6.0f} /s)",
             f"  spawn + 4 commits (latency floor)        {floors.latency_s * 1000:8.2f} ms"]
    if floors.import_grpc_s is not None:
        lines.append(f"  python -c 'import grpc' (CLI floor)      {floors.import_grpc_s * 1000:8.2f} ms")
    lines += ["", "orchestra (conductor + players on loopback, mTLS, trivial score)"]
    header = f"  {'figure':<52} {'value':>14} {'floor':>14} {'ratio':>8}  {'goal':<16} met"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for row in rows.values():
        shown_ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        floor = "" if row.floor is None else fmt(row.floor, row.unit)
        goal = "" if row.goal is None else row.goal.text(row.unit)
        lines.append(f"  {row.label:<52} {fmt(row.value, row.unit):>14} {floor:>14}"
                     f" {shown_ratio:>8}  {goal:<16} {met}")
    lines += [f"note: {note}" for note in notes.lines()]
    return "\n".join(lines) + "\n"


# ---- main -------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, help="latency samples and floor iterations (200)")
    parser.add_argument("--jobs", type=int,
                        help="tasks in the 4-player run; default backlogs are JOBS and 10xJOBS (200)")
    parser.add_argument("--backlogs", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                        help="jobs queued up front for the two 1-player runs (JOBS, 10xJOBS)")
    parser.add_argument("--cli-runs", type=int, help="getstatus and import-grpc runs (10)")
    parser.add_argument("--fleet", type=int, help="players in the fleet run, 0 to skip it (50)")
    parser.add_argument("--fleet-runs", type=int, help="submitjob --wait runs on the fleet (5)")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--log-level", default="warning", help="daemons' log level (warning)")
    args = parser.parse_args(argv)
    for name in ("samples", "jobs", "cli_runs", "fleet_runs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.fleet is not None and args.fleet < 0:
        parser.error("--fleet must not be negative")
    if args.backlogs and min(args.backlogs) < 1:
        parser.error("--backlogs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    json_path = args.json.resolve() if args.json else None
    # The daemons and CLIs run as `python -m ...` from the working directory: make it the
    # checkout this script belongs to, so that is the code measured.
    os.chdir(REPO)
    notes = Notes()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        root = Path(tmp)
        floors = measure_floors(root, max(sizes.samples, 20))
        result = main_cluster(root, sizes, args.log_level, notes)
        floors.import_grpc_s = statistics.median(result.import_grpc_s)
        fleet: list[float] | None = None
        fleet_startup: float | None = None
        if sizes.fleet:
            fleet, fleet_startup = fleet_cluster(root, sizes, args.log_level)
    load_after = os.getloadavg()
    notes.other.append(f"load average (1 min) {load_before[0]:.2f} at start, {load_after[0]:.2f} at end,"
                       f" on {os.cpu_count()} CPUs")
    rows = build_rows(floors, result, fleet, sizes.fleet)
    sys.stdout.write(render(floors, rows, notes))
    if json_path is not None:
        report = {
            "sizes": asdict(sizes),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_start": load_before, "loadavg_end": load_after},
            "floors": {"spawn_ms": floors.spawn_s * 1000, "spawn_mean_ms": floors.spawn_mean_s * 1000,
                       "spawn_cpu_ms": floors.spawn_cpu_s * 1000, "commit_ms": floors.commit_s * 1000,
                       "commit_mean_ms": floors.commit_mean_s * 1000,
                       "latency_floor_ms": floors.latency_s * 1000,
                       "spawn_rate_per_s": floors.spawn_rate,
                       "import_grpc_ms": statistics.median(result.import_grpc_s) * 1000},
            "figures": {key: row.as_json() for key, row in rows.items()},
            "runs": [{**asdict(run), "tasks_per_s": run.tasks_per_s} for run in result.runs],
            "raw": {"latency_ms": [s * 1000 for s in result.latency_s],
                    "getstatus_ms": [s * 1000 for s in result.getstatus_s],
                    "import_grpc_ms": [s * 1000 for s in result.import_grpc_s],
                    "player_rss_idle_mb": result.rss_idle_mb,
                    "fleet_submit_wait_ms": None if fleet is None else [s * 1000 for s in fleet],
                    "fleet_startup_s": fleet_startup},
            "notes": notes.lines(),
        }
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
