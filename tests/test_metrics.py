"""Prometheus metrics of both daemons, scraped over real HTTP(S) from real daemons, parsed
with prometheus_client's own parser and linted by the real ``promtool check metrics``."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conductor.audit import AuditLog
from conductor.index import DispatchIndex
from conductor.lifecycle import Lifecycle
from conductor.metrics import MAX_SCORE_LABELS, OTHER_SCORES, Counts, families, take_snapshot
from conductor.sessions import Sessions
from conductor.state import StateMachine
from conductor.store import PlayerRecord, QueuedTask, open_store
from devtools import pki
from devtools.devcluster import REPO_ROOT, Cluster, free_port
from orchestra import metrics
from orchestra.log import HANDSHAKE_REFUSALS, handshake_refusal
from orchestra.outcome import TaskOutcome
from orchestra.tls import Material
from tests.conftest import MakeCluster, required_tool, submit, tls_attempt

DAY = 86400.0
RULES = REPO_ROOT / "packaging" / "prometheus" / "orchestra-rules.yml"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def promtool() -> str:
    return required_tool("promtool", "prometheus")

def lint(exposition: str) -> None:
    """``promtool check metrics``: exit 0 and nothing to say (it prints each lint problem)."""
    result = subprocess.run([promtool(), "check", "metrics"], input=exposition, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


def scrape(port: int, context: ssl.SSLContext | None = None) -> str:
    scheme = "https" if context is not None else "http"
    with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/metrics", timeout=10, context=context) as answer:
        assert answer.status == 200
        text: str = answer.read().decode()
        return text


def samples(exposition: str) -> Samples:
    """Every sample by (name, labels); parsing fails on anything malformed."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def labelled(found: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: number for (sample, labels), number in found.items() if sample == name}


def metrics_cluster(make_cluster: MakeCluster, players: list[str],
                    conductor_settings: dict[str, object] | None = None) -> tuple[Cluster, int, int]:
    """A cluster (not started) whose conductor and first player serve metrics on loopback."""
    conductor_port, player_port = free_port(), free_port()
    cluster = make_cluster(players, start=False, conductor_settings={
        "metrics_listen": f"127.0.0.1:{conductor_port}", **(conductor_settings or {})})
    cluster.add_player_config(players[0], metrics_listen=f"127.0.0.1:{player_port}")
    return cluster, conductor_port, player_port


def test_metrics_count_jobs_tasks_players_queue_and_certificates(make_cluster: MakeCluster) -> None:
    cluster, conductor_port, player_port = metrics_cluster(make_cluster, ["p1.test", "p2.test"])
    cluster.start(["p1.test"])  # p2.test stays offline
    before = time.time()
    assert submit(cluster, "hello", "p2.test")[0] == 0  # waits in the queue for its player
    after = time.time()
    assert submit(cluster, "hello", "p1.test", "--wait")[0] == 0
    assert submit(cluster, "fail", "code=4", "p1.test", "--wait")[0] == 1
    # p2.test's task expires: one task ok, one expired, the job partial_fail.
    assert submit(cluster, "--all-of", "--expires", "2", "hello", "p1.test", "p2.test", "--wait")[0] == 1

    text = scrape(conductor_port)
    at = time.time()
    lint(text)
    found = samples(text)
    p = "orchestra_conductor"
    assert value(found, f"{p}_jobs_submitted_total") == 4
    assert labelled(found, f"{p}_jobs_finished_total") == {
        frozenset({("status", "ok")}): 1, frozenset({("status", "failed")}): 1,
        frozenset({("status", "partial_fail")}): 1}
    ended = {dict(labels)["state"]: number for labels, number in labelled(found, f"{p}_tasks_ended_total").items()}
    assert ended == {"ok": 2, "failed": 1, "expired": 1, "timed_out": 0, "refused": 0, "cancelled": 0,
                     "removed": 0, "lost": 0, "skipped": 0}
    assert value(found, f"{p}_open_tasks", state="queued") == 1
    assert value(found, f"{p}_open_tasks", state="running") == 0
    assert value(found, f"{p}_players_connected") == 1 and value(found, f"{p}_players_offline") == 1
    assert value(found, f"{p}_queue_depth") == 1
    assert value(found, f"{p}_players_drained") == 0 and value(found, f"{p}_tasks_held") == 0
    assert 1 < at - after - 0.5 <= value(found, f"{p}_queue_oldest_age_seconds") <= at - before + 0.5
    # Three results came from the player; each score's run time is labelled by its name.
    assert value(found, f"{p}_dispatch_to_result_seconds_count") == 3
    assert 0 < value(found, f"{p}_dispatch_to_result_seconds_sum") < 30
    assert value(found, f"{p}_task_run_seconds_count", score="hello") == 2
    assert value(found, f"{p}_task_run_seconds_count", score="fail") == 1
    assert value(found, f"{p}_task_run_seconds_bucket", score="fail", le="+Inf") == 1
    # The development PKI issues leaves for 825 days and its CA for 3650, its CRL for 365.
    expiry = {dict(labels)["certificate"]: number
              for labels, number in labelled(found, f"{p}_certificate_expires_in_seconds").items()}
    assert 824 * DAY < expiry["conductor"] <= 825 * DAY and 3649 * DAY < expiry["ca"] <= 3650 * DAY
    [(player, first)] = labelled(found, f"{p}_player_certificate_min_expires_in_seconds").items()
    assert dict(player) == {"player": "p1.test"} and 824 * DAY < first <= 825 * DAY
    assert value(found, f"{p}_player_certificates_expiring") == 0
    assert value(found, f"{p}_crl_usable") == 1
    [crl] = labelled(found, f"{p}_crl_next_update_in_seconds").values()
    assert 364 * DAY < crl <= 365 * DAY
    assert value(found, "process_cpu_seconds_total") > 0  # the standard collectors are there

    text = scrape(player_port)
    lint(text)
    found = samples(text)
    p = "orchestra_player"
    assert value(found, f"{p}_connected") == 1 and value(found, f"{p}_reconnects_total") == 0
    assert value(found, f"{p}_tasks_running") == 0
    assert value(found, f"{p}_spool_entries", step="accepted") == 0
    assert value(found, f"{p}_spool_entries", step="finished") + value(found, f"{p}_spool_entries", step="acked") == 3
    assert value(found, f"{p}_results_unacknowledged") == value(found, f"{p}_spool_entries", step="finished")
    assert value(found, f"{p}_spool_bytes") >= (cluster.player_dir("p1.test") / "spool" / "spool.db").stat().st_size
    own = {dict(labels)["certificate"]: number
           for labels, number in labelled(found, f"{p}_certificate_expires_in_seconds").items()}
    assert 824 * DAY < own["player"] <= 825 * DAY and 3649 * DAY < own["ca"] <= 3650 * DAY


def test_player_metrics_show_a_running_score_and_reconnects_after_a_conductor_restart(
        make_cluster: MakeCluster) -> None:
    cluster, conductor_port, player_port = metrics_cluster(make_cluster, ["p1.test"])
    cluster.start()
    code, out, _ = submit(cluster, "sleep", "seconds=6", "p1.test")
    assert code == 0
    job_id = out.split()[0]

    def player(name: str) -> float:
        return value(samples(scrape(player_port)), f"orchestra_player_{name}")
    cluster.wait_for(lambda: player("tasks_running") == 1, "the sleep score running")
    assert value(samples(scrape(conductor_port)), "orchestra_conductor_open_tasks", state="running") == 1
    cluster.conductor().stop()
    cluster.wait_for(lambda: player("connected") == 0, "the player noticing the conductor is gone")
    cluster.start_conductor()
    cluster.wait_for(lambda: player("connected") == 1, "the player back", timeout=30)
    assert player("reconnects_total") == 1
    assert player("tasks_running") == 1  # the score ran on through the restart
    # The job was open when the conductor started again: it is still counted by status.
    assert cluster.cli("getstatus", "--wait", "--timeout", "30", job_id).returncode == 0
    found = samples(scrape(conductor_port))
    assert value(found, "orchestra_conductor_jobs_finished_total", status="ok") == 1
    assert value(found, "orchestra_conductor_jobs_submitted_total") == 0  # by this process
    assert value(found, "orchestra_conductor_tasks_ended_total", state="ok") == 1
    # Not sent by this process: no dispatch-to-result time, no run time.
    assert value(found, "orchestra_conductor_dispatch_to_result_seconds_count") == 0
    assert player("tasks_running") == 0




@pytest.mark.parametrize("trace", [True, False], ids=["handshaker-trace", "no-trace"])
def test_refused_handshakes_and_calls_are_counted_by_reason(
        make_cluster: MakeCluster, tmp_path: Path, trace: bool) -> None:
    cluster, conductor_port, _ = metrics_cluster(make_cluster, ["p1.test", "p2.test"],
                                                 conductor_settings={"handshake_timeout": 2})
    cluster.set_players(["p1.test"])  # p2.test has a certificate, but is not in the players file
    # GRPC_TRACE set (even empty) leaves gRPC's handshaker trace off: reasons come from
    # another line then.
    cluster.start_conductor(extra_env=None if trace else {"GRPC_TRACE": ""})
    cluster.start_player("p1.test")
    cluster.wait_connected(["p1.test"])
    stranger = pki.init(tmp_path / "stranger", "conductor.test", ["p9.test"], [])
    for _ in range(3):
        tls_attempt(cluster.port, (stranger.cert("p9.test"), stranger.key("p9.test")))
    for _ in range(2):
        tls_attempt(cluster.port, None)
    cluster.start_player("p2.test")
    # A player certificate is not an audience identity.
    as_player = cluster.cli("listplayers", config=cluster.remote_audience_config("p1.test"))
    assert as_player.returncode == 4

    def refused() -> Samples:
        return samples(scrape(conductor_port))
    cluster.wait_for(lambda: value(refused(), "orchestra_conductor_calls_refused_total",
                                   reason="not_in_players_file") >= 1, "p2.test refused")
    found = refused()
    tls = {dict(labels)["reason"]: number
           for labels, number in labelled(found, "orchestra_conductor_tls_handshakes_refused_total").items()}
    assert tls["unknown_ca"] == 3 and tls["no_certificate"] == 2
    assert sum(tls.values()) == 5, tls
    if trace:  # a connection that never finishes its handshake (handshake_timeout: 2 s)
        with socket.create_connection(("127.0.0.1", cluster.port)):
            cluster.wait_for(lambda: value(refused(), "orchestra_conductor_tls_handshakes_refused_total",
                                           reason="incomplete") == 1, "the handshake timing out", timeout=15)
        # Its trace lines go with it: nothing but the one tls_handshake_failed event.
        events = [json.loads(line) for line in cluster.log_text("conductor").splitlines()]
        assert not [event for event in events if event["event"] in ("stderr", "grpc_core")
                    and "Tracers" not in str(event.get("message"))]
        found = refused()
    assert value(found, "orchestra_conductor_calls_refused_total", reason="not_audience") >= 1
    assert value(found, "orchestra_conductor_calls_refused_total", reason="revoked") == 0
    lint(scrape(conductor_port))


def daemon_failure(cluster: Cluster, name: str) -> tuple[int | None, dict[str, object]]:
    """Wait for a daemon that cannot start; its exit code and its daemon_failed event."""
    proc = cluster.procs[name]
    assert proc.popen is not None
    code = proc.popen.wait(30)
    events = [json.loads(line) for line in cluster.log_text(name).splitlines()]
    [failed] = [event for event in events if event["event"] == "daemon_failed"]
    assert not any("Traceback" in json.dumps(event) for event in events)
    return code, failed


def test_a_plain_metrics_listener_off_loopback_is_refused_at_start(make_cluster: MakeCluster) -> None:
    port = free_port()
    cluster = make_cluster(["p1.test"], start=False, conductor_settings={"metrics_listen": f"0.0.0.0:{port}"},
                           player_settings={"metrics_listen": f"0.0.0.0:{port}"})
    cluster.start_conductor(wait=False)
    code, failed = daemon_failure(cluster, "conductor")
    assert code == 2
    assert failed["error"] == (f"{cluster.conductor_config}: metrics_listen: '0.0.0.0:{port}' is not a loopback"
                               " address: serving metrics beyond this host needs metrics_tls = true")
    cluster.start_player("p1.test")
    code, failed = daemon_failure(cluster, "player-p1.test")
    assert code == 2 and "metrics_listen" in str(failed["error"]) and "metrics_tls = true" in str(failed["error"])


def test_a_metrics_listener_that_cannot_bind_is_a_one_line_start_up_error(make_cluster: MakeCluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = make_cluster(["p1.test"], start=False,
                               conductor_settings={"metrics_listen": f"127.0.0.1:{port}"},
                               player_settings={"metrics_listen": f"127.0.0.1:{port}"})
        cluster.start_conductor(wait=False)
        code, failed = daemon_failure(cluster, "conductor")
        assert code == 1
        assert failed["error"] == f"cannot listen on metrics_listen 127.0.0.1:{port}: Address already in use"
        cluster.start_player("p1.test")
        code, failed = daemon_failure(cluster, "player-p1.test")
        assert code == 1
        assert failed["error"] == f"cannot listen on metrics_listen 127.0.0.1:{port}: Address already in use"


def client_context(cluster: Cluster, ssl_dir: pki.SSLDir | None, name: str | None) -> ssl.SSLContext:
    """A client that trusts the cluster's CA (the daemons' names are not checked: the test
    dials 127.0.0.1), presenting name's certificate from ssl_dir, or none."""
    context = ssl.create_default_context(cafile=str(cluster.ssl.ca_cert))
    context.check_hostname = False
    if ssl_dir is not None and name is not None:
        context.load_cert_chain(ssl_dir.cert(name), ssl_dir.key(name))
    return context


def refused(port: int, context: ssl.SSLContext | None) -> bool:
    try:
        scrape(port, context)
    except (urllib.error.URLError, ssl.SSLError, ConnectionError, http.client.HTTPException):
        return True
    return False


def test_a_tls_metrics_listener_serves_only_clients_with_a_certificate_of_the_ca(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    conductor_port, player_port = free_port(), free_port()
    # All addresses, so not loopback: allowed because metrics_tls is on.
    cluster = make_cluster(["p1.test"], audience_names=["prometheus.test"], start=False,
                           conductor_settings={"metrics_listen": f"0.0.0.0:{conductor_port}", "metrics_tls": True},
                           player_settings={"metrics_listen": f"0.0.0.0:{player_port}", "metrics_tls": True})
    cluster.start()
    stranger = pki.init(tmp_path / "stranger", "conductor.test", ["prometheus.test"], [])
    for port in (conductor_port, player_port):
        assert refused(port, client_context(cluster, None, None))
        assert refused(port, client_context(cluster, stranger, "prometheus.test"))
        assert refused(port, None)  # nor plain HTTP
        # A connection that never sends a byte does not hold up the others.
        idle = socket.create_connection(("127.0.0.1", port))
        try:
            started = time.monotonic()
            text = scrape(port, client_context(cluster, cluster.ssl, "prometheus.test"))
            assert time.monotonic() - started < 5
        finally:
            idle.close()
        lint(text)
        assert any(name.startswith(("orchestra_conductor_", "orchestra_player_")) for name, _ in samples(text))
    events = [json.loads(line) for line in cluster.log_text("conductor").splitlines()]
    assert any(event["event"] == "metrics_handshake_failed" for event in events)


def test_a_loop_that_does_not_answer_in_time_gets_the_last_snapshot_served_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT", 0.5)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    answers = iter([1.0, 2.0])

    async def snapshot() -> float:
        return next(answers)

    def build(number: float) -> Iterator[metrics.Metric]:
        yield metrics.counter("test_answers_total", "Answers.", number)
    collector = metrics.LoopCollector(loop, "test", snapshot, build)
    try:
        first = samples_of(collector)
        assert first["test_answers_total"] == 1 and first["test_event_loop_lag_seconds"] < 0.5
        busy = threading.Event()
        loop.call_soon_threadsafe(lambda: busy.wait(3))  # the loop is stuck for 3 s
        started = time.monotonic()
        late = samples_of(collector)
        assert time.monotonic() - started < 1.5
        assert late["test_answers_total"] == 1  # the previous snapshot again
        assert late["test_event_loop_lag_seconds"] >= 0.5
        busy.set()
        # Let the loop run what the late scrape queued (cancelled now) before it closes.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert samples_of(collector)["test_answers_total"] == 1  # a closed loop: still no error


def samples_of(collector: metrics.LoopCollector[float]) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}


def test_failed_reloads_are_counted_by_part_and_a_broken_crl_shows(make_cluster: MakeCluster) -> None:
    cluster, conductor_port, _ = metrics_cluster(make_cluster, ["p1.test"])
    cluster.start()

    def conductor() -> Samples:
        return samples(scrape(conductor_port))

    def failures(part: str) -> float:
        return value(conductor(), "orchestra_conductor_reload_failures_total", part=part)
    certificate = cluster.ssl.cert("conductor.orchestra.test")
    good_players, good_cert = cluster.players_file.read_text(), certificate.read_bytes()
    cluster.players_file.write_text("not a certname!\n")
    certificate.write_text("not a certificate\n")
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: failures("players_file") == 1 and failures("certificate") == 1, "failed reloads counted")
    assert failures("crl") == 0 and failures("policy") == 0
    cluster.players_file.write_text(good_players)
    certificate.write_bytes(good_cert)
    good_crl = cluster.ssl.crl.read_bytes()
    cluster.ssl.crl.write_text("not a CRL\n")  # noticed within 2 s, without a SIGHUP
    cluster.wait_for(lambda: value(conductor(), "orchestra_conductor_crl_usable") == 0, "the CRL unusable")
    found = conductor()
    assert value(found, "orchestra_conductor_reload_failures_total", part="crl") >= 1
    assert labelled(found, "orchestra_conductor_crl_next_update_in_seconds") == {}
    cluster.wait_for(lambda: value(conductor(), "orchestra_conductor_calls_refused_total", reason="crl_unusable") >= 1,
                     "the player refused while the CRL is unusable")
    cluster.ssl.crl.write_bytes(good_crl)
    cluster.wait_for(lambda: value(conductor(), "orchestra_conductor_crl_usable") == 1, "the CRL usable again")
    cluster.wait_connected(["p1.test"])


def check_rules(rules: Path, *expositions: str) -> None:
    """``promtool check rules`` passes, and every metric the rules name is exposed."""
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    exposed = {family.name for text in expositions for family in text_string_to_metric_families(text)}
    exposed |= {f"{name}{suffix}" for name in exposed for suffix in ("_total", "_bucket", "_count", "_sum")}
    named = set(re.findall(r"\borchestra_[a-z_]+", rules.read_text()))
    assert named and named <= exposed, sorted(named - exposed)


def test_the_alert_rules_are_valid_and_name_only_metrics_that_exist(make_cluster: MakeCluster) -> None:
    if not RULES.exists():
        pytest.fail(f"{RULES} is missing")
    cluster, conductor_port, player_port = metrics_cluster(make_cluster, ["p1.test"])
    cluster.start()
    check_rules(RULES, scrape(conductor_port), scrape(player_port))


def test_daemons_without_a_listener_do_not_load_prometheus_client() -> None:
    """Metrics are off unless configured, and then cost nothing: not even the import."""
    code = ("import sys, conductor.main, player.main, player.session, conductor.lifecycle;"
            " print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'orchestra.metrics'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_audit_lines_that_cannot_be_written_are_counted(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    audit.record("submit", "accepted", job_id="j1")
    writable, audit.fd = audit.fd, os.open(tmp_path / "audit.log", os.O_RDONLY)  # as a full disk would refuse
    audit.record("submit", "accepted", job_id="j2")
    audit.record("submit", "accepted", job_id="j3")
    assert audit.write_failures == 2 and len(audit.backlog) == 2
    os.close(audit.fd)
    audit.fd = writable
    audit.close()


# ---- the pieces, directly ----------------------------------------------------------------

def test_the_oldest_queued_task_is_found_from_the_heads_of_the_index() -> None:
    rng = random.Random(7)
    index = DispatchIndex()
    live: dict[str, QueuedTask] = {}
    for step in range(3000):
        action = rng.random()
        if action < 0.55:
            scope = rng.choice(["all", "one"])
            task = QueuedTask(f"{step:032x}.0", scope, f"p{rng.randrange(20)}" if scope == "all" else None,
                              ("a", "b") if scope == "one" else (), (), 1e12, rng.uniform(0, 1000))
            index.add(task)
            live[task.task_id] = task
        elif action < 0.8 and live:
            task_id = rng.choice(sorted(live))
            index.discard(task_id)
            del live[task_id]
        else:
            for task in index.take(f"p{rng.randrange(20)}", rng.randrange(1, 4), now=0):
                index.discard(task.task_id)  # claimed, as a dispatch pass does
                del live[task.task_id]
        oldest = min((task.created_at for task in live.values()), default=None)
        assert index.oldest_created_at() == oldest
        assert index.depth() == len(live)


@pytest.mark.parametrize("reason, kind", [
    # As gRPC 1.85.1 reports them, with the handshaker trace and without.
    ("CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate", "unknown_ca"),
    ("SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local"
     " issuer certificate", "unknown_ca"),
    ("CERTIFICATE_VERIFY_FAILED: certificate has expired", "expired"),
    ("CERTIFICATE_VERIFY_FAILED: certificate is not yet valid", "not_yet_valid"),
    ("CERTIFICATE_VERIFY_FAILED: unsupported certificate purpose", "bad_usage"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE: Invalid certificate verification context", "no_certificate"),
    ("HTTP_REQUEST: Invalid certificate verification context", "not_tls"),
    ("Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: WRONG_VERSION_NUMBER", "not_tls"),
    ("Handshake read failed (Endpoint closing)", "incomplete"),
    ("Handshake read failed (Socket closed)", "incomplete"),
    ("anything else \x1b[2J a client could make gRPC say", "other"),
])
def test_refused_handshakes_are_sorted_into_a_few_fixed_kinds(reason: str, kind: str) -> None:
    assert handshake_refusal(reason) == kind
    assert kind in HANDSHAKE_REFUSALS


def test_run_times_are_labelled_by_at_most_a_hundred_scores() -> None:
    counts = Counts()
    for number in range(150):
        counts.dispatched(f"j.{number}", f"score{number}")
        counts.result(counts.sent(f"j.{number}"), TaskOutcome(started_at=10.0, finished_at=12.5))
    assert len(counts.run_seconds) == MAX_SCORE_LABELS + 1
    assert counts.run_seconds[OTHER_SCORES].count == 50 and counts.run_seconds["score0"].sum == 2.5
    assert counts.dispatch_to_result.count == 150


def test_what_a_scrape_shows_does_not_grow_with_the_fleet(tmp_path: Path) -> None:
    """Per-player certificate expiry would be one series per player: the scrape shows
    the first to expire and a count instead, so 10,000 players cost what 10 do."""
    ssl_dir = pki.init(tmp_path / "ssl", "conductor.test", [], [])
    material = Material(ssl_dir.ca_cert.read_bytes(), ssl_dir.cert("conductor.test").read_bytes(),
                        ssl_dir.key("conductor.test").read_bytes())

    async def exposition(players: int) -> str:
        (tmp_path / f"state{players}").mkdir()
        store = open_store(tmp_path / f"state{players}")
        now = time.time()
        names = [f"p{number}.test" for number in range(players)]
        known = {name: PlayerRecord(name, now, 1, now + (10.5 + number) * DAY) for number, name in enumerate(names)}
        lifecycle = Lifecycle(store, Sessions(frozenset(names), known), AuditLog(tmp_path / f"audit{players}"))
        watched = types.SimpleNamespace(lifecycle=lifecycle, gate=types.SimpleNamespace(refusals=Counter()),
                                        revocation=types.SimpleNamespace(path=None), material=material,
                                        reload_failures=Counter(), state=StateMachine())
        try:
            snapshot = await take_snapshot(watched)  # type: ignore[arg-type]
        finally:
            store.close()
        registry = CollectorRegistry()
        registry.register(metrics.LoopCollector(asyncio.get_running_loop(), "orchestra_conductor",
                                                lambda: asyncio.sleep(0, snapshot), families))
        text: str = (await asyncio.to_thread(generate_latest, registry)).decode()
        return text

    small, large = asyncio.run(exposition(10)), asyncio.run(exposition(10_000))
    assert sorted(samples(small)) != [] and len(samples(small)) == len(samples(large))
    found = samples(large)
    assert value(found, "orchestra_conductor_player_certificates_expiring") == 20  # 10.5 to 29.5 days left
    [(player, first)] = labelled(found, "orchestra_conductor_player_certificate_min_expires_in_seconds").items()
    assert dict(player) == {"player": "p0.test"} and 10.4 * DAY < first <= 10.5 * DAY
    lint(large)
