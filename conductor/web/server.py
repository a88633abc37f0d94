"""The web view's listener: aiohttp on the conductor's own event loop, HTTPS only.

Started by the conductor once its gRPC servers are up, when ``web_listen`` is set;
stopped when it stops. The TLS context is the conductor's certificate and key, TLS 1.2
at least, a client certificate of the CA bundle required (a handshake without one is
refused by TLS itself: nothing of the view is reachable without an identity); the
listener (:mod:`conductor.web.listener`) bounds connections and handshakes.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from aiohttp import web

from conductor.web.auth import admission, secure
from conductor.web.history import History
from conductor.web.listener import Listener
from conductor.web.live import Live
from conductor.web.pages import Pages
from conductor.web.site import Served, Site
from conductor.web.streams import Streams
from orchestra import log
from orchestra.config import TLSFiles, listen_host
from orchestra.errors import StartupError
from orchestra.tls import PeerIdentity, server_context

logger = log.get("conductor")

SAMPLE_SECONDS = 5.0  # how often the overview's history reads the lifecycle's counters
SHUTDOWN_SECONDS = 2.0  # a stop waits this long for requests under way


class WebView:
    """The running web view (README, "The web view")."""

    def __init__(self, served: Served, streams: Streams, runner: web.AppRunner, listener: Listener,
                 context: ssl.SSLContext, sampler: asyncio.Future[None]) -> None:
        self.served, self.streams, self.runner = served, streams, runner
        self.listener, self.context, self.sampler = listener, context, sampler

    @classmethod
    async def start(cls, served: Served) -> WebView:
        """Listen on ``web_listen``; StartupError (exit 1) when it cannot."""
        cfg, lifecycle = served.cfg, served.lifecycle
        context = server_context(cfg.tls, "web_listen")
        history = History(lifecycle.counts.tasks_ended, time.time())
        streams = Streams(lambda identity: refused(served, identity))
        site = Site(served, streams, history)
        runner = web.AppRunner(application(site), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        host, port = listen_host(cfg.web_listen), int(cfg.web_listen.rpartition(":")[2])
        listener = Listener(runner, host, port, context, cfg.handshake_timeout)
        try:
            await listener.start()
        except OSError as err:
            await runner.cleanup()
            raise StartupError(f"cannot listen on web_listen {cfg.web_listen}: {err.strerror or err}") from None
        sampler = asyncio.ensure_future(sample(history, served))
        logger.info("web_listening", listen=cfg.web_listen, port=listener.bound,
                    url=f"https://{cfg.web_listen.rpartition(':')[0]}:{listener.bound}/")
        return cls(served, streams, runner, listener, context, sampler)

    @property
    def port(self) -> int:
        return self.listener.bound

    def close_refused(self) -> int:
        """The CRL or the ``[audience]`` table changed: end the live views of the
        certificates they refuse now (a page request is checked anew each time)."""
        return self.streams.close_refused()

    def reload_tls(self, files: TLSFiles) -> None:
        """The conductor's certificate was replaced: new connections get the new one.
        Raises StartupError (and keeps the old one) when the files cannot be used."""
        # A new context from the whole set (certificate, key and CA bundle), swapped in only
        # once it loaded: a rotated CA is trusted, and a retired one no longer, from the next
        # connection on.
        self.context = self.listener.context = server_context(files, "web_listen")

    async def close(self) -> None:
        """Every live view says the conductor is stopping and ends; then the listener closes."""
        self.streams.closing.set()
        self.sampler.cancel()
        await asyncio.sleep(0)  # let the streams write their last event
        await self.runner.cleanup()
        logger.info("web_stopped")


def refused(served: Served, identity: PeerIdentity) -> str | None:
    """Why a live view's certificate would be refused now, or None (the rules of
    ``Gate.check_certificate`` for the Audience, read again after a reload)."""
    return served.revocation.refuses(identity) or (
        None if served.policy.admits_cert(identity.certname) else f"{identity.certname} is not an audience identity")


def application(site: Site) -> web.Application:
    pages, live = Pages(site), Live(site)
    app = web.Application(middlewares=[admission(site.served.gate, site.served.lifecycle.audit, pages.error)],
                          client_max_size=64 * 1024)
    app.on_response_prepare.append(secure)
    routes = app.router
    routes.add_get("/", pages.overview)
    routes.add_get("/events", live.overview)
    routes.add_get("/jobs", pages.jobs)
    routes.add_get("/jobs/events", live.jobs)
    routes.add_get("/jobs/{job_id}", pages.job)
    routes.add_get("/jobs/{job_id}/events", live.job)
    routes.add_get("/jobs/{job_id}/output", pages.output)
    routes.add_get("/jobs/{job_id}/output/events", live.output)
    routes.add_get("/players", pages.players)
    routes.add_get("/static/{name}", pages.static)
    return app


async def sample(history: History, served: Served) -> None:
    """Feed the overview's history from the lifecycle's counters, until cancelled."""
    while True:
        await asyncio.sleep(SAMPLE_SECONDS)
        history.sample(served.lifecycle.counts.tasks_ended, time.time())
