"""Fleet benchmark: the real conductor with N simulated players, against floors, on each store backend.

Run ``.venv/bin/python bench/fleet.py --sizes 1000,3000,10000 --json out.json``
(``--help`` lists the knobs). It prints a table of the floors, then one table per size
with a group of columns per store backend (value | floor | ratio to floor, for SQLite
and then for PostgreSQL) and the goal, and, with ``--json``, writes every figure.

``--backends sqlite,postgresql`` chooses the conductor's store backends: by default both
when PostgreSQL's server binaries are found (``devtools.pgserver.find_bindir``: Debian's
``postgresql`` package), else SQLite alone, with a note saying so (naming postgresql
when the binaries are missing is an error). For PostgreSQL the run starts one throwaway
server (``devtools.pgserver.PgServer``: its own cluster in a temporary directory,
``fsync`` and ``synchronous_commit`` on, ``shared_buffers`` at PostgreSQL's default of
128MB) before anything is measured, and gives each size a fresh database of its own;
the conductor's ``conductor.toml`` gets ``[store] backend = "postgresql"`` with that
database's dsn (TCP to 127.0.0.1 with a password, as a conductor on another host would
connect) and takes its leader lease there before it serves. Everything else (players,
phases, floors, goals) is the same for both backends; the sizes run in the order given,
each on every backend in turn, so that both backends of a size see the same machine.

For each size N and backend the benchmark starts the real conductor (``python -m
conductor.main``, JSON logs at ``--conductor-log-level``, warning by default) on a fresh
state directory, with a players file of N names (``p00001.fleet`` ...) from a dev PKI in
which every player has its own certificate. ``bench/simplayer.py`` processes
(``--workers``) hold the N player sessions: real protocol, one mTLS channel and
certificate per session, nothing spawned on the player side. Then, in this order:

initial connect  all N sessions dial a freshly started conductor; time until all are
                 welcomed (informative).
idle             once the conductor is quiet again, its CPU over ``--idle-seconds`` as %
                 of one core, and its resident memory (VmRSS).
all-of fan-out   one job, score ``noop``, scope all-of, targets = all N players,
                 submitted over the audience socket: time from Submit until the job
                 finished (the conductor's ``finished_at``: every result committed),
                 time until the first RunTask reached a player, whether all N tasks
                 ended ok, the conductor's CPU per task, the database server's CPU per
                 task (PostgreSQL: every process of the server, those that ended
                 included; SQLite works inside the conductor, whose CPU holds it), and
                 durable commits per task (SIGUSR1 makes the conductor log a ``stats``
                 line with ``commits`` and ``writes``; n/a when it has no SIGUSR1
                 handler or logs no such line at the chosen log level).
connect storm    SIGTERM the conductor and start it again on the same state directory
                 (and database): time from that start until all N sessions are welcomed
                 again (players back off as real ones do), and the conductor's CPU per
                 connect in that window, less its start-up CPU (measured on the first
                 start of the size, before any player connected).

Floors are measured in the same run before any conductor starts: asyncio spawn+wait of
/bin/true; one durable SQLite insert+commit (as ``bench/run.py`` measures it:
``orchestra.db``, WAL, synchronous=FULL); with PostgreSQL, one durable INSERT + COMMIT
round trip to the run's server over psycopg, on a connection made as the conductor's
is (the TCP dsn), ``synchronous_commit`` and ``fsync`` on (checked): an INSERT in its
own transaction, so the statement and its COMMIT are one round trip and one WAL flush;
both commit floors are the p50 of the same number of samples (a tenth of
``--floor-samples``, at least 300), after a few unmeasured ones. Then, against an mTLS
echo server in a process of its own (``simplayer.py echo``), the p50 of a round trip on
an open bidirectional stream and of a fresh mTLS connection plus one round trip, with
the server's CPU for each, and its memory per open session. Each figure is set against
the floor it cannot beat; "commit" is the commit floor of the figure's own backend:

* all-of:         3 commits (claim, grant and result, each batched over every task)
                  + N x 2.5 x echo-server CPU per round trip (a task is 5 messages at
                  the conductor, 2 in and 3 out; a round trip is 1 in and 1 out);
* first dispatch: 2 commits (the submission, the claim);
* CPU per task:   2.5 x echo-server CPU per round trip;
* commits/task:   3 / N (three commits for the whole job);
* connect storm:  N x echo-server CPU per connection (as if on one core; gRPC does
                  handshakes on several threads, the players' own on the same cores);
* CPU/connect:    echo-server CPU per connection;
* idle CPU:       N x echo-server CPU per round trip every heartbeat_seconds (as the
                  Welcome says; one heartbeat in and one out per session and period);
* idle RSS:       the echo server's RSS with no session + N x what one more open
                  session (an mTLS connection with one stream) adds to it.

The database server's CPU per task has no floor: it is shown to say where the
PostgreSQL backend spends what the conductor's own CPU does not show.

CPU seconds come from /proc/PID/stat (utime+stime over SC_CLK_TCK; for the PostgreSQL
server, its postmaster's own and reaped children's plus every live child's), memory
from /proc/PID/status: Linux only. The machine is shared by the conductor, the
simulated players and the PostgreSQL server, so wall-clock figures include the players'
CPU (reported in the JSON) and the server's. The run raises its open-files soft limit
to the hard limit (the conductor and the workers inherit it) and refuses to start if
the hard limit is too low for a size. ``--keep`` keeps the run's directory: configs,
state, the logs of the conductor (``nN-BACKEND/logs/conductor.log``) and of the player
processes, and the PostgreSQL server's log (``postgresql.log``; its data goes with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
CHILD_ENVIRON = dict(os.environ)  # before this process quiets gRPC's own logging below
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
import psycopg  # noqa: E402

from devtools import pki  # noqa: E402
from devtools.devcluster import CONDUCTOR_NAME, Proc, free_port, write_toml  # noqa: E402
from devtools.pgserver import DEBIAN_PACKAGE, PgServer, PgServerError, find_bindir  # noqa: E402
from orchestra.tls import Material, channel_credentials, channel_options  # noqa: E402
from orchestra.wire import audience_pb2, audience_pb2_grpc, common_pb2, player_pb2  # noqa: E402
from measure import CLK_TCK, catches, cpu_seconds, floor_commit, floor_spawn, memory_bytes, percentile  # noqa: E402
from simplayer import CPU_QUERY, CPU_REPLY, ECHO_METHOD, OWN_CONNECTION, raise_fd_limit  # noqa: E402

SIMPLAYER = BENCH_DIR / "simplayer.py"
SCORE = "noop"
FD_MARGIN = 256               # descriptors a process needs besides one per session
SETTLE_MIN_SECONDS = 2.0      # before the idle sample: at least this quiet time ...
SETTLE_MAX_SECONDS = 30.0     # ... waiting at most this long for the conductor to calm down
SETTLED_CPU_FRACTION = 0.25   # "quiet": under this share of a core over one second
STATS_WAIT_SECONDS = 5.0
BACKENDS = ("sqlite", "postgresql")  # the conductor's [store] backends, in the table's order
# The throwaway server's settings beyond devtools.pgserver's (which are sized for one
# server per test worker): PostgreSQL's own default for its buffer cache.
PG_SETTINGS = {"shared_buffers": "128MB"}
PG_FLOOR_DATABASE = "fleet_floor"
COMMIT_SAMPLES = 300          # at least this many samples for each durable-commit floor
COMMIT_WARMUP = 10            # unmeasured commits before them
GOAL_ALL_OF = {1000: 1.0, 3000: 2.0, 10000: 5.0}   # seconds, by N
GOAL_STORM = {10000: 15.0}                          # seconds, by N
GOAL_IDLE_CPU = {10000: 10.0}                       # % of one core, by N
GOAL_IDLE_RSS = {10000: 600 * 2**20}                # bytes, by N
GOAL_CPU_PER_TASK = 0.5e-3                          # seconds, every N
AUDIENCE_OPTIONS = [("grpc.max_receive_message_length", 256 * 2**20),
                    ("grpc.max_send_message_length", 256 * 2**20)]


class BenchError(Exception):
    """A phase could not complete: a timeout, a daemon that died, a failed call."""


def progress(message: str) -> None:
    sys.stderr.write(f"[fleet] {message}\n")
    sys.stderr.flush()


def child_env() -> dict[str, str]:
    """The environment of every child: this tree's modules first, no ORCHESTRA_* settings."""
    env = {k: v for k, v in CHILD_ENVIRON.items() if not k.startswith("ORCHESTRA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), CHILD_ENVIRON.get("PYTHONPATH")) if p)
    return env


def player_names(count: int) -> list[str]:
    return [f"p{n:05d}.fleet" for n in range(1, count + 1)]


# ---- set-up --------------------------------------------------------------------------


def fd_shortfalls(sizes: Sequence[int], hard: int) -> list[str]:
    """Sizes the hard limit cannot hold: the conductor has every session, a worker a share."""
    problems = []
    for n in sizes:
        need = n + FD_MARGIN
        if hard != resource.RLIM_INFINITY and hard < need:
            problems.append(f"N={n} needs about {need} open files in the conductor"
                            f" (one socket per session plus {FD_MARGIN})")
    return problems


def make_pki(root: Path, count: int) -> pki.SSLDir:
    """A dev CA, the conductor's certificate and ``count`` player certificates.

    The player files are written without fsync (they are thrown away with the run).
    """
    ssl = pki.SSLDir(root)
    authority = pki.new_authority()
    ssl.write_authority(authority)
    ssl.write_leaf(CONDUCTOR_NAME, *pki.issue(authority, CONDUCTOR_NAME, pki.ROLE_USAGES["conductor"]))
    for name in player_names(count):
        cert, key = pki.issue(authority, name, pki.ROLE_USAGES["player"])
        ssl.cert(name).write_bytes(pki.cert_pem(cert))
        fd = os.open(ssl.key(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pki.key_pem(key))
        finally:
            os.close(fd)
    return ssl


# ---- the conductor -------------------------------------------------------------------


class Conductor:
    """The real conductor daemon on one state directory, restartable."""

    def __init__(self, home: Path, ssl: pki.SSLDir, names: Sequence[str], log_level: str,
                 settings: dict[str, object]) -> None:
        self.home = home
        self.port = free_port()
        self.socket = home / "run" / "conductor.sock"
        players = home / "players"
        players.write_text("# simulated players\n" + "".join(f"{name}\n" for name in names))
        config = write_toml(home / "conductor.toml", {
            "listen": f"127.0.0.1:{self.port}", "audience_socket": str(self.socket),
            "state_dir": str(home / "state"), "players_file": str(players), **settings,
        }, {"ca": str(ssl.ca_cert), "cert": str(ssl.cert(CONDUCTOR_NAME)),
            "key": str(ssl.key(CONDUCTOR_NAME)), "crl": str(ssl.crl)})
        (home / "logs").mkdir(exist_ok=True)
        self.log = home / "logs" / "conductor.log"
        self.log_level = log_level
        self.proc = Proc("conductor", [sys.executable, "-m", "conductor.main", "--config", str(config),
                                       "--log-level", log_level], self.log)
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.time()
        self.proc.start(child_env())

    @property
    def pid(self) -> int:
        assert self.proc.popen is not None
        return self.proc.popen.pid

    @property
    def running(self) -> bool:
        return self.proc.running

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def wait_ready(self, timeout: float) -> None:
        """Until the audience socket answers (a GetJob of a malformed id is refused)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise BenchError(f"the conductor exited at start-up:\n{self.log_tail()}")
            if self.socket.exists():
                async with grpc.aio.insecure_channel(f"unix:{self.socket}") as channel:
                    stub = audience_pb2_grpc.AudienceStub(channel)
                    try:
                        await stub.GetJob(audience_pb2.JobRef(job_id="-"), timeout=2)
                    except grpc.aio.AioRpcError as err:
                        if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                            return
            await asyncio.sleep(0.05)
        raise BenchError(f"the conductor did not answer within {timeout:g} s:\n{self.log_tail()}")

    async def stop(self) -> tuple[float, int | None]:
        """SIGTERM and wait (SIGKILL after 15 s); returns (seconds taken, exit status)."""
        started = time.perf_counter()
        code = await asyncio.to_thread(self.proc.stop)
        return time.perf_counter() - started, code

    async def stats(self) -> tuple[dict[str, int] | None, str]:
        """SIGUSR1, then the integer fields of the ``stats`` line it logs; else (None, why)."""
        if not self.running:
            return None, "the conductor is not running"
        if not catches(self.pid, signal.SIGUSR1):
            return None, "the conductor has no SIGUSR1 handler (it would die of the signal)"
        offset = self.log.stat().st_size
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + STATS_WAIT_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with self.log.open("rb") as handle:
                handle.seek(offset)
                for entry in _json_lines(handle.read()):
                    if entry.get("event") == "stats":
                        return {key: value for key, value in entry.items()
                                if isinstance(value, int) and not isinstance(value, bool)}, ""
        return None, (f"no stats line within {STATS_WAIT_SECONDS:g} s of SIGUSR1"
                      f" (logged below --conductor-log-level {self.log_level}?)")

    def log_events(self) -> dict[str, int]:
        """How often each warning or error event was logged, most frequent first."""
        counts: Counter[str] = Counter()
        if self.log.exists():
            for entry in _json_lines(self.log.read_bytes()):
                if entry.get("level") in ("warning", "error", "critical"):
                    counts[f"{entry.get('level')}:{entry.get('event')}"] += 1
        return dict(counts.most_common(20))


def _json_lines(data: bytes) -> list[dict[str, Any]]:
    entries = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a partial last line, or something that is not ours
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


# ---- the simulated players -----------------------------------------------------------


class Worker:
    """One ``simplayer.py fleet`` process and the last status it reported."""

    def __init__(self, home: Path, index: int, names: Sequence[str], settings: dict[str, object]) -> None:
        self.spec_path = home / f"fleet-{index}.json"
        self.spec_path.write_text(json.dumps({**settings, "names": list(names)}))
        self.log = home / "logs" / f"fleet-{index}.log"
        self.sessions = len(names)
        self.status: dict[str, Any] = {}
        self.loaded = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SIMPLAYER), "fleet", str(self.spec_path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                env=child_env(), start_new_session=True)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not a report (the worker's own diagnostics go to its log)
            event = message.pop("event", None)
            if event == "loaded":
                self.loaded.set()
            elif event in ("status", "stopped"):
                self.status = message

    @property
    def exited(self) -> bool:
        return self.proc is None or self.proc.returncode is not None

    def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())

    def get(self, key: str, default: Any = 0) -> Any:
        value = self.status.get(key)
        return default if value is None else value

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                self.send("stop")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 30)
            except (TimeoutError, ConnectionError):
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await asyncio.wait({self.reader}, timeout=5)


class Fleet:
    """Every worker of one size, seen as one set of sessions."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)

    def total(self, key: str) -> int:
        return sum(int(w.get(key)) for w in self.workers)

    def cpu(self) -> float:
        return sum(float(w.get("cpu", 0.0)) for w in self.workers)

    def all_welcomed_since(self, since: float) -> float | None:
        """When the last worker had all its sessions welcomed, if every one did after since."""
        times = []
        for worker in self.workers:
            at = worker.get("all_welcomed_at", None)
            if worker.get("welcomed") != worker.sessions or at is None or at < since:
                return None
            times.append(float(at))
        return max(times, default=None)

    def first_welcomed_at(self) -> float | None:
        times = [t for w in self.workers if (t := w.get("first_welcomed_at", None)) is not None]
        return min(times) if times else None

    def first_run_at(self) -> float | None:
        times = [t for w in self.workers if (t := w.get("first_run_at", None)) is not None]
        return min(times) if times else None

    def heartbeat_seconds(self) -> int | None:
        values = [v for w in self.workers if (v := w.get("heartbeat_seconds", None)) is not None]
        return values[0] if values else None

    def ends(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for w in self.workers:
            counts.update(w.get("ends", {}))
        return dict(counts)

    def end_examples(self) -> dict[str, str]:
        examples: dict[str, str] = {}
        for w in self.workers:
            for end, details in w.get("end_examples", {}).items():
                examples.setdefault(end, details)
        return examples

    def summary(self) -> dict[str, object]:
        return {"processes": len(self.workers), "cpu_seconds": round(self.cpu(), 3),
                "stream_ends": self.ends(), "stream_end_examples": self.end_examples(),
                **{key: self.total(key) for key in ("welcomes", "runs", "grants", "results", "acks",
                                                     "cancels", "heartbeats", "silent", "reconnects")}}


# ---- floors --------------------------------------------------------------------------


@dataclass
class EchoFloors:
    rtt_p50_seconds: float
    rtt_server_cpu_seconds: float
    connect_p50_seconds: float
    connect_server_cpu_seconds: float
    server_base_rss_bytes: int       # the echo server with no connection yet
    server_rss_per_session_bytes: float  # what each open mTLS stream adds to it


@dataclass
class Floors(EchoFloors):
    spawn_seconds: float
    commit_seconds: float                             # SQLite
    postgresql_commit_seconds: float | None = None    # when the run has a PostgreSQL server

    def commit(self, backend: str) -> float | None:
        """The durable-commit floor of a store backend."""
        return self.postgresql_commit_seconds if backend == "postgresql" else self.commit_seconds


class EchoPeer:
    """``simplayer.py echo`` in a process of its own, and one open mTLS stream to it."""

    def __init__(self, ssl: pki.SSLDir, player: str, log: Path) -> None:
        self.ssl = ssl
        self.log = log
        self.credentials = channel_credentials(Material(
            ssl.ca_cert.read_bytes(), ssl.cert(player).read_bytes(), ssl.key(player).read_bytes()))
        self.options = [*channel_options(CONDUCTOR_NAME), *OWN_CONNECTION]
        self.payload = player_pb2.PlayerMessage(
            heartbeat=player_pb2.Heartbeat(sent_at=time.time())).SerializeToString()
        self.target = ""
        self.base_rss = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: Any = None
        self.call: Any = None

    async def __aenter__(self) -> EchoPeer:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SIMPLAYER), "echo", "--ca", str(self.ssl.ca_cert),
                "--cert", str(self.ssl.cert(CONDUCTOR_NAME)), "--key", str(self.ssl.key(CONDUCTOR_NAME)),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, env=child_env())
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise BenchError("the echo server did not start")
        self.target = f"127.0.0.1:{json.loads(line)['port']}"
        self.base_rss = self.rss()
        self.channel, self.call = await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def rss(self) -> int:
        assert self.proc is not None
        return memory_bytes(self.proc.pid)

    async def open(self) -> tuple[Any, Any]:
        """A new connection (own TLS handshake) with a stream that made one round trip."""
        channel = grpc.aio.secure_channel(self.target, self.credentials, options=self.options)
        call = channel.stream_stream(ECHO_METHOD)()
        await call.write(self.payload)
        await call.read()
        return channel, call

    async def round_trip(self, data: bytes) -> bytes:
        await self.call.write(data)
        reply: bytes = await self.call.read()
        return reply

    async def server_cpu(self) -> float:
        value: float = CPU_REPLY.unpack(await self.round_trip(CPU_QUERY))[0]
        return value


async def echo_floors(peer: EchoPeer, rtts: int, connects: int) -> EchoFloors:
    """Round trips, fresh connections and open sessions against the echo peer."""
    async with peer:
        for _ in range(50):
            await peer.round_trip(peer.payload)
        cpu0 = await peer.server_cpu()
        rtt_samples = []
        for _ in range(rtts):
            started = time.perf_counter()
            await peer.round_trip(peer.payload)
            rtt_samples.append(time.perf_counter() - started)
        rtt_cpu = (await peer.server_cpu() - cpu0) / rtts

        cpu0 = await peer.server_cpu()
        connect_samples = []
        for _ in range(connects):
            started = time.perf_counter()
            channel, _ = await peer.open()
            connect_samples.append(time.perf_counter() - started)
            await channel.close()
        connect_cpu = (await peer.server_cpu() - cpu0) / connects

        rss0 = peer.rss()
        held = [await peer.open() for _ in range(connects)]
        per_session = (peer.rss() - rss0) / connects
        for channel, _ in held:
            await channel.close()
        return EchoFloors(percentile(rtt_samples, 0.5), rtt_cpu, percentile(connect_samples, 0.5),
                          connect_cpu, peer.base_rss, per_session)


def floor_pg_commit(dsn: str, count: int) -> tuple[list[float], str]:
    """Seconds of each durable PostgreSQL INSERT + COMMIT, and the server's version.

    One connection over the dsn (as the conductor connects), autocommit: each INSERT is a
    transaction of its own, so the statement and its COMMIT are one round trip, which
    returns once the commit is flushed to the WAL (``synchronous_commit`` and ``fsync``
    on, or the floor is refused: it would not be durable).
    """
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="orchestra-fleet-floor") as conn:
            settings = {}
            for setting in ("fsync", "synchronous_commit", "server_version"):
                row = conn.execute(f"SHOW {setting}").fetchone()
                settings[setting] = "" if row is None else str(row[0])
            for setting in ("fsync", "synchronous_commit"):
                if settings[setting] != "on":
                    raise BenchError(f"the PostgreSQL floor needs {setting} = on, not {settings[setting]!r}")
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, body text)")
            samples: list[float] = []
            for n in range(COMMIT_WARMUP + count):
                start = time.perf_counter()
                conn.execute("INSERT INTO t (body) VALUES (%s)", (f"row {n}",))
                if n >= COMMIT_WARMUP:
                    samples.append(time.perf_counter() - start)
            return samples, settings["server_version"]
    except psycopg.Error as err:
        raise BenchError(f"the PostgreSQL commit floor: {err}") from None


def server_cpu_seconds(postmaster: int) -> float:
    """CPU of a PostgreSQL server: the postmaster's own and that of the children it reaped
    (cutime+cstime), plus every live child's (backends, background processes)."""
    def fields(pid: str) -> list[str]:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()

    def used(values: list[str]) -> int:
        return sum(int(value) for value in values[11:15])  # utime stime cutime cstime
    ticks = used(fields(str(postmaster)))
    parent = str(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            values = fields(entry.name)
        except (OSError, ValueError):
            continue  # gone meanwhile (its CPU moves to the postmaster's reaped children)
        if values[1] == parent:
            ticks += used(values)
    return ticks / CLK_TCK


async def measure_floors(root: Path, ssl: pki.SSLDir, samples: int, pg_dsn: str | None) -> tuple[Floors, str]:
    """Every floor, and the PostgreSQL server's version ("" without one)."""
    few = max(10, samples // 10)
    commits = max(COMMIT_SAMPLES, few)
    spawn = statistics.median(await floor_spawn(few))
    commit = statistics.median(floor_commit(root / "floor.db", COMMIT_WARMUP + commits)[COMMIT_WARMUP:])
    pg_commit, version = None, ""
    if pg_dsn is not None:
        pg_samples, version = await asyncio.to_thread(floor_pg_commit, pg_dsn, commits)
        pg_commit = statistics.median(pg_samples)
    echo = await echo_floors(EchoPeer(ssl, player_names(1)[0], root / "echo.log"), samples, few)
    return Floors(**vars(echo), spawn_seconds=spawn, commit_seconds=commit,
                  postgresql_commit_seconds=pg_commit), version


# ---- one size ------------------------------------------------------------------------


class SizeRun:
    """Start the conductor and the workers for N sessions and measure every phase, on one
    store backend: SQLite in the state directory, or ``database`` (a PostgreSQL server)
    at ``dsn``."""

    def __init__(self, args: argparse.Namespace, root: Path, ssl: pki.SSLDir, n: int,
                 backend: str = "sqlite", database: PgServer | None = None, dsn: str = "") -> None:
        self.args = args
        self.n = n
        self.backend = backend
        self.tag = f"N={n} {backend}"
        self.database = database
        self.names = player_names(n)
        self.home = root / f"n{n}-{backend}"
        self.home.mkdir(parents=True)
        settings: dict[str, object] = {}
        if args.heartbeat_seconds is not None:
            settings["heartbeat_seconds"] = args.heartbeat_seconds
        if backend == "postgresql":
            settings["store"] = {"backend": "postgresql", "dsn": dsn}
        self.ssl = ssl
        self.conductor = Conductor(self.home, ssl, self.names, args.conductor_log_level, settings)
        self.timeout = args.phase_timeout or max(60.0, 0.05 * n)
        self.fleet = Fleet([])
        self.startup_cpu = 0.0  # the conductor's CPU from exec until it answers, no player yet

    def database_cpu(self) -> float | None:
        """The PostgreSQL server's CPU seconds so far; None with SQLite (or no server)."""
        pid = self.database.postmaster_pid() if self.database is not None else None
        return None if pid is None else server_cpu_seconds(pid)

    async def wait_for(self, check: Callable[[], float | None], what: str, timeout: float,
                       conductor_up: bool = True) -> float:
        """Poll check() until it returns a value; fail early if a process died."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value is not None:
                return value
            if conductor_up and not self.conductor.running:
                raise BenchError(f"the conductor exited while waiting for {what}:\n"
                                 f"{self.conductor.log_tail()}")
            dead = [w.log for w in self.fleet.workers if w.exited]
            if dead:
                raise BenchError(f"a player process exited while waiting for {what}; see {dead[0]}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:g} s waiting for {what}"
                                 f" ({self.fleet.total('welcomed')} of {self.n} sessions welcomed)")
            await asyncio.sleep(0.05)

    async def start_workers(self) -> None:
        count = max(1, min(self.args.workers, self.n))
        share = math.ceil(self.n / count)
        workers = []
        settings: dict[str, object] = {
            "target": f"127.0.0.1:{self.conductor.port}", "conductor_name": CONDUCTOR_NAME,
            "ssl_dir": str(self.ssl.root), "score": SCORE, "max_concurrent": 1,
            "backoff_initial": self.args.backoff_initial, "backoff_max": self.args.backoff_max,
            "liveness": self.args.liveness, "max_connecting": self.args.max_connecting}
        for index in range(count):
            workers.append(Worker(self.home, index, self.names[index * share:(index + 1) * share], settings))
        self.fleet = Fleet(workers)
        for worker in workers:
            await worker.start()
        loaded = asyncio.gather(*(w.loaded.wait() for w in workers))
        await self.wait_for(lambda: 0.0 if loaded.done() else None, "the player processes to load", 120)

    async def connect(self) -> dict[str, object]:
        self.conductor.start()
        await self.conductor.wait_ready(60)
        self.startup_cpu = self.conductor.cpu()
        await self.start_workers()
        progress(f"{self.tag}: connecting {self.n} sessions")
        started = time.time()
        for worker in self.fleet.workers:
            worker.send("connect")
        done = await self.wait_for(lambda: self.fleet.all_welcomed_since(started), "every session welcomed",
                                   self.timeout)
        return {"seconds": done - started, "conductor_startup_cpu_seconds": self.startup_cpu}

    async def idle(self) -> dict[str, object]:
        progress(f"{self.tag}: waiting for the conductor to settle, then {self.args.idle_seconds:g} s idle")
        began = time.monotonic()
        cpu, at = self.conductor.cpu(), time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now_cpu, now = self.conductor.cpu(), time.monotonic()
            busy = (now_cpu - cpu) / (now - at)
            cpu, at = now_cpu, now
            waited = now - began
            if (waited >= SETTLE_MIN_SECONDS and busy < SETTLED_CPU_FRACTION) or waited >= SETTLE_MAX_SECONDS:
                break
        settle = time.monotonic() - began
        cpu0, t0, beats0 = self.conductor.cpu(), time.monotonic(), self.fleet.total("heartbeats")
        database0 = self.database_cpu()
        fewest = self.fleet.total("welcomed")
        while (elapsed := time.monotonic() - t0) < self.args.idle_seconds:
            await asyncio.sleep(min(0.5, self.args.idle_seconds - elapsed))
            fewest = min(fewest, self.fleet.total("welcomed"))
        cpu1, t1, database1 = self.conductor.cpu(), time.monotonic(), self.database_cpu()
        return {"settle_seconds": round(settle, 3), "seconds": round(t1 - t0, 3),
                "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
                "database_cpu_percent": 100 * (database1 - database0) / (t1 - t0)
                if database0 is not None and database1 is not None else None,
                "rss_bytes": memory_bytes(self.conductor.pid),
                "heartbeat_seconds": self.fleet.heartbeat_seconds(),
                "player_heartbeats": self.fleet.total("heartbeats") - beats0,
                "fewest_welcomed": fewest}

    async def submit_and_wait(self) -> audience_pb2.Job:
        """Submit the all-of job over the audience socket; the job once it finished (or timed out)."""
        target = f"unix:{self.conductor.socket}"
        async with grpc.aio.insecure_channel(target, options=AUDIENCE_OPTIONS) as channel:
            stub = audience_pb2_grpc.AudienceStub(channel)
            try:
                reply = await stub.Submit(audience_pb2.SubmitRequest(
                    score=SCORE, scope=audience_pb2.SCOPE_ALL_OF, targets=self.names), timeout=60)
                async for job in stub.WaitJob(audience_pb2.WaitRequest(
                        job_id=reply.job_id, timeout_seconds=self.timeout), timeout=self.timeout + 30):
                    found: audience_pb2.Job = job
                    return found
            except grpc.aio.AioRpcError as err:
                raise BenchError(f"all-of job: {err.code().name}: {err.details()}") from None
        raise BenchError("all-of job: WaitJob ended without a job")

    async def fanout(self) -> dict[str, object]:
        progress(f"{self.tag}: all-of job on {self.n} players")
        before, why_not = await self.conductor.stats()
        earlier_runs, acks = self.fleet.total("runs"), self.fleet.total("acks")
        cpu0, players_cpu0, database0 = self.conductor.cpu(), self.fleet.cpu(), self.database_cpu()
        submitted = time.time()
        job = await self.submit_and_wait()
        returned = time.time()
        cpu1, database1 = self.conductor.cpu(), self.database_cpu()
        database = database1 - database0 if database0 is not None and database1 is not None else None
        after, why_not_after = await self.conductor.stats()
        # The players report every status_interval: let the last acks of this job arrive.
        deadline = time.monotonic() + 10
        while self.fleet.total("acks") < acks + self.n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        players_cpu1 = self.fleet.cpu()
        states = Counter(common_pb2.TaskState.Name(task.state) for task in job.tasks)
        first_run = self.fleet.first_run_at()
        figures: dict[str, object] = {
            "job_id": job.job_id, "status": job.status, "finished": job.finished,
            "tasks": len(job.tasks), "tasks_ok": states["TASK_STATE_OK"], "states": dict(states),
            "seconds": job.finished_at - submitted if job.finished else None,
            "wall_seconds": returned - submitted,
            "first_dispatch_seconds": first_run - submitted
            if first_run is not None and earlier_runs == 0 else None,
            "conductor_cpu_seconds": cpu1 - cpu0, "cpu_per_task_seconds": (cpu1 - cpu0) / self.n,
            "database_cpu_seconds": database,
            "database_cpu_per_task_seconds": None if database is None else database / self.n,
            "players_cpu_seconds": round(players_cpu1 - players_cpu0, 3),
            "stats_before": before, "stats_after": after,
            "commits_per_task": None, "writes_per_task": None, "stats_note": why_not or why_not_after,
        }
        if before is not None and after is not None:
            for key in ("commits", "writes"):
                if key in before and key in after:
                    figures[f"{key}_per_task"] = (after[key] - before[key]) / self.n
        if not job.finished or states["TASK_STATE_OK"] != self.n:
            figures["error"] = f"all-of job: {states['TASK_STATE_OK']} of {self.n} tasks ok: {dict(states)}"
        return figures

    async def storm(self) -> dict[str, object]:
        progress(f"{self.tag}: restarting the conductor (connect storm)")
        peak = memory_bytes(self.conductor.pid, "VmHWM")
        attempts = self.fleet.total("reconnects")
        stopping = time.time()
        stop_seconds, code = await self.conductor.stop()
        await self.wait_for(lambda: 0.0 if self.fleet.total("welcomed") == 0 else None,
                            "every session to see the conductor go", 30, conductor_up=False)
        database0 = self.database_cpu()
        self.conductor.start()
        started = self.conductor.started_at

        async def answering() -> float:
            await self.conductor.wait_ready(self.timeout)
            return time.time() - started
        ready = asyncio.ensure_future(answering())
        try:
            done = await self.wait_for(lambda: self.fleet.all_welcomed_since(started),
                                       "every session welcomed after the restart", self.timeout)
        finally:
            if not ready.done():
                ready.cancel()
            await asyncio.wait({ready})
        cpu, database1 = self.conductor.cpu(), self.database_cpu()
        first = self.fleet.first_welcomed_at()
        return {"seconds": done - started, "conductor_cpu_seconds": cpu,
                "database_cpu_seconds": database1 - database0
                if database0 is not None and database1 is not None else None,
                "cpu_per_connect_seconds": max(0.0, cpu - self.startup_cpu) / self.n,
                "conductor_busy_fraction": cpu / (done - started) if done > started else None,
                "down_seconds": round(started - stopping, 3),
                "ready_seconds": ready.result() if ready.done() and not ready.cancelled()
                and ready.exception() is None else None,
                "first_welcome_seconds": first - started if first is not None and first >= started else None,
                "reconnect_attempts": self.fleet.total("reconnects") - attempts,
                "old_conductor_peak_rss_bytes": peak, "old_conductor_stop_seconds": round(stop_seconds, 3),
                "old_conductor_exit": code}

    async def run(self) -> dict[str, object]:
        result: dict[str, object] = {"n": self.n, "backend": self.backend}
        errors: list[str] = []
        try:
            result["connect"] = await self.connect()
            result["idle"] = await self.idle()
            result["fanout"] = fanout = await self.fanout()
            if "error" in fanout:
                errors.append(str(fanout["error"]))
            result["storm"] = await self.storm()
        except (BenchError, OSError) as err:  # OSError: /proc of a process that just died
            errors.append(str(err))
            progress(f"{self.tag}: {str(err).splitlines()[0]}")
        finally:
            for worker in self.fleet.workers:
                await worker.stop()
            result["players"] = self.fleet.summary()
            stop_seconds, code = await self.conductor.stop()
            result["conductor"] = {"stop_seconds": round(stop_seconds, 3), "exit": code,
                                   "log_events": self.conductor.log_events(),
                                   "log": str(self.conductor.log)}
        result["errors"] = errors
        return result


# ---- the report ----------------------------------------------------------------------


def seconds_text(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-4:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} µs"


@dataclass
class Figure:
    """One figure of one backend, or a floor; value and floor in the same unit, formatted
    by ``text``."""

    figure: str
    value: float | None
    floor: float | None = None
    goal: float | None = None
    goal_text: str = ""
    text: Callable[[float], str] = seconds_text
    shown: str | None = None  # overrides the formatted value

    def value_cell(self) -> str:
        if self.shown is not None:
            return self.shown
        return "n/a" if self.value is None else self.text(self.value)

    def floor_cell(self) -> str:
        return "" if self.floor is None else self.text(self.floor)

    def ratio_cell(self) -> str:
        return f"{self.value / self.floor:.1f}x" if self.value is not None and self.floor else ""

    def verdict(self) -> str:
        if self.goal is None or self.value is None:
            return ""
        return "ok" if self.value <= self.goal else "MISSED"

    def to_json(self) -> dict[str, object]:
        return {"figure": self.figure, "value": self.value_cell(), "floor": self.floor_cell(),
                "ratio": self.ratio_cell(),
                "goal": " ".join(part for part in (self.goal_text, self.verdict()) if part)}


@dataclass
class Table:
    """A header and rows of cells; ``groups`` titles runs of columns, from the first, in a
    line above the header: (title, number of columns)."""

    header: list[str]
    rows: list[list[str]]
    groups: list[tuple[str, int]] = field(default_factory=list)

    def render(self) -> str:
        lines = [self.header, *self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(self.header))]
        first = 0
        for title, span in self.groups:  # widen a group's last column to fit its title
            spanned = sum(widths[first:first + span]) + 3 * (span - 1)
            widths[first + span - 1] += max(0, len(title) - spanned)
            first += span
        out = []
        if self.groups:
            first, cells = 0, []
            for title, span in self.groups:
                cells.append(title.ljust(sum(widths[first:first + span]) + 3 * (span - 1)))
                first += span
            out.append(" | ".join(cells).rstrip())
        out += [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        out.insert(len(out) - len(self.rows), "-+-".join("-" * width for width in widths))
        return "\n".join(out) + "\n"


def _get(result: dict[str, Any], phase: str, key: str) -> Any:
    section = result.get(phase)
    return section.get(key) if isinstance(section, dict) else None


def percent(value: float) -> str:
    return f"{value:.1f} %"


def megabytes(value: float) -> str:
    return f"{value / 2**20:.0f} MB"


def kilobytes(value: float) -> str:
    return f"{value / 1024:.1f} KB"


def count(value: float) -> str:
    return f"{value:.3g}"


def goal_for(goals: Mapping[int, float], n: int, text: Callable[[float], str],
             sign: str = "<") -> dict[str, Any]:
    """The goal keywords of a Figure, if the goals name one for this size."""
    return {"goal": goals[n], "goal_text": f"{sign} {text(goals[n])}"} if n in goals else {}


def floor_figures(floors: Floors) -> list[tuple[str | None, Figure]]:
    """The floors, each with the backend it belongs to (None: every backend)."""
    rows: list[tuple[str | None, Figure]] = [
        (None, Figure("asyncio spawn+wait of /bin/true", floors.spawn_seconds)),
        ("sqlite", Figure("durable SQLite insert+commit, p50", floors.commit_seconds)),
    ]
    if floors.postgresql_commit_seconds is not None:
        rows.append(("postgresql", Figure("durable PostgreSQL INSERT+COMMIT round trip, p50",
                                          floors.postgresql_commit_seconds)))
    rows += [(None, figure) for figure in (
        Figure("mTLS stream round trip, p50", floors.rtt_p50_seconds),
        Figure("echo server CPU per round trip", floors.rtt_server_cpu_seconds),
        Figure("new mTLS connection + round trip, p50", floors.connect_p50_seconds),
        Figure("echo server CPU per connection", floors.connect_server_cpu_seconds),
        Figure("echo server RSS, no session", floors.server_base_rss_bytes, text=megabytes),
        Figure("echo server RSS per open session", floors.server_rss_per_session_bytes, text=kilobytes),
    )]
    return rows


def size_figures(floors: Floors, result: dict[str, Any]) -> list[Figure]:
    """The figures of one size on one backend, in the table's order; the commit floor is
    the backend's own."""
    n = int(result["n"])
    backend = str(result["backend"])
    commit = floors.commit(backend)
    per_message = 2.5 * floors.rtt_server_cpu_seconds
    heartbeat = _get(result, "idle", "heartbeat_seconds")
    tasks_ok, tasks = _get(result, "fanout", "tasks_ok"), _get(result, "fanout", "tasks")
    database = _get(result, "fanout", "database_cpu_per_task_seconds")
    return [
        Figure("initial connect, all welcomed", _get(result, "connect", "seconds"),
               floor=n * floors.connect_server_cpu_seconds),
        Figure("idle conductor CPU (% of a core)", _get(result, "idle", "cpu_percent"),
               floor=100 * n * floors.rtt_server_cpu_seconds / heartbeat if heartbeat else None,
               text=percent, **goal_for(GOAL_IDLE_CPU, n, percent)),
        Figure("idle conductor RSS", _get(result, "idle", "rss_bytes"),
               floor=floors.server_base_rss_bytes + n * floors.server_rss_per_session_bytes,
               text=megabytes, **goal_for(GOAL_IDLE_RSS, n, megabytes)),
        Figure("all-of submit -> finished", _get(result, "fanout", "seconds"),
               floor=None if commit is None else 3 * commit + n * per_message,
               **goal_for(GOAL_ALL_OF, n, seconds_text)),
        Figure("all-of first RunTask", _get(result, "fanout", "first_dispatch_seconds"),
               floor=None if commit is None else 2 * commit),
        Figure("all-of tasks ended ok", None, shown="n/a" if tasks is None else f"{tasks_ok} of {n}"),
        Figure("conductor CPU per task", _get(result, "fanout", "cpu_per_task_seconds"),
               floor=per_message, **goal_for({n: GOAL_CPU_PER_TASK}, n, seconds_text, "<=")),
        Figure("database server CPU per task", database,
               shown="in conductor" if backend == "sqlite" else None),
        Figure("durable commits per task", _get(result, "fanout", "commits_per_task"),
               floor=3 / n, text=count),
        Figure("connect storm, all welcomed again", _get(result, "storm", "seconds"),
               floor=n * floors.connect_server_cpu_seconds, **goal_for(GOAL_STORM, n, seconds_text)),
        Figure("conductor CPU per connect", _get(result, "storm", "cpu_per_connect_seconds"),
               floor=floors.connect_server_cpu_seconds),
    ]


def tables(floors: Floors, results: Sequence[dict[str, Any]],
           backends: Sequence[str]) -> tuple[list[Table], list[dict[str, object]]]:
    """The floors' table, then one per size with a group of columns per backend (value,
    floor, ratio to floor) and the goal, which names each backend's verdict; and every
    cell as JSON rows (one per figure, size and backend)."""
    floor_rows = floor_figures(floors)
    made = [Table(["floor (measured in this run)", "value"],
                  [[figure.figure, figure.value_cell()] for _, figure in floor_rows])]
    rows: list[dict[str, object]] = [{"n": None, "backend": backend, **figure.to_json()}
                                     for backend, figure in floor_rows]
    for n in dict.fromkeys(int(result["n"]) for result in results):
        by_backend = {str(result["backend"]): size_figures(floors, result)
                      for result in results if result["n"] == n}
        shown = [backend for backend in backends if backend in by_backend]
        cells: list[list[str]] = []
        for index, name in enumerate(figure.figure for figure in by_backend[shown[0]]):
            line, goal_text, verdicts = [name], "", []
            for backend in shown:
                figure = by_backend[backend][index]
                line += [figure.value_cell(), figure.floor_cell(), figure.ratio_cell()]
                goal_text = goal_text or figure.goal_text
                if figure.verdict():
                    verdicts.append(f"{backend} {figure.verdict()}" if len(shown) > 1 else figure.verdict())
                rows.append({"n": n, "backend": backend, **figure.to_json()})
            line.append(f"{goal_text}{':' if len(shown) > 1 and verdicts else ''} {', '.join(verdicts)}".strip())
            cells.append(line)
        made.append(Table(["figure", *(["value", "floor", "ratio"] * len(shown)), "goal"], cells,
                          [(f"N={n:,} players", 1), *((backend, 3) for backend in shown)]))
    return made, rows


def notes(results: Sequence[dict[str, Any]]) -> list[str]:
    """What the reader of the table must know: figures that could not be measured, failures."""
    found = []
    for result in results:
        tag = f"N={result['n']:,} {result['backend']}"
        note = _get(result, "fanout", "stats_note")
        if note:
            found.append(f"{tag}: durable commits n/a: {note}")
        found += [f"{tag}: {error.splitlines()[0]}" for error in result["errors"]]
    return found


def machine(postgresql: str) -> dict[str, object]:
    def proc_value(path: str) -> str | None:
        try:
            return " ".join(Path(path).read_text().split())
        except OSError:
            return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"cpus": os.cpu_count(), "open_files_soft": soft, "open_files_hard": hard,
            "somaxconn": proc_value("/proc/sys/net/core/somaxconn"),
            "ip_local_port_range": proc_value("/proc/sys/net/ipv4/ip_local_port_range"),
            "python": sys.version.split()[0], "grpc": grpc.__version__,
            "sqlite": sqlite3.sqlite_version, "postgresql": postgresql or None,
            "psycopg": psycopg.__version__}


# ---- main ----------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return list(dict.fromkeys(sizes))


def _backends(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of {' and '.join(BACKENDS)}: {text!r}")
    return [backend for backend in BACKENDS if backend in names]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[1000, 3000, 10000],
                        help="comma-separated numbers of simulated players (default 1000,3000,10000)")
    parser.add_argument("--backends", type=_backends,
                        help="the conductor's store backends, comma-separated (default: sqlite,postgresql"
                             " when PostgreSQL's server binaries are found, else sqlite)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--workers", type=int, default=2, help="simulated-player processes (default 2)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU sample (default 20)")
    parser.add_argument("--floor-samples", type=int, default=2000,
                        help="round trips for the gRPC floor; a tenth as many for the others, at least"
                             f" {COMMIT_SAMPLES} for each durable-commit floor (default 2000)")
    parser.add_argument("--phase-timeout", type=float, default=0.0,
                        help="seconds a phase may take (default: max(60, N/20))")
    parser.add_argument("--heartbeat-seconds", type=float,
                        help="the conductor's heartbeat_seconds (default: the conductor's default)")
    parser.add_argument("--backoff-initial", type=float, default=0.5, help="players' first reconnect delay")
    parser.add_argument("--backoff-max", type=float, default=30.0, help="players' longest reconnect delay")
    parser.add_argument("--liveness", type=float, default=None,
                        help="players drop a conductor silent this long (default: three of the"
                             " conductor's heartbeats, as real players do)")
    parser.add_argument("--max-connecting", type=int, default=64,
                        help="sessions per worker between dialling and Welcome at once (default 64):"
                             " the simulated fleet's handshakes share the conductor's cores")
    parser.add_argument("--conductor-log-level", default="warning",
                        help="the conductor's --log-level (default warning)")
    parser.add_argument("--workdir", type=Path, help="where to make the run's directory (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, state)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    missing = (f"PostgreSQL's initdb, pg_ctl and postgres were not found (Debian package {DEBIAN_PACKAGE})"
               if find_bindir() is None else "")
    args.backends_note = ""
    if args.backends is None:
        args.backends = [backend for backend in BACKENDS if backend != "postgresql" or not missing]
        if missing:
            args.backends_note = f"postgresql not measured: {missing}"
    elif "postgresql" in args.backends and missing:
        parser.error(f"--backends postgresql: {missing}")
    return args


async def bench(args: argparse.Namespace, root: Path) -> dict[str, object]:
    progress(f"generating {max(args.sizes):,} player certificates")
    ssl = await asyncio.to_thread(make_pki, root / "ssl", max(args.sizes))
    server: PgServer | None = None
    if args.backends_note:
        progress(args.backends_note)
    try:
        floor_dsn = None
        if "postgresql" in args.backends:
            progress("starting a PostgreSQL server")
            server = PgServer(settings=PG_SETTINGS)
            await asyncio.to_thread(server.start)
            floor_dsn = await asyncio.to_thread(server.create_database, PG_FLOOR_DATABASE)
        progress("measuring floors")
        floors, version = await measure_floors(root, ssl, args.floor_samples, floor_dsn)
        results = []
        for n in args.sizes:
            for backend in args.backends:
                database = server if backend == "postgresql" else None
                dsn = "" if database is None else await asyncio.to_thread(database.create_database, f"fleet_n{n}")
                results.append(await SizeRun(args, root, ssl, n, backend, database, dsn).run())
    finally:
        if server is not None:
            try:
                shutil.copyfile(server.log_path, root / "postgresql.log")
            except (OSError, PgServerError):
                pass  # never started: the error says why
            server.stop()
    made, rows = tables(floors, results, args.backends)
    found = ([args.backends_note] if args.backends_note else []) + notes(results)
    rendered = "\n".join(table.render() for table in made) + "".join(f"note: {line}\n" for line in found)
    return {"settings": {key: str(value) if isinstance(value, Path) else value
                         for key, value in vars(args).items()},
            "machine": machine(version), "floors": vars(floors), "sizes": results,
            "table": rows, "notes": found, "rendered": rendered,
            "ok": not any(result["errors"] for result in results)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _, hard = raise_fd_limit()
    shortfalls = fd_shortfalls(args.sizes, hard)
    if shortfalls:
        sys.stderr.write(
            f"fleet: the open-files hard limit is {hard}, too low:\n"
            + "".join(f"  {line}\n" for line in shortfalls)
            + "Raise it (as root: `ulimit -Hn 65536` in the shell that runs this, LimitNOFILE= for a"
              " systemd unit, nofile in /etc/security/limits.conf) or run smaller --sizes.\n")
        return 2
    root = Path(tempfile.mkdtemp(prefix="orchestra-fleet-", dir=args.workdir))
    try:
        report = asyncio.run(bench(args, root))
    except (BenchError, PgServerError, psycopg.Error) as err:
        sys.stderr.write(f"fleet: {err}\n")
        return 2
    finally:
        if args.keep:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rendered = str(report.pop("rendered"))
    sys.stdout.write(rendered)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
