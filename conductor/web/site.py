"""What every page handler reaches: the running conductor, the templates, the live
streams, the overview's history, and one read of a live job shared by its viewers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jinja2
from aiohttp import web
from markupsafe import Markup

from conductor.audience import Audience, job_to_wire
from conductor.auth import Gate, Revocation
from conductor.lifecycle import Lifecycle
from conductor.policy import Policy
from conductor.state import StateMachine
from conductor.states import TaskState
from conductor.web import pictures
from conductor.web.calls import requester
from conductor.web.history import History
from conductor.web.rows import StateCount, when
from conductor.web.streams import Streams
from orchestra.config import ConductorConfig
from orchestra.wire import audience_pb2

MAX_SHARED = 1024  # live jobs whose last read is kept for their viewers


class Served(Protocol):
    """What the web view reads of the running conductor (conductor.main.Conductor)."""

    @property
    def cfg(self) -> ConductorConfig: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    @property
    def audience(self) -> Audience: ...

    @property
    def gate(self) -> Gate: ...

    @property
    def revocation(self) -> Revocation: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def state(self) -> StateMachine: ...


class SharedJobs:
    """A live job read once for all who watch it: the read stays current until one of its
    tasks moves again (the watchers' version of the job), as ``getstatus --wait``'s
    progress is shared. Only jobs a stream has been admitted to are read here."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._reads: dict[str, tuple[int, asyncio.Future[audience_pb2.Job | None]]] = {}

    async def read(self, job_id: str) -> audience_pb2.Job | None:
        watchers = self.lifecycle.watchers
        moves = watchers.moves(job_id)
        cached = self._reads.get(job_id)
        if moves == 0 or cached is None or cached[0] != moves or (cached[1].done() and cached[1].exception()):
            if len(self._reads) >= MAX_SHARED:  # forget jobs nobody follows any more
                self._reads = {key: value for key, value in self._reads.items() if watchers.moves(key)}
            cached = (moves, asyncio.ensure_future(self._read(job_id)))
            if moves:
                self._reads[job_id] = cached
        return await asyncio.shield(cached[1])

    async def _read(self, job_id: str) -> audience_pb2.Job | None:
        job = await self.lifecycle.store.get_job(job_id)
        return job_to_wire(job) if job is not None else None  # secret values redacted, as getstatus


@dataclass(frozen=True)
class Overview:
    """The overview page: aggregates only, the numbers /metrics exposes; no job data."""

    state: str
    connected: int
    offline: int
    drained: int
    revoked: int
    queue_depth: int
    held: int
    open_tasks: tuple[StateCount, ...]
    ended: list[int]
    failed: list[int]
    since: str


class Site:
    def __init__(self, served: Served, streams: Streams, history: History) -> None:
        self.served = served
        self.streams = streams
        self.history = history
        self.jobs = SharedJobs(served.lifecycle)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("conductor.web", "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.globals.update(
            stacked_bar=pictures.stacked_bar, task_grid=pictures.task_grid,
            minute_chart=pictures.minute_chart, level_bars=pictures.level_bars)

    @property
    def audience(self) -> Audience:
        return self.served.audience

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        """A whole page, as the admitted requester sees it."""
        who = requester()
        context.setdefault("events", "")
        text = self.templates.get_template(template).render(
            who=who.label, conductor_state=self.served.state.current.value, **context)
        return web.Response(status=status, text=text, content_type="text/html")

    def fragment(self, macro: str, *args: Any) -> str:
        """One macro of ``parts.html``: a piece of a page, for a live update."""
        found: Callable[..., Markup] = getattr(self.templates.get_template("parts.html").module, macro)
        return str(found(*args))

    async def overview(self) -> Overview:
        """The overview's numbers, now (one read of the queue: open tasks by state)."""
        lifecycle, now = self.served.lifecycle, time.time()
        sessions = lifecycle.sessions
        self.history.sample(lifecycle.counts.tasks_ended, now)
        ended, failed = self.history.series(now)
        open_tasks = await lifecycle.store.open_task_counts()
        return Overview(
            state=self.served.state.current.value, connected=sessions.connected(), offline=sessions.offline(),
            drained=sum(1 for name in lifecycle.drained if name in sessions.roster),
            revoked=len(lifecycle.revoked_players), queue_depth=lifecycle.index.depth(),
            held=lifecycle.rollouts.holding(),
            open_tasks=tuple(StateCount(state.value, open_tasks[state]) for state in TaskState if state in open_tasks),
            ended=ended, failed=failed, since=when(self.history.started_at))
