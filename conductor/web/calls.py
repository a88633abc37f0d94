"""The Audience servicer, called for a page: the same methods, and so the same rules,
as ``getstatus``, ``listjobs`` and ``listplayers``.

Which jobs a caller may see is decided in one place (``conductor/audience.py``, the
policy's ``may_touch``); the web view never decides it again. A page calls the servicer
as the requester the web request was admitted as (``conductor.auth.current_requester``,
set by :mod:`conductor.web.auth`) with a :class:`CallContext` standing in for gRPC's: a
refusal the servicer would send a CLI (``context.abort``) becomes :class:`Refused`,
which the web layer answers with the HTTP status of the same meaning. Another
requester's job the caller may not read is therefore "no such job", a 404, exactly as
it is exit 5 for ``getstatus``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc

from conductor.auth import current_requester
from conductor.policy import Requester

Request = TypeVar("Request")
Reply = TypeVar("Reply")

# gRPC's answer -> the HTTP status of the same meaning.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 403,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
}


class Refused(Exception):
    """A request the web view answers with an error: ``status`` and a one-line message
    for the person who asked (the servicer's own, as a CLI would print it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CallContext:
    """What the Audience servicer uses of ``grpc.aio.ServicerContext``, for a web request."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()) -> NoReturn:
        raise Refused(HTTP_STATUS.get(code, 500), details or "refused")

    def set_trailing_metadata(self, metadata: Sequence[Any]) -> None:
        """Marks a policy refusal for the CLI's exit code: nothing a page needs."""

    def peer(self) -> str:
        return self._peer


def requester() -> Requester:
    """The admitted requester of this web request. Fails closed: a handler reached
    without one (which the admission middleware makes impossible) answers 403."""
    who = current_requester.get()
    if who is None:
        raise Refused(403, "no verified identity")
    return who


async def ask(method: Callable[[Request, Any], Awaitable[Reply]], request: Request, peer: str) -> Reply:
    """One unary Audience call as the admitted requester."""
    requester()
    try:
        return await method(request, CallContext(peer))
    except sqlite3.OperationalError:
        raise Refused(503, "the conductor cannot read its queue now; try again") from None
