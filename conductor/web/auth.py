"""Who is asking, for every request to the web view, and the headers of every answer.

There is no login and no session: TLS has already required and verified a client
certificate of the CA (the listener's context refuses a handshake without one), and
each request is admitted from that certificate alone, by the gRPC interceptor's own
rule (``Gate.check_certificate``, as an Audience call): the same certname rule as
gRPC's (``orchestra.tls.leaf_identity``), the CRL (failing closed), and the
``[audience]`` table. A refusal is counted, audited and logged as the interceptor's
are, and answered 403 with one line and no data. An admitted request is audited
(``web``, with the requester, method and path; of the query only its keys) and
handled as that requester; the view is read-only, so anything but GET and HEAD is 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from conductor.audit import AuditLog
from conductor.auth import AUDIENCE_SERVICE, Gate, current_identity, current_requester
from conductor.web.calls import Refused
from orchestra.tls import der_identity

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, Refused], Awaitable[web.StreamResponse]]

# Every answer carries these (pages, events, assets and errors): nothing inline may run or
# style the page, nothing is fetched from elsewhere, nothing frames it, nothing is kept.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Server": "orchestra",
}
STATIC_PREFIX = "/static/"
# The conductor's own script and stylesheet hold no data: the browser may keep them a while.
STATIC_CACHE = "private, max-age=3600"
READ_ONLY = ("GET", "HEAD")


async def secure(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers of every answer, set as it is sent."""
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith(STATIC_PREFIX) and response.status == 200:
        response.headers["Cache-Control"] = STATIC_CACHE


def plain(status: int, text: str, **headers: str) -> web.Response:
    """A one-line answer with nothing else in it (refusals)."""
    return web.Response(status=status, text=text[:500] + "\n", content_type="text/plain", headers=headers)


def client_certificate(request: web.Request) -> bytes | None:
    """The DER of the certificate TLS verified for this connection (None: no TLS, or none)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der


def where(request: web.Request) -> str:
    """How the audit log and the log name a web request: ``web GET /jobs/ID``."""
    return f"web {request.method[:10]} {request.path[:300]}"


def admission(gate: Gate, audit: AuditLog, error_page: ErrorPage) -> Middleware:
    """The middleware every request passes first."""

    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or "unknown"
        current_requester.set(None)  # whatever came before, this request stands on its own certificate
        current_identity.set(None)
        refusal = gate.check_certificate(der_identity(client_certificate(request)), AUDIENCE_SERVICE,
                                         where(request), peer)
        who = current_requester.get()
        if refusal is not None or who is None:
            return plain(403, f"forbidden: {refusal[1] if refusal else 'no verified identity'}")
        path = request.path[:300]
        if request.method not in READ_ONLY:
            audit.record("web", "refused", requester=who.label, method=request.method[:10], path=path,
                         reason="the web view is read-only")
            return plain(405, "method not allowed: the web view is read-only", Allow=", ".join(READ_ONLY))
        audit.record("web", "accepted", requester=who.label, method=request.method, path=path,
                     query=sorted(key[:40] for key in request.query.keys())[:20] or None)
        try:
            return await handler(request)
        except Refused as err:
            return await error_page(request, err)
        except web.HTTPException as err:  # aiohttp's own: no such page
            if err.status >= 400:
                return await error_page(request, Refused(err.status, err.reason))
            raise
    return admit
