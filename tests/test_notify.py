"""Notifications (conductor/notify.py): the bounded queues, and the webhook against real
HTTPS endpoints served here (http.server + ssl, certificates of the test's dev PKI)
while real daemons run jobs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from structlog.testing import capture_logs

from conductor.notify import Notifications, Webhook, signature
from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, Cluster, free_port
from tests.conftest import MakeCluster, job_json


# ---- the queues, with a notifier in memory -------------------------------------------------


class Held:
    """A notifier that records events, each only once ``release`` is set."""

    def __init__(self, events: tuple[str, ...] | None = None) -> None:
        self.release = asyncio.Event()
        self.got: list[Mapping[str, Any]] = []
        self.closed = False
        if events is not None:
            self.events = events

    async def notify(self, event: Mapping[str, Any]) -> None:
        await self.release.wait()
        self.got.append(event)

    def close(self) -> None:
        self.closed = True


async def described(kind: str, ident: str) -> dict[str, Any] | None:
    return {"event": f"{kind}.finished", f"{kind}_id": ident}


def test_a_full_queue_drops_the_oldest_counts_it_and_never_holds_up_the_caller() -> None:
    async def scenario() -> tuple[Held, Notifications, list[Any], float]:
        held = Held()
        notifications = Notifications([("held", held)], described, queue_size=3)
        notifications.start()
        with capture_logs() as logs:
            notifications.hook("job", "j0")
            await asyncio.sleep(0.05)  # j0 described and handed to the notifier, which holds it
            started = time.perf_counter()
            for number in range(1, 7):
                notifications.hook("job", f"j{number}")
            hooked = time.perf_counter() - started
            await asyncio.sleep(0.05)
            held.release.set()
            while notifications._waiting():
                await asyncio.sleep(0.01)
        await notifications.close()
        return held, notifications, logs, hooked

    held, notifications, logs, hooked = asyncio.run(scenario())
    # j0 was being delivered; of j1..j6 only the newest three had room.
    assert [event["job_id"] for event in held.got] == ["j0", "j4", "j5", "j6"]
    assert notifications.outlets[0].delivered == 4 and notifications.outlets[0].failed == 0
    dropped = notifications.dropped + notifications.outlets[0].dropped
    assert dropped == 3 and any(log["event"] == "notification_dropped" for log in logs)
    assert hooked < 0.01 and held.closed


def test_a_notifier_gets_only_the_kinds_it_asks_for_and_a_failure_is_logged() -> None:
    class Failing(Held):
        async def notify(self, event: Mapping[str, Any]) -> None:
            raise ConnectionError("nobody there")

    async def scenario() -> tuple[Held, list[Any]]:
        jobs_only, failing = Held(events=("job",)), Failing()
        jobs_only.release.set()
        notifications = Notifications([("jobs", jobs_only), ("failing", failing)], described)
        notifications.start()
        with capture_logs() as logs:
            notifications.hook("workflow", "w1")
            notifications.hook("job", "j1")
            await notifications.close()
        return jobs_only, logs

    jobs_only, logs = asyncio.run(scenario())
    assert [event["event"] for event in jobs_only.got] == ["job.finished"]
    failed = [log for log in logs if log["event"] == "notification_failed"]
    assert [(log["notifier"], log["id"]) for log in failed] == [("failing", "w1"), ("failing", "j1")]
    assert failed[0]["error"] == "ConnectionError: nobody there"


def test_closing_waits_a_bounded_time_for_a_notifier_that_hangs() -> None:
    async def scenario() -> tuple[float, Held, list[Any]]:
        hanging = Held()
        notifications = Notifications([("hanging", hanging)], described)
        notifications.start()
        notifications.hook("job", "j1")
        notifications.hook("job", "j2")
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with capture_logs() as logs:
            await notifications.close(timeout=0.3)
        return time.perf_counter() - started, hanging, logs

    took, hanging, logs = asyncio.run(scenario())
    assert 0.3 <= took < 1 and hanging.closed and hanging.got == []
    [abandoned] = [log for log in logs if log["event"] == "notifications_abandoned"]
    assert abandoned["events"] == 2


# ---- the webhook's options and request --------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({}, "url: is required"),
    ({"url": "ftp://example.com/x"}, "url: must be an https:// URL, not 'ftp://example.com/x'"),
    ({"url": "http://example.com/x"}, "url: plain http is allowed only to a loopback host (127.0.0.1, ::1,"
                                      " localhost), not 'example.com': use https"),
    ({"url": "http://10.0.0.1:8080/x"}, "url: plain http is allowed only to a loopback host"),
    ({"url": "https://bob:pw@example.com/"}, "url: must not carry a user or password"),
    ({"url": "https://example.com:99999/"}, "url: bad port in 'https://example.com:99999/'"),
    ({"url": "https://example.com/", "events": ["job", "task"]}, "events: 'task' is not one of job, workflow"),
    ({"url": "https://example.com/", "events": []}, "events: must name at least one of job, workflow"),
    ({"url": "https://example.com/", "timeout": 0}, "timeout: must be from 0.1 to 600, not 0"),
    ({"url": "https://example.com/", "retries": -1}, "retries: must be from 0 to 100, not -1"),
    ({"url": "https://example.com/", "headers": {"Content-Type": "text/plain"}},
     "headers: Content-Type is set by the webhook itself"),
    ({"url": "https://example.com/", "headers": {"X-A": "one\r\nX-B: two"}}, "headers.X-A: must be one line"),
    ({"url": "https://example.com/", "headers": {"Bad Name": "x"}}, "headers: 'Bad Name' is not a header name"),
    ({"url": "https://example.com/", "key": "client.key"}, "key: is given without cert"),
    ({"url": "https://example.com/", "ca": "/nonexistent/ca.pem"}, "ca: cannot load /nonexistent/ca.pem:"),
    ({"url": "https://example.com/", "secret_file": "missing"}, "secret_file: cannot read /etc/orchestra/missing"),
    ({"url": "https://example.com/", "verify": False}, "verify: unknown option (the webhook notifier takes backoff,"),
])
def test_a_webhook_refuses_what_it_cannot_do_safely(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Webhook.from_options(options, Path("/etc/orchestra"))
    assert str(raised.value).startswith(message)


def test_plain_http_is_allowed_to_loopback_and_the_request_is_signed(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    hook = Webhook.from_options({"url": "http://localhost:8080/hook?x=1", "secret_file": "secret",
                                 "headers": {"Authorization": "Bearer t"}}, tmp_path)
    body = b'{"event":"job.finished"}'
    head, _, sent = hook.request(body).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?x=1 HTTP/1.1" and sent == body
    assert {"Host: localhost:8080", "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Authorization: Bearer t",
            f"X-Orchestra-Signature: sha256={hmac.new(b's3cret', body, hashlib.sha256).hexdigest()}"} <= set(lines)
    assert signature(b"s3cret", body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()


# ---- real endpoints, real daemons ---------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    client: str  # the client certificate's common name, "" without one


class Endpoint:
    """A real HTTP(S) server in a thread recording every POST; it answers each with the
    next of ``statuses`` (200 once they are used up)."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None, statuses: tuple[int, ...] = ()) -> None:
        self.received: list[Received] = []
        self.statuses = list(statuses)
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                subject: Any = peer["subject"] if peer else ()  # ((("commonName", NAME),), ...)
                client = next((value for field in subject for key, value in field if key == "commonName"), "")
                endpoint.received.append(Received(self.path, dict(self.headers), body, client))
                self.send_response(endpoint.statuses.pop(0) if endpoint.statuses else 200)
                self.end_headers()
                self.wfile.write(b"thanks\n")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_context(ssl_dir: pki.SSLDir, authority: pki.Authority, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS for an endpoint at https://localhost, its certificate issued by ``authority``;
    with ``client_ca``, a client certificate of that CA is required."""
    ssl_dir.write_leaf("localhost", *pki.issue(authority, "localhost", [ExtendedKeyUsageOID.SERVER_AUTH]))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ssl_dir.cert("localhost"), ssl_dir.key("localhost"))
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
def endpoints() -> Iterator[list[Endpoint]]:
    made: list[Endpoint] = []
    yield made
    for endpoint in made:
        endpoint.close()


def log_events(cluster: Cluster, event: str) -> list[dict[str, Any]]:
    return cluster.log_events("conductor", event)


def run_job(cluster: Cluster) -> str:
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "who=ops", "p1.test")
    assert code == 0, job
    return str(job["job_id"])


def test_a_webhook_posts_each_finished_job_signed_over_verified_https(
        make_cluster: MakeCluster, endpoints: list[Endpoint], tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "secret").write_text("correct horse battery staple\n")
    cluster = make_cluster(start=False, conductor_settings={"notifiers": [{
        "name": "webhook", "url": f"https://localhost:{port}/hooks/orchestra?source=test",
        "ca": "ssl/certs/ca.pem",  # relative to conductor.toml's directory
        "cert": "ssl/certs/conductor.orchestra.test.pem", "key": "ssl/private_keys/conductor.orchestra.test.pem",
        "secret_file": str(tmp_path / "secret"), "headers": {"X-Team": "ops"}}]})
    # The endpoint trusts the same CA for client certificates: the conductor's is its identity.
    context = server_context(cluster.ssl, cluster.ssl.load_authority(), client_ca=cluster.ssl.ca_cert)
    endpoints.append(Endpoint(port, context))
    cluster.start()

    job_id = run_job(cluster)
    cluster.wait_for(lambda: endpoints[0].received, "the webhook's POST")
    [post] = endpoints[0].received
    assert post.path == "/hooks/orchestra?source=test" and post.client == CONDUCTOR_NAME
    assert post.headers["Content-Type"] == "application/json" and post.headers["X-Team"] == "ops"
    expected = hmac.new(b"correct horse battery staple", post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Orchestra-Signature"] == f"sha256={expected}"
    event = json.loads(post.body)
    assert (event["event"], event["job_id"], event["status"], event["counts"]) == ("job.finished", job_id, "ok",
                                                                                   {"ok": 1})
    assert not log_events(cluster, "notification_failed")


def test_a_webhook_endpoint_with_a_certificate_of_another_ca_gets_nothing(
        make_cluster: MakeCluster, endpoints: list[Endpoint], tmp_path: Path) -> None:
    port = free_port()
    cluster = make_cluster(start=False, conductor_settings={"notifiers": [{
        "name": "webhook", "url": f"https://localhost:{port}/hook", "ca": "ssl/certs/ca.pem",
        "retries": 1, "backoff": 0.1}]})
    stranger = pki.SSLDir(tmp_path / "stranger")
    stranger.certs.mkdir(parents=True)
    stranger.keys.mkdir(parents=True)
    endpoints.append(Endpoint(port, server_context(stranger, pki.new_authority("Someone else's CA"))))
    cluster.start()

    job_id = run_job(cluster)
    cluster.wait_for(lambda: log_events(cluster, "notification_failed"), "notification_failed")
    [failed] = log_events(cluster, "notification_failed")
    assert failed["id"] == job_id and failed["notifier"] == "webhook"
    assert "CERTIFICATE_VERIFY_FAILED" in failed["error"] and "(tried 2 times)" in failed["error"]
    assert endpoints[0].received == []


def test_a_webhook_tries_again_after_a_server_error(make_cluster: MakeCluster, endpoints: list[Endpoint]) -> None:
    port = free_port()
    cluster = make_cluster(start=False, conductor_settings={"notifiers": [{
        "name": "webhook", "url": f"http://127.0.0.1:{port}/hook", "retries": 3, "backoff": 0.2}]})
    endpoints.append(Endpoint(port, statuses=(500,)))  # plain HTTP: allowed to loopback
    cluster.start()

    job_id = run_job(cluster)
    cluster.wait_for(lambda: len(endpoints[0].received) == 2, "the second POST")
    first, second = endpoints[0].received
    assert first.body == second.body and json.loads(second.body)["job_id"] == job_id
    [retry] = log_events(cluster, "notification_retrying")
    assert retry["error"] == "HTTP status 500" and retry["attempt"] == 2
    time.sleep(0.5)
    assert len(endpoints[0].received) == 2 and not log_events(cluster, "notification_failed")


def test_a_hanging_endpoint_delays_neither_dispatch_nor_a_stop_for_long(make_cluster: MakeCluster) -> None:
    with socket.socket() as hanging:  # accepts connections (the kernel does) and never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(16)
        cluster = make_cluster(conductor_settings={"notifiers": [{
            "name": "webhook", "url": f"https://localhost:{hanging.getsockname()[1]}/hook",
            "ca": "ssl/certs/ca.pem", "timeout": 120, "retries": 0}]})
        run_job(cluster)  # its notification now waits on the endpoint
        started = time.monotonic()
        run_job(cluster)
        second = time.monotonic() - started
        assert second < 10, f"the second job took {second:.1f} s"
        assert not log_events(cluster, "notification_failed")  # the first still hangs

        started = time.monotonic()
        code = cluster.conductor().stop()
        stopping = time.monotonic() - started
    assert code == 0 and stopping < 15, f"the conductor took {stopping:.1f} s to stop"
    [abandoned] = log_events(cluster, "notifications_abandoned")
    assert abandoned["events"] == 2  # one being sent, one waiting behind it


def test_a_webhook_hears_of_a_finished_workflow_with_its_steps(make_cluster: MakeCluster,
                                                               endpoints: list[Endpoint], tmp_path: Path) -> None:
    port = free_port()
    cluster = make_cluster(start=False, conductor_settings={"notifiers": [{
        "name": "webhook", "url": f"http://127.0.0.1:{port}/hook", "events": ["workflow"]}]})
    endpoints.append(Endpoint(port))
    cluster.start()
    (tmp_path / "flow.toml").write_text(
        'name = "two steps"\n[steps.first]\nscore = "hello"\ntargets = ["p1.test"]\n'
        '[steps.second]\nafter = ["first"]\nscore = "fail"\ntargets = ["p1.test"]\n')
    result = cluster.cli("submitworkflow", "--wait", "--timeout", "60", "--json", str(tmp_path / "flow.toml"))
    assert result.returncode == 1, result.stderr
    flow = json.loads(result.stdout)
    cluster.wait_for(lambda: endpoints[0].received, "the webhook's POST")
    [post] = endpoints[0].received  # only the workflow: its steps' jobs are not asked for
    event = json.loads(post.body)
    assert (event["event"], event["workflow_id"], event["status"], event["name"]) == (
        "workflow.finished", flow["workflow_id"], "failed", "two steps")
    assert [(step["name"], step["state"]) for step in event["steps"]] == [("first", "ok"), ("second", "failed")]
    assert all(step["job_id"] for step in event["steps"])
