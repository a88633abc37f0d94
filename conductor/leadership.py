"""Which conductor leads, when several share one PostgreSQL queue ([store] backend).

One row of the database, the lease, names the leader, its address and an epoch; it
lasts ``lease_seconds`` from its last renewal, by the database's clock. The leader
renews it every fifth of that. A standby tries to take it over as often, and can only
once it has expired: taking over raises the epoch, and the leader's store checks the
epoch in every write transaction (conductor/store/postgresql.py), so a leader that was
frozen, cut off or slow can never commit once another has taken over.

A leader steps down when its lease is taken over, when it cannot renew it in time (cut
off from the database: it stops by its own clock before the lease can expire by the
database's), or when its store is fenced or loses the database. Stepping down is
stopping: what it holds in memory may differ from what was committed, and the next
leader rebuilds from the queue, exactly as after a restart. Under systemd
(Restart=on-failure) it comes back as a standby.

A standby holds no player session and no queue state. It serves, on the same addresses,
only refusals: every PlayerLink and Audience call ends UNAVAILABLE "not the leader: the
leader is HOST:PORT", with that address in the trailing metadata, so players and the
audience move to the leader; and health, where ``orchestra.v1.PlayerLink`` turns
SERVING the moment it takes over, which players watching it act on at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg

from conductor import health
from conductor.localsock import LocalSocket
from conductor.state import ConductorState
from conductor.store import postgresql
from orchestra import log
from orchestra.leader_hint import refusal_details, refusal_metadata
from orchestra.tls import MESSAGE_LIMITS, SERVER_KEEPALIVE
from orchestra.wire import audience_pb2, player_pb2

logger = log.get("conductor")
T = TypeVar("T")
# The leader renews, and a standby tries to take over, this many times per lease.
TRIES_PER_LEASE = 5
# Seconds between a standby's health saying PlayerLink SERVING and its refusals stopping:
# for the players watching it to hear it before the leader's own server takes the port.
HANDOVER_SECONDS = 0.2
SERVICES = (audience_pb2.DESCRIPTOR.services_by_name["Audience"],
            player_pb2.DESCRIPTOR.services_by_name["PlayerLink"])


class Lease:
    """The lease row, on a connection of its own (so that a long group commit of the
    store never delays a renewal), used from one thread."""

    def __init__(self, dsn: str, seconds: float, holder: str, address: str, instance: str) -> None:
        self.dsn, self.seconds, self.holder, self.address = dsn, seconds, holder, address
        self.instance = instance
        self.epoch: int | None = None
        self.valid_until = 0.0  # time.monotonic() by which the lease has surely not expired
        self._conn: psycopg.Connection[Any] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self.error = ""  # why the last call failed ("" when it did not)

    async def _call(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T | None:
        """fn(conn) on the lease's thread; None when the database could not be used (the
        connection is opened again next time)."""
        def body() -> T | None:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = postgresql.connect(self.dsn, self.seconds, "orchestra-lease")
                    # Never wait on a lock longer than a renewal may take: a frozen leader's
                    # open transaction is ended by the server (idle_in_transaction_session_timeout).
                    self._conn.execute(f"SET lock_timeout = {int(self.seconds * 1000 / 2)}")
                    self._conn.execute(f"SET statement_timeout = {int(self.seconds * 1000)}")
                    postgresql.install_lease(postgresql.PgConn(self._conn, lambda why: None))
                value = fn(self._conn)
                self.error = ""
                return value
            except Exception as err:  # noqa: BLE001 - any failure: try again later
                self.error = postgresql._first_line(err)
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except Exception:  # noqa: S110 - it is dropped either way
                        pass
                    self._conn = None
                return None
        return await asyncio.get_running_loop().run_in_executor(self._executor, body)

    async def acquire(self) -> int | None:
        """Take the lease if it is free or has expired, or if its holder was this very
        conductor (same host and state_dir) before a restart: that process is gone, since
        we hold the state_dir's lock, so a restarted leader need not wait for its own
        lease to run out. The new epoch, or None."""
        started = time.monotonic()

        def take(conn: psycopg.Connection[Any]) -> int | None:
            with conn.transaction():
                row = conn.execute("SELECT expires_at < clock_timestamp() OR instance = %s FROM leader WHERE id = 1",
                                   (self.instance,)).fetchone()
                if row is None:
                    row = conn.execute(
                        "INSERT INTO leader (id, epoch, holder, instance, address, acquired_at, expires_at)"
                        " VALUES (1, 1, %s, %s, %s, clock_timestamp(), clock_timestamp() + make_interval(secs => %s))"
                        " ON CONFLICT (id) DO NOTHING RETURNING epoch",
                        (self.holder, self.instance, self.address, self.seconds)).fetchone()
                    return None if row is None else int(row[0])
                if not row[0]:
                    return None  # held, and not by our earlier self: nothing locked
                # The holder's store connections end: a leader cut off in the middle of a
                # statement holds its locks until the server notices, which a half-open
                # connection may put off for hours. It has stopped by its own clock already
                # (or is frozen); whatever it had not committed is rolled back.
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = current_database() AND application_name ="
                             " (SELECT 'orchestra-conductor epoch ' || epoch FROM leader WHERE id = 1)")
                # Wait for every write transaction of the holder (they hold the row FOR KEY
                # SHARE), then raise the epoch: whatever it tries next is fenced.
                conn.execute("SELECT 1 FROM leader WHERE id = 1 FOR UPDATE")
                row = conn.execute(
                    "UPDATE leader SET epoch = epoch + 1, holder = %s, instance = %s, address = %s,"
                    " acquired_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => %s)"
                    " WHERE id = 1 AND (expires_at < clock_timestamp() OR instance = %s) RETURNING epoch",
                    (self.holder, self.instance, self.address, self.seconds, self.instance)).fetchone()
                return None if row is None else int(row[0])
        epoch = await self._call(take)
        if epoch is not None:
            self.epoch, self.valid_until = epoch, started + self.seconds
        return epoch

    async def renew(self) -> bool | None:
        """True: renewed; False: lost for good (another conductor took it over); None:
        the database could not be reached (try again while ``valid_until`` lasts)."""
        started = time.monotonic()

        def extend(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute(
                "UPDATE leader SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE id = 1 AND epoch = %s RETURNING epoch", (self.seconds, self.epoch)).fetchone() is not None
        renewed = await self._call(extend)
        if renewed:
            self.valid_until = started + self.seconds
        return renewed

    async def leader(self) -> str | None:
        """The address of the conductor that holds an unexpired lease, if any."""
        def read(conn: psycopg.Connection[Any]) -> str | None:
            row = conn.execute("SELECT address FROM leader WHERE id = 1 AND expires_at > clock_timestamp()").fetchone()
            return None if row is None else str(row[0])
        return await self._call(read)

    async def release(self) -> None:
        """End our lease now (a clean stop), so a standby need not wait for it to expire."""
        if self.epoch is None:
            return

        def end(conn: psycopg.Connection[Any]) -> None:
            conn.execute("UPDATE leader SET expires_at = clock_timestamp() WHERE id = 1 AND epoch = %s",
                         (self.epoch,))
        await self._call(end)

    def close(self) -> None:
        """Close the connection, cutting short a call stuck on an unreachable database."""
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
        try:
            self._executor.submit(shut).result(timeout=self.seconds)
        except concurrent.futures.TimeoutError:
            if self._conn is not None:
                postgresql.sever(self._conn)
        self._executor.shutdown(wait=False)


def holder_name(certname: str) -> str:
    """Who holds the lease, for the operator: certname, host and process."""
    return f"{certname} (pid {os.getpid()} on {socket.gethostname()})"


def instance_name(state_dir: Path) -> str:
    """This conductor across its restarts: its host and state_dir, which its lock keeps
    to one process at a time."""
    return f"{socket.gethostname()}:{state_dir.resolve()}"


class Refusals:
    """Every PlayerLink and Audience method, answered UNAVAILABLE "not the leader"."""

    def __init__(self) -> None:
        self.leader: str | None = None

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, refusal_details(self.leader),
                            trailing_metadata=refusal_metadata(self.leader))

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await self._refuse(context)
            return b""  # not reached: abort raises

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._refuse(context)
            yield b""  # not reached: abort raises (a generator, for the streaming kinds)

        result = []
        for service in SERVICES:
            methods: dict[str, grpc.RpcMethodHandler] = {}
            for method in service.methods:
                if method.server_streaming:
                    make = (grpc.stream_stream_rpc_method_handler if method.client_streaming
                            else grpc.unary_stream_rpc_method_handler)
                    methods[method.name] = make(streaming)
                else:
                    make = (grpc.stream_unary_rpc_method_handler if method.client_streaming
                            else grpc.unary_unary_rpc_method_handler)
                    methods[method.name] = make(unary)
            result.append(grpc.method_handlers_generic_handler(service.full_name, methods))
        return result


class Standby:
    """The servers of a conductor that does not lead: refusals and health on its public
    address (mutual TLS, as always), and on its audience socket."""

    def __init__(self, listen: str, socket_path: Path, credentials: grpc.ServerCredentials,
                 limits: Sequence[tuple[str, int]] = ()) -> None:
        self.refusals = Refusals()
        self.listen, self.credentials = listen, credentials
        self.local = LocalSocket(socket_path, 0)
        options = [("grpc.so_reuseport", 0), *SERVER_KEEPALIVE, *MESSAGE_LIMITS]
        # The leader's own limits on the public port: handshake time and connections.
        self.public = grpc.aio.server(options=[*options, *limits])
        self.relay = grpc.aio.server(options=options)

    async def start(self) -> None:
        self.health = await health.starting()
        await self.health.show(ConductorState.STANDBY, [health.AUDIENCE, health.PLAYER_LINK])
        for server in (self.public, self.relay):
            server.add_generic_rpc_handlers(self.refusals.handlers())
            health.add_to(server, self.health)
        self.public.add_secure_port(self.listen, self.credentials)
        self.local.backend_port = self.relay.add_insecure_port("127.0.0.1:0")
        await self.public.start()
        await self.relay.start()
        await self.local.start()

    async def handover(self) -> None:
        """We lead now: say so to the players watching, then free the addresses. Their
        watches end without a NOT_SERVING after it (as :meth:`close` would say), so what
        they heard last is that this conductor leads."""
        await self.health.set(health.PLAYER_LINK, health.SERVING)
        await asyncio.sleep(HANDOVER_SECONDS)
        await self.local.close(cut=True)
        await asyncio.gather(self.public.stop(grace=0), self.relay.stop(grace=0))

    async def close(self) -> None:
        await self.health.close()
        await self.local.close(cut=True)
        await asyncio.gather(self.public.stop(grace=0.5), self.relay.stop(grace=0.5))
