"""The standard gRPC health service (``grpc.health.v1.Health``) and server reflection.

Health answers ``NOT_SERVING`` until the queue is open and the listeners are up, then
``SERVING``, and ``NOT_SERVING`` again from the moment the conductor begins to stop. The
overall status (service ``""``) and each of the conductor's services are reported. Any
caller the conductor can identify may ask (a verified client certificate, or a verified
local connection): a load balancer or ``grpc_health_probe`` needs nothing more.

Reflection lists the Audience API (and these two services) to the callers allowed to use
the Audience API, so ``grpcurl`` works with the same identity as the CLIs.
"""

from __future__ import annotations

import asyncio
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orchestra.wire import audience_pb2

HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_SERVICE = reflection.SERVICE_NAME
AUDIENCE = audience_pb2.DESCRIPTOR.services_by_name["Audience"].full_name
PLAYER_LINK = "orchestra.v1.PlayerLink"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WATCHERS_TOLD = 0.1  # seconds at shutdown for watchers to send NOT_SERVING before their end


class Health(health.aio.HealthServicer):  # type: ignore[misc]
    """The library's servicer, with watches that end cleanly at shutdown: a Watch stream
    otherwise runs until the server's stop grace cancels it inside gRPC."""

    def __init__(self) -> None:
        super().__init__()
        self._closed = asyncio.Event()

    async def start(self, services: list[str]) -> None:
        for name in ("", *services):
            await self.set(name, SERVING)

    async def close(self) -> None:
        """NOT_SERVING for good, told to every watcher, then end their streams."""
        await self.enter_graceful_shutdown()
        await asyncio.sleep(WATCHERS_TOLD)  # the watchers write NOT_SERVING
        self._closed.set()

    async def Watch(self, request: health_pb2.HealthCheckRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({watch, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, closed):
                task.cancel()
            await asyncio.gather(watch, closed, return_exceptions=True)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "conductor shutting down")


def add_to(server: grpc.aio.Server, servicer: Health) -> None:
    """Health and reflection on one server; reflection names only the audience's services."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection([AUDIENCE, HEALTH_SERVICE, REFLECTION_SERVICE], server)


async def starting() -> Health:
    """A servicer that answers NOT_SERVING until :meth:`Health.start` (the library's own
    starts at SERVING)."""
    servicer = Health()
    await servicer.set("", NOT_SERVING)
    return servicer
