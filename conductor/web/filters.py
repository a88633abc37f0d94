"""The jobs page's filters: ``listjobs``' options as query parameters, into the same
``ListJobsRequest`` the CLI sends, so the conductor checks them (and shows the caller
only what ``getstatus`` would) in one place. Pure.

``/jobs?status=failed&status=partial_fail&score=deploy&requester=cert:ci&target=@web
&name=nightly&label=team=ops&since=12h&mine=1&limit=100``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from orchestra.errors import ValidationError
from orchestra.joboptions import parse_since
from orchestra.outcome import JOB_STATUSES
from orchestra.wire import audience_pb2

DEFAULT_LIMIT, MAX_LIMIT = 50, 10_000  # as listjobs
# The query parameters the page knows; others are ignored, as a form sends what it has.
KEYS = ("status", "score", "requester", "target", "name", "label", "since", "mine", "limit")
MAX_VALUES = 32  # of one repeated parameter (status, label)
MAX_CHARS = 512


@dataclass(frozen=True)
class JobFilters:
    """The filters as given (to fill the form in again and to build the events URL)."""

    statuses: tuple[str, ...] = ()
    score: str = ""
    requester: str = ""
    target: str = ""
    name: str = ""
    labels: tuple[str, ...] = ()
    since: str = ""
    mine: bool = False
    limit: int = DEFAULT_LIMIT

    def query(self) -> str:
        """The same filters as a query string ("" for none)."""
        pairs: list[tuple[str, str]] = [("status", status) for status in self.statuses]
        pairs += [(key, value) for key, value in (("score", self.score), ("requester", self.requester),
                                                  ("target", self.target), ("name", self.name)) if value]
        pairs += [("label", label) for label in self.labels]
        if self.since:
            pairs.append(("since", self.since))
        if self.mine:
            pairs.append(("mine", "1"))
        if self.limit != DEFAULT_LIMIT:
            pairs.append(("limit", str(self.limit)))
        return urlencode(pairs)

    def request(self, now: float) -> audience_pb2.ListJobsRequest:
        """The ListJobs request these filters ask for; ValidationError for a bad ``since``
        (the conductor checks the rest as for listjobs)."""
        since = parse_since(self.since, now) if self.since else 0.0
        return audience_pb2.ListJobsRequest(
            statuses=list(self.statuses), score=self.score, requester=self.requester, target=self.target,
            since=since, limit=self.limit, mine=self.mine, name=self.name, labels=list(self.labels))


def _one(values: Sequence[str], key: str) -> str:
    value = values[-1].strip() if values else ""
    if len(value) > MAX_CHARS:
        raise ValidationError(f"{key}: longer than {MAX_CHARS} characters")
    return value


def job_filters(query: Mapping[str, Sequence[str]]) -> JobFilters:
    """Filters from the query's parameters (each key with all its values); empty values
    are no filter, as a form sends its empty fields. ValidationError for a bad one."""
    def every(key: str) -> tuple[str, ...]:
        values = tuple(value.strip() for value in query.get(key, ()) if value.strip())
        if len(values) > MAX_VALUES or any(len(value) > MAX_CHARS for value in values):
            raise ValidationError(f"{key}: at most {MAX_VALUES} values of at most {MAX_CHARS} characters")
        return values

    statuses = every("status")
    unknown = [status for status in statuses if status not in JOB_STATUSES]
    if unknown:
        raise ValidationError(f"no such job state: {unknown[0][:40]!r} (one of {', '.join(JOB_STATUSES)})")
    limit_text = _one(query.get("limit", ()), "limit")
    try:
        limit = int(limit_text) if limit_text else DEFAULT_LIMIT
    except ValueError:
        raise ValidationError(f"limit: not a whole number: {limit_text[:40]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit: must be between 1 and {MAX_LIMIT}")
    mine = _one(query.get("mine", ()), "mine").lower() in ("1", "on", "true", "yes")
    return JobFilters(statuses=tuple(dict.fromkeys(statuses)), score=_one(query.get("score", ()), "score"),
                      requester=_one(query.get("requester", ()), "requester"),
                      target=_one(query.get("target", ()), "target"), name=_one(query.get("name", ()), "name"),
                      labels=every("label"), since=_one(query.get("since", ()), "since"), mine=mine, limit=limit)
