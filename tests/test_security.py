"""The security rules, each proven against real daemons with real certificates."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from devtools import pki
from devtools.devcluster import CONDUCTOR_NAME, Cluster
from orchestra.wire import audience_pb2, audience_pb2_grpc, player_pb2, player_pb2_grpc
from tests.conftest import MakeCluster, job_json, queue_rows, submit

ENV_DUMP = f"#!{sys.executable}\nimport json, os\nprint(json.dumps(dict(os.environ)))\n"


def tls_client(cluster: Cluster, name: str | None, *, maximum: ssl.TLSVersion | None = None,
               ) -> ssl.SSLSocket:
    """A raw TLS connection to the conductor's port, as name (or without a certificate)."""
    context = ssl.create_default_context(cafile=str(cluster.ssl.ca_cert))
    context.set_alpn_protocols(["h2"])
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old protocols
    if name is not None:
        context.load_cert_chain(cluster.ssl.cert(name), cluster.ssl.key(name))
    raw = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    return context.wrap_socket(raw, server_hostname=CONDUCTOR_NAME)


def handshake_refused(sock: ssl.SSLSocket) -> bool:
    """TLS 1.3 reports a refused client certificate only on the first read."""
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        return sock.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        sock.close()


def issue(cluster: Cluster, name: str, usages: list[object], **kwargs: object) -> None:
    authority = cluster.ssl.load_authority()
    cluster.ssl.write_leaf(name, *pki.issue(authority, name, usages, **kwargs))  # type: ignore[arg-type]


# ---- transport -------------------------------------------------------------------------

def test_tls_without_client_certificate_is_refused(cluster3: Cluster) -> None:
    assert handshake_refused(tls_client(cluster3, None))
    channel = grpc.secure_channel(f"127.0.0.1:{cluster3.port}",
                                  grpc.ssl_channel_credentials(cluster3.ssl.ca_cert.read_bytes()),
                                  options=[("grpc.ssl_target_name_override", CONDUCTOR_NAME)])
    with pytest.raises(grpc.RpcError) as caught:
        audience_pb2_grpc.AudienceStub(channel).ListPlayers(audience_pb2.ListPlayersRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(cluster3: Cluster) -> None:
    try:
        old = tls_client(cluster3, "p1.test", maximum=ssl.TLSVersion.TLSv1_1)
    except ssl.SSLError as err:
        if "NO_CIPHERS_AVAILABLE" in str(err) or "NO_PROTOCOLS_AVAILABLE" in str(err):
            pytest.skip(f"this machine's OpenSSL cannot even offer TLS 1.1: {err}")
        # The conductor refused the handshake (an alert, or it just hung up).
    else:
        version = old.version()
        old.close()
        pytest.fail(f"the conductor accepted {version}")
    modern = tls_client(cluster3, "p1.test", maximum=ssl.TLSVersion.TLSv1_2)
    assert modern.version() == "TLSv1.2"
    modern.close()


@pytest.mark.parametrize("kind", ["expired", "server-auth-only"])
def test_expired_or_non_client_certificates_cannot_connect(make_cluster: MakeCluster, kind: str) -> None:
    cluster = make_cluster(["p1.test", "bad.test"], start=False)
    cluster.start(players=["p1.test"])
    if kind == "expired":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        issue(cluster, "bad.test", list(pki.ROLE_USAGES["player"]),
              not_before=past - dt.timedelta(days=365), not_after=past)
    else:
        issue(cluster, "bad.test", [ExtendedKeyUsageOID.SERVER_AUTH])
    cluster.add_player_config("bad.test")
    proc = cluster.start_player("bad.test")
    cluster.wait_for(lambda: cluster.log_text("player-bad.test").count("session_ended") >= 2,
                     "bad.test refused twice", proc=proc)
    assert "UNAVAILABLE" in cluster.log_text("player-bad.test")
    assert "bad.test" not in cluster.connected()
    assert handshake_refused(tls_client(cluster, "bad.test"))


def test_player_refuses_a_conductor_certificate_with_the_wrong_name(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], start=False)
    cluster.start_conductor()
    cluster.add_player_config("p1.test", conductor_name="impostor.test")
    proc = cluster.start_player("p1.test")
    cluster.wait_for(lambda: cluster.log_text("player-p1.test").count("session_ended") >= 2,
                     "p1 refuses the conductor twice", proc=proc)
    assert "p1.test" not in cluster.connected()
    assert "player_connected" not in cluster.log_text("conductor")


# ---- roles -----------------------------------------------------------------------------

AUDIENCE_CALLS = {
    "Submit": audience_pb2.SubmitRequest(score="hello", targets=["p1.test"]),
    "GetJob": audience_pb2.JobRef(job_id="0" * 32),
    "WaitJob": audience_pb2.WaitRequest(job_id="0" * 32, timeout_seconds=1),
    "ListPlayers": audience_pb2.ListPlayersRequest(),
    "Cancel": audience_pb2.JobRef(job_id="0" * 32),
    "ListJobs": audience_pb2.ListJobsRequest(),
    "WatchJob": audience_pb2.WaitRequest(job_id="0" * 32, timeout_seconds=1),
    "FollowJob": audience_pb2.FollowRequest(job_id="0" * 32, timeout_seconds=1),
    "Retry": audience_pb2.RetryRequest(job_id="0" * 32),
    "Delete": audience_pb2.JobRef(job_id="0" * 32),
    "Drain": audience_pb2.DrainRequest(names=["p1.test"]),
    "SubmitWorkflow": audience_pb2.WorkflowRequest(steps=[audience_pb2.WorkflowStep(
        name="one", job=audience_pb2.SubmitRequest(score="hello", targets=["p1.test"]))]),
    "GetWorkflow": audience_pb2.JobRef(job_id="w" + "0" * 32),
    "WaitWorkflow": audience_pb2.WaitRequest(job_id="w" + "0" * 32, timeout_seconds=1),
    "CancelWorkflow": audience_pb2.JobRef(job_id="w" + "0" * 32),
    "AddSchedule": audience_pb2.ScheduleRequest(name="tick", cron="* * * * *", job=audience_pb2.SubmitRequest(
        score="hello", targets=["p1.test"])),
    "ChangeSchedule": audience_pb2.ScheduleChange(name="tick", action="pause"),
    "ListSchedules": audience_pb2.ListSchedulesRequest(),
}


def _tls_channel(cluster: Cluster, name: str) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(cluster.ssl.ca_cert.read_bytes(),
                                               cluster.ssl.key(name).read_bytes(),
                                               cluster.ssl.cert(name).read_bytes())
    return grpc.secure_channel(f"127.0.0.1:{cluster.port}", credentials,
                               options=[("grpc.ssl_target_name_override", CONDUCTOR_NAME)])


def _call(channel: grpc.Channel, method: str, request: object) -> grpc.StatusCode:
    stub = audience_pb2_grpc.AudienceStub(channel)
    try:
        result = getattr(stub, method)(request, timeout=10)
        if method in ("WaitJob", "WatchJob", "FollowJob", "WaitWorkflow"):
            list(result)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_every_audience_method_refuses_a_player_certificate(cluster3: Cluster) -> None:
    service = audience_pb2.DESCRIPTOR.services_by_name["Audience"]
    assert set(service.methods_by_name) == set(AUDIENCE_CALLS), "a new method needs a row here"
    channel = _tls_channel(cluster3, "p1.test")
    for method, request in AUDIENCE_CALLS.items():
        assert _call(channel, method, request) == grpc.StatusCode.PERMISSION_DENIED, method
    channel.close()
    assert queue_rows(cluster3, "jobs") == [] and queue_rows(cluster3, "workflows") == []
    assert queue_rows(cluster3, "schedules") == []
    audit = (cluster3.state_dir / "audit.log").read_text()
    assert '"authz_refused"' in audit and "p1.test is not an audience identity" in audit


def test_audience_certificate_cannot_open_a_player_session(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"], audience_names=["ops.test"],
                           conductor_settings={"audience": {"ops.test": {"scores": ["*"], "targets": ["*"]}}})
    channel = _tls_channel(cluster, "ops.test")
    assert _call(channel, "ListPlayers", audience_pb2.ListPlayersRequest()) == grpc.StatusCode.OK

    async def open_session() -> grpc.StatusCode:
        async with grpc.aio.secure_channel(
                f"127.0.0.1:{cluster.port}", grpc.ssl_channel_credentials(
                    cluster.ssl.ca_cert.read_bytes(), cluster.ssl.key("ops.test").read_bytes(),
                    cluster.ssl.cert("ops.test").read_bytes()),
                options=[("grpc.ssl_target_name_override", CONDUCTOR_NAME)]) as aio_channel:
            call = player_pb2_grpc.PlayerLinkStub(aio_channel).Session()
            try:
                await call.read()
            except grpc.aio.AioRpcError:
                pass
            return await call.code()
    assert asyncio.run(open_session()) == grpc.StatusCode.PERMISSION_DENIED
    channel.close()


def test_calls_without_a_verified_identity_are_unauthenticated(cluster3: Cluster) -> None:
    ready = [json.loads(line) for line in cluster3.log_text("conductor").splitlines()
             if '"conductor_ready"' in line][-1]
    direct = grpc.insecure_channel(f"127.0.0.1:{ready['relay_port']}")  # bypassing the relay
    assert _call(direct, "ListPlayers", audience_pb2.ListPlayersRequest()) == grpc.StatusCode.UNAUTHENTICATED
    assert _call(direct, "Submit", AUDIENCE_CALLS["Submit"]) == grpc.StatusCode.UNAUTHENTICATED
    direct.close()

    async def session_over_local_socket() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"unix:{cluster3.socket}") as channel:
            # The interceptor refuses before reading anything: no need to write (a write
            # racing with the refusal can surface as a client-side INTERNAL).
            call = player_pb2_grpc.PlayerLinkStub(channel).Session()
            try:
                await call.read()
            except grpc.aio.AioRpcError:
                pass
            return await call.code(), await call.details()
    code = asyncio.run(session_over_local_socket())
    # The local socket's server has no player service at all.
    assert code[0] == grpc.StatusCode.UNIMPLEMENTED, code
    assert queue_rows(cluster3, "jobs") == []


def test_local_requester_is_the_verified_unix_user(cluster3: Cluster) -> None:
    code, job = job_json(cluster3, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")
    import pwd
    assert job["requester"] == f"user:{pwd.getpwuid(os.getuid()).pw_name}"
    mode = cluster3.socket.stat().st_mode & 0o777
    assert mode == 0o660


# ---- policy ----------------------------------------------------------------------------

def test_policy_allows_and_denies_with_the_rule_named(make_cluster: MakeCluster) -> None:
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    cluster = make_cluster(["p1.test", "p2.test"], audience_names=["ci.test", "stranger.test"],
                           conductor_settings={
        "groups": {"front": ["p1.*"]},
        "policy": [
            {"name": "never-fail", "effect": "deny", "requesters": ["*"], "scores": ["fail"]},
            {"name": "ops-hello", "requesters": [f"user:{me}"], "scores": ["hello"],
             "targets": ["@front"], "params": {"WHO": "^[a-z]+$"}},
        ],
        "audience": {"ci.test": {"scores": ["hello"], "targets": ["p2.test"]}},
    })
    code, _, err = submit(cluster, "fail", "p1.test")
    assert code == 2 and "policy rule 'never-fail' denies" in err
    code, _, err = submit(cluster, "hello", "p2.test")
    assert code == 2 and "no policy rule allows" in err
    code, _, err = submit(cluster, "hello", "who=Bad-Value", "p1.test")
    assert code == 2 and "no policy rule allows" in err
    assert queue_rows(cluster, "jobs") == []
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "who=ops", "p1.test")[0] == 0
    # Remote audience over mTLS: admitted per certificate, limited to its entry.
    ci = cluster.remote_audience_config("ci.test")
    result = cluster.cli("submitjob", "--wait", "--timeout", "30", "hello", "p2.test", config=ci)
    assert result.returncode == 0, result.stderr
    assert "requester  cert:ci.test" in result.stdout
    result = cluster.cli("submitjob", "hello", "p1.test", config=ci)
    assert result.returncode == 2 and "no policy rule allows cert:ci.test" in result.stderr
    stranger = cluster.remote_audience_config("stranger.test")
    result = cluster.cli("getstatus", "0" * 32, config=stranger)
    assert result.returncode == 4 and "not an audience identity" in result.stderr
    audit = [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]
    denied = [a for a in audit if a["event"] == "submit" and a["decision"] == "denied"]
    assert {a.get("rule") for a in denied} >= {"never-fail"}


def test_policy_is_reloaded_on_sighup_and_a_bad_one_is_kept_out(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    assert submit(cluster, "fail", "p1.test")[0] == 0  # no policy: local users may run anything
    text = cluster.conductor_config.read_text()
    cluster.conductor_config.write_text(text + '\n[[policy]]\nname = "no-fail"\neffect = "deny"\n'
                                        'requesters = ["*"]\nscores = ["fail"]\n'
                                        '\n[[policy]]\nname = "rest"\nrequesters = ["*"]\n')
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "policy_reloaded" in cluster.log_text("conductor"), "policy reload")
    code, _, err = submit(cluster, "fail", "p1.test")
    assert code == 2 and "'no-fail' denies" in err
    assert submit(cluster, "hello", "p1.test")[0] == 0
    cluster.conductor_config.write_text(text + '\n[[policy]]\nrequesters = ["nobody"]\n')
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "policy_reload_failed" in cluster.log_text("conductor"), "bad policy")
    assert submit(cluster, "fail", "p1.test")[0] == 2  # the previous policy still holds


# ---- revocation and rotation --------------------------------------------------------------

def test_revoked_player_is_refused_and_its_live_session_closed(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"])
    assert pki.main(["revoke", str(cluster.ssl.root), "p2.test"]) == 0
    # The conductor notices the CRL file changed (and would on SIGHUP too).
    cluster.wait_disconnected(["p2.test"], timeout=15)
    time.sleep(1.5)
    assert "p2.test" not in cluster.connected()
    assert "p1.test" in cluster.connected()
    assert "is revoked" in cluster.log_text("conductor")
    audit = (cluster.state_dir / "audit.log").read_text()
    assert '"session_closed"' in audit and '"authn_refused"' in audit


def test_unusable_crl_fails_closed(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    cluster.ssl.crl.write_text("not a CRL\n")
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_disconnected(["p1.test"], timeout=15)
    assert "crl_unusable_failing_closed" in cluster.log_text("conductor")
    cluster.conductor().stop()
    result = subprocess.run([sys.executable, "-m", "conductor.main", "--config",
                             str(cluster.conductor_config)], capture_output=True, text=True,
                            timeout=30, env=cluster.env())
    assert result.returncode == 1 and "cannot parse CRL" in result.stderr
    expired = pki.crl(cluster.ssl.load_authority(),
                      next_update=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    from cryptography.hazmat.primitives import serialization
    cluster.ssl.crl.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run([sys.executable, "-m", "conductor.main", "--config",
                             str(cluster.conductor_config)], capture_output=True, text=True,
                            timeout=30, env=cluster.env())
    assert result.returncode == 1 and "expired" in result.stderr


def test_certificates_expiring_within_30_days_are_logged(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "soon.test"], start=False)
    cluster.start(players=["p1.test"])
    issue(cluster, "soon.test", list(pki.ROLE_USAGES["player"]),
          not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=10))
    cluster.add_player_config("soon.test")
    cluster.start_player("soon.test")
    cluster.wait_connected(["soon.test"])
    warning = next(json.loads(line) for line in cluster.log_text("conductor").splitlines()
                   if '"certificate_expiring"' in line)
    assert warning["certname"] == "soon.test" and 9 < warning["days_left"] <= 10
    listing = json.loads(cluster.cli("listplayers", "--json").stdout)
    soon = next(p for p in listing["players"] if p["name"] == "soon.test")
    assert soon["connected"] and soon["cert_not_after"][:10] == (
        dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).strftime("%Y-%m-%d")


def test_conductor_certificate_rotation_on_sighup(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test"])
    before = tls_client(cluster, "p1.test")
    old_serial = before.getpeercert()["serialNumber"]
    before.close()
    cert, key = pki.issue(cluster.ssl.load_authority(), CONDUCTOR_NAME, pki.ROLE_USAGES["conductor"])
    cluster.ssl.write_leaf(CONDUCTOR_NAME, cert, key)
    connects = cluster.log_text("conductor").count("player_connected")
    cluster.conductor().send_signal(signal.SIGHUP)
    cluster.wait_for(lambda: "certificate_rotated" in cluster.log_text("conductor"), "rotation")
    after = tls_client(cluster, "p1.test")
    assert int(after.getpeercert()["serialNumber"], 16) == cert.serial_number != int(old_serial, 16)
    after.close()
    # The live player session was not disturbed and still works.
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0
    assert cluster.log_text("conductor").count("player_connected") == connects
    listing = cluster.cli("listplayers", "--json")
    reported = json.loads(listing.stdout)["conductor_cert_not_after"]
    assert reported.startswith(cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M"))


# ---- scores and parameters -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "/bin/sh", "a/b", ".hidden"])
def test_bad_score_names_are_refused_before_anything_runs(cluster3: Cluster, name: str) -> None:
    code, _, err = submit(cluster3, name, "p1.test")
    assert code == 2 and "invalid score name" in err
    assert queue_rows(cluster3, "jobs") == []


def test_symlink_leaving_the_scores_directory_does_not_exist(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(start=False)
    scores = cluster.scores_dir("p1.test")
    (scores / "escape").symlink_to("/bin/true")
    (scores / "escape.conf").write_text("interface env\n")
    (scores / "inside").symlink_to(scores / "hello")
    (scores / "inside.conf").write_text("interface env\n")
    cluster.start()
    # The player lists it as invalid, so the conductor refuses the job at once; the
    # player's own check before each run is tested in test_validation.py.
    code, out, err = submit(cluster, "escape", "p1.test")
    assert code == 2 and "outside the scores directory" in err, err
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "inside", "p1.test")[0] == 0


def test_shell_syntax_in_values_is_never_interpreted(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    cluster.add_score("envdump", ENV_DUMP, "interface env\n")
    cluster.add_score("shellecho", "#!/bin/sh\nprintf '%s\\n' \"$ORC_A\" \"$ORC_B\" \"$ORC_C\"\n",
                      "interface env\n")
    touched = tmp_path / "pwned"
    values = {"a": f"$(touch {touched})", "b": ";id", "c": f"`touch {touched}`"}
    words = [f"{k}={v}" for k, v in values.items()]
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "envdump", *words, "p1.test")
    env = json.loads(job["tasks"][0]["stdout"])
    assert {env[f"ORC_{k.upper()}"] for k in values} == set(values.values())
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "shellecho", *words, "p1.test")
    assert job["tasks"][0]["stdout"].splitlines() == list(values.values())
    assert not touched.exists()


def test_dangerous_parameter_names_cannot_change_the_environment(make_cluster: MakeCluster,
                                                                 tmp_path: Path) -> None:
    cluster = make_cluster()
    sourced = tmp_path / "sourced"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"touch {sourced}\n")
    cluster.add_score("bashdump", "#!/bin/bash\n" + "env -0 | tr '\\0' '\\n' | grep -c . >/dev/null\n"
                      f"exec {sys.executable} -c 'import json,os; print(json.dumps(dict(os.environ)))'\n",
                      "interface env\n")
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "bashdump",
                         "PATH=/tmp", "LD_PRELOAD=/tmp/x.so", f"BASH_ENV={evil}", "ORC_JOB_ID=forged",
                         "p1.test")
    assert code == 0
    env = json.loads(job["tasks"][0]["stdout"])
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "LD_PRELOAD" not in env and "BASH_ENV" not in env
    assert env["ORC_JOB_ID"] == job["job_id"] and env["ORC_ORC_JOB_ID"] == "forged"
    assert not sourced.exists()
    for word, message in [("BASH_FUNC_x%%=() { id; }", "invalid parameter name"),
                          ("JOB_ID=forged", "reserved"), ("response_file=/etc/passwd", "reserved")]:
        code, _, err = submit(cluster, "bashdump", word, "p1.test")
        assert code == 2 and message in err


def test_declared_parameters_are_enforced_and_secrets_never_shown(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.add_score("deploy", "#!/bin/sh\necho \"deploying $ORC_VERSION\"\n",
                      "interface env\nparam VERSION required pattern=^[0-9.]+$\n"
                      "param TOKEN optional secret\n")
    cluster.player("p1.test").stop()
    cluster.start_player("p1.test")  # reconnect so the conductor learns the new inventory
    cluster.wait_connected(["p1.test"])
    for words, message in [([], "requires parameter VERSION"),
                           (["version=1;rm"], "does not match"),
                           (["version=1.0", "extra=1"], "does not declare parameter EXTRA")]:
        code, _, err = submit(cluster, "deploy", *words, "p1.test")
        assert code == 2 and message in err, err
    assert queue_rows(cluster, "jobs") == []
    secret = "s3cr3t-value-42"
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "deploy", "version=1.2",
                         f"token={secret}", "p1.test")
    assert code == 0 and job["params"] == {"TOKEN": "<secret>", "VERSION": "1.2"}
    text = cluster.cli("getstatus", job["job_id"]).stdout
    assert "TOKEN=<secret>" in text and secret not in text
    for place in [cluster.log_text("conductor"), cluster.log_text("player-p1.test"),
                  (cluster.state_dir / "audit.log").read_text()]:
        assert secret not in place
    assert secret not in json.dumps(queue_rows(cluster, "jobs"))


def test_player_enforces_declarations_the_conductor_could_not_check(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.add_score("strict", "#!/bin/sh\necho ran\n", "interface env\nparam N required pattern=^[0-9]+$\n")
    cluster.start(players=["p1.test"])
    # p2 has never connected: the conductor does not know its scores, so it queues...
    code, out, _ = submit(cluster, "strict", "n=not-a-number", "p2.test")
    assert code == 0
    cluster.start_player("p2.test")
    # ...and p2 refuses before running anything.
    code, job = job_json(cluster, "getstatus", "--wait", "--timeout", "30", out.strip())
    assert code == 1 and job["tasks"][0]["state"] == "refused"
    assert "does not match" in job["tasks"][0]["reason"] and job["tasks"][0]["stdout"] == ""


# ---- limits and floods -------------------------------------------------------------------

def test_oversized_message_from_a_fake_player_is_refused_and_the_conductor_lives(
        cluster3: Cluster) -> None:
    async def send_huge() -> grpc.StatusCode:
        credentials = grpc.ssl_channel_credentials(cluster3.ssl.ca_cert.read_bytes(),
                                                   cluster3.ssl.key("p2.test").read_bytes(),
                                                   cluster3.ssl.cert("p2.test").read_bytes())
        options = [("grpc.ssl_target_name_override", CONDUCTOR_NAME),
                   ("grpc.max_send_message_length", -1)]
        async with grpc.aio.secure_channel(f"127.0.0.1:{cluster3.port}", credentials,
                                           options=options) as channel:
            call = player_pb2_grpc.PlayerLinkStub(channel).Session()
            huge = player_pb2.Hello(protocol_version=1, software_version="x" * (100 * 1024 * 1024))
            try:
                await call.write(player_pb2.PlayerMessage(hello=huge))
                await call.read()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass
            return await call.code()
    assert asyncio.run(send_huge()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cluster3.conductor().running
    assert job_json(cluster3, "submitjob", "--wait", "--timeout", "30", "hello", "p1.test")[0] == 0


def test_output_and_response_are_capped_with_a_visible_marker(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    cluster.add_score("chatty", "#!/bin/sh\nhead -c 300000 /dev/zero | tr '\\0' 'x'\necho\n"
                      "i=0; while [ $i -lt 5000 ]; do echo \"k$i=vvvvvvvvvvvvvvvvvvvv\"; i=$((i+1)); done"
                      " > \"$ORC_RESPONSE_FILE\"\n", "interface env\n")
    code, job = job_json(cluster, "submitjob", "--wait", "--timeout", "30", "chatty", "p1.test")
    task = job["tasks"][0]
    assert code == 0 and task["stdout_truncated"] is True
    assert task["stdout"].startswith("[... output truncated by orchestra ...]")
    assert len(task["stdout"]) <= 65536 + 100
    assert 0 < len(task["response"]) < 5000


def test_handshake_flood_does_not_keep_a_valid_player_out(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["p1.test", "p2.test"], start=False)
    cluster.start(players=["p1.test"])

    def bad_handshake(_: int) -> bool:
        try:
            return handshake_refused(tls_client(cluster, None))
        except (ssl.SSLError, OSError):
            return True
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        flood = [pool.submit(bad_handshake, n) for n in range(500)]
        cluster.start_player("p2.test")
        cluster.wait_connected(["p2.test"], timeout=30)
        assert all(f.result() for f in flood)
    assert cluster.conductor().running
    assert job_json(cluster, "submitjob", "--wait", "--timeout", "30", "hello", "p2.test")[0] == 0


def test_audit_log_survives_kill_9(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    code, out, _ = submit(cluster, "hello", "who=audit", "p1.test")
    cluster.cli("getstatus", "--wait", "--timeout", "30", out.strip())
    cluster.conductor().stop(signal.SIGKILL)
    lines = [json.loads(line) for line in (cluster.state_dir / "audit.log").read_text().splitlines()]
    events = [(a["event"], a["decision"]) for a in lines if a.get("job_id") == out.strip()]
    assert events == [("submit", "accepted"), ("dispatch", "sent"), ("result", "ok")]
    submitted = next(a for a in lines if a["event"] == "submit")
    assert submitted["param_keys"] == ["WHO"] and "audit" not in json.dumps(submitted)
    assert re.fullmatch(r"user:\S+", submitted["requester"])
    assert (cluster.state_dir / "audit.log").stat().st_mode & 0o777 == 0o600
