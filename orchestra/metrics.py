"""Prometheus metrics on an opt-in HTTP listener (``metrics_listen``), for both daemons.

Imported only when a daemon has ``metrics_listen`` set, so one without it never loads
prometheus_client. Each daemon gets:

* **its own registry**: the standard process, platform and garbage-collector collectors,
  and one :class:`LoopCollector`. That collector runs in the HTTP server's thread but
  reads the daemon's state on its event loop: it asks the loop for a snapshot
  (``run_coroutine_threadsafe``), waits at most SCRAPE_TIMEOUT seconds, and builds the
  metric families from what the loop handed over. No dict the loop changes is ever read
  from another thread. When the loop does not answer in time, the scrape serves the
  previous snapshot again (and the lateness shows in ``..._event_loop_lag_seconds``).
* **a listener** (:func:`serve`): prometheus_client's WSGI app on its threading WSGI
  server, in a thread of its own. Plain HTTP only on a loopback address (the config
  refuses anything else unless ``metrics_tls`` is on, and the bound address is checked
  again here). With TLS, every client must present a certificate that chains to the
  daemon's CA bundle, and the daemon serves its own certificate.

Why not ``prometheus_client.start_http_server(certfile=...)``: in prometheus_client 0.26
it wraps the listening socket, so each TLS handshake runs in the thread that accepts
connections, with no timeout. One TCP connection that never sends a byte stopped every
scrape until it went away (measured), and anyone who can reach a non-loopback port can
open one. Here the handshake runs in each connection's own thread under
CONNECTION_TIMEOUT, and at most MAX_CONNECTIONS are served at once.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector

from orchestra import log
from orchestra.config import TLSFiles, listen_host
from orchestra.errors import ConfigError, StartupError
from orchestra.log import throttled
from orchestra.tls import server_context

logger = log.get("metrics")

# Seconds the event loop has to hand a scrape its snapshot; Prometheus' default scrape
# timeout is 10 s.
SCRAPE_TIMEOUT = 2.0
# Seconds a connection has for its TLS handshake and its request.
CONNECTION_TIMEOUT = 10.0
# Connections served at once; one more is closed as soon as it is accepted.
MAX_CONNECTIONS = 32

S = TypeVar("S")


# ---- reading the daemon's state on its loop ------------------------------------------

class LoopCollector(Collector, Generic[S]):
    """Metric families built from a snapshot the event loop takes for each scrape.

    ``snapshot`` is a coroutine function run on ``loop``; ``families`` turns what it
    returned into metric families, in the scraping thread (so it must only read the
    snapshot, never the daemon's live objects). ``prefix_event_loop_lag_seconds`` says
    how long the loop took to start on the snapshot (SCRAPE_TIMEOUT: it never did).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, prefix: str,
                 snapshot: Callable[[], Awaitable[S]], families: Callable[[S], Iterable[Metric]]) -> None:
        self._loop = loop
        self._prefix = prefix
        self._snapshot = snapshot
        self._families = families
        self._last: S | None = None

    def _take(self) -> tuple[S | None, float]:
        asked = time.monotonic()
        started: list[float] = []

        async def timed() -> S:
            started.append(time.monotonic())
            return await self._snapshot()
        coroutine = timed()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            coroutine.close()
            return self._last, 0.0
        try:
            self._last = future.result(SCRAPE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            throttled(logger, "warning", "metrics_snapshot_late", key=self._prefix, seconds=SCRAPE_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - a scrape must never take the daemon down
            throttled(logger, "error", "metrics_snapshot_failed", key=self._prefix, error=repr(err))
        lag = (started[0] if started else time.monotonic()) - asked
        return self._last, lag

    def collect(self) -> Iterable[Metric]:
        snapshot, lag = self._take()
        families: list[Metric] = [GaugeMetricFamily(
            f"{self._prefix}_event_loop_lag_seconds",
            "Seconds the event loop took to start answering this scrape (a busy loop delays every session).",
            value=lag)]
        if snapshot is not None:
            try:
                families += self._families(snapshot)
            except Exception as err:  # noqa: BLE001 - serve what there is, say why the rest is missing
                throttled(logger, "error", "metrics_families_failed", key=self._prefix, error=repr(err))
        return families


def new_registry(collector: Collector) -> CollectorRegistry:
    """A registry of the daemon's own: the process, platform and GC collectors and its own."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(collector)
    return registry


# ---- building families -----------------------------------------------------------------

def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter without labels; ``name`` ends in ``_total``."""
    return CounterMetricFamily(name.removesuffix("_total"), doc, value=value)


def counters(name: str, doc: str, label: str, values: Mapping[str, float]) -> CounterMetricFamily:
    """A counter with one label, one sample per (bounded) label value."""
    family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def gauges(name: str, doc: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Buckets(Protocol):
    """A histogram kept as plain numbers: the count in each bucket (the last one above
    every bound) and the sum of what was observed."""

    bounds: tuple[float, ...]
    counts: list[int]
    sum: float


def histogram(name: str, doc: str, labels: Sequence[str], tallies: Mapping[tuple[str, ...], Buckets]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, tally in sorted(tallies.items()):
        cumulative, running = [], 0
        for bound, count in zip((*tally.bounds, math.inf), tally.counts):
            running += count
            cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), float(running)))
        family.add_metric(list(values), cumulative, tally.sum)
    return family


@dataclass(frozen=True)
class CertExpiry:
    certificate: str  # the daemon's own role ("conductor", "player") or "ca"
    subject: str
    serial: str
    not_after: float


@functools.lru_cache(maxsize=16)
def certificate_expiries(role: str, cert_pem: bytes, ca_pem: bytes) -> tuple[CertExpiry, ...]:
    """The daemon's certificate and each CA certificate of its bundle, parsed once per
    (role, certificate, bundle): a reload brings new bytes, hence a new entry."""
    from cryptography import x509

    def expiry(kind: str, cert: x509.Certificate) -> CertExpiry:
        return CertExpiry(kind, cert.subject.rfc4514_string(), f"{cert.serial_number:x}",
                          cert.not_valid_after_utc.timestamp())
    return (expiry(role, x509.load_pem_x509_certificate(cert_pem)),
            *(expiry("ca", ca) for ca in x509.load_pem_x509_certificates(ca_pem)))


def certificate_gauges(name: str, doc: str, certificates: Iterable[CertExpiry], now: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["certificate", "subject", "serial"])
    for cert in certificates:
        family.add_metric([cert.certificate, cert.subject, cert.serial], cert.not_after - now)
    return family


# ---- the listener ----------------------------------------------------------------------

def tls_context(files: TLSFiles) -> ssl.SSLContext:
    """The daemon's own certificate and key; clients must present a certificate of its CA
    bundle (TLS 1.2 at least)."""
    return server_context(files, "metrics_tls")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged (one every few seconds)."""


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server, with a TLS handshake in each connection's
    own thread, a timeout on every connection and a cap on how many are served at once."""

    context: ssl.SSLContext | None = None
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            throttled(logger, "warning", "metrics_connection_refused", key="busy", peer=_peer(client_address),
                      reason=f"{MAX_CONNECTIONS} connections already open")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(CONNECTION_TIMEOUT)
        context = self.context
        if context is None:
            super().finish_request(request, client_address)
            return
        try:
            connection = context.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as err:  # the socket is closed either way
            throttled(logger, "warning", "metrics_handshake_failed", key=type(err).__name__,
                      peer=_peer(client_address), reason=str(err)[:300])
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed (timed out, reset): one event, not a traceback on stderr."""
        throttled(logger, "warning", "metrics_request_failed", key="request", peer=_peer(client_address),
                  error=repr(sys.exc_info()[1])[:300])


def _peer(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


class MetricsServer:
    """The listener, serving from a thread of its own until :meth:`close`."""

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    def reload_tls(self, files: TLSFiles) -> None:
        """The daemon's certificate was replaced: new connections get the new one. Raises
        StartupError (and keeps the old one) when the files cannot be used."""
        if self._httpd.context is not None:
            self._httpd.context = tls_context(files)

    async def close(self) -> None:
        """Stop accepting and close the socket (a scrape in progress finishes on its own)."""
        await asyncio.to_thread(self._httpd.shutdown)  # waits for the serving loop's next poll
        self._httpd.server_close()
        self._thread.join(1)


def serve(listen: str, registry: CollectorRegistry, tls: TLSFiles | None, config_path: Path) -> MetricsServer:
    """Listen on ``listen`` (HOST:PORT) and serve ``registry``; TLS with client
    certificates when ``tls`` is given. Raises StartupError when it cannot listen (one
    line: exit 1) and ConfigError when plain HTTP would not be on loopback (exit 2)."""
    host, port = listen_host(listen), int(listen.rpartition(":")[2])
    context = tls_context(tls) if tls is not None else None
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family})
        httpd: _Server = make_server(str(address[0]), port, make_wsgi_app(registry), server_class=server_class,
                                     handler_class=_QuietHandler)
    except OSError as err:
        raise StartupError(f"cannot listen on metrics_listen {listen}: {err.strerror or err}") from None
    bound = str(httpd.server_address[0])
    if context is None and not ipaddress.ip_address(bound.split("%")[0]).is_loopback:
        httpd.server_close()
        raise ConfigError(f"{config_path}: metrics_listen: {host} is {bound}, not a loopback address: serving"
                          " metrics beyond this host needs metrics_tls = true")
    httpd.context = context
    httpd.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    logger.info("metrics_listening", listen=listen, port=int(httpd.server_address[1]), tls=context is not None)
    return MetricsServer(httpd, thread)

