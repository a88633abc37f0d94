"""The standard gRPC health service and server reflection, asked by real gRPC clients in
their own processes, over mTLS and over the local socket."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from conductor import health
from conductor.state import ConductorState
from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, Cluster
from tests.conftest import MakeCluster

AUDIENCE = {"audience": {"ops.test": {"scores": ["*"], "targets": ["*"]}}}

# A gRPC client of its own, as a probe or grpcurl would be: it knows nothing of Orchestra
# but the address and the certificate files. It prints one JSON object.
CLIENT = textwrap.dedent("""
    import json, sys
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)

    what, target, ca, cert, key, service = sys.argv[1:7]
    if ca:
        credentials = grpc.ssl_channel_credentials(open(ca, "rb").read(), open(key, "rb").read(),
                                                   open(cert, "rb").read())
        channel = grpc.secure_channel(target, credentials,
                                      options=[("grpc.ssl_target_name_override", sys.argv[7])])
    else:
        channel = grpc.insecure_channel(target)
    try:
        if what == "check":
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10)
            out = {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}
        elif what == "watch":
            statuses = []
            try:
                for reply in health_pb2_grpc.HealthStub(channel).Watch(
                        health_pb2.HealthCheckRequest(service=service), timeout=60):
                    statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                    print(json.dumps({"status": statuses[-1]}), flush=True)
                out = {"statuses": statuses, "end": "OK"}
            except grpc.RpcError as err:
                out = {"statuses": statuses, "end": err.code().name, "details": err.details()}
        else:
            out = {"services": sorted(ProtoReflectionDescriptorDatabase(channel).get_services())}
    except grpc.RpcError as err:
        out = {"error": err.code().name, "details": err.details()}
    print(json.dumps(out), flush=True)
""")


def ask(cluster: Cluster, what: str, cert: str | None, service: str = "") -> dict[str, object]:
    argv = [sys.executable, "-c", CLIENT, what, *target(cluster, cert), service, CONDUCTOR_NAME]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def target(cluster: Cluster, cert: str | None) -> list[str]:
    """(address, ca, cert, key): mTLS as cert, or the local socket when cert is None."""
    if cert is None:
        return [f"unix:{cluster.socket}", "", "", ""]
    return [f"127.0.0.1:{cluster.port}", str(cluster.ssl.ca_cert), str(cluster.ssl.cert(cert)),
            str(cluster.ssl.key(cert))]


@pytest.fixture
def cluster(make_cluster: MakeCluster) -> Cluster:
    return make_cluster(["p1.test"], audience_names=["ops.test"], conductor_settings=AUDIENCE)


def test_health_is_serving_for_every_identified_caller(cluster: Cluster) -> None:
    for cert in (None, "ops.test", "p1.test"):
        assert ask(cluster, "check", cert) == {"status": "SERVING"}, cert
    for service in ("orchestra.v1.Audience", "orchestra.v1.PlayerLink"):
        assert ask(cluster, "check", "ops.test", service) == {"status": "SERVING"}
    assert ask(cluster, "check", None, "no.such.Service")["error"] == "NOT_FOUND"


def test_health_refuses_a_revoked_certificate(cluster: Cluster) -> None:
    assert pki.main(["revoke", str(cluster.ssl.root), "ops.test"]) == 0  # read within 2 s
    cluster.wait_for(lambda: ask(cluster, "check", "ops.test").get("error") == "UNAUTHENTICATED",
                     "the revocation")
    assert ask(cluster, "check", "p1.test") == {"status": "SERVING"}


def test_reflection_lists_the_audience_api_to_the_audience_only(cluster: Cluster) -> None:
    expected = ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "orchestra.v1.Audience"]
    assert ask(cluster, "list", "ops.test") == {"services": expected}
    assert ask(cluster, "list", None) == {"services": expected}
    refused = ask(cluster, "list", "p1.test")
    assert refused["error"] == "PERMISSION_DENIED"
    assert "not an audience identity" in str(refused["details"])


def test_watchers_see_not_serving_and_a_clean_end_when_the_conductor_stops(cluster: Cluster) -> None:
    argv = [sys.executable, "-c", CLIENT, "watch", *target(cluster, "ops.test"), "", CONDUCTOR_NAME]
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline()) == {"status": "SERVING"}
        assert cluster.conductor().stop() == 0
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
    last = json.loads(out.splitlines()[-1])
    assert last["statuses"] == ["SERVING", "NOT_SERVING"]
    assert last["end"] == "UNAVAILABLE"
    lines = cluster.log_text("conductor").splitlines()
    assert all(line.startswith("{") for line in lines)
    assert json.loads(lines[-1])["event"] == "conductor_stopped"


def test_not_serving_until_started() -> None:
    async def statuses() -> list[int]:
        servicer = await health.starting()
        before = servicer._server_status[""]  # noqa: SLF001
        await servicer.start([health.AUDIENCE])
        after = servicer._server_status[""], servicer._server_status[health.AUDIENCE]  # noqa: SLF001
        await servicer.close()
        await servicer.set("", health.SERVING)  # ignored once closed
        return [before, *after, servicer._server_status[""]]  # noqa: SLF001
    assert asyncio.run(statuses()) == [health.NOT_SERVING, health.SERVING, health.SERVING, health.NOT_SERVING]



def test_each_state_has_a_health_name_serving_only_while_the_conductor_is_in_it() -> None:
    async def statuses() -> list[tuple[int, int, list[str]]]:
        servicer = await health.starting()
        seen = []
        for state in ConductorState:
            if state is not ConductorState.STARTING:
                await servicer.show(state, [health.AUDIENCE])
            status = servicer._server_status  # noqa: SLF001
            seen.append((status[""], status.get(health.AUDIENCE, health.NOT_SERVING),
                         [name for name in health.STATE_NAMES.values() if status[name] == health.SERVING]))
        return seen
    assert asyncio.run(statuses()) == [
        (health.NOT_SERVING, health.NOT_SERVING, ["orchestra.v1.Conductor/starting"]),
        (health.NOT_SERVING, health.NOT_SERVING, ["orchestra.v1.Conductor/standby"]),
        (health.SERVING, health.SERVING, ["orchestra.v1.Conductor/recovering"]),
        (health.SERVING, health.SERVING, ["orchestra.v1.Conductor/serving"]),
        (health.NOT_SERVING, health.NOT_SERVING, ["orchestra.v1.Conductor/draining"])]
