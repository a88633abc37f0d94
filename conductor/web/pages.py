"""The pages, rendered on the server: each one whole without JavaScript; the script then
keeps it live through its event stream (:mod:`conductor.web.live`).

Every page that shows job data asks the Audience servicer for it, as the admitted
requester (:func:`conductor.web.calls.ask`): the jobs page is ``listjobs``, a job's page
``getstatus``, the players page ``listplayers``. The overview shows aggregates only.
"""

from __future__ import annotations

import time
from importlib import resources

from aiohttp import web

from conductor.web.calls import Refused, ask
from conductor.web.filters import JobFilters, job_filters
from conductor.web.rows import ENDED_STATES, job_row, job_view, player_row, when
from conductor.web.site import Site
from orchestra.errors import ValidationError
from orchestra.params import CERTNAME_RE
from orchestra.wire import audience_pb2

# The conductor's own assets, read once from the package: no CDN, nothing from elsewhere.
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}


def peer(request: web.Request) -> str:
    return request.remote or "unknown"


def asked_host(request: web.Request) -> str:
    """The ``host`` parameter of an output page, checked as a certname."""
    host = request.query.get("host", "")
    if CERTNAME_RE.fullmatch(host) is None:
        raise Refused(400, f"invalid host name {host[:80]!r}")
    return host


class Pages:
    def __init__(self, site: Site) -> None:
        self.site = site
        package = resources.files("conductor.web")
        self.assets = {name: package.joinpath("static", name).read_bytes() for name in ASSETS}

    async def overview(self, request: web.Request) -> web.Response:
        return self.site.render("overview.html", overview=await self.site.overview(), events="/events")

    async def jobs(self, request: web.Request) -> web.Response:
        """Newest first, filtered as ``listjobs``; a bad filter is shown above the form."""
        query = {key: request.query.getall(key) for key in request.query.keys()}
        filters = JobFilters()
        try:
            filters = job_filters(query)
            listing = await ask(self.site.audience.ListJobs, filters.request(time.time()), peer(request))
        except (ValidationError, Refused) as err:
            if isinstance(err, Refused) and err.status != 400:
                raise
            message = err.message if isinstance(err, Refused) else str(err)
            return self.site.render("jobs.html", status=400, filters=filters, rows=[], more=False, error=message)
        query_string = filters.query()
        return self.site.render("jobs.html", filters=filters, rows=[job_row(job) for job in listing.jobs],
                                more=listing.more, error="",
                                events="/jobs/events" + (f"?{query_string}" if query_string else ""))

    async def job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        job = await ask(self.site.audience.GetJob, audience_pb2.JobRef(job_id=job_id), peer(request))
        view = job_view(job, time.time())
        return self.site.render("job.html", job=view, events="" if view.done else f"/jobs/{job_id}/events")

    async def output(self, request: web.Request) -> web.Response:
        """One host's output of a job: live while its task runs or waits, the stored tail
        once it has ended."""
        job_id, host = request.match_info["job_id"], asked_host(request)
        job = await ask(self.site.audience.GetJob, audience_pb2.JobRef(job_id=job_id), peer(request))
        view = job_view(job, time.time())
        numbers = [number for number, task in enumerate(job.tasks) if task.player == host]
        if not numbers:
            raise Refused(404, f"job {job_id} has no task on {host}")
        row, outcome = view.tasks[numbers[0]], job.tasks[numbers[0]].outcome
        live = not view.done and row.state not in ENDED_STATES
        return self.site.render(
            "output.html", job=view, task=row, host=host, live=live,
            stdout=bytes(outcome.stdout_tail).decode("utf-8", "replace"),
            stderr=bytes(outcome.stderr_tail).decode("utf-8", "replace"),
            stdout_truncated=outcome.stdout_truncated, stderr_truncated=outcome.stderr_truncated,
            events=f"/jobs/{job_id}/output/events?host={host}" if live else "")

    async def players(self, request: web.Request) -> web.Response:
        reply = await ask(self.site.audience.ListPlayers, audience_pb2.ListPlayersRequest(), peer(request))
        now = time.time()
        rows = [player_row(info, now) for info in reply.players]
        counts = [(condition, sum(1 for row in rows if row.condition == condition))
                  for condition in ("connected", "offline", "revoked")]
        counts.append(("drained", sum(1 for row in rows if row.drained)))
        days = int((reply.conductor_cert_not_after - now) // 86400) if reply.conductor_cert_not_after else None
        return self.site.render("players.html", players=rows, counts=counts, state=reply.conductor_state,
                                cert_expiry=when(reply.conductor_cert_not_after), cert_days=days)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.assets:
            raise Refused(404, "no such file")
        return web.Response(body=self.assets[name], content_type=ASSETS[name],
                            charset="utf-8" if ASSETS[name].startswith("text/") else None)

    async def error(self, request: web.Request, refused: Refused) -> web.Response:
        """An error page: the status and the servicer's one line, nothing else."""
        return self.site.render("error.html", status=refused.status, code=refused.status, message=refused.message)
