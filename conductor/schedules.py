"""Schedules: a job or workflow the conductor submits on a cron schedule, as its owner."""

from __future__ import annotations

from conductor.lifecycle import Lifecycle
from conductor.policy import Requester
from conductor.submission import Submissions
from conductor.workflows import Workflows
from orchestra.wire import audience_pb2


class Schedules:
    def __init__(self, lifecycle: Lifecycle, submissions: Submissions, workflows: Workflows) -> None:
        self.lifecycle = lifecycle
        self.submissions = submissions
        self.workflows = workflows

    async def add(self, request: audience_pb2.ScheduleRequest, who: Requester) -> audience_pb2.ScheduleInfo:
        raise NotImplementedError

    async def change(self, request: audience_pb2.ScheduleChange, who: Requester) -> audience_pb2.ScheduleInfo:
        raise NotImplementedError

    async def list(self, who: Requester) -> audience_pb2.ScheduleList:
        raise NotImplementedError

    async def run(self) -> None:
        raise NotImplementedError
