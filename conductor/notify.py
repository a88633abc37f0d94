"""Notifications: telling other systems that a job or a workflow has ended.

The lifecycle calls :meth:`Notifications.hook` once an end is committed. The hook only
queues the event and returns: a task describes it (one store read, shared by every
notifier), and each notifier has a queue and a task of its own, so a slow or dead
endpoint delays nobody but its own later events, and never dispatch or the loop. Each
queue holds QUEUE_SIZE events; past that the oldest is dropped (``notification_dropped``,
counted). Notifications are told once, after the commit, from memory: an event still
queued when the conductor stops (after CLOSE_SECONDS of trying) or dies is not sent.

Notifiers are the built-in ``webhook`` or any installed as an entry point of the group
``orchestra.notifiers`` (orchestra/plugins.py), configured by ``[[notifiers]]`` tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
import ssl
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from conductor.store import Store
from orchestra import log
from orchestra.config import ConductorConfig, is_loopback
from orchestra.outcome import iso
from orchestra.plugins import NOTIFIERS, Kind, Options, Registry, labels

logger = log.get("conductor")
QUEUE_SIZE = 1_000  # events waiting per notifier (and to be described) before the oldest is dropped
CLOSE_SECONDS = 5.0  # how long a stopping conductor lets notifiers finish what is queued
KINDS = ("job", "workflow")
# How a webhook introduces itself; it reads no more of an answer than its status line.
USER_AGENT = "orchestra-conductor"
MAX_BACKOFF_SECONDS = 300.0
# Header names the webhook sets itself; [notifiers] headers may not replace them.
RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "connection", "transfer-encoding",
                              "x-orchestra-signature"})
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
SIGNATURE_HEADER = "X-Orchestra-Signature"
SCOPES = {"all": "all-of", "one": "one-of"}  # as getstatus --json names them

# The conductor's description of an ended job or workflow: (kind, id) -> its JSON payload,
# None when there is nothing to tell (the job was deleted meanwhile).
Describe = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class Notifier(Protocol):
    """Who is told when a job or workflow ends (entry-point group ``orchestra.notifiers``).

    ``notify`` gets each event (a JSON object: see :func:`describe_job`; every notifier
    is given the same one, so it must not change it) once, one at a time, and returns
    once it is delivered or raises to say it could not be. It runs on the conductor's
    event loop, so it must never block (await its I/O, with timeouts, or run it in a
    thread). ``close`` is called once, at shutdown. A notifier may also have an
    ``events`` attribute, the kinds it wants ("job", "workflow"): it is then given only
    those.
    """

    async def notify(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


NOTIFIER_KIND = Kind[Notifier](NOTIFIERS, "notifier", Notifier)


async def describe_job(store: Store, job_id: str) -> dict[str, Any] | None:
    """The payload of a finished job: what it was, how it ended, its tasks by state."""
    job = await store.get_job(job_id)
    if job is None:
        return None
    counts = Counter(task.state.value for task in job.tasks)
    return {"event": "job.finished", "job_id": job.job_id, "status": job.status, "score": job.score,
            "scope": SCOPES.get(job.scope, job.scope), "requester": job.requester, "name": job.name,
            "labels": dict(job.labels), "created_at": iso(job.created_at), "finished_at": iso(job.finished_at),
            "counts": dict(sorted(counts.items()))}


async def describe_workflow(store: Store, workflow_id: str) -> dict[str, Any] | None:
    """The payload of a finished workflow: how it ended, and how each step did."""
    flow = await store.get_workflow(workflow_id)
    if flow is None:
        return None
    return {"event": "workflow.finished", "workflow_id": flow.workflow_id, "status": flow.status,
            "reason": flow.reason, "requester": flow.requester, "name": flow.name, "labels": dict(flow.labels),
            "created_at": iso(flow.created_at), "finished_at": iso(flow.finished_at),
            "steps": [{"name": step.name, "state": step.state, "job_id": step.job_id} for step in flow.steps]}


async def describe(store: Store, kind: str, ident: str) -> dict[str, Any] | None:
    """The payload of any event the lifecycle reports: a job's or a workflow's end."""
    if kind == "job":
        return await describe_job(store, ident)
    if kind == "workflow":
        return await describe_workflow(store, ident)
    return None


@dataclass
class _Outlet:
    """One notifier, with its queue and its counts."""

    name: str
    notifier: Notifier
    kinds: frozenset[str]
    queue: deque[dict[str, Any]]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


def _offer(queue: deque[Any], item: Any, ready: asyncio.Event) -> bool:
    """Append to a bounded queue; False if the oldest item had to make room."""
    full = len(queue) == queue.maxlen
    queue.append(item)
    ready.set()
    return not full


class Notifications:
    """The lifecycle's ``on_finished`` hook, and the tasks that carry each event out."""

    def __init__(self, notifiers: Sequence[tuple[str, Notifier]], describe: Describe,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.describe = describe
        self.outlets = [_Outlet(label, notifier, _kinds(notifier), deque(maxlen=queue_size))
                        for label, (_, notifier) in zip(labels(name for name, _ in notifiers), notifiers)]
        self.wanted = frozenset(kind for outlet in self.outlets for kind in outlet.kinds)
        self.pending: deque[tuple[str, str]] = deque(maxlen=queue_size)
        self.pending_ready = asyncio.Event()
        self.dropped = 0  # events dropped before they were described
        self.describing = False
        self.closing = False
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    def configured(cls, cfg: ConductorConfig, store: Store | None,
                   found: Iterable[metadata.EntryPoint] | None = None) -> Notifications:
        """The notifiers of ``[[notifiers]]`` (maybe none). A notifier that is missing or
        fails to start raises the one-line start-up error; ``found`` replaces the
        installed entry points (tests)."""
        base = cfg.path.parent
        registry = Registry(NOTIFIER_KIND, {"webhook": lambda options: Webhook.from_options(options, base)}, found)
        made: list[tuple[str, Notifier]] = []
        try:
            for table in cfg.notifiers:
                made.append((table.name, registry.create(table.name, table.options, table.where)))
        except BaseException:
            for _, notifier in made:
                notifier.close()
            raise
        notifications = cls(made, partial(describe, store))  # type: ignore[arg-type]
        return notifications

    def bind(self, store: Store) -> None:
        """Describe events from ``store``: for notifiers made before the queue was open
        (a conductor checks its plugins before it stands by)."""
        self.describe = partial(describe, store)

    def start(self) -> None:
        """Start the tasks (on the running loop)."""
        if not self.outlets:
            return
        logger.info("notifiers_started", notifiers=[outlet.name for outlet in self.outlets])
        self.tasks = [asyncio.ensure_future(self._describe_events())]
        self.tasks += [asyncio.ensure_future(self._deliver(outlet)) for outlet in self.outlets]

    def hook(self, kind: str, ident: str) -> None:
        """Queue one ended job or workflow; returns at once and never raises."""
        if self.closing or kind not in self.wanted:
            return
        if not _offer(self.pending, (kind, ident), self.pending_ready):
            self.dropped += 1
            log.throttled(logger, "warning", "notification_dropped", key="describe", kind=kind, id=ident,
                          reason=f"more than {self.pending.maxlen} events waiting to be described",
                          dropped=self.dropped)

    async def _describe_events(self) -> None:
        while True:
            await _next(self.pending, self.pending_ready)
            kind, ident = self.pending.popleft()
            self.describing = True
            try:
                event = await self.describe(kind, ident)
            except Exception as err:
                logger.error("notification_not_described", kind=kind, id=ident, error=f"{type(err).__name__}: {err}")
                continue
            finally:
                self.describing = False
            if event is None:
                logger.warning("notification_not_described", kind=kind, id=ident, error="nothing to describe")
                continue
            for outlet in self.outlets:
                if kind in outlet.kinds and not _offer(outlet.queue, event, outlet.ready):
                    outlet.dropped += 1
                    log.throttled(logger, "warning", "notification_dropped", key=outlet.name, notifier=outlet.name,
                                  kind=kind, reason=f"more than {outlet.queue.maxlen} events waiting",
                                  dropped=outlet.dropped)

    async def _deliver(self, outlet: _Outlet) -> None:
        while True:
            await _next(outlet.queue, outlet.ready)
            event = outlet.queue.popleft()
            outlet.busy = True
            try:
                await outlet.notifier.notify(event)
            except Exception as err:
                outlet.failed += 1
                logger.error("notification_failed", notifier=outlet.name, kind=event.get("event"),
                             id=event.get("job_id") or event.get("workflow_id"),
                             error=f"{type(err).__name__}: {err}")
            else:
                outlet.delivered += 1
                logger.debug("notification_sent", notifier=outlet.name, kind=event.get("event"))
            finally:
                outlet.busy = False

    def _waiting(self) -> int:
        return (len(self.pending) + self.describing
                + sum(len(outlet.queue) + outlet.busy for outlet in self.outlets))

    async def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Take no more events, give the queued ones ``timeout`` seconds, then stop."""
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.tasks and self._waiting() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        abandoned = self._waiting() if self.tasks else 0
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if abandoned:
            logger.warning("notifications_abandoned", events=abandoned, seconds=timeout)
        for outlet in self.outlets:
            try:
                outlet.notifier.close()
            except Exception as err:
                logger.error("notifier_close_failed", notifier=outlet.name, error=f"{type(err).__name__}: {err}")


async def _next(queue: deque[Any], ready: asyncio.Event) -> None:
    """Wait until the queue holds something."""
    while not queue:
        ready.clear()
        await ready.wait()


def _kinds(notifier: Notifier) -> frozenset[str]:
    wanted = getattr(notifier, "events", None)
    if wanted is None:
        return frozenset(KINDS)
    return frozenset(str(kind) for kind in wanted)


# ---- the webhook --------------------------------------------------------------------------


class WebhookError(Exception):
    """A webhook could not deliver an event (after its retries): str() says why."""


class Webhook:
    """POSTs each event as JSON to a URL over verified HTTPS (plain HTTP only to loopback).

    2xx is delivered; anything else (another status, no answer within ``timeout``, a
    refused connection or certificate) is tried again ``retries`` times, after
    ``backoff`` seconds doubling each time, with jitter so a fleet of conductors does not
    retry in step. Everything is awaited on the loop, each attempt bounded by
    ``timeout``: a hanging endpoint costs one waiting coroutine, no thread.
    """

    def __init__(self, url: str, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 1.0,
                 events: Collection[str] = KINDS, secret: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url: must be an https:// URL, not {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url: must not carry a user or password (send credentials in headers)")
        self.host = parts.hostname
        if scheme == "http" and not is_loopback(self.host):
            raise ValueError(f"url: plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost),"
                             f" not {self.host!r}: use https")
        try:
            explicit_port = parts.port
        except ValueError:
            raise ValueError(f"url: bad port in {url!r}") from None
        self.tls = scheme == "https"
        self.port = explicit_port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if explicit_port is None else f"{name}:{explicit_port}"
        # How logs name it: many services put a token in the URL's path, so only this.
        self.origin = f"{scheme}://{self.host_header}"
        self.context = _client_context(ca, cert, key) if self.tls else None
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.events = frozenset(events)
        self.secret = secret
        self.headers = _checked_headers(headers or {})

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base: Path) -> Webhook:
        read = Options(options, "webhook notifier")
        url = read.string("url")
        ca, cert, key = read.path("ca", base), read.path("cert", base), read.path("key", base)
        timeout = read.number("timeout", 10.0, minimum=0.1, maximum=600)
        retries = read.integer("retries", 3, minimum=0, maximum=100)
        backoff = read.number("backoff", 1.0, minimum=0, maximum=MAX_BACKOFF_SECONDS)
        events = read.strings("events", KINDS, allowed=KINDS)
        if not events:
            raise ValueError(f"events: must name at least one of {', '.join(KINDS)}")
        secret_file = read.path("secret_file", base)
        headers = read.table("headers")
        read.finish()
        if key is not None and cert is None:
            raise ValueError("key: is given without cert")
        secret = None
        if secret_file is not None:
            try:
                secret = secret_file.read_bytes().strip()
            except OSError as err:
                raise ValueError(f"secret_file: cannot read {secret_file}: {err.strerror}") from None
            if not secret:
                raise ValueError(f"secret_file: {secret_file} is empty")
        return cls(url, ca=ca, cert=cert, key=key, timeout=timeout, retries=retries, backoff=backoff,
                   events=events, secret=secret, headers=headers)

    def request(self, body: bytes) -> bytes:
        """The whole HTTP/1.1 request carrying ``body``."""
        lines = [f"POST {self.target} HTTP/1.1", f"Host: {self.host_header}", f"User-Agent: {USER_AGENT}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
        if self.secret is not None:
            lines.append(f"{SIGNATURE_HEADER}: {signature(self.secret, body)}")
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def notify(self, event: Mapping[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":"), default=str).encode()
        request = self.request(body)
        error = ""
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                delay = min(self.backoff * 2 ** (attempt - 2), MAX_BACKOFF_SECONDS) * random.uniform(0.5, 1.0)
                logger.info("notification_retrying", url=self.origin, attempt=attempt, error=error,
                            delay=round(delay, 3))
                await asyncio.sleep(delay)
            try:
                status = await asyncio.wait_for(self._post(request), self.timeout)
            except TimeoutError:
                error = f"no answer within {self.timeout:g} s"
                continue
            except Exception as err:  # refused, reset, a certificate that does not verify
                error = f"{type(err).__name__}: {err}"
                continue
            if 200 <= status < 300:
                return
            error = f"HTTP status {status}"
        raise WebhookError(f"{self.origin}: {error} (tried {self.retries + 1} times)")

    async def _post(self, request: bytes) -> int:
        """Send one request; the status of the answer."""
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.context, server_hostname=self.host if self.tls else None)
        try:
            writer.write(request)
            await writer.drain()
            while True:
                status = _status(await reader.readline())
                if status >= 200:
                    return status
                while (await reader.readline()).strip():  # a 1xx answer's headers: the real one follows
                    pass
        finally:
            writer.close()  # the answer's body is not wanted; not waited for either

    def close(self) -> None:
        """Nothing is held between events: each one has its own connection."""


def signature(secret: bytes, body: bytes) -> str:
    """The X-Orchestra-Signature value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _status(line: bytes) -> int:
    version, _, rest = line.decode("latin-1").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {line[:80]!r}")
    return int(code)


def _client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Verification always on: the given CA bundle, else the system's trust store."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"ca: cannot load {ca}: {getattr(err, 'strerror', None) or err}") from None
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"cert: cannot load {cert} with key {key or cert}:"
                             f" {getattr(err, 'strerror', None) or err}") from None
    return context


def _checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if _HEADER_NAME_RE.fullmatch(name) is None:
            raise ValueError(f"headers: {name!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"headers: {name} is set by the webhook itself")
        if any(c in value for c in "\r\n\0") or not value.isascii():
            raise ValueError(f"headers.{name}: must be one line of ASCII text")
    return dict(headers)
