"""The web view over real HTTPS, with a real conductor and real players: who gets in,
what each identity sees, the headers of every answer, and the live event streams."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
from pathlib import Path

from cryptography import x509

from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, Cluster
from tests.conftest import MakeCluster
from tests.webview import (
    EVERYTHING, Events, audit_entries, client_context, request, set_audience, submit_as, web_cluster,
)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def refused_by_tls(call: object) -> bool:
    """True when the call failed in TLS (or the connection was dropped) with no HTTP answer."""
    try:
        call()  # type: ignore[operator]
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return True
    return False


def test_nothing_is_reachable_without_a_certificate_of_the_ca(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = web_cluster(make_cluster, settings={"handshake_timeout": 1})
    assert request(cluster, "/jobs").status == 200
    for path in ("/", "/jobs", "/static/app.js"):
        assert refused_by_tls(lambda: request(cluster, path, name=None)), path
    other = pki.init(tmp_path / "other-ca", "conductor.orchestra.test", [], ["alice.test"])
    assert refused_by_tls(lambda: request(cluster, "/jobs", ssl_dir=other.root))
    with socket.create_connection(("127.0.0.1", cluster.web_port), timeout=10) as idle:
        assert idle.recv(1) == b""  # closed after handshake_timeout, not held open
    # Each refusal is logged with its peer and reason, as on the players' port.
    cluster.wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in cluster.log_text("conductor"), "the refusals logged")
    log = cluster.log_text("conductor")
    assert '"listener": "web"' in log and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log
    # Neither reached Orchestra: the refusal is TLS's (no request was read, none audited).
    audited = audit_entries(cluster)
    assert not [entry for entry in audited if entry["decision"] != "accepted"]
    assert [entry["path"] for entry in audited if entry["event"] == "web"] == ["/jobs"]


def test_a_player_certificate_and_a_revoked_one_get_403_and_are_audited(make_cluster: MakeCluster) -> None:
    cluster = web_cluster(make_cluster)
    answer = request(cluster, "/jobs", name="p1.test")  # a valid certificate, not an audience identity
    assert (answer.status, answer.body) == (403, "forbidden: p1.test is not an audience identity\n")  # no data
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["X-Frame-Options"] == "DENY"
    cluster.ssl.revoke(cluster.ssl.load_authority(), [_serial(cluster, "carol.test")])
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: request(cluster, "/jobs", name="carol.test").status == 403, "carol refused")
    answer = request(cluster, "/jobs", name="carol.test")
    assert "revoked" in answer.body and "<table" not in answer.body
    refusals = [entry for entry in audit_entries(cluster) if entry["decision"] == "refused"]
    assert any(entry["event"] == "authz_refused" and entry.get("certname") == "p1.test"
               and entry.get("method") == "web GET /jobs" for entry in refusals)
    assert any(entry["event"] == "authn_refused" and entry.get("certname") == "carol.test" for entry in refusals)


def _serial(cluster: Cluster, name: str) -> int:
    return x509.load_pem_x509_certificate(cluster.ssl.cert(name).read_bytes()).serial_number


def test_each_identity_sees_its_own_jobs_and_anothers_job_is_no_such_job(make_cluster: MakeCluster,
                                                                       tmp_path: Path) -> None:
    cluster = web_cluster(make_cluster)
    job = submit_as(cluster, "alice.test", "--all-of", "--name", "nightly <b>check</b>", "waiting",
                    f"GO={tmp_path / 'go'}", "p1.test", "p2.test")
    listing = request(cluster, "/jobs")
    assert listing.status == 200 and job in listing.body
    assert "nightly &lt;b&gt;check&lt;/b&gt;" in listing.body and "<b>check" not in listing.body  # escaped
    page = request(cluster, f"/jobs/{job}")
    assert page.status == 200 and "cert:alice.test" in page.body and 'id="t0"' in page.body
    assert f"/jobs/{job}/events" in page.body  # open: the page is live
    # bob may use the API but holds no read grant: alice's job does not exist for him.
    assert job not in request(cluster, "/jobs", name="bob.test").body
    for path in (f"/jobs/{job}", f"/jobs/{job}/events", f"/jobs/{job}/output?host=p1.test",
                 f"/jobs/{job}/output/events?host=p1.test"):
        answer = request(cluster, path, name="bob.test")
        assert answer.status == 404 and f"no such job {job}" in answer.body, path
        assert "waiting" not in answer.body and "nightly" not in answer.body
    (tmp_path / "go").touch()
    # Every request was audited with its requester; query values never are.
    request(cluster, "/jobs?score=waiting&since=1h")
    web = [entry for entry in audit_entries(cluster) if entry["event"] == "web"]
    assert any(entry["requester"] == "cert:bob.test" and entry["path"] == f"/jobs/{job}" for entry in web)
    assert web[-1]["query"] == ["score", "since"] and "1h" not in str(web[-1])


def test_every_answer_carries_the_security_headers_and_nothing_changes_state(make_cluster: MakeCluster) -> None:
    cluster = web_cluster(make_cluster)
    answers = {path: request(cluster, path) for path in ("/", "/jobs", "/players", "/static/app.js",
                                                         "/static/style.css", "/jobs/not-a-job", "/no/such/page",
                                                         "/jobs?status=bogus")}
    answers["POST /jobs"] = request(cluster, "/jobs", method="POST")
    answers["DELETE /"] = request(cluster, "/", method="DELETE")
    answers["403"] = request(cluster, "/", name="p1.test")
    for what, answer in answers.items():
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers[header] == value, (what, header)
        assert "aiohttp" not in (answer.headers["Server"] or ""), what
    assert answers["/jobs/not-a-job"].status == 400 and "invalid job id" in answers["/jobs/not-a-job"].body
    assert answers["/no/such/page"].status == 404
    assert answers["/jobs?status=bogus"].status == 400 and "no such job state" in answers["/jobs?status=bogus"].body
    assert answers["POST /jobs"].status == 405 and answers["POST /jobs"].headers["Allow"] == "GET, HEAD"
    assert answers["DELETE /"].status == 405
    assert answers["/jobs"].headers["Cache-Control"] == "no-store"
    assert answers["/static/app.js"].headers["Cache-Control"] == "private, max-age=3600"
    assert answers["/static/app.js"].headers["Content-Type"].startswith("text/javascript")
    assert answers["/static/style.css"].headers["Content-Type"].startswith("text/css")
    # No inline script or style anywhere: the CSP would refuse it.
    for path in ("/", "/jobs", "/players"):
        body = answers[path].body
        assert "<script>" not in body and "style=" not in body and "<style" not in body
    assert any(entry["event"] == "web" and entry["decision"] == "refused" and entry["method"] == "POST"
               for entry in audit_entries(cluster))


def test_a_jobs_event_stream_says_when_a_task_finishes(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = web_cluster(make_cluster)
    go = tmp_path / "go"
    job = submit_as(cluster, "alice.test", "--all-of", "waiting", f"GO={go}", "p1.test", "p2.test")
    with Events(cluster, f"/jobs/{job}/events") as events:
        assert events.response.status == 200
        assert events.response.headers["Content-Type"].startswith("text/event-stream")
        assert events.response.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        first = events.until("job")
        assert "t0" in first["rows"] and "t1" in first["rows"]  # type: ignore[operator]
        cluster.wait_for(lambda: 'data-state="running"' in request(cluster, f"/jobs/{job}").body, "running")
        go.touch()
        last = events.until("end")
        assert last["status"] == "ok" and "the job finished" in str(last["message"])
        rows = last["rows"] or first["rows"]
        assert any('data-state="ok"' in str(row) for row in rows.values())  # type: ignore[union-attr]
    with Events(cluster, "/jobs/events") as listing:  # every listed job has finished: said at once
        assert "every job listed" in str(listing.until("end")["message"])


def test_live_output_of_a_running_score_is_streamed(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = web_cluster(make_cluster)
    go = tmp_path / "go"
    job = submit_as(cluster, "alice.test", "--all-of", "waiting", f"GO={go}", "p1.test")
    cluster.wait_for(lambda: 'data-state="running"' in request(cluster, f"/jobs/{job}").body, "running")
    page = request(cluster, f"/jobs/{job}/output?host=p1.test")
    assert page.status == 200 and 'id="output"' in page.body
    with Events(cluster, f"/jobs/{job}/output/events?host=p1.test") as events:
        seen = ""
        while "started on p1.test" not in seen:
            seen += "".join(item["t"] for item in events.until("output")["items"])  # type: ignore[index, union-attr]
        go.touch()
        end = events.until("end")
        assert end["state"] == "ok"
    finished = request(cluster, f"/jobs/{job}/output?host=p1.test")
    assert "done on p1.test" in finished.body and 'id="output"' not in finished.body  # the stored tail
    assert request(cluster, f"/jobs/{job}/output?host=p9.test").status == 404
    assert request(cluster, f"/jobs/{job}/output?host=../x").status == 400


def test_a_removal_from_audience_or_a_revocation_ends_open_streams(make_cluster: MakeCluster,
                                                                  tmp_path: Path) -> None:
    cluster = web_cluster(make_cluster)
    job = submit_as(cluster, "carol.test", "--all-of", "waiting", f"GO={tmp_path / 'go'}", "p1.test")
    bobs = submit_as(cluster, "bob.test", "--all-of", "waiting", f"GO={tmp_path / 'go'}", "p2.test")
    with Events(cluster, f"/jobs/{job}/events", name="carol.test") as carol, \
            Events(cluster, f"/jobs/{bobs}/events", name="bob.test") as bob:
        carol.until("job")
        bob.until("job")
        set_audience(cluster, {"alice.test": EVERYTHING, "carol.test": EVERYTHING})  # bob removed
        cluster.conductor().send_signal(signal.SIGHUP)
        assert "bob.test is not an audience identity" in str(bob.until("end")["message"])
        cluster.ssl.revoke(cluster.ssl.load_authority(), [_serial(cluster, "carol.test")])
        assert "revoked" in str(carol.until("end")["message"])
    (tmp_path / "go").touch()


def test_the_players_page_and_the_overview(make_cluster: MakeCluster) -> None:
    cluster = web_cluster(make_cluster, players=["p1.test", "p2.test", "p3.test"])
    cluster.player("p3.test").stop()
    cluster.wait_disconnected(["p3.test"])
    cluster.cli("drain", "--reason", "disk <swap>", "p2.test")
    players = request(cluster, "/players")
    assert players.status == 200
    assert 'id="player-p1.test" class="player connected"' in players.body
    assert 'id="player-p3.test" class="player offline"' in players.body
    assert "disk &lt;swap&gt;" in players.body and "waiting" in players.body
    overview = request(cluster, "/")
    assert overview.status == 200 and "players offline" in overview.body and "<svg" in overview.body
    assert "since the conductor started" in overview.body
    with Events(cluster, "/events") as events:
        assert "players connected" in str(events.until("overview")["html"])


def test_filters_are_listjobs_own_and_a_bad_one_is_a_400_naming_it(make_cluster: MakeCluster) -> None:
    cluster = web_cluster(make_cluster, players=["p1.test"])
    job = submit_as(cluster, "alice.test", "--all-of", "--label", "team=ops", "hello", "p1.test")
    assert job in request(cluster, "/jobs?label=team%3Dops&mine=1&score=hello&since=1h&target=p1.test").body
    assert job not in request(cluster, "/jobs?label=team%3Ddev").body
    assert job not in request(cluster, "/jobs?status=failed").body
    for path, problem in (("/jobs?limit=0", "limit"), ("/jobs?limit=x", "limit"), ("/jobs?since=yesterday", "age"),
                          ("/jobs?mine=1&requester=x", "mine and requester")):
        answer = request(cluster, path)
        assert answer.status == 400 and 'class="error"' in answer.body and problem in answer.body, path


def test_a_stopping_conductor_ends_open_streams_with_a_last_event_and_no_traceback(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = web_cluster(make_cluster, players=["p1.test"])
    job = submit_as(cluster, "alice.test", "--all-of", "waiting", f"GO={tmp_path / 'go'}", "p1.test")
    cluster.wait_for(lambda: 'data-state="running"' in request(cluster, f"/jobs/{job}").body, "running")
    with Events(cluster, f"/jobs/{job}/events") as progress, \
            Events(cluster, f"/jobs/{job}/output/events?host=p1.test") as output, Events(cluster, "/events") as overview:
        progress.until("job")
        overview.until("overview")
        cluster.conductor().send_signal(signal.SIGTERM)
        for events in (progress, output, overview):
            assert "shutting down" in str(events.until("end")["message"])
    popen = cluster.conductor().popen
    assert popen is not None and popen.wait(30) == 0
    log = cluster.log_text("conductor")
    assert "Traceback" not in log and '"web_stopped"' in log
    (tmp_path / "go").touch()


def test_a_certificate_rotated_on_sighup_serves_new_connections(make_cluster: MakeCluster) -> None:
    cluster = web_cluster(make_cluster, players=["p1.test"])

    def served_serial() -> int:
        with socket.create_connection(("127.0.0.1", cluster.web_port), timeout=10) as raw, \
                client_context(cluster, "alice.test").wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

    before = served_serial()
    assert pki.main(["issue", str(cluster.ssl.root), CONDUCTOR_NAME, "--role", "conductor", "--force"]) == 0
    cluster.conductor().send_signal(signal.SIGHUP)
    rotated = _serial(cluster, CONDUCTOR_NAME)
    assert rotated != before
    cluster.wait_for(lambda: served_serial() == rotated, "the new certificate served")
    assert "certificate_rotated" in cluster.log_text("conductor")
    assert request(cluster, "/jobs").status == 200
