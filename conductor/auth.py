"""Authentication and roles for every RPC, in one interceptor (secure by default).

Every method of every service goes through :class:`AuthInterceptor`, which resolves the
caller's verified identity and role before the handler runs:

* ``PlayerLink``: a TLS peer whose certname is in the players file, not revoked.
* ``Audience``: a TLS peer whose certname is in the ``[audience]`` table, not revoked;
  or a local user who came through the unix socket relay (SO_PEERCRED).
* server reflection: whoever may use the Audience API.
* ``grpc.health.v1.Health``: any identified caller, a verified TLS peer (not revoked) or
  a local user.
* anything else: refused.

While the conductor drains (``Gate.stopping``), an admitted caller is still refused, with
UNAVAILABLE ("conductor is shutting down", which clients treat as an outage and try
again later), for the calls that would change the queue (:data:`QUEUE_CHANGES`) and for
a new player session; reads, waits and health go on until the servers stop.

Handlers read the result from :data:`current_identity` / :data:`current_requester`.
"""

from __future__ import annotations

import asyncio
import contextvars
import grp
import inspect
import pwd
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from conductor.audit import AuditLog
from conductor.localsock import LocalSocket
from conductor.policy import Policy, Requester
from conductor.health import HEALTH_SERVICE, REFLECTION_SERVICE
from orchestra import log
from orchestra.errors import STORAGE_FAILURE, StartupError
from orchestra.log import throttled
from orchestra.tls import PeerIdentity, RevocationList, peer_identity

logger = log.get("conductor")

PLAYER_SERVICE = "orchestra.v1.PlayerLink"
AUDIENCE_SERVICE = "orchestra.v1.Audience"
EXPIRY_WARNING_DAYS = 30
# Audience methods that change the queue (or what will be queued): none is begun while
# the conductor drains, so nothing new needs committing once it has begun to stop.
QUEUE_CHANGES = frozenset({"Submit", "Cancel", "Retry", "Delete", "Drain", "SubmitWorkflow", "CancelWorkflow",
                           "AddSchedule", "ChangeSchedule"})
SHUTTING_DOWN = "conductor is shutting down"

# Why the interceptor refused a call, by kind (for the metrics): a fixed set, never the
# certname or the text of the reason.
CALL_REFUSALS = ("bad_certificate", "revoked", "crl_unusable", "not_in_players_file", "not_audience",
                 "not_local", "no_certificate", "no_such_service")

current_identity: contextvars.ContextVar[PeerIdentity | None] = contextvars.ContextVar(
    "current_identity", default=None)
current_requester: contextvars.ContextVar[Requester | None] = contextvars.ContextVar(
    "current_requester", default=None)


class Revocation:
    """The CRL as last loaded; fails closed (refuses every certificate) when broken."""

    def __init__(self, path: Path | None, ca_pem: bytes) -> None:
        self.path, self.ca_pem = path, ca_pem
        self.crl: RevocationList | None = None
        self.broken: str | None = None
        self.stamp: tuple[float, int] | None = None
        # Each CRL's issuer and nextUpdate (a timestamp; None: none given), as last loaded.
        self.next_updates: tuple[tuple[str, float | None], ...] = ()

    def load(self) -> None:
        """(Re)load; raises StartupError and stays closed when the file is bad."""
        if self.path is None:
            return
        try:
            info = self.path.stat()
            self.stamp = (info.st_mtime, info.st_size)
        except OSError:
            self.stamp = None
        try:
            self.crl = RevocationList.load(self.path, self.ca_pem)
            self.broken = None
        except StartupError as err:
            self.crl, self.broken, self.next_updates = None, str(err), ()
            raise
        self.next_updates = tuple((issuer, at.timestamp() if at is not None else None)
                                  for issuer, at in self.crl.next_updates)

    def changed(self) -> bool:
        if self.path is None:
            return False
        try:
            info = self.path.stat()
        except OSError:
            return self.stamp is not None
        return (info.st_mtime, info.st_size) != self.stamp

    def unusable(self) -> str | None:
        """Why the CRL refuses every certificate now (unreadable, stale), or None."""
        if self.path is None:
            return None
        if self.broken is not None:
            return f"CRL unusable, refusing all certificates: {self.broken}"
        assert self.crl is not None
        if self.crl.next_update is not None and self.crl.next_update.timestamp() < time.time():
            return f"CRL {self.path} has expired, refusing all certificates"
        return None

    def refuses(self, identity: PeerIdentity) -> str | None:
        """Why this verified certificate must be refused, or None."""
        return self.unusable() or self.revoked(identity)

    def revoked(self, identity: PeerIdentity) -> str | None:
        """Why the CRL revokes this certificate, or None; unlike :meth:`refuses`, a broken
        or stale CRL file revokes nothing (it only refuses connections until it is fixed)."""
        if self.path is None or self.broken is not None or self.crl is None:
            return None
        return self.crl.why_revoked(identity.issuer, identity.serial)


class LiveStreams:
    """The audience streams open now (``getstatus --wait``), with their certificate: a
    revocation must end them, since TLS never checks a live connection again."""

    def __init__(self) -> None:
        self._open: dict[asyncio.Task[Any], PeerIdentity] = {}
        self._closing: dict[asyncio.Task[Any], str] = {}

    def opened(self, identity: PeerIdentity) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._open[task] = identity
        return task

    def ended(self, task: asyncio.Task[Any] | None) -> str | None:
        """Forget the stream; returns why it was closed by :meth:`close_failing`, if it was."""
        if task is None:
            return None
        self._open.pop(task, None)
        return self._closing.pop(task, None)

    def close_failing(self, refuses: Callable[[PeerIdentity], str | None]) -> int:
        closed = 0
        for task, identity in list(self._open.items()):
            reason = refuses(identity)
            if reason is not None and task not in self._closing:
                self._closing[task] = reason
                task.cancel()
                closed += 1
                logger.warning("audience_stream_closed", certname=identity.certname,
                               serial=f"{identity.serial:x}", reason=reason)
        return closed


@dataclass
class Gate:
    roster: Callable[[], frozenset[str]]
    policy: Callable[[], Policy]
    revocation: Revocation
    local: LocalSocket | None
    audit: AuditLog
    # Told when a player's certificate is found revoked as it tries to connect.
    player_revoked: Callable[[PeerIdentity, str], None] | None = None
    streams: LiveStreams = field(default_factory=LiveStreams)
    stopping: bool = False
    # Calls refused, by kind (CALL_REFUSALS).
    refusals: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(CALL_REFUSALS, 0)))

    def _refuse(self, event: str, kind: str, reason: str, **fields: Any) -> tuple[grpc.StatusCode, str]:
        self.refusals[kind] += 1
        self.audit.record(event, "refused", reason=reason, **fields)
        logger.warning(event, reason=reason, **fields)
        code = grpc.StatusCode.UNAUTHENTICATED if event == "authn_refused" else grpc.StatusCode.PERMISSION_DENIED
        return code, reason

    def closed_for(self, service: str, method: str) -> tuple[grpc.StatusCode, str] | None:
        """While draining: (UNAVAILABLE, why) for a call that would change the queue or
        start a player session; None for everything else, and always when not draining."""
        if not self.stopping:
            return None
        name = method.rsplit("/", 1)[-1]
        if service == PLAYER_SERVICE or (service == AUDIENCE_SERVICE and name in QUEUE_CHANGES):
            throttled(logger, "info", "call_refused_draining", key=method, method=method)
            return grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN
        return None

    def check_certificate(self, identity: PeerIdentity | None, service: str, method: str,
                          peer: str) -> tuple[grpc.StatusCode, str] | None:
        """The rules for a client certificate TLS verified, whatever carried the call (gRPC,
        or a request to the web view, which asks as the Audience service): store the
        identity and requester it stands for, or return (code, reason) to refuse."""
        if identity is None:
            return self._refuse("authn_refused", "bad_certificate", "no acceptable verified client certificate",
                                method=method, peer=peer)
        revoked = self.revocation.refuses(identity)
        if revoked:
            why = self.revocation.revoked(identity)
            if (why is not None and service == PLAYER_SERVICE and self.player_revoked is not None
                    and identity.certname in self.roster()):
                self.player_revoked(identity, why)
            return self._refuse("authn_refused", "crl_unusable" if why is None else "revoked", revoked,
                                method=method, certname=identity.certname, serial=f"{identity.serial:x}")
        current_identity.set(identity)
        if service == HEALTH_SERVICE:
            return None
        if service == PLAYER_SERVICE:
            if identity.certname not in self.roster():
                return self._refuse("authz_refused", "not_in_players_file",
                                    f"{identity.certname} is not in the players file",
                                    method=method, certname=identity.certname)
            return None
        if service in (AUDIENCE_SERVICE, REFLECTION_SERVICE):
            if not self.policy().admits_cert(identity.certname):
                return self._refuse("authz_refused", "not_audience",
                                    f"{identity.certname} is not an audience identity",
                                    method=method, certname=identity.certname)
            current_requester.set(Requester("cert", identity.certname, serial=identity.serial,
                                            issuer=identity.issuer))
            return None
        return self._refuse("authz_refused", "no_such_service", f"no such service for this caller: {service}",
                            method=method)

    def check(self, service: str, method: str, context: Any) -> tuple[grpc.StatusCode, str] | None:
        """Resolve and store the caller's identity; return (code, reason) to refuse."""
        ssl = context.auth_context().get("transport_security_type") == [b"ssl"]
        if ssl:
            return self.check_certificate(peer_identity(context), service, method, context.peer())
        if service in (AUDIENCE_SERVICE, REFLECTION_SERVICE, HEALTH_SERVICE) and self.local is not None:
            cred = self.local.lookup(context.peer())
            if cred is None:
                return self._refuse("authn_refused", "not_local", "not a verified local connection", method=method)
            current_requester.set(unix_requester(cred.uid, cred.gid))
            return None
        if service == PLAYER_SERVICE:
            return self._refuse("authn_refused", "no_certificate",
                                "player sessions need a verified client certificate",
                                method=method)
        return self._refuse("authz_refused", "no_such_service", f"no such service for this caller: {service}",
                            method=method)


def warn_if_expiring(role: str, name: str, expires_at: float) -> None:
    days = (expires_at - time.time()) / 86400
    if days < EXPIRY_WARNING_DAYS:
        logger.warning("certificate_expiring", role=role, certname=name, days_left=round(days, 1))


# Looking a user's groups up reads the whole group database (grp.getgrall()): at a
# few ms per call it was the largest cost of a local audience call. A lookup is reused
# for REQUESTER_TTL seconds, so a change of groups applies within that time.
REQUESTER_TTL = 10.0
_requesters: dict[tuple[int, int], tuple[float, Requester]] = {}


def unix_requester(uid: int, gid: int) -> Requester:
    """The local caller as a requester: user name and groups, looked up at most every
    REQUESTER_TTL seconds per (uid, gid)."""
    now = time.monotonic()
    cached = _requesters.get((uid, gid))
    if cached is not None and now - cached[0] < REQUESTER_TTL:
        return cached[1]
    requester = _lookup_requester(uid, gid)
    if len(_requesters) > 4096:
        _requesters.clear()
    _requesters[(uid, gid)] = (now, requester)
    return requester


def _lookup_requester(uid: int, gid: int) -> Requester:
    try:
        entry = pwd.getpwuid(uid)
        name = entry.pw_name
    except KeyError:
        name = f"uid{uid}"
    groups = {g.gr_name for g in grp.getgrall() if name in g.gr_mem}
    try:
        groups.add(grp.getgrgid(gid).gr_name)
    except KeyError:
        pass
    return Requester("user", name, frozenset(groups), uid=uid)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        service = method.split("/")[1] if method.count("/") == 2 else ""
        gate = self.gate

        async def guard(context: Any) -> None:
            refusal = gate.check(service, method, context) or gate.closed_for(service, method)
            if refusal is not None:
                await context.abort(*refusal)

        async def storage_failed(context: Any, err: sqlite3.OperationalError) -> None:
            """The queue cannot be written (a full disk): a clear answer, not UNKNOWN.
            What was not committed was not done, and is not acknowledged."""
            throttled(logger, "error", "store_unavailable", key=str(err), method=method, error=str(err))
            context.set_trailing_metadata((STORAGE_FAILURE,))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the conductor cannot write its queue ({err}): what could not be"
                                " written was not done; retry once it has room")

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                await guard(context)
                try:
                    return await inner(request, context)
                except sqlite3.OperationalError as err:
                    await storage_failed(context, err)
            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> Any:
                await guard(context)
                identity = current_identity.get()
                stream = gate.streams.opened(identity) if identity is not None else None
                try:
                    answer = inner_stream(request, context)
                    if inspect.isasyncgen(answer):
                        async for item in answer:
                            yield item
                    else:  # a handler that writes with context.write (health Watch)
                        await answer
                except sqlite3.OperationalError as err:
                    await storage_failed(context, err)
                except asyncio.CancelledError:
                    reason = gate.streams.ended(stream)
                    if reason is not None:
                        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                    if gate.stopping:  # a clean answer the client retries, not a traceback
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")
                    raise
                finally:
                    gate.streams.ended(stream)
            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer)
        if handler.stream_stream:
            inner_bidi = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> Any:
                await guard(context)
                answer = inner_bidi(requests, context)
                if inspect.isasyncgen(answer):  # a handler that yields (server reflection)
                    async for item in answer:
                        await context.write(item)
                    return None
                return await answer
            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer)
        raise RuntimeError(f"no guard for the handler kind of {method}")  # fail closed
