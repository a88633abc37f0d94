"""Live output while a score prints megabytes quickly (``.venv/bin/python bench/output.py``).

Starts a real conductor and real players on loopback (devtools.devcluster; 2 players by
default) and installs a score that prints MEGABYTES MB of 100-byte lines (``yes | head -c``)
as fast as it can, then exits. The score first says it is ready and waits at a gate (a file
the benchmark creates), so a scenario's followers are attached before anything is printed;
its times run from the gate's opening. Scenarios, each a fresh all-of job on every player,
back to back:

  * nobody follows;
  * one ``getstatus --follow`` at full speed (its stdout a pipe this script drains);
  * one follower stopped (SIGSTOP) right after its first line, resumed once the job ended;
  * ``--followers`` (5) followers at full speed at once;
  * the same megabytes spread over ``--paced-seconds`` (a part every tenth of a second),
    followed at full speed, by a stopped follower, and by one whose stdout nobody reads
    after its first line (a pager that waits: the process runs, its pipe stays full) until
    the job ended: a player sends at most 1 MiB/s of live output per task, so only a score
    printing for seconds fills a viewer's bound.

Measured in each: the job's wall time (gate opened -> the job's finished_at), the resident
memory (VmRSS, sampled every 20 ms in a thread: VmHWM counts from the process's start) of
the conductor and of each player before the scenario and at its peak, each daemon's CPU
seconds over the scenario, and what each follower printed: the score's bytes it showed and
its "bytes skipped" markers with the bytes they name.

Floors, same run: the score alone (``sh SCORE > FILE``, one copy per player at once, as
the job runs it on this one machine) for the wall times; each daemon's idle RSS, after
warm-up jobs (WARMUP_JOBS small ones, then a followed one: a conductor's queue cache
grows with its first few dozen jobs whatever they print) and before any scenario, for the
memory; memory growth is held against the bound the design gives it (conductor/output.py,
player/follow.py).

``--quick`` is a small run; ``--json PATH`` also writes every figure and raw measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audience.client import Client  # noqa: E402
from conductor.output import RECENT_BYTES, VIEWER_BYTES  # noqa: E402
from devtools.devcluster import Cluster  # noqa: E402
from measure import cpu_seconds, memory_bytes  # noqa: E402
from orchestra.config import load_audience, load_player  # noqa: E402
from orchestra.wire import audience_pb2  # noqa: E402
from player.follow import CHUNK_BYTES, RATE_BYTES, WINDOW_BYTES  # noqa: E402
from player.runner import FIXED_PATH  # noqa: E402

SCORE = "printmb"
LINE = ("a line of the printmb score of bench/output.py, 100 bytes with its newline: "
        "0123456789abcdefghijklmnopqrstuvwxyz")[:99]
READY = "ready to print"
SCORE_BODY = """#!/bin/sh
# bench/output.py: says it is ready, waits at its gate, then prints ORC_PARTS times
# ORC_PART bytes of 100-byte lines, ORC_PAUSE seconds apart, each as fast as it can.
gates='{gates}'
echo "{ready} $ORC_PARTS x $ORC_PART bytes"
: > "$gates/$ORC_GATE.$ORC_PLAYER.started"
while [ ! -e "$gates/$ORC_GATE.open" ]; do sleep 0.01; done
i=0
while [ "$i" -lt "$ORC_PARTS" ]; do
  if [ "$i" -gt 0 ]; then sleep "$ORC_PAUSE"; fi
  yes '{line}' | head -c "$ORC_PART"
  i=$((i + 1))
done
"""
SCORE_CONF = """# bench/output.py's score
interface env
timeout 900
param GATE pattern=^[a-z0-9-]{1,40}$
param PART pattern=^[0-9]{1,12}$
param PARTS pattern=^[0-9]{1,6}$
param PAUSE pattern=^[0-9]{1,4}(\\.[0-9]{1,6})?$
"""
PARTS_PER_SECOND = 10     # of a paced score
SAMPLE_SECONDS = 0.02     # VmRSS sampling interval
IDLE_SECONDS = 1.0        # idle RSS: the median of this long of samples
# Small jobs run before the idle RSS is taken: the conductor's queue cache (SQLite pages
# of the stored output tails) grows with the first few dozen jobs whatever they print.
WARMUP_JOBS = 40
WAIT_SECONDS = 600.0
MB = 1_000_000
MIN_SHOWN_MB = 2.0        # CPU per MB streamed only over a scenario that showed this much
MIB = 1024 * 1024
SKIPPED_RE = re.compile(r"\[… (\d+) bytes skipped …\]")
STATE_RE = re.compile(r"\[[a-z_]+\]")
REPORT_START = "job        "  # the first line of getstatus's report, after the follow


@dataclass(frozen=True)
class Sizes:
    megabytes: int
    players: int
    followers: int          # in the many-followers scenario (0: skip it)
    paced_seconds: float    # length of the paced score (0: skip those scenarios)
    floor_runs: int         # runs of the fast score alone (median)


@dataclass(frozen=True)
class Shape:
    """How the score prints: PARTS parts of PART bytes, PAUSE seconds apart."""
    part: int
    parts: int
    pause: float

    @property
    def total(self) -> int:
        return self.part * self.parts

    def params(self, gate: str) -> list[str]:
        return [f"GATE={gate}", f"PART={self.part}", f"PARTS={self.parts}", f"PAUSE={self.pause:.6f}"]


WARMUP = Shape(part=100_000, parts=1, pause=0.0)


def fast_shape(sizes: Sizes) -> Shape:
    return Shape(part=sizes.megabytes * MB, parts=1, pause=0.0)


def paced_shape(sizes: Sizes) -> Shape:
    parts = max(1, round(sizes.paced_seconds * PARTS_PER_SECOND))
    part = sizes.megabytes * MB // parts // 100 * 100
    return Shape(part=part, parts=parts, pause=sizes.paced_seconds / parts)


# ---- memory samples ---------------------------------------------------------------------

class Sampler:
    """VmRSS of named processes every SAMPLE_SECONDS, in a thread: every sample and the
    peak of each (a process that ended is skipped)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.series: dict[str, list[tuple[float, int]]] = {name: [] for name in self.pids}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self.pids[name] = pid
            self.series.setdefault(name, [])

    def peak(self, name: str, since: float = 0.0, until: float = math.inf) -> int:
        return max((rss for at, rss in self.series.get(name, ()) if since <= at <= until), default=0)

    def median(self, name: str) -> int:
        return int(statistics.median(rss for _, rss in self.series[name]))

    def sample(self) -> None:
        with self._lock:
            pids = list(self.pids.items())
        for name, pid in pids:
            try:
                rss = memory_bytes(pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):  # ended (a zombie has no VmRSS)
                continue
            self.series[name].append((time.time(), rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# ---- followers --------------------------------------------------------------------------

@dataclass
class Shown:
    """What one follower printed on stdout before the job's report."""
    pipe_bytes: int = 0         # everything it wrote, report included
    score_lines: int = 0
    score_bytes: int = 0        # the score's own bytes shown (each line and its newline)
    partial_lines: int = 0      # shown lines that are not whole (a skip began or ended mid-line)
    skipped_markers: int = 0
    skipped_bytes: int = 0      # the bytes those markers name
    cut_markers: int = 0
    state_lines: int = 0
    by_host: dict[str, int] = field(default_factory=dict)   # score bytes shown per host


class Follower:
    """``getstatus --follow JOBID`` with its stdout drained and counted by a thread. Held
    after its first line until :meth:`resume`: ``hold="stop"`` stops the process
    (SIGSTOP), ``hold="block"`` leaves its stdout unread (it runs, blocked on a full pipe)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], hosts: Sequence[str], log: Path,
                 hold: str) -> None:
        self.hosts = set(hosts)
        self.hold = hold
        self.shown = Shown()
        self.first_line = threading.Event()
        self.released = threading.Event()
        self.log = log
        with log.open("wb") as err:
            self.popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=err, env=dict(env))
        self._thread = threading.Thread(target=self._drain, name=f"follower-{self.popen.pid}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _drain(self) -> None:
        out: IO[bytes] | None = self.popen.stdout
        assert out is not None
        in_report = False
        for raw in out:
            self.shown.pipe_bytes += len(raw)
            if not self.first_line.is_set():
                if self.hold == "stop":
                    os.kill(self.popen.pid, signal.SIGSTOP)
                self.first_line.set()
                if self.hold == "block":
                    self.released.wait()
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            in_report = in_report or text.startswith(REPORT_START)
            if not in_report:
                self._count(text)
        self.first_line.set()  # ended without a line: whoever waits must not wait forever

    def _count(self, text: str) -> None:
        host, _, said = text.partition(": ")
        if host not in self.hosts:
            return
        shown = self.shown
        skipped = SKIPPED_RE.fullmatch(said)
        if skipped:
            shown.skipped_markers += 1
            shown.skipped_bytes += int(skipped.group(1))
        elif said.startswith("[… output cut"):
            shown.cut_markers += 1
        elif STATE_RE.fullmatch(said):
            shown.state_lines += 1
        else:
            size = len(said.encode()) + 1
            shown.score_lines += 1
            shown.score_bytes += size
            shown.by_host[host] = shown.by_host.get(host, 0) + size
            if said != LINE and not said.startswith(READY):
                shown.partial_lines += 1

    def wait_first_line(self, timeout: float) -> None:
        if not self.first_line.wait(timeout) or self.popen.poll() is not None:
            raise RuntimeError(f"getstatus --follow printed no line within {timeout:g} s:\n"
                               + self.log.read_text(errors="replace")[-2000:])

    def resume(self) -> None:
        if self.hold == "stop" and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGCONT)
        self.released.set()

    def finish(self, timeout: float) -> int:
        """Its exit code, once it ended and its stdout is read to the end."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.released.set()
            self.popen.kill()
            self.popen.wait(10)
            raise RuntimeError(f"getstatus --follow did not end within {timeout:g} s of the job") from None
        self._thread.join(timeout)
        return code


# ---- scenarios --------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    followers: int = 0
    hold: str = ""          # "stop" (SIGSTOP) or "block" (stdout unread) after the first line
    paced: bool = False


def scenarios(sizes: Sizes) -> list[Scenario]:
    chosen = [Scenario("nobody", "nobody follows"),
              Scenario("full_speed", "follower at full speed", followers=1),
              Scenario("stopped", "stopped follower", followers=1, hold="stop")]
    if sizes.followers:
        chosen.append(Scenario("many", f"{sizes.followers} followers at full speed", followers=sizes.followers))
    if sizes.paced_seconds:
        paced = f"paced over {sizes.paced_seconds:g} s"
        chosen += [Scenario("paced_full_speed", f"{paced}, follower at full speed", followers=1, paced=True),
                   Scenario("paced_stopped", f"{paced}, stopped follower", followers=1, hold="stop", paced=True),
                   Scenario("paced_blocked", f"{paced}, follower not reading its pipe", followers=1, hold="block",
                            paced=True)]
    return chosen


@dataclass
class Outcome:
    """One scenario's measurements (bytes, seconds; times are unix seconds)."""
    key: str
    label: str
    job_id: str
    status: str
    printed_bytes: int                  # by each task
    submitted_at: float
    gate_at: float
    finished_at: float                  # the job's, as the conductor recorded it
    ended_at: float                     # every follower ended too
    score_ended_s: dict[str, float]     # each task's score end, after the gate
    stdout_truncated: dict[str, bool]   # the stored tail (also set when longer than the tail)
    rss_before: dict[str, int]
    rss_peak: dict[str, int]
    rss_peak_first_half: dict[str, int]     # between the gate and the middle of the job
    rss_peak_second_half: dict[str, int]    # between the middle of the job and its end
    cpu_s: dict[str, float]
    followers: list[Shown]
    follower_exit: list[int]
    follower_rss_peak: list[int]

    @property
    def wall_s(self) -> float:
        return self.finished_at - self.gate_at

    def shown_bytes(self) -> int:
        return sum(shown.score_bytes for shown in self.followers)


class Bench:
    def __init__(self, cluster: Cluster, gates: Path, sizes: Sizes) -> None:
        self.cluster = cluster
        self.gates = gates
        self.sizes = sizes
        self.names = list(cluster.player_names)
        self.pids = {"conductor": pid_of(cluster, "conductor"),
                     **{name: pid_of(cluster, f"player-{name}") for name in self.names}}
        self.env = cluster.env()
        self.env["ORCHESTRA_CONFIG"] = str(cluster.audience_config)
        self.client = Client(load_audience(cluster.audience_config, explicit=True))
        self.runs = 0

    def close(self) -> None:
        self.client.close()

    def submit(self, gate: str, shape: Shape) -> str:
        done = self.cluster.cli("submitjob", "--all-of", SCORE, *shape.params(gate), *self.names)
        if done.returncode != 0:
            raise RuntimeError(f"submitjob exited {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout.strip()

    def wait_started(self, gate: str, timeout: float = 60) -> None:
        markers = [self.gates / f"{gate}.{name}.started" for name in self.names]
        self.cluster.wait_for(lambda: all(marker.exists() for marker in markers),
                              f"every task of {gate} at its gate", timeout)

    def follower(self, job_id: str, number: int, hold: str) -> Follower:
        argv = [sys.executable, "-m", "audience.getstatus", "--follow", job_id]
        return Follower(argv, self.env, self.names, self.cluster.root / "logs" / f"follow-{job_id}-{number}.log",
                        hold)

    def warm_up(self, jobs: int) -> None:
        """``jobs`` small jobs submitted at once (their gate open), then waited for."""
        (self.gates / "warmup.open").touch()
        params = dict(param.split("=", 1) for param in WARMUP.params("warmup"))
        request = audience_pb2.SubmitRequest(score=SCORE, scope=audience_pb2.SCOPE_ALL_OF, targets=self.names,
                                             params=params)
        for job_id in [self.client.submit(request).job_id for _ in range(jobs)]:
            job = self.client.wait(job_id, WAIT_SECONDS)
            if job.status != "ok":
                raise RuntimeError(f"warm-up job {job_id} ended {job.status or 'unfinished'}")

    def run(self, scenario: Scenario, shape: Shape) -> Outcome:
        self.runs += 1
        gate = f"{scenario.key.replace('_', '-')}-{self.runs}"
        rss_before = {name: memory_bytes(pid) for name, pid in self.pids.items()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        followers: list[Follower] = []
        with Sampler(self.pids) as sampler:
            try:
                submitted_at = time.time()
                job_id = self.submit(gate, shape)
                self.wait_started(gate)
                for number in range(scenario.followers):
                    followers.append(self.follower(job_id, number, scenario.hold))
                    sampler.add(f"follower-{number}", followers[-1].pid)
                for follower in followers:
                    follower.wait_first_line(60)
                gate_at = time.time()
                (self.gates / f"{gate}.open").touch()
                job = self.client.wait(job_id, WAIT_SECONDS)
                for follower in followers:
                    follower.resume()
                exits = [follower.finish(120) for follower in followers]
                ended_at = time.time()
            finally:
                for follower in followers:
                    if follower.popen.poll() is None:
                        follower.popen.kill()
                        follower.popen.wait(10)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in self.pids.items()}
        if not job.finished:
            raise RuntimeError(f"job {job_id} of {scenario.label} did not finish within {WAIT_SECONDS:g} s")
        middle = (gate_at + job.finished_at) / 2
        return Outcome(
            key=scenario.key, label=scenario.label, job_id=job_id, status=job.status,
            printed_bytes=shape.total, submitted_at=submitted_at, gate_at=gate_at,
            finished_at=job.finished_at, ended_at=ended_at,
            score_ended_s={task.player: task.outcome.finished_at - gate_at for task in job.tasks},
            stdout_truncated={task.player: task.outcome.stdout_truncated for task in job.tasks},
            rss_before=rss_before,
            rss_peak={name: sampler.peak(name) for name in self.pids},
            rss_peak_first_half={name: sampler.peak(name, gate_at, middle) for name in self.pids},
            rss_peak_second_half={name: sampler.peak(name, middle, job.finished_at) for name in self.pids},
            cpu_s=cpu, followers=[follower.shown for follower in followers], follower_exit=exits,
            follower_rss_peak=[sampler.peak(f"follower-{number}") for number in range(len(followers))])


def pid_of(cluster: Cluster, name: str) -> int:
    popen = cluster.procs[name].popen
    assert popen is not None, f"{name} was never started"
    return popen.pid


def stop(cluster: Cluster) -> None:
    """Signal every daemon first, then wait for each (Cluster.stop alone goes one by one)."""
    for proc in cluster.procs.values():
        proc.send_signal(signal.SIGTERM)
    cluster.stop()


# ---- floors -----------------------------------------------------------------------------

def score_alone(script: Path, work: Path, gates: Path, shape: Shape, copies: int) -> float:
    """Seconds for ``copies`` copies of the score, started at once with their gate open,
    each writing its stdout to a file of ``work`` (the same file system as the spools)."""
    (gates / "floor.open").touch()
    outputs = [work / f"floor-{n}.out" for n in range(copies)]
    procs: list[subprocess.Popen[bytes]] = []
    start = time.perf_counter()
    for n, path in enumerate(outputs):
        env = {"PATH": FIXED_PATH, "LANG": "C.UTF-8", "ORC_PLAYER": f"floor{n}",
               **{f"ORC_{key}": value for key, _, value in (param.partition("=") for param in shape.params("floor"))}}
        with path.open("wb") as out:
            procs.append(subprocess.Popen(["sh", str(script)], stdin=subprocess.DEVNULL, stdout=out, env=env))
    codes = [proc.wait() for proc in procs]
    elapsed = time.perf_counter() - start
    sizes = [path.stat().st_size for path in outputs]
    for path in outputs:
        path.unlink()
    if any(codes) or min(sizes) < shape.total:
        raise RuntimeError(f"the score alone exited {codes} after printing {sizes} bytes")
    return elapsed


@dataclass
class Floors:
    fast_s: list[float]
    paced_s: float | None
    idle_rss: dict[str, int]

    @property
    def fast(self) -> float:
        return statistics.median(self.fast_s)


# ---- the table --------------------------------------------------------------------------

@dataclass
class Row:
    key: str
    label: str
    value: float
    unit: str                      # "s", "MB" (10^6 bytes), "ms/MB"
    floor: float | None = None
    floor_is: str = ""

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor <= 0:
            return None
        return self.value / self.floor

    def as_json(self) -> dict[str, object]:
        return {"label": self.label, "unit": self.unit, "value": self.value, "floor": self.floor,
                "floor_is": self.floor_is, "ratio": self.ratio}


def conductor_bound(scenario: Scenario, players: int) -> tuple[int, str]:
    """What the conductor holds by design for a scenario's followers: each viewer's queue
    (VIEWER_BYTES) and the batch its stream is writing (taken whole from the queue, up to
    VIEWER_BYTES more), and RECENT_BYTES of each stream of each watched task."""
    if not scenario.followers:
        return 0, "nothing streams"
    viewers = scenario.followers * 2 * VIEWER_BYTES
    recent = players * 2 * RECENT_BYTES
    return viewers + recent, (f"bound: {scenario.followers} viewer{'s' if scenario.followers > 1 else ''}"
                              f" x 2 MiB + {players * 2} x 4 KiB recent")


def player_bound(scenario: Scenario) -> tuple[int, str]:
    """What a player holds by design: its session's window of unsent chunks, overshot by
    at most one chunk of each stream."""
    if not scenario.followers:
        return 0, "nothing streams"
    return WINDOW_BYTES + 2 * CHUNK_BYTES, "bound: 256 KiB window + 2 x 32 KiB chunks"


def build_rows(chosen: Sequence[Scenario], outcomes: Mapping[str, Outcome], floors: Floors,
               names: Sequence[str]) -> list[Row]:
    copies = f"score alone, {len(names)} at once"
    rows = [Row(f"wall_{s.key}_s", f"job wall time, {s.label}", outcomes[s.key].wall_s, "s",
                floors.paced_s if s.paced else floors.fast, copies + (", paced" if s.paced else ""))
            for s in chosen]
    for s in chosen:
        outcome = outcomes[s.key]
        bound, text = conductor_bound(s, len(names))
        growth = (outcome.rss_peak["conductor"] - floors.idle_rss["conductor"]) / MB
        rows.append(Row(f"conductor_rss_growth_{s.key}_mb", f"conductor peak RSS growth over idle, {s.label}",
                        growth, "MB", bound / MB, text))
    for s in chosen:
        outcome = outcomes[s.key]
        bound, text = player_bound(s)
        growth = max(outcome.rss_peak[name] - floors.idle_rss[name] for name in names) / MB
        rows.append(Row(f"player_rss_growth_{s.key}_mb", f"player peak RSS growth over idle, {s.label}",
                        growth, "MB", bound / MB, text))
    base = outcomes["nobody"]
    for s in chosen:
        outcome = outcomes[s.key]
        shown = outcome.shown_bytes() / MB
        if s.hold or shown < MIN_SHOWN_MB:  # 10 ms CPU ticks over less than that are noise
            continue
        extra = outcome.cpu_s["conductor"] - base.cpu_s["conductor"]
        rows.append(Row(f"conductor_cpu_per_mb_{s.key}", f"conductor CPU per MB streamed, {s.label}",
                        max(0.0, extra) * 1000 / shown, "ms/MB", None,
                        f"over nobody-follows' CPU, per MB shown ({shown:.1f} MB)"))
        extra = sum(outcome.cpu_s[name] - base.cpu_s[name] for name in names)
        rows.append(Row(f"player_cpu_per_mb_{s.key}", f"players' CPU per MB streamed, {s.label}",
                        max(0.0, extra) * 1000 / shown, "ms/MB", None, "all players, over nobody-follows' CPU"))
    return rows


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.1f} {unit}"


def render_header(sizes: Sizes, fast: Shape, paced: Shape | None, settings: Mapping[str, int]) -> str:
    cap, tail = settings["max_output_bytes"], settings["output_tail_bytes"]
    over = fast.total > cap
    lines = [
        "live output: bounded memory on the conductor and the players while a score prints megabytes",
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {sizes.players} real players"
        " and the conductor on loopback (mTLS), each scenario a fresh all-of job on every player",
        f"score: {fast.total / MB:,.0f} MB of 100-byte lines per task (yes | head -c), as fast as it can"
        + (f"; paced: {paced.parts} parts of {paced.part / MB:.2f} MB, {paced.pause:.2f} s apart" if paced else ""),
        f"players: default settings, max_output_bytes {cap / MIB:g} MiB, output_tail_bytes {tail / 1024:g} KiB;"
        + (" the score prints more than the cap, so the player empties its output file whenever its"
           " once-a-second check finds it over the cap: that truncation is part of what is measured"
           " (a score done within the first check is never cut)" if over else " the cap is not reached"),
        f"live output by design: at most {RATE_BYTES / MIB:g} MiB/s per task from a player, a"
        f" {WINDOW_BYTES // 1024} KiB window per player session, {VIEWER_BYTES / MIB:g} MiB per viewer",
        "",
    ]
    return "\n".join(lines) + "\n"


def render(floors: Floors, rows: Sequence[Row], chosen: Sequence[Scenario], outcomes: Mapping[str, Outcome],
           names: Sequence[str], notes: Sequence[str]) -> str:
    lines = ["floors (same machine, same run)",
             f"  score alone, {len(names)} copies at once (median of {len(floors.fast_s)})"
             f"      {floors.fast:8.2f} s"]
    if floors.paced_s is not None:
        lines.append(f"  paced score alone, {len(names)} copies at once             {floors.paced_s:8.2f} s")
    lines += [f"  idle RSS, {name:<42} {floors.idle_rss[name] / MB:8.1f} MB" for name in floors.idle_rss]
    lines += ["", "figures (wall time: gate opened -> job finished; RSS growth: peak during the scenario"
              " less the idle floor, of the player that grew most)"]
    width = max(len(row.label) for row in rows)
    header = f"  {'figure':<{width}} {'value':>11} {'floor':>11} {'ratio':>7}  floor is"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        floor = "" if row.floor is None else fmt(row.floor, row.unit)
        lines.append(f"  {row.label:<{width}} {fmt(row.value, row.unit):>11} {floor:>11} {ratio:>7}  {row.floor_is}")
    lines += ["", "scenarios (RSS in MB before -> peak; CPU in s over the scenario; followers: score MB shown,"
              " skipped markers / MB they name)"]
    width = max(len(outcomes[scenario.key].label) for scenario in chosen)
    header = (f"  {'scenario':<{width}} {'wall':>7} {'conductor RSS':>15} {'players RSS (most)':>19}"
              f" {'cond CPU':>8} {'play CPU':>8} {'shown':>9} {'skipped':>14} {'cut':>4} {'partial':>7}")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for scenario in chosen:
        o = outcomes[scenario.key]
        worst = max(names, key=lambda name: o.rss_peak[name] - o.rss_before[name])
        shown = sum(s.score_bytes for s in o.followers) / MB
        markers = sum(s.skipped_markers for s in o.followers)
        skipped = sum(s.skipped_bytes for s in o.followers) / MB
        cut = sum(s.cut_markers for s in o.followers)
        partial = sum(s.partial_lines for s in o.followers)
        follow = ("" if not o.followers else f"{shown:7.2f}MB")
        skip = ("" if not o.followers else f"{markers:4d} / {skipped:5.1f}MB")
        lines.append(
            f"  {o.label:<{width}} {o.wall_s:6.2f}s {o.rss_before['conductor'] / MB:6.1f}->{o.rss_peak['conductor'] / MB:6.1f}"
            f" {o.rss_before[worst] / MB:9.1f}->{o.rss_peak[worst] / MB:6.1f}"
            f" {o.cpu_s['conductor']:8.2f} {sum(o.cpu_s[n] for n in names):8.2f} {follow:>9} {skip:>14}"
            f" {'' if not o.followers else cut:>4} {'' if not o.followers else partial:>7}")
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def notes_for(chosen: Sequence[Scenario], outcomes: Mapping[str, Outcome], names: Sequence[str]) -> list[str]:
    notes: list[str] = []
    for scenario in chosen:
        o = outcomes[scenario.key]
        if o.status != "ok" or any(o.follower_exit):
            notes.append(f"{o.label}: job {o.status}, followers exited {o.follower_exit}")
        lost = sum(shown.state_lines < len(names) for shown in o.followers)
        if lost:
            # Each follower prints HOST: [ok] as each task ends, unless its stream was cut
            # and getstatus followed again (it rides that out as a conductor restart).
            notes.append(f"{o.label}: {lost} follower(s) missed a task's end line: the stream was cut"
                         " and followed again, without a marker of what was missed meanwhile")
        if scenario.paced:
            # Growth that keeps on with the output shows as a later peak above an earlier one.
            late = {name: (o.rss_peak_second_half[name] - o.rss_peak_first_half[name]) / MB
                    for name in ["conductor", *names]}
            notes.append(f"{o.label}: peak RSS in the job's second half less its first half: "
                         + ", ".join(f"{name} {value:+.1f} MB" for name, value in late.items()))
        ends = ", ".join(f"{value:.2f}" for value in o.score_ended_s.values())
        notes.append(f"{o.label}: scores ended {ends} s after the gate, job finished {o.wall_s:.2f} s,"
                     f" followers ended {o.ended_at - o.gate_at:.2f} s"
                     + (f"; follower peak RSS {max(o.follower_rss_peak) / MB:.1f} MB" if o.follower_rss_peak else ""))
    return notes


# ---- main -------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Each scenario's job prints MEGABYTES MB on every player; the default run takes about"
               " 80 s on 2 cores and writes (then deletes) that much per task on the temp file system.")
    parser.add_argument("--megabytes", type=int, help="MB (10^6 bytes) each task prints (200; --quick 50)")
    parser.add_argument("--players", type=int, default=2, help="real players, each running every job (2)")
    parser.add_argument("--followers", type=int,
                        help="followers at once in the many-followers scenario, 0 to skip it (5; --quick 3)")
    parser.add_argument("--paced-seconds", type=float,
                        help="the paced score prints its MB over this long, 0 to skip it (15; --quick 4)")
    parser.add_argument("--floor-runs", type=int, help="runs of the score alone, median (3; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="a small run: 50 MB, shorter paced score")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the cluster in DIR (must not exist) and leave it there, logs included")
    parser.add_argument("--log-level", default="warning", help="the daemons' log level (warning)")
    args = parser.parse_args(argv)
    if args.megabytes is not None and args.megabytes < 1:
        parser.error("--megabytes must be at least 1")
    if args.players < 1:
        parser.error("--players must be at least 1")
    if args.followers is not None and args.followers < 0:
        parser.error("--followers must not be negative")
    if args.paced_seconds is not None and not 0 <= args.paced_seconds <= 600:
        parser.error("--paced-seconds must be between 0 and 600")
    if args.floor_runs is not None and args.floor_runs < 1:
        parser.error("--floor-runs must be at least 1")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: already exists")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    def pick(value: float | None, full: float, quick: float) -> float:
        return value if value is not None else quick if args.quick else full
    return Sizes(megabytes=int(pick(args.megabytes, 200, 50)), players=args.players,
                 followers=int(pick(args.followers, 5, 3)), paced_seconds=pick(args.paced_seconds, 15.0, 4.0),
                 floor_runs=int(pick(args.floor_runs, 3, 2)))


@dataclass
class Result:
    floors: Floors
    outcomes: dict[str, Outcome]
    settings: dict[str, int]
    startup_s: float


def bench(root: Path, sizes: Sizes, log_level: str) -> Result:
    names = [f"p{n}.bench" for n in range(1, sizes.players + 1)]
    gates = root / "gates"
    gates.mkdir(parents=True)
    cluster = Cluster(root / "cluster", names, log_level=log_level)
    body = SCORE_BODY.format(gates=gates, ready=READY, line=LINE)
    cluster.add_score(SCORE, body, SCORE_CONF)
    loaded = load_player(cluster.player_dir(names[0]) / "player.toml")
    settings = {"max_output_bytes": loaded.max_output_bytes, "output_tail_bytes": loaded.output_tail_bytes,
                "max_concurrent": loaded.max_concurrent}
    fast = fast_shape(sizes)
    paced = paced_shape(sizes) if sizes.paced_seconds else None
    script = cluster.scores_dir(names[0]) / SCORE
    work = root / "floor"
    work.mkdir()
    # The floors first, with nothing else running.
    score_alone(script, work, gates, fast, len(names))  # warm the page cache and the binaries
    fast_s = [score_alone(script, work, gates, fast, len(names)) for _ in range(sizes.floor_runs)]
    paced_s = score_alone(script, work, gates, paced, len(names)) if paced else None
    chosen = scenarios(sizes)
    try:
        start = time.perf_counter()
        cluster.start()
        startup = time.perf_counter() - start
        runner = Bench(cluster, gates, sizes)
        try:
            # A small job, followed: whatever is set up once (imports, caches, the first
            # stream) is, before the daemons are called idle.
            runner.warm_up(WARMUP_JOBS)
            runner.run(Scenario("warmup", "warm-up", followers=1), WARMUP)
            time.sleep(IDLE_SECONDS)
            with Sampler(runner.pids) as idle:
                time.sleep(IDLE_SECONDS)
            floors = Floors(fast_s, paced_s, {name: idle.median(name) for name in runner.pids})
            outcomes: dict[str, Outcome] = {}
            for scenario in chosen:
                if sys.stderr.isatty():
                    print(f"  {scenario.label} ...", file=sys.stderr, flush=True)
                outcomes[scenario.key] = runner.run(scenario, paced if scenario.paced and paced else fast)
        finally:
            runner.close()
    finally:
        stop(cluster)
    return Result(floors, outcomes, settings, startup)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)
    json_path = args.json.resolve() if args.json else None
    keep = args.keep.resolve() if args.keep else None
    # The daemons and CLIs run as `python -m ...` from the working directory: make it the
    # checkout this script belongs to, so that is the code measured.
    os.chdir(REPO)
    fast, paced = fast_shape(sizes), (paced_shape(sizes) if sizes.paced_seconds else None)
    load_before = os.getloadavg()
    if keep is not None:
        keep.mkdir(parents=True)
        result = bench(keep, sizes, args.log_level)
    else:
        with tempfile.TemporaryDirectory(prefix="orchestra-output-") as tmp:
            result = bench(Path(tmp), sizes, args.log_level)
    load_after = os.getloadavg()
    names = [f"p{n}.bench" for n in range(1, sizes.players + 1)]
    chosen = scenarios(sizes)
    rows = build_rows(chosen, result.outcomes, result.floors, names)
    notes = notes_for(chosen, result.outcomes, names)
    notes.append(f"cluster ready in {result.startup_s:.2f} s; load average (1 min) {load_before[0]:.2f} at start,"
                 f" {load_after[0]:.2f} at end, on {os.cpu_count()} CPUs")
    sys.stdout.write(render_header(sizes, fast, paced, result.settings))
    sys.stdout.write(render(result.floors, rows, chosen, result.outcomes, names, notes))
    if json_path is not None:
        report = {
            "sizes": asdict(sizes),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_start": load_before, "loadavg_end": load_after},
            "player_settings": result.settings,
            "design": {"viewer_bytes": VIEWER_BYTES, "recent_bytes": RECENT_BYTES, "window_bytes": WINDOW_BYTES,
                       "chunk_bytes": CHUNK_BYTES, "rate_bytes_per_s": RATE_BYTES},
            "shapes": {"fast": asdict(fast), "paced": asdict(paced) if paced else None},
            "floors": {"score_alone_s": result.floors.fast, "score_alone_runs_s": result.floors.fast_s,
                       "paced_score_alone_s": result.floors.paced_s, "idle_rss_bytes": result.floors.idle_rss},
            "figures": {row.key: row.as_json() for row in rows},
            "scenarios": {key: {**asdict(outcome), "wall_s": outcome.wall_s}
                          for key, outcome in result.outcomes.items()},
            "notes": notes,
        }
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
