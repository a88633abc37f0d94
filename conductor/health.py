"""The standard gRPC health service (``grpc.health.v1.Health``) and server reflection.

Health follows the conductor's state (:mod:`conductor.state`): the overall status
(service ``""``) and each of the conductor's services are ``NOT_SERVING`` while it is
``starting`` and from the moment it begins to drain, ``SERVING`` while it is
``recovering`` or ``serving`` (both dispatch and answer the audience). One more name per
state, ``orchestra.v1.Conductor/<state>``, is ``SERVING`` for the state the conductor is
in and ``NOT_SERVING`` for the others, so a probe can ask which state it is in without
an API of its own. Those names are health service names only: reflection does not list
them, since no such gRPC service exists. Any caller the conductor can identify may ask
(a verified client certificate, or a verified local connection): a load balancer or
``grpc_health_probe`` needs nothing more.

Reflection lists the Audience API (and these two services) to the callers allowed to use
the Audience API, so ``grpcurl`` works with the same identity as the CLIs.
"""

from __future__ import annotations

import asyncio
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from conductor.state import ConductorState
from orchestra.wire import audience_pb2

HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_SERVICE = reflection.SERVICE_NAME
AUDIENCE = audience_pb2.DESCRIPTOR.services_by_name["Audience"].full_name
PLAYER_LINK = "orchestra.v1.PlayerLink"
# The health name of each state of the conductor: SERVING for the current one only.
CONDUCTOR = "orchestra.v1.Conductor"
STATE_NAMES = {state: f"{CONDUCTOR}/{state.value}" for state in ConductorState}
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

    async def show(self, state: ConductorState, services: list[str]) -> None:
        """The conductor is now in ``state``: the overall status and ``services`` as the
        state says, and the state's own name SERVING, every other state's NOT_SERVING.
        (Nothing here waits unless a watcher is being written to, so a probe sees the
        names change together.)"""
        overall = SERVING if state.serves else NOT_SERVING
        for name in ("", *services):
            await self.set(name, overall)
        for other, name in STATE_NAMES.items():
            await self.set(name, SERVING if other is state else NOT_SERVING)

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
    """A servicer that answers NOT_SERVING until :meth:`Health.start` or
    :meth:`Health.show` (the library's own starts at SERVING), and names the ``starting``
    state."""
    servicer = Health()
    await servicer.show(ConductorState.STARTING, [])
    return servicer
