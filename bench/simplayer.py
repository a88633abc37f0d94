"""The far side of the wire for ``bench/fleet.py``: simulated players and an echo peer.

``simplayer.py fleet SPEC.json`` runs many player sessions in one process. Each session
has its own certificate and its own mTLS channel and speaks the real player protocol
(``orchestra/v1/player.proto``): a Hello listing one valid score and an empty spool;
then a StartRequest for every RunTask, a TaskResult ``ENDING_OK`` for every StartGrant
(nothing is spawned), a TaskResult ``ENDING_CANCELLED`` for every CancelTask. As a real
player does, a session sends a Heartbeat after ``heartbeat_seconds`` (taken from the
conductor's Welcome) without sending anything, drops a conductor silent for
``liveness`` seconds, and reconnects after a full-jitter exponential backoff. One
periodic loop per process drives the heartbeats and liveness checks of all sessions.

SPEC.json: ``{"target": "HOST:PORT", "conductor_name": NAME, "ssl_dir": DIR,
"names": [CERTNAME, ...], "score": "noop", "max_concurrent": 1, "backoff_initial": 0.5,
"backoff_max": 30, "liveness": null, "status_interval": 0.1}``; each name's certificate and
key are read from the Puppet-style ``DIR`` (``certs/NAME.pem``, ``private_keys/NAME.pem``).

The driver talks to a fleet over pipes, one JSON object per line. On stdin: ``connect``
(start every session) and ``stop`` (or end of file). On stdout: ``{"event": "loaded"}``
once the certificates are read, then ``{"event": "status", ...}`` whenever a counter
changed (at most every ``status_interval`` seconds, at least every 2 s), and a last
``{"event": "stopped", ...}``. A status carries wall-clock times (``time.time()``):

* ``sessions``, ``welcomed`` (sessions whose current stream got a Welcome),
  ``all_welcomed_at`` (when ``welcomed`` last reached ``sessions``; null while below),
  ``first_welcomed_at`` (when ``welcomed`` last rose from 0 to 1),
  ``heartbeat_seconds`` (as the last Welcome said),
* cumulative counts ``welcomes``, ``runs``, ``grants``, ``results``, ``acks``,
  ``cancels``, ``heartbeats``, ``silent`` (sessions dropped for silence),
  ``reconnects``, ``first_run_at``, ``ends`` (why streams ended: status code names) and
  ``end_examples`` (the first details seen for each),
* ``cpu``: this process's CPU seconds.

``simplayer.py echo --ca CA --cert CERT --key KEY`` serves ``/bench.Echo/Stream``, a
bidirectional stream echoing raw bytes over mTLS, as a floor to compare the conductor
with. The request ``CPU?`` is answered with the server's CPU seconds (a big-endian
double), so a client can measure what the server spent on the messages in between.
It prints ``{"event": "listening", "port": PORT}`` and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from devtools.pki import SSLDir  # noqa: E402
from orchestra.inventory import PROTOCOL_VERSION  # noqa: E402
from orchestra.tls import (  # noqa: E402
    MESSAGE_LIMITS, SERVER_KEEPALIVE, Material, channel_credentials, channel_options,
)
from orchestra.wire import common_pb2, player_pb2, player_pb2_grpc  # noqa: E402

SOFTWARE_VERSION = "simplayer"
ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Stream"
CPU_QUERY = b"CPU?"
CPU_REPLY = struct.Struct("!d")
# A Welcome saying 0 (a fractional heartbeat_seconds truncated on the wire): beat often.
FALLBACK_HEARTBEAT = 1.0
TICK_SECONDS = 0.5          # period of the one heartbeat/liveness loop
STATUS_EVERY_SECONDS = 2.0  # a status line at least this often, changed or not
SETTLED_SESSION_SECONDS = 5.0  # a session that lasted this long after a Welcome resets the backoff
# A separate subchannel pool per channel: no two sessions ever share a connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; returns (soft, hard)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> AsyncIterator[str]:
    """The driver's commands, one per line; ends at end of file."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode().strip()


# ---- simulated players -----------------------------------------------------------------


class Session:
    """One simulated player: its credentials and the state of its current stream."""

    __slots__ = ("name", "credentials", "connection", "call", "lock", "welcomed", "heartbeat",
                 "last_sent", "last_received", "silent", "welcomes")

    def __init__(self, name: str, credentials: grpc.ChannelCredentials) -> None:
        self.name = name
        self.credentials = credentials
        self.connection: asyncio.Task[None] | None = None  # the current attempt, see run_session
        self.call: Any = None  # the live grpc.aio StreamStreamCall, if any
        self.lock = asyncio.Lock()  # one write at a time on a stream
        self.welcomed = False
        self.heartbeat = FALLBACK_HEARTBEAT
        self.last_sent = 0.0      # monotonic
        self.last_received = 0.0  # monotonic
        self.silent = False
        self.welcomes = 0


class Players:
    """Every simulated session of this process, the counters it reports, and its one
    periodic heartbeat/liveness loop."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.target: str = spec["target"]
        self.options = [*channel_options(spec["conductor_name"]), *OWN_CONNECTION]
        self.backoff_initial = float(spec.get("backoff_initial", 0.5))
        self.backoff_max = float(spec.get("backoff_max", 30.0))
        # None: three heartbeats of the conductor's (from its Welcome), as the real
        # player's defaults are.
        self.liveness: float | None = None if spec.get("liveness") is None else float(spec["liveness"])
        self.status_interval = float(spec.get("status_interval", 0.1))
        self.connecting = asyncio.Semaphore(int(spec.get("max_connecting", 64)))
        ssl = SSLDir(Path(spec["ssl_dir"]))
        ca = ssl.ca_cert.read_bytes()
        self.sessions = [
            Session(name, channel_credentials(Material(ca, ssl.cert(name).read_bytes(),
                                                       ssl.key(name).read_bytes())))
            for name in spec["names"]]
        score = common_pb2.ScoreInfo(name=spec.get("score", "noop"), interface="env", valid=True,
                                     timeout_seconds=30)
        self.hello = player_pb2.PlayerMessage(hello=player_pb2.Hello(
            protocol_version=PROTOCOL_VERSION, software_version=SOFTWARE_VERSION, scores=[score],
            spool=[], max_concurrent=int(spec.get("max_concurrent", 1))))
        self.welcomed = 0
        self.heartbeat_seconds: int | None = None  # as the last Welcome said
        self.all_welcomed_at: float | None = None
        self.first_welcomed_at: float | None = None
        self.first_run_at: float | None = None
        self.counts: Counter[str] = Counter()
        self.ends: Counter[str] = Counter()
        self.end_examples: dict[str, str] = {}  # the first details seen for each kind of end
        self.beats: set[asyncio.Task[None]] = set()

    # ---- the status the driver reads

    def status(self) -> dict[str, object]:
        return {"sessions": len(self.sessions), "welcomed": self.welcomed,
                "all_welcomed_at": self.all_welcomed_at, "first_welcomed_at": self.first_welcomed_at,
                "first_run_at": self.first_run_at,
                "heartbeat_seconds": self.heartbeat_seconds,
                **{key: self.counts[key] for key in ("welcomes", "runs", "grants", "results", "acks",
                                                     "cancels", "heartbeats", "silent", "reconnects")},
                "ends": dict(self.ends), "end_examples": self.end_examples, "cpu": time.process_time()}

    async def report(self) -> None:
        last: dict[str, object] = {}
        last_at = 0.0
        while True:
            await asyncio.sleep(self.status_interval)
            current = self.status()
            now = time.monotonic()
            changed = {k: v for k, v in current.items() if k != "cpu"} != \
                {k: v for k, v in last.items() if k != "cpu"}
            if changed or now - last_at >= STATUS_EVERY_SECONDS:
                emit("status", at=time.time(), **current)
                last, last_at = current, now

    # ---- one session

    async def write(self, session: Session, message: player_pb2.PlayerMessage) -> None:
        call = session.call
        if call is None:
            return
        async with session.lock:
            await call.write(message)
        session.last_sent = time.monotonic()

    def _welcomed(self, session: Session, welcome: player_pb2.Welcome) -> None:
        self.heartbeat_seconds = welcome.heartbeat_seconds
        session.heartbeat = float(welcome.heartbeat_seconds) or FALLBACK_HEARTBEAT
        session.welcomes += 1
        self.counts["welcomes"] += 1
        if not session.welcomed:
            session.welcomed = True
            self.welcomed += 1
            if self.welcomed == 1:
                self.first_welcomed_at = time.time()
            if self.welcomed == len(self.sessions):
                self.all_welcomed_at = time.time()

    def _gone(self, session: Session) -> None:
        session.call = None
        if session.welcomed:
            session.welcomed = False
            self.welcomed -= 1
            self.all_welcomed_at = None

    async def handle(self, session: Session, message: player_pb2.ConductorMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "welcome":
            self._welcomed(session, message.welcome)
        elif kind == "run":
            self.counts["runs"] += 1
            if self.first_run_at is None:
                self.first_run_at = time.time()
            await self.write(session, player_pb2.PlayerMessage(start_request=player_pb2.StartRequest(
                task_id=message.run.task_id, attempt=message.run.attempt)))
        elif kind == "grant":
            self.counts["grants"] += 1
            now = time.time()
            outcome = common_pb2.TaskOutcome(has_exit_code=True, exit_code=0, started_at=now,
                                             finished_at=now)
            await self.write(session, player_pb2.PlayerMessage(result=player_pb2.TaskResult(
                task_id=message.grant.task_id, attempt=message.grant.attempt,
                ending=player_pb2.ENDING_OK, outcome=outcome)))
            self.counts["results"] += 1
        elif kind == "ack":
            self.counts["acks"] += 1
        elif kind == "cancel":
            self.counts["cancels"] += 1
            now = time.time()
            outcome = common_pb2.TaskOutcome(reason=message.cancel.reason or "cancelled",
                                             finished_at=now)
            await self.write(session, player_pb2.PlayerMessage(result=player_pb2.TaskResult(
                task_id=message.cancel.task_id, attempt=message.cancel.attempt,
                ending=player_pb2.ENDING_CANCELLED, outcome=outcome)))

    async def stream(self, session: Session) -> None:
        """One connection: Hello, then answer the conductor until the stream ends.

        At most ``max_connecting`` sessions of this process are between dialling and their
        Welcome at once. Real players do their TLS handshakes on their own hosts; here the
        whole simulated fleet shares the conductor's cores, and 10,000 client handshakes
        at once starve everything (keepalive pings go unanswered, sessions are torn down
        and redialled, and nobody gets through)."""
        await self.connecting.acquire()
        gated = True
        try:
            async with grpc.aio.secure_channel(self.target, session.credentials,
                                               options=self.options) as channel:
                call = player_pb2_grpc.PlayerLinkStub(channel).Session(wait_for_ready=False)
                session.call, session.silent = call, False
                session.last_received = time.monotonic()
                try:
                    await self.write(session, self.hello)
                    async for message in call:
                        session.last_received = time.monotonic()
                        if gated and message.WhichOneof("body") == "welcome":
                            self.connecting.release()
                            gated = False
                        await self.handle(session, message)
                finally:
                    self._gone(session)
        finally:
            if gated:
                self.connecting.release()

    async def run_session(self, session: Session) -> None:
        """Connect, and reconnect with full-jitter exponential backoff (as player/session.py)."""
        failures = 0
        while True:
            started, welcomes = time.monotonic(), session.welcomes
            details = ""
            # Its own task, so that the liveness check can end it wherever it waits (a
            # write on a call whose handshake never completed ignores call.cancel()).
            session.connection = asyncio.ensure_future(self.stream(session))
            try:
                await session.connection
                end = "OK"
            except grpc.aio.AioRpcError as err:
                end, details = err.code().name, err.details() or ""
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are stopping
                end = "SILENT"  # ended by the liveness check
            except Exception as err:  # noqa: BLE001 - as a real player, live on and retry
                end, details = type(err).__name__, str(err)
            finally:
                session.connection = None
            self.ends[end] += 1
            self.end_examples.setdefault(end, details[:300])
            got_going = session.welcomes > welcomes and time.monotonic() - started > SETTLED_SESSION_SECONDS
            failures = 0 if got_going else failures + 1
            ceiling = min(self.backoff_max, self.backoff_initial * 2 ** min(failures, 20))
            floor = self.backoff_initial / 4
            self.counts["reconnects"] += 1
            await asyncio.sleep(random.uniform(floor, max(ceiling, floor)))

    # ---- the one periodic loop over every session

    async def beat(self, session: Session) -> None:
        try:
            await self.write(session, player_pb2.PlayerMessage(
                heartbeat=player_pb2.Heartbeat(sent_at=time.time())))
            self.counts["heartbeats"] += 1
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the stream ended meanwhile; its session reconnects

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for session in self.sessions:
                call, connection = session.call, session.connection
                if call is None or connection is None or session.silent:
                    continue
                if now - session.last_received > (self.liveness or 3 * session.heartbeat):
                    session.silent = True
                    self.counts["silent"] += 1
                    connection.cancel()
                elif session.welcomed and now - session.last_sent >= session.heartbeat \
                        and not session.lock.locked():
                    task = asyncio.ensure_future(self.beat(session))
                    self.beats.add(task)
                    task.add_done_callback(self.beats.discard)

    # ---- the process

    async def run(self) -> None:
        emit("loaded", sessions=len(self.sessions))
        commands = stdin_lines()
        workers: list[asyncio.Task[None]] = []
        try:
            async for command in commands:
                if command == "connect" and not workers:
                    workers = [asyncio.ensure_future(self.run_session(s)) for s in self.sessions]
                    workers += [asyncio.ensure_future(self.heartbeats()),
                                asyncio.ensure_future(self.report())]
                elif command == "stop":
                    break
        finally:
            for task in [*workers, *self.beats]:
                task.cancel()
            await asyncio.gather(*workers, *self.beats, return_exceptions=True)
            emit("stopped", at=time.time(), **self.status())


# ---- the echo peer ---------------------------------------------------------------------


async def _echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield CPU_REPLY.pack(time.process_time()) if request == CPU_QUERY else request


async def serve_echo(ca: Path, cert: Path, key: Path) -> None:
    server = grpc.aio.server(options=[*SERVER_KEEPALIVE, *MESSAGE_LIMITS])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Stream": grpc.stream_stream_rpc_method_handler(_echo)}),))
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                              root_certificates=ca.read_bytes(),
                                              require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    emit("listening", port=port)
    async for command in stdin_lines():
        if command == "stop":
            break
    await server.stop(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fleet = sub.add_parser("fleet", help="many simulated player sessions in this process")
    fleet.add_argument("spec", type=Path)
    echo = sub.add_parser("echo", help="an mTLS echo server for the floors")
    echo.add_argument("--ca", type=Path, required=True)
    echo.add_argument("--cert", type=Path, required=True)
    echo.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.command == "fleet":
        spec = json.loads(args.spec.read_text())

        async def run_fleet() -> None:
            await Players(spec).run()
        asyncio.run(run_fleet())
    else:
        asyncio.run(serve_echo(args.ca, args.cert, args.key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
