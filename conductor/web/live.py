"""The pages' event streams: what changes on each page, pushed as it changes.

Each stream first asks the servicer exactly what its page asked (the job, the listing),
so the stream is refused (404, 400) before anything is sent, by the same rule as the
page; what it follows afterwards is that job or those jobs only.

* ``/jobs/ID/events``: ``WatchJob`` says when the job's tasks moved (at most once a
  second, every viewer sharing one read); each update carries the job's header and
  pictures and the rows of the tasks that changed; the last one the job as it ended.
* ``/jobs/events``: the listed jobs that are still open, counted again when they move.
* ``/jobs/ID/output/events?host=H``: ``FollowJob`` for that host: its output as it is
  printed, and the task's moves; the stream ends when the task or the job ends.
* ``/events``: the overview's numbers and charts, every OVERVIEW_SECONDS.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import aclosing
from typing import Any

from aiohttp import web

from conductor.web.calls import CallContext, Refused, ask
from conductor.web.filters import job_filters
from conductor.web.outputtext import OutputText
from conductor.web.pages import asked_host, peer
from conductor.web.rows import ENDED_STATES, JobRow, TaskRow, job_row, job_view, recounted, state_of
from conductor.web.site import Site
from conductor.web.streams import HEARTBEAT_SECONDS, EventStream
from orchestra.errors import ValidationError
from orchestra.wire import audience_pb2

OVERVIEW_SECONDS = 5.0
LISTING_SECONDS = 1.0  # how often a jobs page's stream looks at the moves of its jobs


class Live:
    def __init__(self, site: Site) -> None:
        self.site = site

    # ---- the overview ----------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.StreamResponse:
        async def body(stream: EventStream) -> None:
            async for _ in self.site.streams.ticks(OVERVIEW_SECONDS):
                html = self.site.fragment("overview_body", await self.site.overview())
                await stream.send("overview", {"html": html})
        return await self.site.streams.serve(request, body)

    # ---- one job -----------------------------------------------------------------------------

    async def job(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job_id"]
        await ask(self.site.audience.GetJob, audience_pb2.JobRef(job_id=job_id), peer(request))
        sent: dict[int, TaskRow] = {}

        async def body(stream: EventStream) -> None:
            updates = self.site.audience.WatchJob(audience_pb2.WaitRequest(job_id=job_id), CallContext(peer(request)))
            async with aclosing(self.site.streams.pump(updates, stream)) as pumped:  # closed on return
                async for update in pumped:
                    if update.HasField("job"):
                        await stream.send("end", {"message": f"the job finished: {update.job.status}",
                                                  **self._job_update(update.job, sent)})
                        return
                    job = await self.site.jobs.read(job_id)
                    if job is not None:
                        await stream.send("job", self._job_update(job, sent))
        return await self.site.streams.serve(request, body)

    def _job_update(self, job: audience_pb2.Job, sent: dict[int, TaskRow]) -> dict[str, Any]:
        """The header and the progress bar, and of the tasks that changed since the last
        update their rows and their squares' (host, state); a running task's duration is
        the browser's to count meanwhile. A fan-out of thousands of tasks thus costs a
        viewer the tasks that moved, not the whole table and drawing every second."""
        view = job_view(job, time.time())
        rows, cells = {}, {}
        for task in view.tasks:
            seen = dataclasses.replace(task, duration="") if task.live else task
            if sent.get(task.number) != seen:
                earlier = sent.get(task.number)
                sent[task.number] = seen
                rows[f"t{task.number}"] = self.site.fragment("task_row", view.job_id, task)
                if earlier is None or (earlier.host, earlier.state) != (task.host, task.state):
                    cells[task.number] = view.cells[task.number]
        return {"summary": self.site.fragment("job_summary", view), "progress": self.site.fragment("job_progress", view),
                "rows": rows, "cells": cells, "status": view.status}

    # ---- the jobs page -----------------------------------------------------------------------

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        try:
            filters = job_filters({key: request.query.getall(key) for key in request.query.keys()})
            listing_request = filters.request(time.time())
        except ValidationError as err:
            raise Refused(400, str(err)) from None
        listing = await ask(self.site.audience.ListJobs, listing_request, peer(request))
        rows = {summary.job_id: job_row(summary) for summary in listing.jobs}

        async def body(stream: EventStream) -> None:
            watchers = self.site.served.lifecycle.watchers
            followed = {job_id: watchers.follow(job_id) for job_id, row in rows.items() if not row.done}
            try:
                await self._follow_listing(stream, rows, followed)
            finally:
                for job_id, event in followed.items():
                    watchers.unfollow(job_id, event)
        return await self.site.streams.serve(request, body)

    async def _follow_listing(self, stream: EventStream, rows: dict[str, JobRow],
                              followed: dict[str, Any]) -> None:
        """Count the listed open jobs again whenever they moved, until all have finished."""
        lifecycle, quiet = self.site.served.lifecycle, 0.0
        async for _ in self.site.streams.ticks(LISTING_SECONDS):
            if not followed:
                await stream.send("end", {"message": "every job listed here has finished"})
                return
            moved = [job_id for job_id, event in followed.items() if event.is_set()]
            if not moved:
                quiet += LISTING_SECONDS
                if quiet >= HEARTBEAT_SECONDS:
                    await stream.beat()
                    quiet = 0.0
                continue
            for job_id in moved:
                followed[job_id].clear()
            counts = await lifecycle.store.task_counts(moved)
            changed = {}
            for job_id in moved:
                if job_id not in counts:  # deleted meanwhile: nothing more to show
                    lifecycle.watchers.unfollow(job_id, followed.pop(job_id))
                    continue
                rows[job_id] = row = recounted(rows[job_id], counts[job_id])
                changed[f"job-{job_id}"] = self.site.fragment("job_row", row)
                if row.done:
                    lifecycle.watchers.unfollow(job_id, followed.pop(job_id))
            await stream.send("rows", changed)
            quiet = 0.0

    # ---- one host's output -------------------------------------------------------------------

    async def output(self, request: web.Request) -> web.StreamResponse:
        job_id, host = request.match_info["job_id"], asked_host(request)
        await ask(self.site.audience.GetJob, audience_pb2.JobRef(job_id=job_id), peer(request))

        async def body(stream: EventStream) -> None:
            follow = self.site.audience.FollowJob(audience_pb2.FollowRequest(job_id=job_id, host=host),
                                                  CallContext(peer(request)))
            text = OutputText()
            async with aclosing(self.site.streams.pump(follow, stream)) as pumped:  # closed on return
                async for event in pumped:
                    if await self._output_event(stream, event, host, text):
                        return
        return await self.site.streams.serve(request, body)

    @staticmethod
    async def _output_event(stream: EventStream, event: audience_pb2.FollowEvent, host: str,
                            text: OutputText) -> bool:
        """Send what one FollowJob event means for this host's page; True once it is over."""
        kind = event.WhichOneof("body")
        if kind == "output":
            piece = event.output
            items = text.add(piece.stream, bytes(piece.data), piece.skipped, piece.cut)
            if items:
                await stream.send("output", {"items": items})
        elif kind == "task" and event.task.host == host:
            await stream.send("state", {"state": event.task.state})
            if event.task.state in ENDED_STATES:
                await stream.send("end", {"message": f"the task ended: {event.task.state}",
                                          "items": text.finish(), "state": event.task.state})
                return True
        elif kind == "job":
            state = next((state_of(task.state) for task in event.job.tasks if task.player == host), "")
            await stream.send("end", {"message": f"the job finished: {event.job.status}",
                                      "items": text.finish(), "state": state})
            return True
        return False
